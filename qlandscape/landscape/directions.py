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
    own filter: ``|d_i| = |theta_i|``), "layer" (rescaled as a whole), "keep" (left raw).
"""

from __future__ import annotations

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
OneDPolicy = Literal["zero", "filter", "layer", "keep"]


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


def normalize_direction(direction: Tensor, theta: Tensor, space: ParamSpace,
                        normalization: Normalization = "filter", one_d: OneDPolicy = "zero") -> Tensor:
    """Rescale ``direction`` (shape ``(n,)``) relative to ``theta`` (shape ``(n,)``); see module doc."""
    if normalization not in ("filter", "layer", "model", "unit", "none"):
        raise ValueError(f"unknown normalization {normalization!r}; use 'filter', 'layer', 'model', "
                         "'unit' or 'none'")
    if one_d not in ("zero", "filter", "layer", "keep"):
        raise ValueError(f"unknown one_d policy {one_d!r}; use 'zero', 'filter', 'layer' or 'keep'")
    if direction.shape != theta.shape or direction.shape != (space.size,):
        raise ValueError(f"direction {tuple(direction.shape)} and theta {tuple(theta.shape)} must both "
                         f"have shape ({space.size},)")
    d = direction.clone()
    if normalization == "none":
        return d
    if normalization == "unit":
        return d / d.norm().clamp_min(torch.finfo(d.dtype).tiny)
    if normalization == "model":
        return d * _safe_ratio(theta.norm(), d.norm())
    for _, sl, shape in space.slices():
        dp, tp = d[sl], theta[sl]
        if normalization == "layer" or (len(shape) <= 1 and one_d == "layer"):
            d[sl] = dp * _safe_ratio(tp.norm(), dp.norm())
        elif len(shape) <= 1:
            if one_d == "zero":
                d[sl] = 0.0
            elif one_d == "filter":
                d[sl] = dp * _safe_ratio(tp.abs(), dp.abs())
        else:
            df = dp.reshape(shape[0], -1)
            tf = tp.reshape(shape[0], -1)
            d[sl] = (df * _safe_ratio(tf.norm(dim=1), df.norm(dim=1))[:, None]).reshape(-1)
    return d


def random_direction(space: ParamSpace, theta: Tensor, *, normalization: Normalization = "filter",
                     one_d: OneDPolicy = "zero", seed: int = 0) -> Tensor:
    """A Gaussian direction, normalized; deterministic given ``seed``. Shape ``(n,)``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    d = torch.randn(space.size, generator=gen, dtype=torch.float64).to(theta.device, theta.dtype)
    return normalize_direction(d, theta, space, normalization, one_d)


def orthogonalize(d2: Tensor, d1: Tensor, keep_norm: bool = True) -> Tensor:
    """``d2`` with its component along ``d1`` removed (Gram-Schmidt); with ``keep_norm`` the
    result is rescaled to the original ``||d2||`` (which a normalization had chosen)."""
    out = d2 - (torch.dot(d2, d1) / torch.dot(d1, d1).clamp_min(torch.finfo(d1.dtype).tiny)) * d1
    if keep_norm:
        out = out * _safe_ratio(d2.norm(), out.norm())
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


def pca_directions(trajectory: Sequence[Tensor] | Tensor | np.ndarray, k: int = 2,
                   center: Literal["last", "mean"] = "last") -> PCAResult:
    """PCA of checkpoints ``(T, n)``: centre at the last (or mean) checkpoint, SVD, top-``k``."""
    traj = torch.as_tensor(np.asarray(trajectory) if not isinstance(trajectory, Tensor) else trajectory)
    if traj.dim() != 2:
        traj = torch.stack([torch.as_tensor(t) for t in trajectory])  # type: ignore[union-attr]
    traj = traj.to(torch.float64)
    if traj.shape[0] < k + 1:
        raise ValueError(f"PCA of {k} directions needs at least {k + 1} checkpoints, got {traj.shape[0]}")
    if center not in ("last", "mean"):
        raise ValueError(f"center must be 'last' or 'mean', got {center!r}")
    c = traj[-1] if center == "last" else traj.mean(dim=0)
    M = traj - c
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    var = S ** 2
    ratio = (var[:k] / var.sum().clamp_min(torch.finfo(var.dtype).tiny)).numpy()
    dirs = Vh[:k]
    # deterministic sign: largest-magnitude entry positive
    signs = torch.sign(dirs[torch.arange(k), dirs.abs().argmax(dim=1)])
    dirs = dirs * signs[:, None]
    return PCAResult(directions=dirs.numpy(), explained_variance_ratio=ratio,
                     coords=(M @ dirs.T).numpy(), center=c.numpy(), centering=center)
