"""Gradient variance at random initialization: the barren-plateau diagnostic.

A model family is *trainable from a random start* only if the gradient of its loss at a random
initialization is large enough to be resolved. McClean et al. (2018, "Barren plateaus in quantum
neural network training landscapes", Nat. Commun. 9, 4812) showed that for sufficiently random
parameterized quantum circuits the variance over initializations of each partial derivative,

    Var_theta[ dL/dtheta_k ],        theta ~ the initialization distribution,

vanishes exponentially with the number of qubits (and, for global costs, with depth once the
circuit forms a 2-design): a *barren plateau*. The mean gradient is then zero as well, so by
Chebyshev's inequality a gradient component larger than ``eps`` occurs with probability at most
``Var / eps^2``, and resolving it takes exponentially many measurement shots. Cerezo et al. (2021,
"Cost function dependent barren plateaus in shallow parametrized quantum circuits", Nat. Commun.
12, 1791) showed that the cost matters: global costs (observables acting on all qubits) have
barren plateaus even at shallow depth, while local costs keep a variance that decays at most
polynomially for logarithmic depth.

:func:`gradient_variance` measures this diagnostic for ANY torch model, classical or quantum,
through the same :class:`~qlandscape.objective.Objective` every other routine uses: for each of
``n_inits`` initializations it builds a fresh model with ``factory(seed_i)``, computes the
gradient of the **training loss of the given data** (the full-data mean loss, the same objective
whose Hessian the curvature routines study; not a single-sample or single-observable cost) at that
random initialization, and reports, per parameter, the mean and the (unbiased, ``ddof=1``)
variance of the gradient over initializations. Plotting :attr:`GradientVarianceResult.mean_variance`
against the number of qubits or layers on a log scale shows an exponential decay (a barren
plateau) as a straight line. The distribution of initializations is whatever ``factory`` draws; the
variance is an estimate from ``n_inits`` samples (relative standard error about
``sqrt(2 / (n_inits - 1))`` for Gaussian-distributed gradients).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .losses import LossSpec
from .objective import DtypeSpec, NonFiniteLossError, Objective
from .params import ParamSelector, ParamSpace
from .progress import progress_bar
from .results import Result

__all__ = ["GradientVarianceResult", "gradient_variance", "init_seeds"]

SEED_RULE = "np.random.SeedSequence([seed, i]).generate_state(1)[0] % 2**31 for i = 0, 1, ... (first n_inits distinct)"
"""How :func:`init_seeds` derives the per-initialization seeds (recorded in every result)."""


@dataclass
class GradientVarianceResult(Result):
    """Gradients of the training loss over random initializations.

    Attributes
    ----------
    variance : ndarray, shape (n,)
        Per-parameter variance of ``dL/dtheta_k`` over initializations (``ddof=1``), in
        (loss units / parameter units)^2.
    mean : ndarray, shape (n,)
        Per-parameter mean gradient over initializations (loss units / parameter units).
    grad_norm_sq : ndarray, shape (n_inits,)
        Squared Euclidean norm of the gradient at each initialization.
    losses : ndarray, shape (n_inits,)
        Full-data loss at each initialization.
    seeds : list of int
        The seeds passed to the factory, one per initialization, in order.
    param_names : list of str
        Names of the parameter tensors spanning the flat vector (the objective's selection), in order.
    tensor_slices : dict
        ``name -> [start, stop)`` of each tensor in the flat vector of length ``n`` (in JSON key order
        after a save/load round trip: iterate :attr:`param_names` for the vector order).
    n_samples : int
        Number of data samples the loss averages over.
    info : dict
        Loss name, dtype, parameter selection, batch size, seed rule, and the first
        initialization's objective provenance.
    gradients : ndarray, shape (n_inits, n), optional
        The gradient at each initialization (loss units / parameter units), the rows that
        :attr:`variance` and :attr:`mean` summarize: resampling them gives intervals
        (:func:`qlandscape.stats.bootstrap_rows`). ``None`` in results saved before this field existed.
    """

    variance: np.ndarray
    mean: np.ndarray
    grad_norm_sq: np.ndarray
    losses: np.ndarray
    seeds: list
    param_names: list
    tensor_slices: dict
    n_samples: int
    info: dict = field(default_factory=dict)
    gradients: Optional[np.ndarray] = None

    @property
    def n_params(self) -> int:
        """Length ``n`` of the flat parameter vector."""
        return int(self.variance.shape[0])

    @property
    def n_inits(self) -> int:
        """Number of initializations."""
        return int(self.losses.shape[0])

    @property
    def mean_variance(self) -> float:
        """``(1/n) sum_k Var[dL/dtheta_k]``: the parameter-averaged gradient variance (McClean et al. 2018)."""
        return float(np.mean(self.variance))

    def rows(self) -> np.ndarray:
        """:attr:`gradients`, shape ``(n_inits, n)``; ValueError naming the way out when the result has none."""
        if self.gradients is None:
            raise ValueError("this GradientVarianceResult has no per-initialization gradients (saved by an older "
                             "version); recompute it with qlandscape.gradient_variance to get intervals")
        return np.asarray(self.gradients, dtype=np.float64)

    def variance_by_tensor(self) -> dict[str, float]:
        """Mean of :attr:`variance` over the entries of each parameter tensor, ``name -> float``, in vector order."""
        return {name: float(np.mean(self.variance[int(self.tensor_slices[name][0]):int(self.tensor_slices[name][1])]))
                for name in self.param_names}

    def summary(self) -> str:
        """Multi-line text: mean variance, mean loss and gradient norm, and the variance per tensor."""
        lines = [f"gradient variance over {self.n_inits} initializations ({self.n_params} parameters, "
                 f"{self.n_samples} samples, loss {self.info.get('loss', '?')}): mean Var[dL/dtheta_k] = "
                 f"{self.mean_variance:.4g}",
                 f"  loss {np.mean(self.losses):.6g} +- {np.std(self.losses, ddof=1):.2g}; "
                 f"mean |grad|^2 {np.mean(self.grad_norm_sq):.4g}"]
        width = max((len(n) for n in self.tensor_slices), default=0)
        for name, v in self.variance_by_tensor().items():
            a, b = self.tensor_slices[name]
            lines.append(f"  {name:<{width}}  ({int(b) - int(a)} entries)  mean variance {v:.4g}")
        return "\n".join(lines)


def init_seeds(seed: int, n_inits: int) -> list[int]:
    """The seeds of :func:`gradient_variance`: the first ``n_inits`` distinct values of
    ``np.random.SeedSequence([seed, i]).generate_state(1)[0] % 2**31`` for ``i = 0, 1, ...``.

    Deterministic in ``seed``, independent of the platform, each in ``[0, 2**31)`` (accepted by
    ``torch.manual_seed``, ``np.random.default_rng`` and ``random.seed``), and the list for
    ``n_inits`` is a prefix of the list for any larger ``n_inits``.
    """
    out: list[int] = []
    seen: set[int] = set()
    i = 0
    while len(out) < n_inits:
        s = int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) % 2**31
        if s not in seen:
            seen.add(s)
            out.append(s)
        i += 1
    return out


def _jsonable_selector(params: ParamSelector) -> Any:
    """The parameter selection as JSON (regexes by their pattern)."""
    if params is None or isinstance(params, str):
        return params
    if isinstance(params, re.Pattern):
        return f"re:{params.pattern}"
    return [_jsonable_selector(p) for p in params]  # type: ignore[arg-type]


def _state(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Detached copies of every parameter and buffer, to detect a factory that ignores its seed."""
    items = list(model.named_parameters()) + list(model.named_buffers())
    return [(n, t.detach().to("cpu", copy=True)) for n, t in items]


def _same_state(a: list[tuple[str, Tensor]], b: list[tuple[str, Tensor]]) -> bool:
    return len(a) == len(b) and all(na == nb and ta.shape == tb.shape and ta.dtype == tb.dtype and torch.equal(ta, tb)
                                    for (na, ta), (nb, tb) in zip(a, b))


def _check_layout(space: ParamSpace, first: ParamSpace, i: int, seed: int) -> None:
    """ValueError naming the first tensor whose name or shape differs from the first initialization's."""
    if space == first:
        return
    for k in range(max(len(space.names), len(first.names))):
        want = (first.names[k], tuple(first.shapes[k])) if k < len(first.names) else None
        got = (space.names[k], tuple(space.shapes[k])) if k < len(space.names) else None
        if want != got:
            where = (f"tensor {k} is {got[0]!r} of shape {got[1]}" if got else f"it has no tensor {k}")
            expected = (f"{want[0]!r} of shape {want[1]}" if want else "no such tensor")
            raise ValueError(f"factory({seed}) (initialization {i}) returned a model with a different architecture "
                             f"from initialization 0: {where}, expected {expected}; gradients can only be compared "
                             "across initializations of the same parameter layout")


def gradient_variance(factory: Callable[[int], nn.Module], loss: LossSpec, data: tuple[Tensor, Tensor], *,
                      n_inits: int = 20, seed: int = 0, dtype: DtypeSpec = torch.float64,
                      batch_size: Optional[int] = None, params: ParamSelector = None,
                      progress: bool = True) -> GradientVarianceResult:
    """Per-parameter mean and variance of the training-loss gradient over random initializations.

    Parameters
    ----------
    factory : callable ``int -> nn.Module``
        ``factory(s)`` returns a freshly initialized model for the integer seed ``s``; what the seed
        seeds is the caller's choice (``torch.manual_seed(s)`` before building a classical model, or a
        model's own ``seed=`` argument). Every call must give the same parameter layout.
    loss : str, nn.Module or callable
        Per-sample loss, see :func:`qlandscape.losses.make_loss`.
    data : (inputs, targets) or iterable of (inputs, targets)
        The training data; the loss is the mean over all its ``N`` samples (as in
        :class:`~qlandscape.objective.Objective`).
    n_inits : int
        Number of initializations, at least 2 (a variance needs two samples).
    seed : int
        Non-negative master seed; the per-initialization seeds are :func:`init_seeds` ``(seed, n_inits)``.
    dtype : torch.dtype, str or None
        Evaluation dtype (default float64; ``None`` keeps each model's own).
    batch_size : int, optional
        Chunk size for the data (bounds memory; the loss is the same).
    params : ParamSelector
        Which parameters span the flat vector (default: all with ``requires_grad``).
    progress : bool
        Show a progress bar (also off with ``QLANDSCAPE_PROGRESS=0``).

    Returns
    -------
    GradientVarianceResult
        ``variance`` and ``mean`` of shape ``(n,)``; ``grad_norm_sq`` and ``losses`` of shape ``(n_inits,)``;
        ``gradients`` of shape ``(n_inits, n)``.
        Statistics are computed in float64 whatever ``dtype``.

    Raises
    ------
    ValueError
        ``n_inits < 2`` or a negative seed (before any model is built); a model whose parameter names
        or shapes differ from the first initialization's (naming the first differing tensor); models
        identical for every seed (a factory that ignores its seed: the variance would be exactly 0).
    TypeError
        ``factory`` is not callable or returns something that is not an ``nn.Module``.
    NonFiniteLossError
        A loss or gradient at some initialization is NaN/inf (the message names the initialization and seed).

    Notes
    -----
    Nothing here is specific to quantum models: a quantum layer enters through the same
    :class:`~qlandscape.objective.Objective` (first-order-only layers such as adjoint QNodes are fine,
    only gradients are taken). The factory may reseed global generators; this function does not restore them.
    """
    if isinstance(n_inits, bool) or not isinstance(n_inits, (int, np.integer)) or n_inits < 2:
        raise ValueError(f"n_inits must be an int >= 2 (a variance over initializations needs at least two), "
                         f"got {n_inits!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not callable(factory):
        raise TypeError(f"factory must be a callable seed -> nn.Module, got {type(factory).__name__}")
    n_inits = int(n_inits)
    seeds = init_seeds(int(seed), n_inits)

    grads: list[np.ndarray] = []
    losses: list[float] = []
    first_space: Optional[ParamSpace] = None
    first_state: Optional[list[tuple[str, Tensor]]] = None
    all_identical = True
    provenance: dict[str, Any] = {}
    n_samples = 0
    loss_name = ""
    dtype_name = ""
    with progress_bar(n_inits, "grad variance", progress) as bar:
        for i, s in enumerate(seeds):
            model = factory(s)
            if not isinstance(model, nn.Module):
                raise TypeError(f"factory({s}) (initialization {i}) returned a {type(model).__name__}, "
                                "not an nn.Module")
            space = ParamSpace.from_module(model, params)
            if first_space is None:
                first_space, first_state = space, _state(model)
            else:
                _check_layout(space, first_space, i, s)
                if all_identical:
                    all_identical = _same_state(_state(model), first_state)  # type: ignore[arg-type]
            try:
                objective = Objective(model, loss, data, dtype=dtype, batch_size=batch_size, params=params)
                value = objective.loss()
                g = objective.gradient()
            except NonFiniteLossError as exc:
                raise NonFiniteLossError(f"at initialization {i} (factory seed {s}): {exc}") from exc
            grads.append(g.detach().to("cpu", torch.float64).numpy())
            losses.append(float(value))
            if i == 0:
                provenance = objective.provenance()
                n_samples = int(objective.n_samples)
                loss_name = objective.loss_fn.name
                dtype_name = str(objective.dtype).replace("torch.", "")
            bar.update(1)
    if all_identical:
        raise ValueError(f"factory returned identically initialized models for all {n_inits} seeds {seeds}: it "
                         "must use its seed argument (e.g. torch.manual_seed(seed) before building the model, "
                         "or the model's own seed= option); the gradient variance would be exactly 0")

    assert first_space is not None
    G = np.stack(grads)  # (n_inits, n)
    info = dict(loss=loss_name, dtype=dtype_name, params=_jsonable_selector(params), batch_size=batch_size,
                n_inits=n_inits, seed=int(seed), seed_rule=SEED_RULE, n_params=int(G.shape[1]),
                model=provenance.get("model"), objective=provenance)
    return GradientVarianceResult(
        variance=np.var(G, axis=0, ddof=1), mean=np.mean(G, axis=0), grad_norm_sq=np.sum(G * G, axis=1),
        losses=np.asarray(losses, dtype=np.float64), seeds=seeds, param_names=list(first_space.names),
        tensor_slices={name: [sl.start, sl.stop] for name, sl, _ in first_space.slices()}, n_samples=n_samples,
        info=info, gradients=G)
