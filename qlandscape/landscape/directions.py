"""Directions in parameter space for loss-landscape scans.

All directions are flat vectors of shape ``(n,)`` in the objective's parameter space.

Normalizations (``normalization=``)
    "filter"  Li et al. (2018): each filter (slice along dim 0 of a weight with >= 2 dims)
              of the direction is rescaled to the norm of the same filter of ``theta``.
    "layer"   each parameter tensor is rescaled to the norm of that tensor of ``theta``.
    "model"   the whole vector is rescaled to ``||theta||``.
    "unit"    the whole vector has unit norm: scan coordinates are then displacements in
              parameter units (radians for rotation angles), the natural choice for periodic
              quantum-circuit parameters with a stated range such as ``(-pi, pi)``.
    "none"    raw i.i.d. N(0, 1) entries.

1-D parameters (biases, norm-layer scales) under "filter" follow ``one_d=``:
    "zero" (Li et al.'s default ``ignore='biasbn'``: not moved), "filter" (each entry is its
    own filter: ``|d_i| = |theta_i|``), "layer" (rescaled as a whole), "keep" (left raw), or
    "auto" (the default): "zero" while 1-D tensors hold at most half of the parameters (biases
    of ordinary networks), else "layer" (models whose weights are mostly 1-D, such as the
    rotation-angle vectors of patch quantum circuits, where "zero" would scan a minority).

Degenerate cases are not returned silently: a normalized direction that is all zeros (the
reference weights are zero wherever the direction may move, e.g. a model whose parameters
are all 1-D under ``one_d="zero"``, or ``"model"`` normalization of ``theta = 0``) raises
ValueError; a parameter tensor that a relative normalization cannot move because its
weights are all zero gives a RuntimeWarning naming it; NaN/inf inputs raise ValueError.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from ..params import ParamSpace
from ..results import Result

if TYPE_CHECKING:
    from ..curvature import EigResult

Normalization = Literal["filter", "layer", "model", "unit", "none"]
OneDPolicy = Literal["auto", "zero", "filter", "layer", "keep"]
ONE_D_POLICIES: tuple[str, ...] = ("auto", "zero", "filter", "layer", "keep")


def resolve_one_d(space: ParamSpace, one_d: OneDPolicy) -> OneDPolicy:
    """``one_d="auto"`` -> "zero" if 1-D tensors hold at most half of the parameters, else "layer"."""
    if one_d not in ONE_D_POLICIES:
        raise ValueError(f"unknown one_d policy {one_d!r}; use one of {list(ONE_D_POLICIES)}")
    if one_d != "auto":
        return one_d
    n_1d = sum(n for shape, n in zip(space.shapes, space.numels) if len(shape) <= 1)
    return "zero" if 2 * n_1d <= space.size else "layer"


def safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` elementwise where ``den > 0``, and 0 where ``den == 0`` (no inf or NaN for a zero norm)."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


def normalize_direction(direction: Tensor, theta: Tensor, space: ParamSpace,
                        normalization: Normalization = "filter", one_d: OneDPolicy = "auto") -> Tensor:
    """Rescale ``direction`` (shape ``(n,)``) relative to ``theta`` (shape ``(n,)``); see module doc."""
    if normalization not in ("filter", "layer", "model", "unit", "none"):
        raise ValueError(f"unknown normalization {normalization!r}; use 'filter', 'layer', 'model', "
                         "'unit' or 'none'")
    one_d = resolve_one_d(space, one_d)
    if direction.shape != theta.shape or direction.shape != (space.size,):
        raise ValueError(f"direction {tuple(direction.shape)} and theta {tuple(theta.shape)} must both "
                         f"have shape ({space.size},)")
    if not bool(torch.isfinite(direction).all()):
        raise ValueError("the direction contains NaN or inf")
    if normalization != "none" and not bool(torch.isfinite(theta).all()):
        raise ValueError("theta contains NaN or inf, so it cannot set the direction's scale")
    if not bool(direction.ne(0).any()):
        raise ValueError("the direction is all zeros; no normalization can turn it into a direction")
    d = direction.clone()
    if normalization == "none":
        return d
    if normalization == "unit":
        return d / d.norm()
    if normalization == "model":
        if not bool(theta.ne(0).any()):
            raise ValueError("normalization='model' scales the direction to ||theta||, which is 0 here (all weights "
                             "are zero); use normalization='unit' (coordinates in parameter units)")
        return d * (theta.norm() / d.norm())
    unmoved = []
    for name, sl, shape in space.slices():
        dp, tp = d[sl], theta[sl]
        if normalization == "layer" or (len(shape) <= 1 and one_d == "layer"):
            d[sl] = dp * safe_ratio(tp.norm(), dp.norm())
        elif len(shape) <= 1:
            if one_d == "zero":
                d[sl] = 0.0
                continue
            elif one_d == "filter":
                d[sl] = dp * safe_ratio(tp.abs(), dp.abs())
            else:
                continue  # "keep": raw
        else:
            df = dp.reshape(shape[0], -1)
            tf = tp.reshape(shape[0], -1)
            d[sl] = (df * safe_ratio(tf.norm(dim=1), df.norm(dim=1))[:, None]).reshape(-1)
        if bool(direction[sl].ne(0).any()) and not bool(d[sl].ne(0).any()):
            unmoved.append(name)
    if not bool(d.ne(0).any()):
        only_1d = all(len(shape) <= 1 for shape in space.shapes)
        why = ("every parameter is 1-D and one_d='zero' leaves 1-D parameters unmoved" if only_1d and one_d == "zero"
               else f"the weights in theta are zero wherever {normalization!r} normalization may move the direction")
        raise ValueError(f"the {normalization}-normalized direction is all zeros: {why}. Use normalization='unit' "
                         "(coordinates in parameter units), or one_d='filter'/'layer'/'keep' to move 1-D parameters")
    if normalization == "filter" and one_d == "zero":
        skipped = [(name, n) for (name, _, shape), n in zip(space.slices(), space.numels) if len(shape) <= 1]
        n_skipped = sum(n for _, n in skipped)
        if 2 * n_skipped > space.size:
            warnings.warn(f"one_d='zero' leaves {n_skipped} of {space.size} parameters unmoved (the 1-D tensors "
                          f"{[name for name, _ in skipped]}), so the scan explores a minority of the model; use "
                          "one_d='filter' or 'layer', or normalization='unit' (e.g. for rotation angles of a "
                          "quantum circuit)", RuntimeWarning, stacklevel=2)
    if unmoved:
        warnings.warn(f"{normalization}-normalization does not move {unmoved}: their weights in theta are all zero, "
                      "so the relative scale is 0 (use normalization='unit' to move them)", RuntimeWarning,
                      stacklevel=2)
    return d


def random_direction(space: ParamSpace, theta: Tensor, *, normalization: Normalization = "filter",
                     one_d: OneDPolicy = "auto", seed: int = 0) -> Tensor:
    """A Gaussian direction, normalized; deterministic given ``seed``. Shape ``(n,)``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    d = torch.randn(space.size, generator=gen, dtype=torch.float64).to(theta.device, theta.dtype)
    return normalize_direction(d, theta, space, normalization, one_d)


def orthogonalize(d2: Tensor, d1: Tensor, keep_norm: bool = True) -> Tensor:
    """``d2`` with its component along ``d1`` removed (Gram-Schmidt); with ``keep_norm`` the
    result is rescaled to the original ``||d2||`` (which a normalization had chosen).

    Raises
    ------
    ValueError
        If ``d1`` or ``d2`` is zero, or ``d2`` is parallel to ``d1`` to within
        ``sqrt(eps)`` (what remains is rounding noise, which ``keep_norm`` would blow up into
        a random-looking direction).
    """
    if d1.shape != d2.shape or d1.dim() != 1:
        raise ValueError(f"d1 and d2 must be vectors of one shape (n,), got {tuple(d1.shape)} and {tuple(d2.shape)}")
    if not bool(d1.ne(0).any()) or not bool(d2.ne(0).any()):
        raise ValueError("cannot orthogonalize with a zero direction")
    out = d2 - (torch.dot(d2, d1) / torch.dot(d1, d1)) * d1
    if float(out.norm()) <= torch.finfo(d2.dtype).eps ** 0.5 * float(d2.norm()):
        raise ValueError("d2 is parallel to d1 (what is left after removing the d1 component is rounding noise); "
                         "choose a different second direction")
    if keep_norm:
        out = out * (d2.norm() / out.norm())
    return out


def eigenvector_directions(eig: "EigResult", count: int = 2) -> list[Tensor]:
    """The first ``count`` eigenvectors (unit norm, shape ``(n,)`` each) of an eigen-result."""
    vecs = np.asarray(eig.eigenvectors)
    if vecs.shape[0] < count:
        raise ValueError(f"the eigen-result holds {vecs.shape[0]} eigenvectors, {count} were asked for")
    return [torch.as_tensor(vecs[i].copy()) for i in range(count)]


@dataclass
class PCAResult(Result):
    """Principal directions of a training trajectory (Li et al. 2018, Sec. 7).

    Attributes
    ----------
    directions : ndarray, shape (k, n)
        Orthonormal principal directions of the centred checkpoints.
    explained_variance_ratio : ndarray, shape (k,)
    coords : ndarray, shape (T, k)
        Checkpoint coordinates along the directions, relative to ``center``.
    center : ndarray, shape (n,)
        The point the trajectory was centred at (the final checkpoint by default).
    """

    directions: np.ndarray
    explained_variance_ratio: np.ndarray
    coords: np.ndarray
    center: np.ndarray
    centering: str = "last"

    def spans(self, margin: float = 0.25) -> list[tuple[float, float]]:
        """Scan ranges per direction that show the whole trajectory and the centre, widened by
        ``margin`` of their extent on both sides (Kawase 2025's landscape pictures); pass them as
        ``scan_2d(..., span=pca.spans())``. See :func:`trajectory_spans`."""
        return trajectory_spans(self.coords, margin)


def trajectory_spans(coords: np.ndarray, margin: float) -> list[tuple[float, float]]:
    """Per-axis scan ranges covering a trajectory's plane coordinates and the centre.

    Parameters
    ----------
    coords : ndarray, shape (T, k)
        Checkpoint coordinates relative to the scan centre.
    margin : float
        Each range ``[lo, hi]`` (including 0) is widened by ``margin * (hi - lo)`` on both sides.

    Returns
    -------
    list of (lo, hi), length k
    """
    if not (isinstance(margin, (int, float)) and not isinstance(margin, bool) and math.isfinite(margin)
            and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    spans = []
    for c in np.asarray(coords, dtype=np.float64).T:
        lo, hi = min(float(c.min()), 0.0), max(float(c.max()), 0.0)
        extent = hi - lo if hi > lo else 1.0
        spans.append((lo - margin * extent, hi + margin * extent))
    return spans


def pca_directions(trajectory: Sequence[Tensor] | Tensor | np.ndarray, k: int = 2,
                   center: Literal["last", "mean"] | int = "last") -> PCAResult:
    """PCA of checkpoints ``(T, n)``: centre at the last (or mean, or the ``center``-th) checkpoint, SVD,
    top-``k``. An integer ``center`` (e.g. the lowest-train-loss checkpoint, negative from the end) makes
    that checkpoint the origin of the plane while every checkpoint still shapes the directions."""
    traj = torch.as_tensor(np.asarray(trajectory) if not isinstance(trajectory, Tensor) else trajectory)
    if traj.dim() != 2:
        traj = torch.stack([torch.as_tensor(t) for t in trajectory])  # type: ignore[union-attr]
    traj = traj.to(torch.float64)
    if not bool(torch.isfinite(traj).all()):
        raise ValueError("the trajectory contains NaN or inf")
    if traj.shape[0] < k + 1:
        raise ValueError(f"PCA of {k} directions needs at least {k + 1} checkpoints, got {traj.shape[0]}")
    if isinstance(center, bool) or not (center in ("last", "mean") or isinstance(center, int)):
        raise ValueError(f"center must be 'last', 'mean' or a checkpoint index, got {center!r}")
    if isinstance(center, int) and not -traj.shape[0] <= center < traj.shape[0]:
        raise ValueError(f"center index {center} is out of range for {traj.shape[0]} checkpoints")
    if isinstance(center, int):
        c = traj[center]
        centering = "last" if center in (-1, traj.shape[0] - 1) else f"checkpoint {center % traj.shape[0]}"
    else:
        c = traj[-1] if center == "last" else traj.mean(dim=0)
        centering = center
    M = traj - c
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    # directions beyond the trajectory's rank are arbitrary (any vector orthogonal to it): refuse
    tol = float(S[0]) * max(M.shape) * torch.finfo(S.dtype).eps if S.numel() else 0.0
    rank = int((S > tol).sum()) if float(S[0]) > 0 else 0
    if rank < k:
        raise ValueError(f"the trajectory's checkpoints (centred at the {centering} one) span only {rank} dimension(s), "
                         f"so {k} principal directions are not defined (the extra ones would be arbitrary); use "
                         f"k={rank}" + (" or another direction kind" if rank else
                                        ": all checkpoints are equal; use another direction kind"))
    var = S ** 2
    ratio = (var[:k] / var.sum().clamp_min(torch.finfo(var.dtype).tiny)).numpy()
    dirs = Vh[:k]
    # deterministic sign: largest-magnitude entry positive
    signs = torch.sign(dirs[torch.arange(k), dirs.abs().argmax(dim=1)])
    dirs = dirs * signs[:, None]
    return PCAResult(directions=dirs.numpy(), explained_variance_ratio=ratio,
                     coords=(M @ dirs.T).numpy(), center=c.numpy(), centering=centering)
