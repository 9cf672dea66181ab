"""1D/2D loss-landscape scans and linear interpolation between two solutions.

A scan evaluates the full-data loss (and metric) of an
:class:`~qlandscape.objective.Objective` at ``theta0 + a * d1 (+ b * d2)``. Grids are built
symmetrically so that, for a symmetric span and an odd number of points, the centre
coordinate is exactly 0. A grid point that is bitwise the reference point (scan) or an
endpoint (interpolation) takes the value :meth:`Objective.evaluate` gives there, so the
centre equals ``objective.loss()`` exactly on every evaluation path (a vmapped batch may
round differently from the single-point kernel in the last bit).

Degenerate input is refused rather than scanned: a non-integer or too small ``n_points``,
an empty or reversed span, a zero direction, or two parallel directions
(``|cos| >= 1 - 1e-6``: the plane is a line) raise ValueError; nearly parallel directions
(``|cos| > 0.99``, an angle under 8 degrees, where the plot's axes are far from orthogonal)
give a RuntimeWarning (see :func:`~qlandscape.landscape.directions.orthogonalize`).
"""

from __future__ import annotations

import math
import numbers
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
Span = Union[float, tuple[float, float]]

PARALLEL_COS = 1.0 - 1e-6
"""``|cos(d1, d2)|`` at or above which two scan directions are refused as parallel."""
NEARLY_PARALLEL_COS = 0.99
"""``|cos(d1, d2)|`` above which a RuntimeWarning says the plane is nearly a line."""


def check_n_points(n: object, what: str = "n_points", minimum: int = 2) -> int:
    """``n`` as an int >= ``minimum``; floats (7.5, or 7.0), bools and the like raise ValueError."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ValueError(f"{what} must be an integer >= {minimum}, got {n!r} ({type(n).__name__})")
    if int(n) < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {n}")
    return int(n)


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_span(span: object, what: str = "span") -> tuple[float, float]:
    """A scan range: ``(lo, hi)`` with finite ``lo < hi``, or a scalar ``s > 0`` meaning ``(-s, s)``."""
    if _is_number(span):
        s = float(span)  # type: ignore[arg-type]
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"a scalar {what} s means (-s, s) and must be a finite number > 0, got {span!r}")
        return (-s, s)
    if (isinstance(span, (tuple, list, np.ndarray)) and len(span) == 2
            and all(_is_number(v) or isinstance(v, np.floating) for v in span)):
        lo, hi = float(span[0]), float(span[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{what} must be (lo, hi) with finite lo < hi, got {tuple(span)!r}")
        return (lo, hi)
    raise ValueError(f"{what} must be (lo, hi) or a number s > 0 meaning (-s, s), got {span!r}")


def symmetric_grid(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` evenly spaced points on ``[lo, hi]`` computed about the midpoint, so that the
    middle point of a symmetric span with odd ``n`` is exactly ``0.0``."""
    n = check_n_points(n)
    lo, hi = check_span((lo, hi))
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


def _as_direction(d: Union[Tensor, np.ndarray], objective: Objective, which: str = "direction") -> Tensor:
    t = torch.as_tensor(np.asarray(d) if not isinstance(d, Tensor) else d)
    if t.shape != (objective.n_params,):
        raise ValueError(f"{which} has shape {tuple(t.shape)}, expected ({objective.n_params},)")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{which} contains NaN or inf")
    t = t.to(objective.device, objective.dtype)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{which} overflows {str(objective.dtype).replace('torch.', '')} (inf after conversion)")
    if not bool(t.ne(0).any()):
        raise ValueError(f"{which} is all zeros (after conversion to {str(objective.dtype).replace('torch.', '')}): "
                         "the scan would be a constant; check how the direction was made (a filter normalization "
                         "of parameters that are zero, or of 1-D parameters only with one_d='zero')")
    return t


def _check_plane(d1: Tensor, d2: Tensor) -> float:
    """Cosine of the angle between two scan directions; parallel ones raise, nearly parallel warn."""
    a, b = d1.detach().to(torch.float64), d2.detach().to(torch.float64)
    cos = float(torch.dot(a, b) / (a.norm() * b.norm()))
    if abs(cos) >= PARALLEL_COS:
        raise ValueError(f"d1 and d2 are parallel (cos = {cos:.9f}): the 'plane' is a line, so a 2D scan would "
                         "show one direction twice. Use two different directions, e.g. "
                         "orthogonalize(d2, d1), or scan_1d")
    if abs(cos) > NEARLY_PARALLEL_COS:
        warnings.warn(f"d1 and d2 are nearly parallel (cos = {cos:.4f}, {math.degrees(math.acos(abs(cos))):.1f} "
                      "degrees apart): the scanned plane is almost a line and its plot axes are far from "
                      "orthogonal; consider orthogonalize(d2, d1)", RuntimeWarning, stacklevel=4)
    return cos


Anchor = tuple[Tensor, float, float]
"""``(theta (n,), loss, metric)``: a point whose value is already known."""


def _evaluate_points(objective: Objective, make_points: Callable[[Tensor], Tensor], coords: np.ndarray,
                     vectorize: Vectorize, progress: bool, desc: str, rows: int,
                     anchors: Sequence[Anchor] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate at ``make_points(coords block) -> (P, n)`` for ``coords`` of shape ``(P, d)``,
    ``rows`` points at a time (bounds the memory of the stacked parameter vectors). Points
    equal to an anchor's ``theta`` take the anchor's values instead of being evaluated again
    (possibly by a vmapped kernel that rounds differently in the last bit)."""
    C = torch.as_tensor(coords, dtype=objective.dtype, device=objective.device)
    losses, metrics = [], []
    bar = progress_bar(C.shape[0], desc, progress)
    for s in range(0, C.shape[0], rows):
        pts = make_points(C[s:s + rows])
        lv = torch.empty(pts.shape[0], dtype=objective.dtype, device=objective.device)
        m = torch.empty_like(lv)
        known = torch.zeros(pts.shape[0], dtype=torch.bool, device=pts.device)
        for theta, a_loss, a_metric in anchors:
            hit = (pts == theta[None]).all(dim=1) & ~known
            lv[hit], m[hit] = a_loss, a_metric
            known |= hit
        todo = ~known
        if bool(todo.any()):
            lv[todo], m[todo] = objective.evaluate_many(pts[todo], vectorize=vectorize)
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
            span: Span = (-1.0, 1.0), n_points: int = 51,
            alphas: Optional[Sequence[float]] = None, float32: bool = False,
            vectorize: Vectorize = "auto", info: Optional[dict] = None,
            progress: bool = True) -> LandscapeScan:
    """Loss along ``theta0 + alpha * direction``.

    Parameters
    ----------
    objective : Objective
    direction : Tensor, shape (n,)
        Not all zeros (ValueError).
    span, n_points : coordinate range ``(lo, hi)`` (or ``s`` meaning ``(-s, s)``) and count
        (an int >= 2; ``symmetric_grid``), unless ``alphas`` given.
    float32 : bool
        Evaluate in float32 (fast path; the centre loss is then the float32 loss).
    vectorize : bool or "auto"
        Batch points with ``vmap`` (see :meth:`Objective.evaluate_many`).
    info : dict, optional
        Recorded with the result (how the direction was made).
    """
    axis = (np.asarray(alphas, dtype=np.float64) if alphas is not None
            else symmetric_grid(*check_span(span), check_n_points(n_points)))
    return _scan(objective, [direction], [axis], float32, vectorize, info, progress)


def scan_2d(objective: Objective, d1: Union[Tensor, np.ndarray], d2: Union[Tensor, np.ndarray], *,
            span: Union[Span, tuple[Span, Span]] = (-1.0, 1.0),
            n_points: Union[int, tuple[int, int]] = 25,
            alphas: Optional[Sequence[float]] = None, betas: Optional[Sequence[float]] = None,
            float32: bool = False, vectorize: Vectorize = "auto", info: Optional[dict] = None,
            progress: bool = True) -> LandscapeScan:
    """Loss on the plane ``theta0 + alpha * d1 + beta * d2``; ``loss[i, j]`` is at
    ``(alphas[i], betas[j])``.

    ``span`` is ``(lo, hi)`` or a number ``s`` meaning ``(-s, s)``, for both axes, or a pair
    of those, one per axis; ``n_points`` is an int >= 2 or one per axis. ``d1`` and ``d2``
    must be non-zero and not parallel (ValueError); nearly parallel ones (``|cos| > 0.99``)
    give a RuntimeWarning.
    """
    if _is_number(span) or (isinstance(span, (tuple, list)) and len(span) == 2
                            and all(_is_number(v) or isinstance(v, np.floating) for v in span)):
        spans = (check_span(span, "span"),) * 2
    elif isinstance(span, (tuple, list)) and len(span) == 2:
        spans = (check_span(span[0], "span[0]"), check_span(span[1], "span[1]"))
    else:
        raise ValueError(f"span must be (lo, hi), a number s > 0 meaning (-s, s), or one of those per axis, "
                         f"got {span!r}")
    if isinstance(n_points, (tuple, list)):
        if len(n_points) != 2:
            raise ValueError(f"n_points must be an int or one int per axis (2), got {n_points!r}")
        counts = (check_n_points(n_points[0], "n_points[0]"), check_n_points(n_points[1], "n_points[1]"))
    else:
        counts = (check_n_points(n_points),) * 2
    a = np.asarray(alphas, dtype=np.float64) if alphas is not None else symmetric_grid(*spans[0], counts[0])
    b = np.asarray(betas, dtype=np.float64) if betas is not None else symmetric_grid(*spans[1], counts[1])
    return _scan(objective, [d1, d2], [a, b], float32, vectorize, info, progress)


def _scan(objective: Objective, directions: list, axes: list[np.ndarray], float32: bool,
          vectorize: Vectorize, info: Optional[dict], progress: bool) -> LandscapeScan:
    start = time.perf_counter()
    for ax in axes:
        if ax.ndim != 1 or ax.size < 1 or not np.all(np.isfinite(ax)):
            raise ValueError("scan coordinates must be a non-empty 1-D array of finite numbers")
    obj = objective.with_dtype(torch.float32) if float32 else objective
    names = ["direction"] if len(directions) == 1 else ["d1", "d2"]
    dirs = [_as_direction(d, obj, name) for d, name in zip(directions, names)]
    if len(dirs) == 2:
        _check_plane(dirs[0], dirs[1])
    center = obj.theta0
    center_loss, center_metric = obj.evaluate(check_finite=True)
    before = obj.counters.as_dict()
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    rows = axes[-1].size if len(axes) == 2 else min(axes[0].size, 64)
    D = torch.stack(dirs)
    # the centre (all coordinates 0 gives theta0 exactly) takes loss()'s value: equal on every path
    loss, metric = _evaluate_points(obj, lambda C: center[None] + C @ D, mesh, vectorize, progress,
                                    f"scan {'x'.join(str(a.size) for a in axes)}", rows,
                                    anchors=[(center, center_loss, center_metric)])
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
        the loss above the straight line joining the endpoint losses; <= 0 for a convex path,
        exactly 0 from a point to itself. NaN if a loss on ``[0, 1]`` is NaN (a maximum that
        skipped it could be far too low).
    barrier_t : float
        Where that maximum is attained (NaN with a NaN barrier).
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


def _lerp(va: float, vb: float, t: np.ndarray) -> np.ndarray:
    """``(1 - t) va + t vb``, exact at t = 0 and t = 1 and constant when ``va == vb`` (as torch.lerp)."""
    diff = vb - va
    return np.where(t < 0.5, va + t * diff, vb - (1 - t) * diff)


def _barrier(t: np.ndarray, values: np.ndarray, va: float, vb: float) -> tuple[float, float]:
    inside = (t >= 0) & (t <= 1)
    with np.errstate(invalid="ignore"):
        excess = values[inside] - _lerp(va, vb, t[inside])
    if np.isnan(excess).any():
        return float("nan"), float("nan")
    i = int(np.argmax(excess))
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
        May be equal (every point is then ``theta_a`` exactly, and the barrier is 0).
    n_points : int
        Points on ``[0, 1]`` (endpoints included exactly); an int >= 2.
    extend : float
        Also evaluate ``t`` in ``[-extend, 0)`` and ``(1, 1 + extend]`` with the same spacing
        (a finite number >= 0).

    Notes
    -----
    Points are ``torch.lerp(theta_a, theta_b, t)``: exactly ``theta_a`` at t = 0 and
    ``theta_b`` at t = 1, and the loss there is :meth:`Objective.evaluate`'s, so
    ``loss_a == objective.loss(theta_a)`` on every evaluation path.
    """
    n_points = check_n_points(n_points)
    if not _is_number(extend) or not (math.isfinite(float(extend)) and float(extend) >= 0):
        raise ValueError(f"extend must be a finite number >= 0, got {extend!r}")
    start = time.perf_counter()
    a = objective.as_theta(torch.as_tensor(np.asarray(theta_a)) if not isinstance(theta_a, Tensor) else theta_a)
    b = objective.as_theta(torch.as_tensor(np.asarray(theta_b)) if not isinstance(theta_b, Tensor) else theta_b)
    t = np.linspace(0.0, 1.0, n_points)
    if extend > 0:
        step = 1.0 / (n_points - 1)
        k = int(np.floor(extend / step + 1e-9))
        t = np.concatenate([-step * np.arange(k, 0, -1), t, 1 + step * np.arange(1, k + 1)])
    before = objective.counters.as_dict()
    # lerp: exact endpoints (a at t = 0, b at t = 1) and exactly a everywhere when a == b
    anchors = [(a, *objective.evaluate(a, check_finite=False))]
    if not torch.equal(a, b):
        anchors.append((b, *objective.evaluate(b, check_finite=False)))
    loss, metric = _evaluate_points(objective, lambda T: torch.lerp(a[None], b[None], T), t[:, None],
                                    vectorize, progress, "interpolate", rows=16, anchors=anchors)
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
