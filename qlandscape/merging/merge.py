"""Weight averaging of two networks and the loss barrier between them, before and after alignment."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..adapter import copy_module
from ..config import MergeConfig
from ..landscape.scan import InterpolationResult, interpolate
from ..losses import LossSpec
from ..objective import DtypeSpec, Objective
from ..results import Result
from .align import align_weights, check_same_architecture

__all__ = ["MergeResult", "average_weights", "interpolation_barriers"]


def average_weights(model_a: nn.Module, model_b: nn.Module, alpha: float = 0.5) -> nn.Module:
    """A copy of ``model_a`` holding ``(1 - alpha) * model_a + alpha * model_b`` (``torch.lerp``).

    Parameters
    ----------
    model_a, model_b : nn.Module
        Same architecture (ValueError naming the first difference otherwise); not modified.
    alpha : float
        Weight of ``model_b`` (finite; 0.5 is the midpoint, values outside [0, 1] extrapolate).

    Returns
    -------
    nn.Module

    Notes
    -----
    Every floating tensor of the ``state_dict`` is interpolated: parameters and buffers, so
    BatchNorm running means and variances are averaged too. Averaged running statistics are
    only an approximation of the statistics of the averaged network's own activations (they
    can be far off: Jordan et al. 2023, REPAIR, recompute them); they are what is used here.
    Integer buffers (BatchNorm ``num_batches_tracked``) are taken from ``model_a``.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number (the weight of model_b), got {alpha!r}")
    check_same_architecture(model_a, model_b)
    merged = copy_module(model_a)
    target, sb = merged.state_dict(), model_b.state_dict()
    with torch.no_grad():
        for key, value in target.items():
            if value.is_floating_point():
                value.copy_(torch.lerp(value, sb[key].to(value), float(alpha)))
    return merged


@dataclass
class MergeResult(Result):
    """Loss and error along ``a -> b`` (plain) and ``a -> aligned b``, and the midpoint merges.

    Attributes
    ----------
    t : ndarray, shape (m,)
        Interpolation coefficients on [0, 1] (``n_points`` of them, endpoints included).
    loss_plain, error_plain : ndarray, shape (m,)
        Mean loss and 0-1 error (``1 - accuracy``) at ``(1 - t) theta_a + t theta_b``.
    loss_aligned, error_aligned : ndarray, shape (m,), or None
        The same towards the aligned ``model_b`` (None without alignment).
    barrier_plain, error_barrier_plain, barrier_aligned, error_barrier_aligned : float
        Height of the loss / error above the straight line joining the endpoint values
        (Frankle et al. 2020; :func:`~qlandscape.landscape.interpolate`); NaN where not computed.
    loss_a, accuracy_a, loss_b, accuracy_b : float
        Endpoint values (``model_b``'s are the same before and after alignment).
    merged_loss_plain, merged_accuracy_plain, merged_loss_aligned, merged_accuracy_aligned : float
        Loss / accuracy of the weight average at ``alpha = 0.5`` (:func:`average_weights`).
    align : str or None
        "weight", "activation" or None.
    permutations : list of list of int, or None
        The alignment's permutations of ``model_b``'s hidden units.
    identity : list of bool, or None
    similarity_before, similarity_after : float
        As in :class:`~qlandscape.merging.AlignmentResult` (NaN without alignment).
    iterations : int
    mode : str
        Objective mode ("eval": running BatchNorm statistics; "train": batch statistics).
    wall_time_s : float
    provenance : dict
        The objective's provenance.
    """

    t: np.ndarray
    loss_plain: np.ndarray
    error_plain: np.ndarray
    barrier_plain: float
    error_barrier_plain: float
    loss_a: float
    accuracy_a: float
    loss_b: float
    accuracy_b: float
    merged_loss_plain: float
    merged_accuracy_plain: float
    loss_aligned: Optional[np.ndarray] = None
    error_aligned: Optional[np.ndarray] = None
    barrier_aligned: float = float("nan")
    error_barrier_aligned: float = float("nan")
    merged_loss_aligned: float = float("nan")
    merged_accuracy_aligned: float = float("nan")
    align: Optional[str] = None
    permutations: Optional[list] = None
    identity: Optional[list] = None
    similarity_before: float = float("nan")
    similarity_after: float = float("nan")
    iterations: int = 0
    mode: str = "eval"
    wall_time_s: float = 0.0
    provenance: dict = field(default_factory=dict)


def _check_buffers(model_a: nn.Module, model_b: nn.Module, mode: str) -> None:
    """In eval mode the engine evaluates every point with ``model_a``'s buffers: they must agree with b's."""
    if mode != "eval":
        return
    bb = dict(model_b.named_buffers())
    for name, va in model_a.named_buffers():
        if va.is_floating_point() and not torch.equal(va, bb[name].to(va)):
            raise ValueError(f"buffer {name!r} (e.g. BatchNorm running statistics) differs between the models, but "
                             "the interpolation varies parameters only and would use model_a's buffers at every "
                             "point; pass mode='train' to evaluate with batch statistics")


def _check_data(data: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"data must be a pair (inputs, targets), got {type(data).__name__}")
    return data[0], data[1]


def _curve(objective: Objective, model_b: nn.Module, n_points: int) -> InterpolationResult:
    theta_b = objective.space.from_module_values(model_b, dtype=objective.dtype).to(objective.device)
    return interpolate(objective, objective.theta0, theta_b, n_points=n_points, progress=False)


def interpolation_barriers(model_a: nn.Module, model_b: nn.Module, data: tuple[Tensor, Tensor], *,
                           n_points: int = MergeConfig.n_points, align: Optional[Literal["weight", "activation"]] = None,
                           align_data: Optional[Union[Tensor, np.ndarray]] = None, loss: LossSpec = "cross_entropy",
                           mode: Literal["eval", "train"] = "eval", dtype: DtypeSpec = torch.float64,
                           max_iter: int = 100, seed: int = 0) -> MergeResult:
    """Loss / error barriers on the straight line between two networks, before and after alignment.

    Parameters
    ----------
    model_a, model_b : nn.Module
        Same architecture; not modified.
    data : (inputs, targets)
        Evaluation data, passed to :class:`~qlandscape.Objective` (one chunk).
    n_points : int
        Points on [0, 1] (endpoints included); odd values put one at the midpoint. Default: the ``[merge]``
        section's (:class:`~qlandscape.config.MergeConfig`, 21).
    align : {None, "weight", "activation"}
        Also align ``model_b`` to ``model_a`` (:func:`~qlandscape.merging.align_weights`) and
        measure the path ``a -> aligned b``.
    align_data : tensor, optional
        Inputs for activation matching; default the inputs of ``data``.
    loss, mode, dtype :
        Passed to :class:`~qlandscape.Objective`. In ``mode="eval"`` the models' floating buffers
        (BatchNorm running statistics) must be equal, since the interpolation varies parameters only;
        ``mode="train"`` evaluates BatchNorm with batch statistics.
    max_iter, seed :
        Weight matching settings.

    Returns
    -------
    MergeResult
    """
    start = time.perf_counter()
    if align not in (None, "weight", "activation"):
        raise ValueError(f"align must be None, 'weight' or 'activation', got {align!r}")
    x, y = _check_data(data)
    check_same_architecture(model_a, model_b)
    _check_buffers(model_a, model_b, mode)
    objective = Objective(model_a, loss, (x, y), mode=mode, dtype=dtype)
    plain = _curve(objective, model_b, n_points)
    merged = Objective(average_weights(model_a, model_b), loss, (x, y), mode=mode, dtype=dtype).evaluate()
    i0, i1 = 0, len(plain.t) - 1
    out = MergeResult(t=plain.t, loss_plain=plain.loss, error_plain=1 - plain.metric, barrier_plain=plain.barrier,
                      error_barrier_plain=plain.error_barrier, loss_a=plain.loss_a, accuracy_a=float(plain.metric[i0]),
                      loss_b=plain.loss_b, accuracy_b=float(plain.metric[i1]), merged_loss_plain=merged[0],
                      merged_accuracy_plain=merged[1], mode=mode, provenance=plain.provenance)
    if align is not None:
        aligned = align_weights(model_a, model_b, align, x if align_data is None else align_data,
                                max_iter=max_iter, seed=seed)
        _check_buffers(model_a, aligned.model, mode)
        curve = _curve(objective, aligned.model, n_points)
        merged = Objective(average_weights(model_a, aligned.model), loss, (x, y), mode=mode, dtype=dtype).evaluate()
        out.loss_aligned, out.error_aligned = curve.loss, 1 - curve.metric
        out.barrier_aligned, out.error_barrier_aligned = curve.barrier, curve.error_barrier
        out.merged_loss_aligned, out.merged_accuracy_aligned = merged
        out.align, out.iterations = align, aligned.iterations
        out.permutations = [p.tolist() for p in aligned.permutations]
        out.identity = list(aligned.identity)
        out.similarity_before, out.similarity_after = aligned.similarity_before, aligned.similarity_after
    out.wall_time_s = time.perf_counter() - start
    return out
