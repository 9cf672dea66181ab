"""Eigenvalue spectral density by stochastic Lanczos quadrature (SLQ; Ghorbani et al. 2019).

All probes run their Lanczos recurrences side by side, so each step is ONE batched HVP call
on a ``(n_probes, n)`` block. Each probe ``q0 = z/sqrt(n)`` (Rademacher ``z``) yields a
Gauss quadrature rule: nodes ``theta_j`` (Ritz values) and weights ``tau_j = (e_1^T s_j)^2``
that sum to 1, and ``E[sum_j tau_j f(theta_j)] ~ tr f(H) / n``.

A result is never silently non-finite: a Hessian whose scale leaves the floating-point range (a
diverged training, not a minimum) raises :class:`SpectrumOverflowError` naming the quantity that
overflowed and the ways out; numpy's own overflow warnings are not printed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from ..objective import Objective
from ..progress import progress_bar
from ..results import Result
from .operator import (
    CastOperator,
    SymmetricOperator,
    as_operator,
    estimator_generator,
    low_precision_operator,
    work_since_all,
)

log = logging.getLogger("qlandscape")

ZERO_SPECTRUM_SIGMA = 1.0
"""Smoothing width (eigenvalue units) of :func:`spectral_density` when every Ritz value is exactly 0 and no
``sigma`` is given: such a spectrum has no scale to derive one from (logged as a warning)."""

_WAY_OUT = ("a model at a minimum does not have curvature of this size: check that its training converged "
            "(qlandscape.fit: a diverged run, e.g. too large a learning rate, must be retrained with a smaller "
            "train.lr), or rescale the loss (or the operator) to curvature of moderate size")


class SpectrumOverflowError(FloatingPointError):
    """The spectral density would not be finite (NaN or inf in the Lanczos recurrence, the quadrature nodes
    or weights, the smoothed density or the trace estimate): the Hessian's scale is beyond the range of its
    floating-point type (or the smoothing width below it). The message names the quantity and the ways out."""


def _require_finite(what: str, value: Any, cause: str = "", way_out: str = _WAY_OUT) -> None:
    """Raise :class:`SpectrumOverflowError` unless every entry of ``value`` is finite."""
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise SpectrumOverflowError(f"SLQ spectral density: {what} is not finite ({bad} of {arr.size} entries NaN "
                                    f"or inf){cause}; {way_out}")


def _magnitude(x: np.ndarray) -> str:
    """The largest finite magnitude in ``x`` as a short string ("none" when no entry is finite)."""
    finite = np.abs(x[np.isfinite(x)])
    return f"{float(finite.max()):.3g}" if finite.size else "none"


def _standard_error(x: np.ndarray) -> float:
    """Standard error of the mean of ``x`` (shape (P,)), ``std(x, ddof=1) / sqrt(P)``; NaN for ``P = 1``. When the
    squared deviations alone overflow (entries beyond ~1e154) it is computed on ``x`` scaled by its largest
    magnitude, so finite entries give a finite error."""
    if x.size < 2:
        return float("nan")
    se = float(np.std(x, ddof=1) / math.sqrt(x.size))
    if not math.isfinite(se) and np.isfinite(x).all():
        top = float(np.max(np.abs(x)))
        se = top * float(np.std(x / top, ddof=1) / math.sqrt(x.size))
    return se


def _row_norms(W: Tensor) -> Tensor:
    """Euclidean norm of each row of ``W`` (b, n), shape (b,). Rows whose plain norm overflows (squares beyond
    the dtype's range although every entry is finite) are recomputed scaled by their largest entry, so only a
    non-finite entry gives a non-finite norm; other rows are the plain ``W.norm(dim=1)``, bit for bit."""
    b = W.norm(dim=1)
    over = ~torch.isfinite(b)
    if bool(over.any()):
        rows = W[over]
        m = rows.abs().amax(dim=1)
        b[over] = m * (rows / m.clamp_min(torch.finfo(W.dtype).tiny)[:, None]).norm(dim=1)
    return b


@dataclass
class DensityResult(Result):
    """Spectral density estimate.

    Attributes
    ----------
    nodes, weights : ndarray, shape (n_probes, n_steps)
        Gauss quadrature nodes (eigenvalue units) and weights per probe; entries past a
        probe's ``lengths`` are padding with weight 0.
    lengths : ndarray of int, shape (n_probes,)
        Lanczos steps actually taken per probe (shorter on an invariant subspace).
    grid : ndarray, shape (grid_size,)
    density : ndarray, shape (grid_size,)
        Gaussian-smoothed density on ``grid``; integrates to 1 (up to grid truncation).
    sigma : float
        Smoothing width (eigenvalue units).
    lambda_min, lambda_max : float
        Extreme Ritz values over all probes (by-products: converge to the extreme eigenvalues).
    trace_estimate, trace_stderr : float
        ``n * mean_p sum_j tau_pj theta_pj`` and its standard error over probes.
    n_params, n_hvp : int
    wall_time_s : float
    provenance : dict
    """

    nodes: np.ndarray
    weights: np.ndarray
    lengths: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    lambda_min: float
    lambda_max: float
    trace_estimate: float
    trace_stderr: float
    n_params: int
    n_hvp: int
    wall_time_s: float
    provenance: dict = field(default_factory=dict)

    def smoothed(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """Density on another ``grid`` with another Gaussian width ``sigma``."""
        return gaussian_smoothing(self.nodes, self.weights, grid, sigma)

    def expectation(self, f) -> float:  # type: ignore[no-untyped-def]
        """Quadrature estimate of ``tr f(H) / n`` for a vectorized function ``f``."""
        vals = np.where(self.weights > 0, f(self.nodes), 0.0)
        return float(np.mean(np.sum(self.weights * vals, axis=1)))

    def plot(self, ax=None, log: bool = True):  # type: ignore[no-untyped-def]
        """Plot the smoothed density (log scale by default, as in PyHessian's figures)."""
        from ..landscape.plot import plot_density
        return plot_density(self, ax=ax, log=log)

    def summary(self) -> str:
        return (f"SLQ density: lambda in [{self.lambda_min:.6g}, {self.lambda_max:.6g}], "
                f"trace ~ {self.trace_estimate:.6g} +- {self.trace_stderr:.2g} ({self.n_hvp} HVPs)")


def gaussian_smoothing(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """``mean_p sum_j w_pj N(grid; nodes_pj, sigma^2)``, shape ``(len(grid),)``.

    Parameters
    ----------
    nodes, weights : ndarray, shape (P, m)
        Quadrature nodes (eigenvalue units) and weights per probe.
    grid : ndarray, shape (G,)
        Where to evaluate the density (eigenvalue units).
    sigma : float
        Gaussian width (eigenvalue units), finite and > 0.

    Returns
    -------
    ndarray, shape (G,)
        The density (1 / eigenvalue units). Gaussians that underflow to 0 far from their node are 0 (no
        numpy warning).

    Raises
    ------
    ValueError
        ``sigma`` not a finite positive number.
    SpectrumOverflowError
        The density is not finite (a ``sigma`` so small that ``1 / sigma`` overflows, or nodes that are not
        finite).
    """
    if not (isinstance(sigma, (int, float, np.floating, np.integer)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite positive number, got {sigma!r}")
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        d = (grid[None, None, :] - nodes[:, :, None]) / sigma
        k = np.exp(-0.5 * d * d) / (sigma * math.sqrt(2 * math.pi))
        density = np.einsum("pj,pjg->g", weights, k) / nodes.shape[0]
    nodes64 = np.asarray(nodes, dtype=np.float64)
    if np.isfinite(nodes64).all():
        _require_finite("the smoothed density", density, f" at smoothing width sigma={sigma:.3g} (nodes up to "
                        f"{_magnitude(nodes64)} in magnitude)", "sigma is too small for float64: pass a larger sigma")
    _require_finite("the smoothed density", density, f" (nodes up to {_magnitude(nodes64)} in magnitude)")
    return density


def spectral_density(target: Union[Objective, SymmetricOperator, Tensor], *, n_probes: int = 10,
                     n_steps: int = 80, sigma: Optional[float] = None, grid_size: int = 1000,
                     seed: int = 0, hvp_dtype: Any = "auto", progress: bool = True) -> DensityResult:
    """Spectral density of the Hessian by stochastic Lanczos quadrature.

    Parameters
    ----------
    target : Objective, operator or matrix
    n_probes : int
        Independent Rademacher start vectors (run in parallel).
    n_steps : int
        Lanczos steps per probe (capped at ``n``).
    sigma : float, optional
        Gaussian smoothing width; default ``(lambda_max - lambda_min) / 200`` (scale-invariant).
    grid_size : int
        Points of the smoothed-density grid spanning ``[lambda_min - 5 sigma, lambda_max + 5 sigma]``.
    seed : int
        Seeds SLQ's own random stream (:func:`~qlandscape.curvature.operator.estimator_generator`
        with ``"slq"``): its probes are independent of Hutchinson's for the same seed, so
        ``trace_estimate`` against :func:`hessian_trace` is a genuine cross-check.
    hvp_dtype : "auto", torch.dtype or None
        Precision of the HVPs (recurrences, reorthogonalization and quadrature stay in the
        target's dtype). ``"auto"``: float32 for a float64 objective. Justification: a float32
        HVP error ``e`` (measured 3e-6..1e-5 relative on the digits models) moves each node by
        about ``e * ||H||``, far below the default smoothing width ``(lambda_max - lambda_min) / 200``,
        and the per-probe trace estimates by far less than their spread over probes (the
        reported standard error). On the README MLP (10 probes x 80 steps): nodes moved by at
        most 2.5e-4 sigma, the trace estimate by 5.5e-5 standard errors, 1.6x faster.
        Recorded as ``provenance["hvp_dtype"]``.
    progress : bool

    Returns
    -------
    DensityResult
        Every array and number in it finite (``trace_stderr`` is NaN with one probe). A spectrum whose Ritz
        values are all exactly 0 (a Hessian that vanishes on every probe's Krylov space, as at a saturated,
        diverged network) is smoothed with ``sigma = ZERO_SPECTRUM_SIGMA`` (1) unless ``sigma`` is given, and
        logged as a warning.

    Raises
    ------
    SpectrumOverflowError
        (a ``FloatingPointError``) When the recurrence coefficients, the quadrature nodes or weights, the
        density or the trace estimate are not finite: the Hessian's scale is beyond its dtype's range (or the
        operator returned NaN/inf). The message names the quantity, the step and the magnitude reached, and the
        ways out (a model at a minimum has no such curvature: check the training, retrain with a smaller
        learning rate, or rescale the loss). Row norms whose squares alone overflow are computed scaled, so a
        Hessian of huge but representable scale (eigenvalues ~1e200) gives its spectrum, not an error.
    ValueError
        ``n_probes`` or ``n_steps`` below 1, or ``sigma`` given but not finite and positive.
    """
    op = as_operator(target)
    if n_probes < 1 or n_steps < 1:
        raise ValueError(f"n_probes and n_steps must be >= 1, got {n_probes}, {n_steps}")
    if sigma is not None and not (isinstance(sigma, (int, float, np.floating, np.integer))
                                  and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite positive number (or None: automatic), got {sigma!r}")
    n = op.n
    m = min(n_steps, n)
    P = n_probes
    gen = estimator_generator(seed, "slq")
    start = time.perf_counter()
    full = op
    hop = low_precision_operator(op, hvp_dtype)
    before = [o.work() for o in ((full,) if hop is full else (full, hop))]
    if hop is not full:
        op = CastOperator(hop, full.dtype)
    Z = (torch.randint(0, 2, (P, n), generator=gen).to(torch.float64) * 2 - 1).to(op.device, op.dtype)
    # (probes, steps, n): each probe's basis is one contiguous block for its reorthogonalization
    Q = torch.zeros(P, m, n, dtype=op.dtype, device=op.device)
    Q[:, 0] = Z / math.sqrt(n)
    A = np.zeros((P, m))
    B = np.zeros((P, m))
    lengths = np.full(P, m)
    active = torch.ones(P, dtype=torch.bool, device=op.device)
    scale = 0.0
    bar = progress_bar(m, f"SLQ ({P} probes)", progress)
    for j in range(m):
        idx = torch.nonzero(active).flatten()
        W = torch.zeros(P, n, dtype=op.dtype, device=op.device)
        W[idx] = op.matmat(Q[idx, j])
        a = (Q[:, j] * W).sum(dim=1)
        W = W - a[:, None] * Q[:, j]
        if j > 0:
            W = W - torch.as_tensor(B[:, j - 1], dtype=op.dtype, device=op.device)[:, None] * Q[:, j - 1]
        for p in idx.tolist():  # full (twice-applied) reorthogonalization, per probe, with BLAS gemv
            basis = Q[p, :j + 1]  # contiguous (j + 1, n); torch.bmm with a vector operand is ~10x slower
            for _ in range(2):
                W[p] -= torch.mv(basis.T, torch.mv(basis, W[p]))
        b = _row_norms(W)
        A[:, j] = a.detach().cpu().numpy()
        bn = b.detach().cpu().numpy()
        if not (np.isfinite(A[:, j]).all() and np.isfinite(bn).all()):
            reached = _magnitude(np.concatenate([A[:, :j + 1].ravel(), B[:, :j].ravel(), bn]))
            bar.close()
            source = ("a Hessian-vector product is NaN or inf" if not bool(torch.isfinite(W).all())
                      else "a recurrence coefficient overflowed")
            raise SpectrumOverflowError(
                f"SLQ spectral density: the Lanczos recurrence is not finite at step {j + 1} of {m} ({source}; "
                f"largest finite coefficient {reached} in {str(op.dtype).replace('torch.', '')}): the Hessian's "
                f"scale is beyond floating-point range; {_WAY_OUT}")
        scale = max(scale, float(np.max(np.abs(A[:, j]))), float(np.max(bn)))
        bar.update(1)
        if j + 1 == m:
            break
        broke = (bn <= 1e3 * np.finfo(float).eps * max(scale, np.finfo(float).tiny)) & active.cpu().numpy()
        for p in np.nonzero(broke)[0]:
            lengths[p] = j + 1
        active &= ~torch.as_tensor(broke, device=op.device)
        B[:, j] = np.where(active.cpu().numpy(), bn, 0.0)
        if not bool(active.any()):
            break
        Q[:, j + 1] = torch.where(active[:, None], W / b.clamp_min(torch.finfo(op.dtype).tiny)[:, None],
                                  torch.zeros_like(W))
    bar.close()
    nodes = np.zeros((P, m))
    weights = np.zeros((P, m))
    for p in range(P):
        L = int(lengths[p])
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            if L == 1:
                theta, S = A[p, :1], np.ones((1, 1))
            else:
                theta, S = eigh_tridiagonal(A[p, :L], B[p, :L - 1])
            nodes[p, :L] = theta
            weights[p, :L] = S[0, :] ** 2
    scale_note = f" (largest Lanczos coefficient {_magnitude(np.concatenate([A.ravel(), B.ravel()]))})"
    _require_finite("the quadrature nodes", nodes, scale_note)
    _require_finite("the quadrature weights", weights, scale_note)
    mask = weights > 0
    lam_min = float(np.min(nodes[mask])) if mask.any() else 0.0
    lam_max = float(np.max(nodes[mask])) if mask.any() else 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        spread = lam_max - lam_min
        if sigma is None:
            if spread > 0:
                sigma = spread / 200
            elif lam_max != 0:
                sigma = abs(lam_max) * 1e-3
            else:
                sigma = ZERO_SPECTRUM_SIGMA
                log.warning("SLQ spectral density: every Ritz value of all %d probes is exactly 0 (the Hessian "
                            "vanishes on their Krylov spaces: a saturated network, e.g. after a diverged training, "
                            "or parameters the loss does not depend on); smoothing the point mass at 0 with "
                            "sigma=%g (pass sigma to choose)", P, sigma)
        grid = np.linspace(lam_min - 5 * sigma, lam_max + 5 * sigma, grid_size)
        per_probe = n * np.sum(weights * nodes, axis=1)
        tr_mean = float(np.mean(per_probe))
        tr_se = _standard_error(per_probe)
    _require_finite("the eigenvalue range", [lam_min, lam_max, spread, sigma], f" (Ritz values in [{lam_min:.3g}, "
                    f"{lam_max:.3g}])")
    _require_finite("the density grid", grid, f" (sigma={sigma:.3g}, Ritz values in [{lam_min:.3g}, {lam_max:.3g}])")
    _require_finite("the trace estimate", [tr_mean] + ([tr_se] if P > 1 else []),
                    f" (n={n} times Ritz values up to {_magnitude(nodes)})")
    density = gaussian_smoothing(nodes, weights, grid, sigma)
    work = work_since_all((full,) if hop is full else (full, hop), before)
    return DensityResult(nodes=nodes, weights=weights, lengths=lengths.astype(np.int64), grid=grid,
                         density=density, sigma=float(sigma), lambda_min=lam_min, lambda_max=lam_max,
                         trace_estimate=tr_mean, trace_stderr=tr_se, n_params=n,
                         n_hvp=work.get("hvp", 0), wall_time_s=time.perf_counter() - start,
                         provenance=dict(full.provenance(), seed=seed, seed_stream="slq", work=work,
                                         hvp_dtype=str(hop.dtype).replace("torch.", "")))
