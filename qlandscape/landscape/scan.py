"""1D/2D loss-landscape scans and linear interpolation between two solutions.

A scan evaluates the full-data loss (and metric) of an
:class:`~qlandscape.objective.Objective` at ``theta0 + a * d1 (+ b * d2)``. Grids are built
symmetrically so that, for a symmetric span and an odd number of points, the centre
coordinate is exactly 0 and the centre value is exactly the objective's loss.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..objective import Objective
from ..progress import progress_bar
from ..results import Result

Vectorize = Union[bool, Literal["auto"]]


def symmetric_grid(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` evenly spaced points on ``[lo, hi]`` computed about the midpoint, so that the
    middle point of a symmetric span with odd ``n`` is exactly ``0.0``."""
    if n < 2:
        raise ValueError(f"a scan needs at least 2 points per axis, got {n}")
    if not hi > lo:
        raise ValueError(f"scan span must satisfy lo < hi, got ({lo}, {hi})")
    mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
    k = (n - 1) / 2.0
    return mid + half * ((np.arange(n) - k) / k)


@dataclass
class LandscapeScan(Result):
    """Loss (and metric) on a 1D line or a 2D plane through ``center``.

    Attributes
    ----------
    alphas : ndarray, shape (n1,)
        Coordinates along the first direction.
    betas : ndarray, shape (n2,)
        Coordinates along the second direction (empty for a 1D scan).
    loss : ndarray, shape (n1,) or (n1, n2)
        ``loss[i, j]`` is the loss at ``center + alphas[i] d1 + betas[j] d2``.
    metric : ndarray, same shape as ``loss``
        Metric (accuracy) at each point; NaN where the loss defines none.
    directions : ndarray, shape (1 or 2, n)
    center : ndarray, shape (n,)
    center_loss : float
        Loss at the reference point, evaluated separately (equals the centre grid value).
    info : dict
        How the directions were made (kind, normalization, seed, ...).
    wall_time_s : float
    provenance : dict
    """

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    metric: np.ndarray
    directions: np.ndarray
    center: np.ndarray
    center_loss: float
    info: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    provenance: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return int(self.loss.ndim)

    def plot(self, ax=None, **kw):  # type: ignore[no-untyped-def]
        """1D curve or 2D contour, whichever fits."""
        from . import plot
        return plot.plot_line(self, ax=ax, **kw) if self.ndim == 1 else plot.plot_contour(self, ax=ax, **kw)

    def plot_surface(self, ax=None, **kw):  # type: ignore[no-untyped-def]
        from .plot import plot_surface
        return plot_surface(self, ax=ax, **kw)


def _as_direction(d: Union[Tensor, np.ndarray], objective: Objective) -> Tensor:
    t = torch.as_tensor(np.asarray(d) if not isinstance(d, Tensor) else d)
    if t.shape != (objective.n_params,):
        raise ValueError(f"direction has shape {tuple(t.shape)}, expected ({objective.n_params},)")
    t = t.to(objective.device, objective.dtype)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("direction contains NaN or inf")
    return t


def _evaluate_points(objective: Objective, make_points: Callable[[Tensor], Tensor], coords: np.ndarray,
                     vectorize: Vectorize, progress: bool, desc: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate at ``make_points(coords block) -> (P, n)`` for ``coords`` of shape ``(P, d)``,
    ``rows`` points at a time (bounds the memory of the stacked parameter vectors)."""
    C = torch.as_tensor(coords, dtype=objective.dtype, device=objective.device)
    losses, metrics = [], []
    bar = progress_bar(C.shape[0], desc, progress)
    for s in range(0, C.shape[0], rows):
        pts = make_points(C[s:s + rows])
        lv, m = objective.evaluate_many(pts, vectorize=vectorize)
        losses.append(lv)
        metrics.append(m)
        bar.update(pts.shape[0])
    bar.close()
    return (torch.cat(losses).detach().cpu().numpy().astype(np.float64),
            torch.cat(metrics).detach().cpu().numpy().astype(np.float64))


def _warn_non_finite(loss: np.ndarray) -> None:
    bad = int(np.size(loss) - np.isfinite(loss).sum())
    if bad:
        warnings.warn(f"{bad} scan points have a non-finite loss (kept as NaN/inf); the span may be "
                      "too large for this model", RuntimeWarning, stacklevel=3)


def scan_1d(objective: Objective, direction: Union[Tensor, np.ndarray], *,
            span: tuple[float, float] = (-1.0, 1.0), n_points: int = 51,
            alphas: Optional[Sequence[float]] = None, float32: bool = False,
            vectorize: Vectorize = "auto", info: Optional[dict] = None,
            progress: bool = True) -> LandscapeScan:
    """Loss along ``theta0 + alpha * direction``.

    Parameters
    ----------
    objective : Objective
    direction : Tensor, shape (n,)
    span, n_points : coordinate range and count (``symmetric_grid``), unless ``alphas`` given.
    float32 : bool
        Evaluate in float32 (fast path; the centre loss is then the float32 loss).
    vectorize : bool or "auto"
        Batch points with ``vmap`` (see :meth:`Objective.evaluate_many`).
    info : dict, optional
        Recorded with the result (how the direction was made).
    """
    return _scan(objective, [direction], [np.asarray(alphas, dtype=np.float64) if alphas is not None
                                          else symmetric_grid(*span, n_points)],
                 float32, vectorize, info, progress)


def scan_2d(objective: Objective, d1: Union[Tensor, np.ndarray], d2: Union[Tensor, np.ndarray], *,
            span: Union[tuple[float, float], tuple[tuple[float, float], tuple[float, float]]] = (-1.0, 1.0),
            n_points: Union[int, tuple[int, int]] = 25,
            alphas: Optional[Sequence[float]] = None, betas: Optional[Sequence[float]] = None,
            float32: bool = False, vectorize: Vectorize = "auto", info: Optional[dict] = None,
            progress: bool = True) -> LandscapeScan:
    """Loss on the plane ``theta0 + alpha * d1 + beta * d2``; ``loss[i, j]`` is at
    ``(alphas[i], betas[j])``. ``span``/``n_points`` may be given per axis."""
    spans = span if isinstance(span[0], (tuple, list)) else (span, span)
    counts = n_points if isinstance(n_points, (tuple, list)) else (n_points, n_points)
    a = np.asarray(alphas, dtype=np.float64) if alphas is not None else symmetric_grid(*spans[0], counts[0])  # type: ignore[misc]
    b = np.asarray(betas, dtype=np.float64) if betas is not None else symmetric_grid(*spans[1], counts[1])  # type: ignore[misc]
    return _scan(objective, [d1, d2], [a, b], float32, vectorize, info, progress)


def _scan(objective: Objective, directions: list, axes: list[np.ndarray], float32: bool,
          vectorize: Vectorize, info: Optional[dict], progress: bool) -> LandscapeScan:
    start = time.perf_counter()
    for ax in axes:
        if ax.ndim != 1 or ax.size < 1 or not np.all(np.isfinite(ax)):
            raise ValueError("scan coordinates must be a non-empty 1-D array of finite numbers")
    obj = objective.with_dtype(torch.float32) if float32 else objective
    dirs = [_as_direction(d, obj) for d in directions]
    center = obj.theta0
    center_loss, _ = obj.evaluate(check_finite=True)
    before = obj.counters.as_dict()
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    rows = axes[-1].size if len(axes) == 2 else min(axes[0].size, 64)
    D = torch.stack(dirs)
    loss, metric = _evaluate_points(obj, lambda C: center[None] + C @ D, mesh, vectorize, progress,
                                    f"scan {'x'.join(str(a.size) for a in axes)}", rows)
    shape = tuple(a.size for a in axes)
    loss, metric = loss.reshape(shape), metric.reshape(shape)
    _warn_non_finite(loss)
    return LandscapeScan(
        alphas=axes[0], betas=axes[1] if len(axes) == 2 else np.zeros(0), loss=loss, metric=metric,
        directions=torch.stack(dirs).detach().cpu().numpy(), center=center.detach().cpu().numpy(),
        center_loss=float(center_loss), info=dict(info or {}), wall_time_s=time.perf_counter() - start,
        provenance=dict(obj.provenance(), work=obj.counters.since(before)))


@dataclass
class InterpolationResult(Result):
    """Loss along the segment ``(1 - t) theta_a + t theta_b``.

    Attributes
    ----------
    t : ndarray, shape (m,)
    loss, metric : ndarray, shape (m,)
    loss_a, loss_b : float
        Losses of the two endpoints (``loss`` at t = 0 and t = 1 when those are on the grid).
    barrier : float
        ``max_{0<=t<=1} [L(t) - ((1 - t) L_a + t L_b)]`` (Frankle et al. 2020): the height of
        the loss above the straight line joining the endpoint losses; <= 0 for a convex path.
    barrier_t : float
        Where that maximum is attained.
    error_barrier : float
        The same for the error ``1 - metric`` (NaN without a metric).
    provenance : dict
    """

    t: np.ndarray
    loss: np.ndarray
    metric: np.ndarray
    loss_a: float
    loss_b: float
    barrier: float
    barrier_t: float
    error_barrier: float
    wall_time_s: float = 0.0
    provenance: dict = field(default_factory=dict)

    def plot(self, ax=None):  # type: ignore[no-untyped-def]
        from .plot import plot_interpolation
        return plot_interpolation(self, ax=ax)


def _barrier(t: np.ndarray, values: np.ndarray, va: float, vb: float) -> tuple[float, float]:
    inside = (t >= 0) & (t <= 1)
    excess = values[inside] - ((1 - t[inside]) * va + t[inside] * vb)
    i = int(np.nanargmax(excess))
    return float(excess[i]), float(t[inside][i])


def interpolate(objective: Objective, theta_a: Union[Tensor, np.ndarray], theta_b: Union[Tensor, np.ndarray], *,
                n_points: int = 21, extend: float = 0.0, vectorize: Vectorize = "auto",
                progress: bool = True) -> InterpolationResult:
    """Linear interpolation between two parameter vectors and the loss barrier.

    Parameters
    ----------
    objective : Objective
        Supplies model, loss and data; its reference point is not used.
    theta_a, theta_b : shape (n,)
    n_points : int
        Points on ``[0, 1]`` (endpoints included exactly).
    extend : float
        Also evaluate ``t`` in ``[-extend, 0)`` and ``(1, 1 + extend]`` with the same spacing.
    """
    if n_points < 2:
        raise ValueError(f"interpolation needs at least 2 points, got {n_points}")
    start = time.perf_counter()
    a = objective.as_theta(torch.as_tensor(np.asarray(theta_a)) if not isinstance(theta_a, Tensor) else theta_a)
    b = objective.as_theta(torch.as_tensor(np.asarray(theta_b)) if not isinstance(theta_b, Tensor) else theta_b)
    t = np.linspace(0.0, 1.0, n_points)
    if extend > 0:
        step = 1.0 / (n_points - 1)
        k = int(np.floor(extend / step + 1e-9))
        t = np.concatenate([-step * np.arange(k, 0, -1), t, 1 + step * np.arange(1, k + 1)])
    before = objective.counters.as_dict()
    # (1 - t) a + t b: exact endpoints, (1 - 0) a + 0 b == a and 0 a + 1 b == b
    loss, metric = _evaluate_points(objective, lambda T: (1 - T) * a[None] + T * b[None], t[:, None],
                                    vectorize, progress, "interpolate", rows=16)
    _warn_non_finite(loss)
    i0, i1 = int(np.argmin(np.abs(t))), int(np.argmin(np.abs(t - 1)))
    la, lb = float(loss[i0]), float(loss[i1])
    barrier, bt = _barrier(t, loss, la, lb)
    if np.all(np.isnan(metric)):
        err_barrier = float("nan")
    else:
        err = 1 - metric
        err_barrier, _ = _barrier(t, err, float(err[i0]), float(err[i1]))
    return InterpolationResult(t=t, loss=loss, metric=metric, loss_a=la, loss_b=lb, barrier=barrier,
                               barrier_t=bt, error_barrier=err_barrier,
                               wall_time_s=time.perf_counter() - start,
                               provenance=dict(objective.provenance(), work=objective.counters.since(before)))
