"""Is a trained model at (near) a minimum? A verdict from its learning curve and one full-data gradient.

Curvature measured at weights that are not a minimum is not "the sharpness of a minimum": a diverged
training (huge learning rate) leaves a saturated network whose Hessian is ~0, which a table of
``lambda_max`` would show as a very flat minimum. :func:`assess_fit` checks the trained weights of a
:class:`~qlandscape.train.TrainResult` (its record :attr:`~qlandscape.train.TrainResult.minimum`; record 0
is the initialization) and returns a :class:`FitReport` whose ``flags`` are a subset of :data:`FIT_FLAGS`:

``non_finite``
    The train loss at the trained or the initial weights, a trained parameter, or a given gradient norm
    is NaN or inf.
``loss_above_start``
    The trained weights' train loss is above the initial loss: training made the loss worse (diverged).
``chance_accuracy``
    The train accuracy is at most chance plus a sampling margin (:class:`FitThresholds`): the model has
    not learned the training set.
``gradient_not_small``
    The full-data gradient norm at the trained weights is more than ``grad_rel_max`` (0.5) of its norm at
    the initialization: training stopped (or oscillates) far from a stationary point. This is the one flag
    a healthy but short training also raises; :data:`FAILURE_FLAGS` are the other three.

The thresholds and the measurements behind them are documented on :class:`FitThresholds`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from .losses import LossSpec
from .objective import DataSpec, DtypeSpec, NonFiniteLossError, Objective
from .train import TrainResult

__all__ = ["FAILURE_FLAGS", "FIT_FLAGS", "FitReport", "FitThresholds", "assess_fit", "gradient_norm"]

FIT_FLAGS: tuple[str, ...] = ("non_finite", "loss_above_start", "chance_accuracy", "gradient_not_small")
"""Every flag a :class:`FitReport` can carry, in the order they are reported."""

FAILURE_FLAGS: tuple[str, ...] = ("non_finite", "loss_above_start", "chance_accuracy")
"""The flags of a training that failed (diverged, or learned nothing); ``gradient_not_small`` alone means a
training that has not (yet) converged."""


@dataclass(frozen=True)
class FitThresholds:
    """When :func:`assess_fit` raises each flag.

    Attributes
    ----------
    loss_rtol : float
        ``loss_above_start`` when ``loss > initial_loss + loss_rtol * |initial_loss|``. Default 0: any rise
        of the train loss over training is a failure (full-data losses are deterministic, so there is no
        noise to tolerate; a training that did not move at all leaves the loss equal, not above).
    chance_margin : float
        Smallest margin above chance of ``chance_accuracy`` (accuracy units), default 0.05.
    chance_stds : float
        The margin is ``max(chance_margin, chance_stds * sqrt(c (1 - c) / N))`` for chance accuracy ``c`` on
        ``N`` training samples: the accuracy of a guessing classifier has that binomial standard deviation,
        so a small training set (N = 40 at c = 0.1: 2 std = 0.095) needs a wider margin than 0.05. Default 2.
        Without ``N`` the margin is ``chance_margin``.
    grad_rel_max : float
        ``gradient_not_small`` when ``|g| / |g_0| > grad_rel_max`` (full-data gradient norms at the trained
        and the initial weights). Default 0.5: training has not even halved the gradient.

    Notes
    -----
    Measured with :func:`qlandscape.jobs.fit_report` (majority-class chance, float64 gradients), train split:

    - healthy, converged: ``qlandscape demo`` default (MLP, 30 epochs, 1437 samples) ``|g|/|g0|`` = 0.0044,
      train accuracy 1.000, loss 2.283 -> 0.0029; ``digits-small`` (12 epochs, 450 samples): patch MLPs
      0.019-0.113 (accuracy 0.67-1.00), 4- and 9-patch QNNs 0.089-0.249 (accuracy 0.84-0.97).
    - healthy, short or weak: ``demo --fast`` (5 epochs) 0.38 (accuracy 0.92); ``digits-small --fast``
      (3 epochs, 225 samples) 0.14-0.30 except the 1-patch QNN, 0.75 (accuracy 0.37, still falling), and the
      1-patch QNNs of the full preset 0.53-0.59 (accuracy 0.51-0.58, loss still falling 2-6% per epoch; along
      their trajectory 0.26-0.89 from epoch to epoch, Adam at a constant rate): flagged
      ``gradient_not_small``, truthfully, and nothing else. Every healthy run's loss fell (chance: 0.116,
      flagged at <= 0.166; lowest healthy accuracy 0.37).
    - diverged (``train.lr=1e6``): ``digits-small --fast`` patch MLPs loss 7.16 -> 4.1e7 and 4.90 -> 2.9e7,
      accuracy 0.102 and 0.084, ``|g|/|g0|`` 2.43 and 1.51; its QNNs 4.07 -> 4.87 and 2.78 -> 3.15, accuracy
      0.089 and 0.084, 1.02 and 1.36; ``demo`` 2.28 -> 2.4e6 at accuracy 0.82 (0.80), caught by the loss.
      With ``lr=1`` or ``10`` the same: loss above start, accuracy <= 0.11, ``|g|/|g0|`` 0.97-2.4.

    The gradient ratio alone does not separate the two (0.75 healthy vs 0.80 diverged), the loss and the
    accuracy do, by wide margins; the gradient says whether a healthy run got near a stationary point.
    """

    loss_rtol: float = 0.0
    chance_margin: float = 0.05
    chance_stds: float = 2.0
    grad_rel_max: float = 0.5

    def __post_init__(self) -> None:
        for name in ("loss_rtol", "chance_margin", "chance_stds", "grad_rel_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"FitThresholds.{name} must be a finite number >= 0, got {value!r}")

    def chance_threshold(self, chance: float, n_samples: Optional[int] = None) -> float:
        """Accuracy at or below which ``chance_accuracy`` is raised: ``chance + margin`` (see the class);
        NaN for an unknown (NaN) chance."""
        if not math.isfinite(chance):
            return float("nan")
        margin = self.chance_margin
        if n_samples:
            margin = max(margin, self.chance_stds * math.sqrt(chance * (1 - chance) / n_samples))
        return chance + margin


def _json_number(value: Any) -> Any:
    """A float for strict JSON: NaN and inf -> None (the flags and messages say what was not finite)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _as_float(value: Any) -> float:
    """JSON value -> float (None -> NaN; "inf" strings as written by results' JSON)."""
    return float("nan") if value is None else float(value)


@dataclass
class FitReport:
    """Verdict of :func:`assess_fit` on one trained model.

    Attributes
    ----------
    flags : list of str
        The raised flags, a subset of :data:`FIT_FLAGS` in its order; empty when the fit looks fine.
    messages : list of str
        One human line per flag (same order), with the numbers.
    initial_loss, loss : float
        Full-data train loss at the initialization (record 0) and at the trained weights (loss units).
    accuracy : float
        Train accuracy at the trained weights (fraction in [0, 1]); NaN without a metric.
    chance_accuracy : float
        The accuracy of guessing (``1 / n_classes``, or the majority-class rate the caller gave); NaN if unknown.
    grad_norm : float
        Euclidean norm of the full-data train-loss gradient at the trained weights (loss units per parameter
        unit); NaN if not computed, inf if not finite.
    grad_norm_rel : float
        ``grad_norm / initial_grad_norm``: the fraction of the initial gradient left (dimensionless); NaN when
        either norm is missing or the initial one is 0.
    initial_accuracy : float
        Train accuracy at the initialization; NaN without a metric.
    initial_grad_norm : float
        Gradient norm at the initialization; NaN if not computed.
    chance_threshold : float
        Accuracy at or below which ``chance_accuracy`` was raised (:meth:`FitThresholds.chance_threshold`).
    n_samples : int or None
        Training samples behind the accuracy (for the chance margin), when known.
    record : int
        Index of the assessed record (:attr:`TrainResult.minimum`).
    thresholds : FitThresholds
    """

    flags: list[str]
    messages: list[str]
    initial_loss: float
    loss: float
    accuracy: float = float("nan")
    chance_accuracy: float = float("nan")
    grad_norm: float = float("nan")
    grad_norm_rel: float = float("nan")
    initial_accuracy: float = float("nan")
    initial_grad_norm: float = float("nan")
    chance_threshold: float = float("nan")
    n_samples: Optional[int] = None
    record: int = -1
    thresholds: FitThresholds = field(default_factory=FitThresholds)

    @property
    def ok(self) -> bool:
        """No flag raised."""
        return not self.flags

    @property
    def failed(self) -> bool:
        """A flag of :data:`FAILURE_FLAGS` raised: the training diverged or learned nothing (as opposed to
        ``gradient_not_small`` alone: not converged yet)."""
        return any(f in FAILURE_FLAGS for f in self.flags)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-able form: the fields (``thresholds`` as a dict; NaN and inf -> None, the flags and
        messages keep what was not finite) and ``ok``; :meth:`from_dict` inverts it (None -> NaN)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "thresholds"}
        out = {k: (list(v) if isinstance(v, list) else _json_number(v)) for k, v in out.items()}
        out["thresholds"] = dataclasses.asdict(self.thresholds)
        out["ok"] = self.ok
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "FitReport":
        """Inverse of :meth:`to_dict` (extra keys such as ``ok`` are ignored).

        Raises
        ------
        ValueError
            ``raw`` is not a report's dict (missing keys, unknown flags).
        """
        try:
            flags = [str(f) for f in raw["flags"]]
            unknown = sorted(set(flags) - set(FIT_FLAGS))
            if unknown:
                raise ValueError(f"unknown fit flag(s) {unknown}; known: {list(FIT_FLAGS)}")
            floats = {k: _as_float(raw.get(k)) for k in ("initial_loss", "loss", "accuracy", "chance_accuracy",
                                                          "grad_norm", "grad_norm_rel", "initial_accuracy",
                                                          "initial_grad_norm", "chance_threshold")}
            n = raw.get("n_samples")
            return cls(flags=flags, messages=[str(m) for m in raw["messages"]], **floats,
                       n_samples=None if n is None else int(n), record=int(raw.get("record", -1)),
                       thresholds=FitThresholds(**raw.get("thresholds", {})))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a FitReport dict: {exc!r}") from None

    def summary(self) -> str:
        """One line: the verdict with its numbers."""
        acc = "" if math.isnan(self.accuracy) else f", train accuracy {self.accuracy:.3f}"
        if not math.isnan(self.chance_accuracy):
            acc += f" (chance {self.chance_accuracy:.3f})"
        grad = "" if math.isnan(self.grad_norm_rel) else f", |grad| {self.grad_norm_rel:.3g} of its initial norm"
        numbers = f"train loss {self.initial_loss:.4g} -> {self.loss:.4g}{acc}{grad}"
        if self.ok:
            return f"fit ok: {numbers}"
        verdict = "training failed, not a minimum" if self.failed else "not converged"
        return f"fit {verdict} [{', '.join(self.flags)}]: {numbers}"


def _real(value: Optional[float], name: str) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
    return float(value)


def assess_fit(tr: TrainResult, *, n_classes: Optional[int] = None, grad_norm: Optional[float] = None,
               initial_grad_norm: Optional[float] = None, thresholds: Optional[FitThresholds] = None,
               n_samples: Optional[int] = None, chance_accuracy: Optional[float] = None) -> FitReport:
    """Whether the trained weights of ``tr`` are at (near) a minimum of the training loss.

    Parameters
    ----------
    tr : TrainResult
        The training; its record :attr:`~TrainResult.minimum` is assessed against record 0 (the
        initialization). ``train_metric`` must be the accuracy when ``n_classes`` or ``chance_accuracy`` is
        given (it is for cross-entropy training).
    n_classes : int, optional
        Number of classes ``C`` >= 2: chance accuracy ``1 / C``. Without it (and ``chance_accuracy``) the
        ``chance_accuracy`` flag is not checked.
    grad_norm, initial_grad_norm : float, optional
        Full-data gradient norms of the train loss at the trained and at the initial weights
        (:func:`gradient_norm`). ``gradient_not_small`` needs both; a non-finite ``grad_norm`` is
        ``non_finite``.
    thresholds : FitThresholds, optional
        Default ``FitThresholds()``.
    n_samples : int, optional
        Training samples behind the accuracies: widens the chance margin to 2 binomial standard deviations.
    chance_accuracy : float, optional
        Overrides ``1 / n_classes``, e.g. with the majority-class rate of an unbalanced training set (the
        accuracy of always predicting the most frequent class).

    Returns
    -------
    FitReport

    Raises
    ------
    ValueError
        ``tr`` has no records, or ``n_classes`` / ``n_samples`` / ``chance_accuracy`` out of range.
    """
    th = thresholds if thresholds is not None else FitThresholds()
    losses = np.asarray(tr.train_loss, dtype=np.float64)
    if losses.size == 0:
        raise ValueError("the TrainResult has no records (not even the initialization)")
    if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer))
                                  or n_classes < 2):
        raise ValueError(f"n_classes must be an integer >= 2 or None, got {n_classes!r}")
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer))
                                  or n_samples < 1):
        raise ValueError(f"n_samples must be an integer >= 1 or None, got {n_samples!r}")
    chance = _real(chance_accuracy, "chance_accuracy")
    if chance_accuracy is not None and not 0 < chance < 1:
        raise ValueError(f"chance_accuracy must be in (0, 1), got {chance_accuracy!r}")
    if chance_accuracy is None and n_classes is not None:
        chance = 1.0 / int(n_classes)
    i = tr.minimum
    metrics = np.asarray(tr.train_metric, dtype=np.float64)
    loss0, loss = float(losses[0]), float(losses[i])
    acc0 = float(metrics[0]) if metrics.size else float("nan")
    acc = float(metrics[i]) if metrics.size > i else float("nan")
    g, g0 = _real(grad_norm, "grad_norm"), _real(initial_grad_norm, "initial_grad_norm")
    rel = g / g0 if math.isfinite(g) and math.isfinite(g0) and g0 > 0 else float("nan")
    steps = np.asarray(tr.steps)
    where = f"record {i}" + (f", step {int(steps[i])}" if steps.size > i else "")
    flags: list[str] = []
    messages: list[str] = []

    traj = np.asarray(tr.trajectory)
    bad_params = int(np.count_nonzero(~np.isfinite(traj[i]))) if traj.ndim == 2 and traj.shape[0] > i else 0
    bad = [f"the train loss at the trained weights ({where}) is {loss}" if not math.isfinite(loss) else "",
           f"the initial train loss is {loss0}" if not math.isfinite(loss0) else "",
           f"{bad_params} of {traj.shape[1]} trained parameters are NaN or inf" if bad_params else "",
           f"the full-data gradient norm is {g}" if grad_norm is not None and not math.isfinite(g) else ""]
    bad = [b for b in bad if b]
    if bad:
        flags.append("non_finite")
        messages.append(f"non_finite: {'; '.join(bad)}: the training diverged (lower the learning rate) or the "
                        "data holds NaN/inf; these weights are not a minimum")
    if math.isfinite(loss) and math.isfinite(loss0) and loss > loss0 + th.loss_rtol * abs(loss0):
        flags.append("loss_above_start")
        messages.append(f"loss_above_start: train loss {loss:.4g} at the trained weights ({where}) is above the "
                        f"initial {loss0:.4g}: the training diverged (lower the learning rate and retrain); "
                        "these weights are not a minimum")
    limit = th.chance_threshold(chance, n_samples)
    if math.isfinite(acc) and math.isfinite(limit) and acc <= limit:
        flags.append("chance_accuracy")
        messages.append(f"chance_accuracy: train accuracy {acc:.3f} at the trained weights is within "
                        f"{limit - chance:.3f} of chance ({chance:.3f}; flagged at <= {limit:.3f}"
                        f"{f' on {n_samples} samples' if n_samples else ''}): the model has not learned the "
                        "training set (diverged, too small a learning rate, or too few epochs)")
    if math.isfinite(rel) and rel > th.grad_rel_max:
        flags.append("gradient_not_small")
        messages.append(f"gradient_not_small: the full-data gradient norm {g:.4g} at the trained weights is "
                        f"{rel:.3g} of its initial {g0:.4g} (flagged above {th.grad_rel_max:g}): the training "
                        "has not reached a stationary point (train longer, or lower the learning rate); "
                        "curvature measured here is not a minimum's")
    return FitReport(flags=flags, messages=messages, initial_loss=loss0, loss=loss, accuracy=acc,
                     chance_accuracy=chance, grad_norm=g, grad_norm_rel=rel, initial_accuracy=acc0,
                     initial_grad_norm=g0, chance_threshold=limit,
                     n_samples=None if n_samples is None else int(n_samples), record=int(i), thresholds=th)


def gradient_norm(model: nn.Module, loss: LossSpec, data: DataSpec, *,
                  theta: Optional[Union[Tensor, np.ndarray]] = None,
                  dtype: DtypeSpec = torch.float64, batch_size: Optional[int] = None) -> float:
    """Euclidean norm of the full-data gradient of the mean loss at ``model``'s weights (or at ``theta``).

    Computed by :meth:`qlandscape.Objective.gradient` over all trainable parameters, in eval mode (as
    :func:`~qlandscape.train.train` evaluates its recorded losses), ``reduction="mean"``.

    Parameters
    ----------
    model : nn.Module
    loss : str or LossFunction
        As :class:`~qlandscape.Objective` takes it (``"cross_entropy"`` for the jobs' trainings).
    data : (inputs, targets) or iterable of batches
        The training data, e.g. ``Dataset.train``.
    theta : Tensor or ndarray, shape (n,), optional
        Flat parameter vector (:class:`~qlandscape.params.ParamSpace` order of all trainable parameters, as
        :attr:`TrainResult.trajectory` rows) to evaluate at instead of the model's own weights.
    dtype : torch.dtype or str, optional
        Arithmetic, default float64 (the analyses' default: exact at float32 weights too, which matters far
        from a minimum, e.g. circuit angles of 1e6 rad after a diverged training); None keeps the model's.
    batch_size : int, optional
        Evaluate in chunks of this many samples (bounds memory; the result is the same full-data gradient);
        default one chunk.

    Returns
    -------
    float
        ``||grad L||_2`` (loss units per parameter unit); ``inf`` when the gradient (or the loss) is NaN or
        inf, which the objective refuses to return.
    """
    objective = Objective(model, loss, data, dtype=dtype, batch_size=batch_size, cache_graph=False)
    try:
        g = objective.gradient(None if theta is None else torch.as_tensor(theta))
    except NonFiniteLossError:
        return float("inf")
    return float(torch.linalg.vector_norm(g.to(torch.float64)))
