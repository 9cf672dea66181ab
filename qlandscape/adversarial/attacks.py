"""Input-space adversarial perturbations (FGSM, PGD) and robust accuracy.

An :class:`Attack` maximizes the per-sample loss of a model over a ball around each input:

    x_adv = argmax_{||x' - x|| <= epsilon, x' in clamp box} l(f(x'), y)

approximately, by one signed/normalized gradient step (FGSM, Goodfellow et al. 2015) or by
projected gradient ascent (PGD, Madry et al. 2018). Norms are per sample: ``"linf"`` bounds
every input entry by ``epsilon``, ``"l2"`` bounds the Euclidean norm of each sample's
perturbation (all non-batch dimensions flattened). The update rules are those of
``torchattacks`` (FGSM, PGD, PGDL2), which the tests reproduce to 1e-6.

Units: ``epsilon`` is in the units of the inputs the model sees. The digits data of
:func:`qlandscape.data.load_digits` are standardized (zero mean, unit variance per pixel), not
images in ``[0, 1]``: an ``epsilon`` of 0.1 there is a tenth of a pixel's standard deviation,
and the valid range of an input is the range the data actually takes (:func:`valid_range`),
not ``(0, 1)``.

The gradient is taken of the SUM of per-sample losses over the batch, so the gradient of each
sample does not depend on the batch it sits in (the sign and the normalized direction are the
same as for torch's batch mean). The model is run in eval mode during the attack (BatchNorm
uses its running statistics and is not updated, Dropout is off) and its modes are restored
afterwards; no gradient reaches its parameters (``.grad`` is left as it was).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..config.adversarial import ATTACK_KINDS, ATTACK_NORMS, AdversarialConfig
from ..losses import LossFunction, LossSpec, make_loss
from ..results import Result

AttackKind = Literal["fgsm", "pgd"]
AttackNorm = Literal["linf", "l2"]
_DEFAULT = AdversarialConfig()  # the one source of the attack's defaults: the [adversarial] section's

__all__ = ["Attack", "RobustEvaluation", "eval_mode", "valid_range", "robust_accuracy", "robust_evaluate",
           "ATTACK_KINDS", "ATTACK_NORMS"]


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Attack:
    """An FGSM or PGD attack in the L-inf or L2 norm (validated at construction).

    Parameters
    ----------
    kind : {"fgsm", "pgd"}
        FGSM: one step of ``step_size`` from ``x`` (no random start; ``steps`` and
        ``random_start`` are not used). PGD: ``steps`` projected steps.
    norm : {"linf", "l2"}
        The ball: ``max_j |x'_j - x_j| <= epsilon`` (linf), or ``||x' - x||_2 <= epsilon`` per
        sample over all non-batch dimensions (l2). A linf step moves by ``step_size * sign(grad)``,
        an l2 step by ``step_size * grad / ||grad||`` (per sample).
    epsilon : float
        Radius of the ball, >= 0, in input units (see the module doc for standardized data).
        ``epsilon = 0`` returns a copy of ``x``. The defaults of ``kind``, ``norm``, ``epsilon`` (0.3),
        ``steps`` (7), ``step_size`` and ``random_start`` are those of the ``[adversarial]`` configuration
        section (:class:`~qlandscape.config.AdversarialConfig`), their one source.
    steps : int
        PGD iterations, >= 1.
    step_size : float, optional
        Step length (> 0) in input units. Default: ``2.5 * epsilon / steps`` for PGD (Madry et
        al.), ``epsilon`` for FGSM.
    random_start : bool
        PGD only: start from a uniform point of the linf ball, or (l2) from a Gaussian direction
        scaled to a radius drawn uniformly in ``[0, epsilon]`` (as torchattacks), then clamp.
    clamp : (low, high), optional
        Valid input range; adversarial inputs are clipped into it (e.g. ``(0, 1)`` for images,
        :func:`valid_range` for standardized data). An input entry already outside the range is
        never pushed further out (its box is widened to include it), so ``x_adv`` always stays
        within the epsilon ball.
    seed : int
        Seed of the random start: :meth:`perturb` without a generator draws from a fresh
        ``torch.Generator`` seeded with it, so one call is reproducible.

    Raises
    ------
    ValueError
        For an unknown kind or norm, a negative or non-finite ``epsilon``, ``steps < 1``, a
        non-positive ``step_size``, or a clamp with ``low >= high``; the message names the field.
    """

    kind: AttackKind = _DEFAULT.kind  # type: ignore[assignment]
    norm: AttackNorm = _DEFAULT.norm  # type: ignore[assignment]
    epsilon: float = _DEFAULT.epsilon
    steps: int = _DEFAULT.steps
    step_size: Optional[float] = _DEFAULT.step_size
    random_start: bool = _DEFAULT.random_start
    clamp: Optional[tuple[float, float]] = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"Attack.kind must be one of {list(ATTACK_KINDS)}, got {self.kind!r}")
        if self.norm not in ATTACK_NORMS:
            raise ValueError(f"Attack.norm must be one of {list(ATTACK_NORMS)}, got {self.norm!r}")
        if not (_is_real(self.epsilon) and math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise ValueError(f"Attack.epsilon must be a finite number >= 0 (the radius of the ball in input units), "
                             f"got {self.epsilon!r}")
        if not (_is_int(self.steps) and self.steps >= 1):
            raise ValueError(f"Attack.steps must be an int >= 1, got {self.steps!r}")
        if self.step_size is not None and not (_is_real(self.step_size) and math.isfinite(self.step_size)
                                               and self.step_size > 0):
            raise ValueError(f"Attack.step_size must be a finite number > 0, or None for the default "
                             f"(2.5 * epsilon / steps for PGD, epsilon for FGSM), got {self.step_size!r}")
        if not isinstance(self.random_start, (bool, np.bool_)):
            raise ValueError(f"Attack.random_start must be a bool, got {self.random_start!r}")
        if not _is_int(self.seed):
            raise ValueError(f"Attack.seed must be an int, got {self.seed!r}")
        object.__setattr__(self, "epsilon", float(self.epsilon))
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "seed", int(self.seed))
        if self.step_size is not None:
            object.__setattr__(self, "step_size", float(self.step_size))
        if self.clamp is not None:
            object.__setattr__(self, "clamp", _check_clamp(self.clamp))

    @property
    def resolved_step_size(self) -> float:
        """The step length used: ``step_size``, or its default (0 when ``epsilon == 0``)."""
        if self.step_size is not None:
            return self.step_size
        return self.epsilon if self.kind == "fgsm" else 2.5 * self.epsilon / self.steps

    def as_dict(self) -> dict[str, Any]:
        """The configuration (with the resolved step size), for provenance."""
        out = asdict(self)
        out["clamp"] = None if self.clamp is None else list(self.clamp)
        out["resolved_step_size"] = self.resolved_step_size
        return out

    def generator(self) -> torch.Generator:
        """A CPU generator seeded with :attr:`seed`: pass the same one to every :meth:`perturb` call of
        a training run so that successive batches draw fresh, yet reproducible, random starts."""
        return torch.Generator(device="cpu").manual_seed(self.seed)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: Optional[LossSpec] = None, *,
                generator: Optional[torch.Generator] = None) -> Tensor:
        """Adversarial inputs for one batch.

        Parameters
        ----------
        model : nn.Module
            Run in eval mode during the attack; its modes are restored and its parameters (and
            their ``.grad``) are not changed.
        x : Tensor, shape (B, ...)
            Clean inputs (not modified), in the dtype and on the device the model expects.
        y : Tensor, shape (B, ...)
            Targets.
        loss_fn : str, nn.Module, callable or LossFunction, optional
            The loss to increase, as in :func:`qlandscape.losses.make_loss` (default:
            ``"cross_entropy"``); its per-sample values are summed over the batch.
        generator : torch.Generator, optional
            Source of the random start (CPU). Default: a fresh one seeded with :attr:`seed`.

        Returns
        -------
        Tensor, shape (B, ...)
            Detached adversarial inputs, same dtype and device as ``x``, within the epsilon ball of
            each sample and within the clamp box.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 1:
            raise ValueError("x must be a floating tensor with a batch dimension, shape (B, ...)")
        if not isinstance(y, Tensor) or y.dim() < 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must be a tensor with the batch size of x ({x.shape[0]}), got "
                             f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
        x0 = x.detach().clone()
        if self.epsilon == 0 or x0.shape[0] == 0:
            return x0
        loss = make_loss("cross_entropy" if loss_fn is None else loss_fn)
        low, high = self._box(x0)
        gen = self.generator() if generator is None else generator
        with eval_mode(model):
            if self.kind == "fgsm":
                return self._step(x0, self._grad(model, loss, x0, y), x0, low, high)
            x_adv = self._random_start(x0, low, high, gen) if self.random_start else x0.clone()
            for _ in range(self.steps):
                x_adv = self._step(x_adv, self._grad(model, loss, x_adv, y), x0, low, high)
        return x_adv

    # ------------------------------------------------------------------ pieces of perturb
    def _box(self, x0: Tensor) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """Per-entry clamp bounds, widened to include entries of ``x0`` already outside the range."""
        if self.clamp is None:
            return None, None
        lo, hi = self.clamp
        return torch.clamp(x0, max=lo), torch.clamp(x0, min=hi)

    @staticmethod
    def _grad(model: nn.Module, loss: LossFunction, x_adv: Tensor, y: Tensor) -> Tensor:
        """Gradient of the summed per-sample loss with respect to the inputs only, shape of ``x_adv``."""
        xr = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            value = loss.per_sample(model(xr), y).sum()
            (g,) = torch.autograd.grad(value, xr)
        return g.detach()

    def _step(self, x_adv: Tensor, g: Tensor, x0: Tensor, low: Optional[Tensor], high: Optional[Tensor]) -> Tensor:
        """One ascent step from ``x_adv``, projected onto the ball around ``x0`` and into the box."""
        alpha = self.resolved_step_size
        if self.norm == "linf":
            moved = x_adv + alpha * g.sign()
        else:
            moved = x_adv + alpha * g / _sample_norms(g).clamp_min(torch.finfo(g.dtype).tiny)
        return self._project(moved - x0, x0, low, high)

    def _project(self, delta: Tensor, x0: Tensor, low: Optional[Tensor], high: Optional[Tensor]) -> Tensor:
        eps = self.epsilon
        if self.norm == "linf":
            delta = delta.clamp(-eps, eps)
        else:
            norms = _sample_norms(delta)
            delta = delta * torch.where(norms > eps, eps / norms.clamp_min(torch.finfo(norms.dtype).tiny),
                                        torch.ones_like(norms))
        out = x0 + delta
        if low is not None and high is not None:
            out = torch.minimum(torch.maximum(out, low), high)  # moves entries towards x0: stays in the ball
        return out.detach()

    def _random_start(self, x0: Tensor, low: Optional[Tensor], high: Optional[Tensor],
                      gen: torch.Generator) -> Tensor:
        eps = self.epsilon
        if self.norm == "linf":
            u = torch.rand(x0.shape, generator=gen, dtype=torch.float64)
            delta = ((2 * u - 1) * eps).to(x0.device, x0.dtype)
        else:
            d = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            r = torch.rand((x0.shape[0],) + (1,) * (x0.dim() - 1), generator=gen, dtype=torch.float64)
            delta = (d * (r * eps) / _sample_norms(d).clamp_min(torch.finfo(d.dtype).tiny)).to(x0.device, x0.dtype)
        return self._project(delta, x0, low, high)


def _check_clamp(clamp: Any) -> tuple[float, float]:
    if isinstance(clamp, (str, bytes)) or not isinstance(clamp, Sequence) or len(clamp) != 2:
        raise ValueError(f"Attack.clamp must be (low, high) or None, got {clamp!r}")
    lo, hi = clamp
    if not (_is_real(lo) and _is_real(hi) and math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"Attack.clamp must hold two finite numbers (low, high), got {clamp!r}")
    if not lo < hi:
        raise ValueError(f"Attack.clamp needs low < high, got {clamp!r}; use clamp=None for no valid range")
    return float(lo), float(hi)


def _sample_norms(t: Tensor) -> Tensor:
    """Euclidean norm of each sample of ``t`` (shape ``(B, ...)``), shaped ``(B, 1, ..., 1)`` to broadcast."""
    return t.reshape(t.shape[0], -1).norm(dim=1).reshape((t.shape[0],) + (1,) * (t.dim() - 1))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside; every submodule's ``training`` flag is restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def valid_range(*tensors: Tensor) -> tuple[float, float]:
    """The smallest and largest entry over the given data tensors: the clamp box of an attack.

    The datasets of :mod:`qlandscape.data` are standardized, so inputs are not in ``[0, 1]``: a
    perturbed input is "valid" when it stays within the range the data take. This is one global
    box for all entries (a pixel whose own range is narrower may be moved beyond it); pass the
    training and test inputs together to cover both. For raw images use ``clamp=(0, 1)``.

    Parameters
    ----------
    *tensors : Tensor, any shape
        One or more non-empty data tensors (e.g. ``x_train, x_test``).

    Returns
    -------
    (low, high) : tuple of float

    Raises
    ------
    ValueError
        With no or empty tensors, NaN/inf entries, or constant data (``low == high``).
    """
    if not tensors or any(not isinstance(t, Tensor) or t.numel() == 0 for t in tensors):
        raise ValueError("valid_range needs one or more non-empty tensors (e.g. valid_range(x_train, x_test))")
    lo = min(float(t.min()) for t in tensors)
    hi = max(float(t.max()) for t in tensors)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("the data hold NaN or inf, so they define no valid range")
    if not lo < hi:
        raise ValueError(f"the data are constant ({lo}), so they define no valid range; use clamp=None")
    return lo, hi


@dataclass
class RobustEvaluation(Result):
    """Clean and adversarial loss/accuracy of a model on a dataset.

    Attributes
    ----------
    clean_loss, robust_loss : float
        Mean per-sample loss on the clean / adversarial inputs (the loss's own mean: class
        weights and ignored targets as in torch).
    clean_accuracy, robust_accuracy : float
        Mean metric (accuracy, in [0, 1]) on the clean / adversarial inputs.
    n_samples : int
    attack : dict
        :meth:`Attack.as_dict` of the attack used.
    loss : str
        Name of the loss.
    """

    clean_loss: float
    clean_accuracy: float
    robust_loss: float
    robust_accuracy: float
    n_samples: int
    attack: dict = field(default_factory=dict)
    loss: str = "cross_entropy"


def robust_evaluate(model: nn.Module, x: Tensor, y: Tensor, attack: Attack, *, batch_size: int = 256,
                    loss_fn: Optional[LossSpec] = None) -> RobustEvaluation:
    """Clean and robust loss and accuracy of ``model`` on ``(x, y)`` under ``attack``.

    Parameters
    ----------
    model : nn.Module
        Evaluated in eval mode (modes restored afterwards); not changed.
    x : Tensor, shape (N, ...)
    y : Tensor, shape (N,)
    attack : Attack
        Run batch by batch; the random starts of all batches come from one generator seeded with
        ``attack.seed`` (reproducible for a given ``batch_size``).
    batch_size : int
        Samples per attack batch (bounds memory).
    loss_fn : loss specification, optional
        As in :meth:`Attack.perturb` (default ``"cross_entropy"``, whose metric is accuracy).

    Raises
    ------
    ValueError
        For a loss without a metric (no accuracy to report), mismatched or empty data, or a
        bad ``batch_size``.
    """
    if not isinstance(attack, Attack):
        raise ValueError(f"attack must be an Attack, got {type(attack).__name__}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)) or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError("x and y must be non-empty tensors with the same number of samples")
    loss = make_loss("cross_entropy" if loss_fn is None else loss_fn)
    if loss.metric is None:
        raise ValueError(f"the loss {loss.name!r} has no metric, so there is no accuracy to report; pass a "
                         "classification loss ('cross_entropy', 'nll', 'bce_with_logits') or one with metric=")
    gen = attack.generator()
    sums = np.zeros(4)  # clean loss, clean metric, robust loss, robust metric
    den = np.zeros(2)  # loss denominator, metric denominator
    with eval_mode(model):
        for s in range(0, x.shape[0], batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            x_adv = attack.perturb(model, xb, yb, loss, generator=gen)
            with torch.no_grad():
                for k, inputs in enumerate((xb, x_adv)):
                    out = model(inputs)
                    sums[2 * k] += float(loss.per_sample(out, yb).sum())
                    sums[2 * k + 1] += float(loss.metric(out, yb).sum())
            den += (float(loss.denominator(yb).sum()), float(loss.metric_denominator(yb).sum()))
    return RobustEvaluation(clean_loss=float(sums[0] / den[0]), clean_accuracy=float(sums[1] / den[1]),
                            robust_loss=float(sums[2] / den[0]), robust_accuracy=float(sums[3] / den[1]),
                            n_samples=int(x.shape[0]), attack=attack.as_dict(), loss=loss.name)


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, attack: Attack, *, batch_size: int = 256,
                    loss_fn: Optional[LossSpec] = None) -> float:
    """Accuracy (in [0, 1]) of ``model`` on the adversarial inputs of ``attack``; see :func:`robust_evaluate`."""
    return robust_evaluate(model, x, y, attack, batch_size=batch_size, loss_fn=loss_fn).robust_accuracy

