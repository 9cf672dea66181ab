"""Extreme eigenpairs of the Hessian: Lanczos with full reorthogonalization and a verified error
certificate, or a dense path (batched HVPs + ``eigh``) for small parameter counts.

``which`` is always *algebraic*: "largest" is the most positive eigenvalue, never the one of
largest magnitude. Stopping is scale-invariant: the wanted pairs are accepted when every error
bound is below ``tol * max_j |theta_j|``, so multiplying the loss by 1e-8 changes no iteration count.

The certificate
---------------
Let ``Y`` (``w`` orthonormal rows) be the returned Ritz vectors, ``Theta = Y A Y^T`` their Ritz
values and ``rho = ||A Y^T - Y^T Theta||_2`` their *joint* residual. In the basis ``[Y, Z]``
(``Z`` spans the complement) ``A = [[Theta, C^T], [C, G]]`` with ``||C|| <= rho`` and ``G`` the
compression of ``A`` to the complement. If every eigenvalue of ``G`` is at most ``U`` (and at least
``L`` where the bottom end is wanted), Weyl's theorem gives ``|lambda_i - theta_i| <= rho +
max(0, U - theta_i)`` and, with the gap ``eta = min_i (theta_i - U, L - theta_i) > 0``, the
quadratic residual bound of Li & Li (2005) gives ``|lambda_i - theta_i| <=
2 rho^2 / (eta + sqrt(eta^2 + 4 rho^2))`` -- in both cases for the *i-th* eigenvalue, so no wanted
eigenvalue can have been skipped. ``Theta`` and ``rho`` are computed; ``U``/``L`` are not visible
to a single Krylov run (an eigenvalue the start vector barely sees, a cluster that one Ritz value
has not yet split, or a second copy of a repeated eigenvalue all hide in ``G``). They come from a
*verification run*: Lanczos on ``G`` (to widen its margin, on ``G'``, the compression to the
complement of the wanted vectors *and* of converged unwanted Ritz vectors next to them, with
``max eig G <= max(their values, max eig G') + their joint residual``) from an independent random
start ``w``. For every polynomial ``q`` with ``deg q <= j`` and an eigenvector ``u`` of ``G'``
with eigenvalue ``nu``, ``|q(nu)| |u.w| <= ||q(G') w||``; the best ``q`` (the Christoffel-Darboux
kernel of the run's orthonormal Lanczos polynomials ``P_i``) gives ``sum_i P_i(nu)^2 <=
1 / (u.w)^2``. ``u.w`` of a uniformly random unit ``w`` is below ``delta`` with probability
``I_{delta^2}(1/2, (n_G - 1)/2)`` (a Beta law), which fixes ``delta`` for the failure probability
:data:`CERTIFICATE_FAILURE_PROB`; where the kernel crosses ``1 / delta^2`` beyond the largest Ritz
value is ``U`` (the Lanczos-polynomial version of this is van Dorsselaer, Hochstenbach & van der
Vorst 2000; the random-start argument is Kuczynski & Wozniakowski 1992). If the verification
finds Ritz values that block the certificate (what the main run missed), their Ritz vectors join
the main Krylov space (a block continuation) and the run goes on; a later verification uses a
fresh start. Because ``lambda_{k+1}(A) <= max eig G`` (Cauchy interlacing), each verification
also leaves a bound on ``lambda_{k+1}`` that later iterates reuse (then ``U`` is that bound plus
the current ``rho``, valid once ``theta_k - rho`` exceeds it).

Cost: the verification needs about ``log(1/delta) / sqrt(margin / spread)`` HVPs, ``margin`` the
distance it must certify below ``theta_k``: a few HVPs when the wanted eigenvalues stand out of
the spectrum (trained-network Hessians: +4 to +12 HVPs over the uncertified Lanczos stop),
dozens to hundreds inside clusters, where a single Krylov run's a-posteriori bound is not a
bound at all.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Union

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal, eigvalsh_tridiagonal
from scipy.special import betaincinv
from torch import Tensor

from ..objective import Objective
from ..progress import progress_bar
from ..results import Result
from .operator import (
    HessianOperator,
    SymmetricOperator,
    as_operator,
    dense_matrix,
    estimator_generator,
    with_hvp_dtype,
    work_since,
    work_since_all,
)

Which = Literal["largest", "smallest", "both"]
HvpDtype = Union[Literal["auto"], torch.dtype, None]
_WHICH_ALIASES = {"largest": "largest", "LA": "largest", "smallest": "smallest", "SA": "smallest",
                  "both": "both", "BE": "both"}

CERTIFICATE_FAILURE_PROB = 1e-3
"""Probability (over the verification run's random start, per certified end of the spectrum) that
the bound on the rest of the spectrum is wrong; the bound itself is a worst case over matrices."""

F32_MIN_TOL = {"gap": 1e-6, "residual": 1e-4}
"""Smallest ``tol`` at which ``hvp_dtype="auto"`` runs the Krylov iteration with float32 HVPs.
Measured float32 HVP errors on the Ritz vectors of the trained digits models (``||H32 y - H64 y||
/ lambda_max``): 8e-7 (MLP 64-128-128-10), 1.6e-6 (MLP 64-512-512-10), 1.8e-5 (CNN). The float64
residual of the final Ritz vectors cannot drop below that floor: the "residual" bound (first order
in it) reached 1e-4 on all three with float32 HVPs and needed the float64 continuation at 1e-5 on
the CNN. The "gap" bound is quadratic (``~ rho^2 / eta``) and certified 1e-6 on all three without
it. Below these tolerances the float64 continuation would usually be needed, so "auto" stays in
float64."""

_TRIGGER_FRACTION = 0.1   # verify once the bounds would hold with U a tenth of the way from theta_k to theta_(k+1)
_CHUNK = 32               # basis rows per lazily allocated block


@dataclass
class EigResult(Result):
    """Eigenpairs of a symmetric operator with their certificate.

    Attributes
    ----------
    eigenvalues : ndarray, shape (m,)
        ``m = k`` (``2k`` for ``which="both"``), sorted in descending order.
    eigenvectors : ndarray, shape (m, n)
        Unit-norm eigenvectors (rows), in the order of ``eigenvalues``.
    residuals : ndarray, shape (m,)
        ``||H y - theta y||`` of each returned pair (in loss units per parameter unit^2).
    error_bounds : ndarray, shape (m,)
        Bound on ``|theta_i - lambda_i|`` where ``lambda_i`` is the i-th wanted eigenvalue (the
        i-th largest, or i-th of the bottom ones in descending order): see the module docstring.
        Without a certificate (``converged=False``) these are the residuals, which bound the
        distance to *some* eigenvalue only.
    ritz_history : ndarray, shape (iterations, m)
        The wanted Ritz values after each Lanczos step (NaN where not yet defined).
    which, method : str
    converged : bool
        All returned pairs met ``error_bound <= tol * scale`` with a certificate (see ``lanczos``).
    tol : float
    n_iter, n_hvp : int
        Krylov dimension of the main run; HVPs of every kind (main run, verification runs,
        float64 re-checks).
    wall_time_s : float
    provenance : dict
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    error_bounds: np.ndarray
    ritz_history: np.ndarray
    which: str
    method: str
    converged: bool
    tol: float
    n_iter: int
    n_hvp: int
    wall_time_s: float
    provenance: dict = field(default_factory=dict)

    def plot(self, ax=None):  # type: ignore[no-untyped-def]
        """Convergence of the wanted Ritz values against Lanczos steps (= HVPs)."""
        from ..landscape.plot import new_axes
        ax = new_axes(ax)
        steps = np.arange(1, self.ritz_history.shape[0] + 1)
        for i in range(self.ritz_history.shape[1]):
            ax.plot(steps, self.ritz_history[:, i], marker=".", label=f"theta_{i + 1}")
        ax.set_xlabel("Lanczos step")
        ax.set_ylabel("Ritz value")
        ax.legend(fontsize="small")
        return ax

    def summary(self) -> str:
        vals = ", ".join(f"{v:.6g}" for v in self.eigenvalues)
        return (f"eigenvalues ({self.which}, {self.method}): [{vals}]; max residual "
                f"{float(np.max(self.residuals)):.2e}; {self.n_hvp} HVPs; converged={self.converged}")


# ---------------------------------------------------------------------------- Krylov machinery
def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices (into ascending ``theta``) of the wanted Ritz values, descending by value."""
    m = theta.shape[0]
    if which == "largest":
        idx = np.arange(m - 1, max(m - k, 0) - 1, -1)
    elif which == "smallest":
        idx = np.arange(0, min(k, m))[::-1]
    else:
        top = list(range(m - 1, max(m - k, 0) - 1, -1))
        bottom = [i for i in range(min(k, m) - 1, -1, -1) if i not in top]
        idx = np.array(top + bottom, dtype=int)
    return idx


class _Basis:
    """Orthonormal row vectors of length ``n``, stored in blocks of ``_CHUNK`` rows that are
    allocated only when needed (a 300k-parameter model does not pay for ``max_iter`` rows up front)."""

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device) -> None:
        self.n, self.dtype, self.device = n, dtype, device
        self.blocks: list[Tensor] = []
        self.m = 0

    def _views(self, lo: int = 0) -> list[tuple[int, Tensor]]:
        """(first row index, block view) covering rows ``lo .. m-1``."""
        out = []
        for b, B in enumerate(self.blocks):
            start, stop = b * _CHUNK, min((b + 1) * _CHUNK, self.m)
            if stop <= lo:
                continue
            if start >= self.m:
                break
            first = max(lo, start)
            out.append((first, B[first - start:stop - start]))
        return out

    def row(self, i: int) -> Tensor:
        return self.blocks[i // _CHUNK][i % _CHUNK]

    def _sweep(self, w: Tensor, coef: Tensor, lo: int = 0) -> Tensor:
        for first, B in self._views(lo):
            c = torch.mv(B, w)
            w = torch.addmv(w, B.T, c, alpha=-1.0)
            coef[first:first + B.shape[0]] += c
        return w

    def project_out(self, w: Tensor, passes: int = 2, local: Optional[int] = None) -> tuple[Tensor, np.ndarray]:
        """``w`` minus its projection on the basis, and the accumulated coefficients ``V w``,
        shape ``(m,)``.

        With ``local`` (the first row of the recent vectors ``w`` is expected to couple to, e.g.
        ``j - 1`` in Lanczos) those rows are swept twice first, then the whole basis once, and a
        second whole sweep runs only if that one cancelled more than ``1 - 1/sqrt(2)`` of the
        norm (the Daniel-Gragg-Kaufman-Stewart criterion): the large coefficients are taken out
        locally, so the full reorthogonalization usually costs one sweep instead of two.
        Without ``local``: ``passes`` full sweeps (block Gram-Schmidt).
        """
        coef = torch.zeros(self.m, dtype=self.dtype, device=self.device)
        if local is None:
            for _ in range(passes):
                w = self._sweep(w, coef)
        else:
            for _ in range(2):
                w = self._sweep(w, coef, lo=max(0, local))
            before = float(w.norm())
            w = self._sweep(w, coef)
            if float(w.norm()) < 0.7071 * before:
                w = self._sweep(w, coef)
        return w, coef.detach().cpu().numpy().astype(np.float64)

    def append(self, w: Tensor) -> None:
        """Append a unit vector already orthogonal to the basis."""
        if self.m == len(self.blocks) * _CHUNK:
            self.blocks.append(torch.empty(_CHUNK, self.n, dtype=self.dtype, device=self.device))
        self.blocks[self.m // _CHUNK][self.m % _CHUNK] = w
        self.m += 1

    def add(self, v: Tensor) -> bool:
        """Orthogonalize ``v`` against the basis and append it; False if it lies in the span."""
        norm0 = float(v.norm())
        w, _ = self.project_out(v)
        nrm = float(w.norm())
        if not norm0 > 0 or nrm <= 1e-8 * norm0:
            return False
        w, _ = self.project_out(w / nrm, passes=1)
        self.append(w / w.norm())
        return True

    def combine(self, C: np.ndarray) -> Tensor:
        """``C @ V[:C.shape[1]]``: rows are combinations of the first basis vectors, shape (r, n)."""
        Ct = torch.as_tensor(C, dtype=self.dtype, device=self.device)
        out = torch.zeros(Ct.shape[0], self.n, dtype=self.dtype, device=self.device)
        for first, B in self._views():
            b = min(B.shape[0], Ct.shape[1] - first)
            if b <= 0:
                break
            out += Ct[:, first:first + b] @ B[:b]
        return out


class _Krylov:
    """Krylov process with full reorthogonalization and the explicit projection ``H = V A V^T``.

    Basis vectors are *processed* in order: processing ``v_j`` costs one HVP, records column ``j``
    of ``H`` and appends the orthogonalized remainder of ``A v_j``. With one start vector this is
    Lanczos (``H`` tridiagonal); vectors added later (random restarts, the verification run's Ritz
    vectors) turn it into a block Krylov process. ``H[:P, :P]`` (``P`` processed) is the exact
    Rayleigh quotient of the processed vectors and ``H[P:m, :P]`` their residual coupling.
    """

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device) -> None:
        self.basis = _Basis(n, dtype, device)
        self.H = np.zeros((64, 64))
        self.P = 0
        self.norm_est = 0.0
        self.tridiagonal = True

    @property
    def m(self) -> int:
        return self.basis.m

    @property
    def pending(self) -> int:
        return self.m - self.P

    def add(self, v: Tensor) -> bool:
        if self.pending > 0:   # a second pending direction: block Krylov, H no longer tridiagonal
            self.tridiagonal = False
        ok = self.basis.add(v)
        self._fit(self.m)
        return ok

    def _fit(self, size: int) -> None:
        if size > self.H.shape[0]:
            H = np.zeros((2 * size, 2 * size))
            H[:self.H.shape[0], :self.H.shape[1]] = self.H
            self.H = H

    def step(self, hvp: Callable[[Tensor], Tensor]) -> None:
        """Process the next basis vector (one HVP)."""
        j, m = self.P, self.m
        Av = hvp(self.basis.row(j)[None])[0]
        nav = float(Av.norm())
        # A v_j couples to v_(j-1), v_j and, in block mode, to the vectors up to ``pending`` back
        w, h = self.basis.project_out(Av, local=j - 1 if self.tridiagonal else j - self.pending - 1)
        self._fit(m + 1)
        self.H[:m, j] = h
        b = float(w.norm())
        self.norm_est = max(self.norm_est, nav)
        if b > 1e3 * torch.finfo(self.basis.dtype).eps * self.norm_est:
            self.basis.append(w / b)
            self.H[m, j] = b
        self.P += 1

    def ritz(self, ranges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending) of the processed block, and the Ritz vectors (columns, basis
        coordinates) of the ascending-index ``ranges`` ``[lo, hi)``: returns (theta, sel, S_sel).

        While the process is plain Lanczos the projection is tridiagonal (entries off the band
        are reorthogonalization round-off) and only the selected vectors are computed, O(P^2)
        per step instead of a dense O(P^3) ``eigh``."""
        P = self.P
        sel = np.unique(np.concatenate([np.arange(max(lo, 0), min(hi, P)) for lo, hi in ranges]))
        if not self.tridiagonal or P < 3:
            Hp = self.H[:P, :P]
            theta, S = np.linalg.eigh(0.5 * (Hp + Hp.T))
            return theta, sel, S[:, sel]
        d, e = np.diag(self.H[:P, :P]).copy(), np.diag(self.H[:P, :P], -1).copy()
        theta = eigvalsh_tridiagonal(d, e)
        blocks = []
        for lo, hi in _runs(sel):
            blocks.append(eigh_tridiagonal(d, e, select="i", select_range=(lo, hi - 1))[1])
        return theta, sel, np.concatenate(blocks, axis=1)

    def coupling(self, S: np.ndarray) -> np.ndarray:
        """``V_pending (A Y^T - Y^T Theta)`` for ``Y = S^T V[:P]``: shape (pending, columns of S)."""
        return self.H[self.P:self.m, :self.P] @ S


@dataclass
class _State:
    """The wanted part of a Rayleigh-Ritz step, in descending order of the wanted values."""

    theta: np.ndarray        # all Ritz values, ascending
    idx: np.ndarray          # wanted indices into theta
    sel: np.ndarray          # indices into theta whose Ritz vectors were computed
    S_sel: np.ndarray        # (P, len(sel)) those Ritz vectors (basis coordinates, columns)
    S: np.ndarray            # (P, w) Ritz vectors of the wanted values
    top: np.ndarray          # (w,) bool: wanted from the top end
    rho: float               # joint residual ||A Y^T - Y^T Theta||_2
    res: np.ndarray          # (w,) per-vector residual norms
    upper_rest: float        # largest unwanted Ritz value (-inf if none)
    lower_rest: float        # smallest unwanted Ritz value (+inf if none)
    scale: float

    @property
    def values(self) -> np.ndarray:
        return self.theta[self.idx]

    def vectors(self, ix: np.ndarray) -> np.ndarray:
        """Ritz vectors (columns) of the indices ``ix`` (a subset of ``sel``)."""
        return self.S_sel[:, np.searchsorted(self.sel, ix)]


def _runs(sel: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[lo, hi)`` of consecutive integers in sorted ``sel``."""
    cuts = np.flatnonzero(np.diff(sel) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(sel, cuts) if r.size]


def _state(kry: _Krylov, k: int, which: str, extra: int) -> _State:
    """Rayleigh-Ritz of the processed block; vectors for the wanted values and the ``extra``
    unwanted ones next to each wanted end (deflation candidates of the verification)."""
    P = kry.P
    ranges = []
    if which != "smallest":
        ranges.append((P - k - extra, P))
    if which != "largest":
        ranges.append((0, k + extra))
    theta, sel, S_sel = kry.ritz(ranges)
    idx = _wanted(theta, k, which)
    Sw = S_sel[:, np.searchsorted(sel, idx)]
    R = kry.coupling(Sw)
    rho = float(np.linalg.norm(R, 2)) if R.size else 0.0
    res = np.linalg.norm(R, axis=0) if R.size else np.zeros(len(idx))
    rest = np.delete(theta, idx)
    top = np.zeros(len(idx), dtype=bool) if which == "smallest" else np.arange(len(idx)) < min(k, len(idx))
    return _State(theta=theta, idx=idx, sel=sel, S_sel=S_sel, S=Sw, top=top, rho=rho, res=res,
                  upper_rest=float(rest.max()) if rest.size else -np.inf,
                  lower_rest=float(rest.min()) if rest.size else np.inf,
                  scale=max(float(np.max(np.abs(theta))), np.finfo(float).tiny))


# ---------------------------------------------------------------------------- the certificate
def _bounds(values: np.ndarray, top: np.ndarray, rho: float, upper: float, lower: float,
            criterion: str) -> np.ndarray:
    """Bounds on ``|theta_i - lambda_i|`` given the joint residual ``rho`` and an interval
    ``[lower, upper]`` holding every eigenvalue of the compression to the complement.

    ``gap_i = theta_i - upper`` (top end) or ``lower - theta_i`` (bottom end). Weyl:
    ``rho + max(0, -gap_i)``; with ``criterion="gap"`` and ``eta = min_i gap_i > 0`` the quadratic
    bound ``2 rho^2 / (eta + sqrt(eta^2 + 4 rho^2))`` (Li & Li 2005), never larger than ``rho``.
    """
    gaps = np.where(top, values - upper, lower - values)
    weyl = rho + np.maximum(0.0, -gaps)
    eta = float(np.min(gaps)) if gaps.size else np.inf
    if criterion == "gap" and eta > 0:
        quad = 0.0 if math.isinf(eta) else 2 * rho ** 2 / (eta + math.sqrt(eta ** 2 + 4 * rho ** 2))
        return np.full(values.shape, quad)
    return weyl


def _guess(st: _State) -> tuple[float, float]:
    """Where the rest of the spectrum is expected to end: part way from the k-th wanted Ritz value
    to the nearest unwanted one (the main run's own, optimistic, picture)."""
    v = st.values
    up = lo = np.nan
    if st.top.any():
        kth = float(v[st.top].min())
        up = kth - _TRIGGER_FRACTION * (kth - st.upper_rest) if np.isfinite(st.upper_rest) else -np.inf
    if (~st.top).any():
        kth = float(v[~st.top].max())
        lo = kth + _TRIGGER_FRACTION * (st.lower_rest - kth) if np.isfinite(st.lower_rest) else np.inf
    return up, lo


def _log_christoffel(x: np.ndarray, alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """``log sum_{i=0}^{j} P_i(x)^2`` for the orthonormal Lanczos polynomials of a run with
    coefficients ``alphas`` (j) and ``betas`` (j, the last one the norm of the final residual):
    ``P_0 = 1``, ``beta_i P_i = (x - alpha_i) P_(i-1) - beta_(i-1) P_(i-2)``. Rescaled as it goes."""
    prev = np.zeros_like(x)
    cur = np.ones_like(x)
    log_scale = np.zeros_like(x)
    log_k = np.zeros_like(x)
    for i in range(len(alphas)):
        nxt = ((x - alphas[i]) * cur - (betas[i - 1] * prev if i > 0 else 0.0)) / betas[i]
        prev, cur = cur, nxt
        size = np.maximum(np.abs(prev), np.abs(cur))
        size = np.where(size > 0, size, 1.0)
        prev, cur = prev / size, cur / size
        log_scale = log_scale + np.log(size)
        with np.errstate(divide="ignore"):
            log_k = np.logaddexp(log_k, 2 * (np.log(np.abs(cur)) + log_scale))
    return log_k


def _christoffel_edge(alphas: np.ndarray, betas: np.ndarray, psi: np.ndarray, log_delta: float,
                      upper: bool) -> float:
    """Bound on the extreme eigenvalue of the verified operator beyond the Ritz values ``psi``.

    For every polynomial ``q`` of degree ``<= j`` and every eigenvalue ``x`` whose eigenvector has
    start-vector component ``|c| >= delta``: ``|q(x)| |c| <= ||q(G) w||``. The best ``q`` (the
    Christoffel-Darboux kernel) turns this into ``K(x) = sum_i P_i(x)^2 <= 1 / delta^2``; beyond the
    extreme Ritz value ``K`` increases, so the crossing point bounds the extreme eigenvalue.
    """
    edge = float(psi.max() if upper else psi.min())
    if not betas[-1] > 0:   # invariant Krylov space: the extreme Ritz value is an eigenvalue
        return edge
    sign = 1.0 if upper else -1.0
    span = max(float(psi.max() - psi.min()), float(np.max(np.abs(psi))), np.finfo(float).tiny)
    level = -2 * log_delta
    if _log_christoffel(np.array([edge]), alphas, betas)[0] >= level:
        # K(nu_max) >= K(edge) >= 1/delta^2: the top eigenvector's component is provably below
        # delta for this start (the event the bound needs failed), so there is no bound
        return sign * np.inf
    lo, hi = math.log(span) - 45, math.log(span) + 12
    for points in (256, 64):
        grid = np.linspace(lo, hi, points)
        above = _log_christoffel(edge + sign * np.exp(grid), alphas, betas) >= level
        if not above.any():
            return sign * np.inf
        first = int(np.argmax(above))
        if first == 0:
            return edge + sign * math.exp(grid[0])
        lo, hi = grid[first - 1], grid[first]
    return edge + sign * math.exp(hi)


@dataclass
class _Verification:
    status: Literal["certified", "blocked", "undecided"]
    upper: float          # every eigenvalue of G is <= upper (w.p. >= 1 - p), +inf if unknown
    lower: float
    n_hvp: int
    suspects: Optional[Tensor]   # (r, n) Ritz vectors of G that block the certificate


@dataclass
class _Deflation:
    """What the verification run deflates: the wanted Ritz vectors and, to widen the margin it has
    to certify, converged unwanted Ritz pairs next to them (values ``extra``, joint residual
    ``rho_extra``). With ``G`` the compression to the complement of the wanted vectors and ``G'``
    the compression to the complement of all of them, ``G = [[Theta_extra, C^T], [C, G']]`` with
    ``||C|| <= rho_extra``, so Weyl gives ``max eig G <= max(extra, max eig G') + rho_extra``."""

    Y: Tensor                 # (w + r, n) orthonormal rows
    extra: np.ndarray         # (r,) the extra Ritz values
    rho_extra: float

    def rest(self, upper: float, lower: float) -> tuple[float, float]:
        """Bounds on the spectrum of ``G`` from bounds on that of ``G'``."""
        if not self.extra.size:
            return upper, lower
        return (max(upper, float(self.extra.max())) + self.rho_extra,
                min(lower, float(self.extra.min())) - self.rho_extra)


def _verify(hvp: Callable[[Tensor], Tensor], defl: _Deflation, st: _State, values: np.ndarray, rho: float,
            t: float, criterion: str, gen: torch.Generator, j_max: int, guess: tuple[float, float]) -> _Verification:
    """Lanczos on the compression ``G'`` of ``A`` to the complement of ``defl.Y`` from a random
    start, until the Christoffel bound on ``G'``'s spectrum certifies ``values`` (status
    "certified"), or ``G'`` has a Ritz value that rules the certificate out ("blocked": the wanted
    set missed something, or ``rho`` is still too large), or ``j_max`` steps pass ("undecided").
    The returned interval bounds the spectrum of ``G`` (complement of the wanted vectors only)."""
    Y = defl.Y
    n, d = Y.shape[1], Y.shape[0]
    n_g = n - d
    need_up, need_lo = bool(st.top.any()), bool((~st.top).any())
    if n_g <= 0:
        up, lo = defl.rest(-np.inf, np.inf)
        return _Verification("certified", up, lo, 0, None)
    log_delta = (0.5 * math.log(float(betaincinv(0.5, 0.5 * (n_g - 1), CERTIFICATE_FAILURE_PROB)))
                 if n_g > 1 else -np.inf)
    slack = 1e2 * torch.finfo(Y.dtype).eps * st.scale
    basis = _Basis(n, Y.dtype, Y.device)
    for y in Y:
        basis.append(y)
    w0 = torch.randn(n, generator=gen, dtype=torch.float64).to(Y.device, Y.dtype)
    if not basis.add(w0):
        return _Verification("undecided", np.inf, -np.inf, 0, None)
    alphas: list[float] = []
    betas: list[float] = []
    upper, lower = np.inf, -np.inf
    status: Literal["certified", "blocked", "undecided"] = "undecided"
    for j in range(min(j_max, n_g)):
        Av = hvp(basis.row(d + j)[None])[0]
        w, c = basis.project_out(Av, local=d + j - 1 if j > 0 else d)
        alphas.append(float(c[d + j]))
        b = float(w.norm())
        psi = eigvalsh_tridiagonal(np.array(alphas), np.array(betas)) if j > 0 else np.array(alphas)
        exact = b <= 1e3 * torch.finfo(Y.dtype).eps * max(float(Av.norm()), st.scale) or j + 1 == n_g
        a_np, b_np = np.array(alphas), np.array(betas + [0.0 if exact else b])
        if need_up:
            upper = min(upper, _christoffel_edge(a_np, b_np, psi, log_delta, upper=True) + slack)
        if need_lo:
            lower = max(lower, _christoffel_edge(a_np, b_np, psi, log_delta, upper=False) - slack)
        if np.all(_bounds(values, st.top, rho, *defl.rest(upper, lower), criterion) <= t):
            status = "certified"
            break
        best = defl.rest(float(psi.max()) if need_up else -np.inf, float(psi.min()) if need_lo else np.inf)
        if np.any(_bounds(values, st.top, rho, best[0] if need_up else np.inf,
                          best[1] if need_lo else -np.inf, criterion) > t):
            status = "blocked"
            break
        if exact:
            break
        basis.append(w / b)
        betas.append(b)
    suspects = None
    if status == "blocked":
        suspects = _suspects(basis, d, alphas, betas, guess, need_up, need_lo)
    up, lo = defl.rest(upper, lower)
    return _Verification(status, up, lo, len(alphas), suspects)


def _suspects(basis: _Basis, offset: int, alphas: list[float], betas: list[float],
              guess: tuple[float, float], need_up: bool, need_lo: bool) -> Optional[Tensor]:
    """Ritz vectors of the verification run beyond the expected end of the rest of the spectrum."""
    T = np.diag(alphas) + np.diag(betas[:len(alphas) - 1], 1) + np.diag(betas[:len(alphas) - 1], -1)
    psi, S = np.linalg.eigh(T)
    keep = np.zeros(len(psi), dtype=bool)
    if need_up:
        keep |= psi > guess[0]
        keep[-1] = True
    if need_lo:
        keep |= psi < guess[1]
        keep[0] = True
    C = np.zeros((int(keep.sum()), offset + len(alphas)))
    C[:, offset:] = S[:, keep].T
    return basis.combine(C)


# ---------------------------------------------------------------------------- precision
def _hvp_operator(op: SymmetricOperator, hvp_dtype: HvpDtype, tol: float, criterion: str) -> SymmetricOperator:
    """The operator whose products drive the Krylov iteration (see ``lanczos``'s ``hvp_dtype``)."""
    if hvp_dtype is None:
        return op
    if isinstance(hvp_dtype, str):
        if hvp_dtype != "auto":
            raise ValueError(f"hvp_dtype must be 'auto', None or a torch dtype, got {hvp_dtype!r}")
        auto = (isinstance(op, HessianOperator) and op.dtype == torch.float64
                and tol >= F32_MIN_TOL[criterion])
        return with_hvp_dtype(op, torch.float32) if auto else op
    if not isinstance(hvp_dtype, torch.dtype) or not hvp_dtype.is_floating_point:
        raise ValueError(f"hvp_dtype must be 'auto', None or a floating torch dtype, got {hvp_dtype!r}")
    return with_hvp_dtype(op, hvp_dtype)


def _hvp_fn(op: SymmetricOperator, dtype: torch.dtype, device: torch.device) -> Callable[[Tensor], Tensor]:
    def hvp(V: Tensor) -> Tensor:
        return op.matmat(V.to(op.device, op.dtype)).to(device, dtype)
    return hvp


# ---------------------------------------------------------------------------- the driver
class _Run:
    """State of one ``lanczos`` call: main Krylov process, verification bookkeeping, precision."""

    def __init__(self, op: SymmetricOperator, hop: SymmetricOperator, k: int, which: str, tol: float,
                 criterion: str, m_max: int, seed: int, progress: bool) -> None:
        self.op, self.hop, self.k, self.which = op, hop, k, which
        self.tol, self.criterion, self.m_max = tol, criterion, m_max
        self.n, self.dtype, self.device = op.n, op.dtype, op.device
        self.n_want = 2 * k if which == "both" else k
        self._extra = max(4, k)   # unwanted Ritz pairs per end the verification may deflate
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.vgen = estimator_generator(seed, "lanczos-verify")
        self.hvp = _hvp_fn(hop, self.dtype, self.device)
        self.hvp64 = _hvp_fn(op, self.dtype, self.device)
        self.mixed = hop is not op
        self.kry = _Krylov(self.n, self.dtype, self.device)
        self.rest_upper, self.rest_lower = np.inf, -np.inf   # lambda_(k+1) <= rest_upper, ...
        self.cert: Optional[tuple[str, float, float]] = None
        self.next_verify = 0
        self.verifications: list[dict[str, Any]] = []
        self.history: list[np.ndarray] = []
        self.n_iter = 0
        self.f64: Optional[dict[str, float]] = None   # the float64 re-check of a low-precision run
        self.bar = progress_bar(m_max, f"lanczos({which}, k={k})", progress)

    def random_vector(self) -> Tensor:
        return torch.randn(self.n, generator=self.gen, dtype=torch.float64).to(self.device, self.dtype)

    # -- main loop
    def iterate(self) -> _State:
        kry = self.kry
        st: Optional[_State] = None
        while True:
            if kry.pending == 0 and kry.m < self.n:   # invariant subspace: restart orthogonally
                while not kry.add(self.random_vector()):
                    pass
            if kry.pending == 0:
                break
            kry.step(self.hvp)
            self.n_iter += 1
            self.bar.update(1)
            st = _state(kry, self.k, self.which, self._extra)
            row = np.full(self.n_want, np.nan)
            row[:len(st.idx)] = st.values
            self.history.append(row)
            self.bar.set_postfix(top=f"{st.values[0]:.4g}", res=f"{st.rho / st.scale:.1e}")
            if self.certify(st) or kry.P >= self.m_max:
                break
        assert st is not None
        return st

    def certify(self, st: _State) -> bool:
        """Try to certify the current wanted set; True when ``self.cert`` is set."""
        if len(st.idx) < self.n_want:
            return False
        t = self.tol * st.scale
        if self.kry.pending == 0 and self.kry.m == self.n:   # the whole space: Ritz values are exact
            if np.all(_bounds(st.values, st.top, st.rho, st.upper_rest, st.lower_rest, self.criterion) <= t):
                self.cert = ("exact", st.upper_rest, st.lower_rest)
                return True
        if self.persistent_ok(st, t):
            return True
        guess = _guess(st)
        no_rest = len(st.idx) == len(st.theta) and self.kry.pending > 0   # nothing seen beyond the wanted set yet
        if no_rest or self.kry.P < self.next_verify or np.any(
                _bounds(st.values, st.top, st.rho, guess[0], guess[1], self.criterion) > t):
            return False
        return self.verify(st, t, guess)

    def persistent_ok(self, st: _State, t: float) -> bool:
        """Certify with bounds on lambda_(k+1) (and lambda_(n-k)) left by earlier verifications:
        if ``theta_k - rho > rest_upper`` then the compression's spectrum ends below
        ``rest_upper + rho`` (Weyl on the block decomposition)."""
        if (st.top.any() and math.isinf(self.rest_upper)) or ((~st.top).any() and math.isinf(self.rest_lower)):
            return False
        up, lo = self.rest_upper + st.rho, self.rest_lower - st.rho
        v = st.values
        if st.top.any() and v[st.top].min() - st.rho <= self.rest_upper:
            return False
        if (~st.top).any() and v[~st.top].max() + st.rho >= self.rest_lower:
            return False
        if np.all(_bounds(v, st.top, st.rho, up, lo, self.criterion) <= t):
            self.cert = ("persistent", self.rest_upper, self.rest_lower)
            return True
        return False

    def deflation(self, st: _State) -> _Deflation:
        """Wanted Ritz vectors plus the converged unwanted ones next to them: from each wanted end,
        consecutive unwanted pairs (at most ``max(4, k)``) whose residual is below a tenth of the
        gap between the k-th wanted value and the first unwanted one."""
        rest = np.setdiff1d(st.sel, st.idx)   # ascending; candidates whose vectors are known
        chosen: list[int] = []
        cap = min(self._extra, max(0, self.n - self.n_want - 2))
        for from_top in (True, False):
            side = st.top if from_top else ~st.top
            order = rest[::-1] if from_top else rest
            if not side.any() or not order.size:
                continue
            kth = float(st.values[side].min() if from_top else st.values[side].max())
            tau = 0.1 * abs(kth - st.theta[order[0]])
            res = np.linalg.norm(self.kry.coupling(st.vectors(order[:cap])), axis=0)
            for i, r in zip(order[:cap], res):
                if r > tau or i in chosen:
                    break
                chosen.append(int(i))
        ex = np.array(sorted(chosen), dtype=int)
        Sx = st.vectors(ex)
        S = np.concatenate([st.S, Sx], axis=1)
        R = self.kry.coupling(Sx)
        rho_extra = float(np.linalg.norm(R, 2)) if R.size else 0.0
        return _Deflation(self.kry.basis.combine(S.T), st.theta[ex], rho_extra)

    def verify(self, st: _State, t: float, guess: tuple[float, float]) -> bool:
        defl = self.deflation(st)
        j_max = max(30, self.kry.P)
        ver = _verify(self.hvp, defl, st, st.values, st.rho, t, self.criterion, self.vgen, j_max, guess)
        self.verifications.append(dict(at_iteration=self.kry.P, status=ver.status, n_hvp=ver.n_hvp,
                                       deflated_extra=int(defl.extra.size), rest_upper=ver.upper,
                                       rest_lower=ver.lower))
        if ver.status == "certified":
            self.cert = ("direct", ver.upper, ver.lower)
            return True
        self.remember(st, ver)
        if ver.suspects is not None:
            for z in ver.suspects:
                self.kry.add(z)
        self.next_verify = self.kry.P + max(4, self.kry.P // 4)
        return False

    def remember(self, st: _State, ver: _Verification) -> None:
        """Interlacing: lambda_(k+1)(A) <= max eig of the compression to the complement of the k top
        vectors <= max(upper, bottom wanted values) + rho (the bottom vectors are in that complement)."""
        v = st.values
        if st.top.any():
            extra = (max(0.0, float(v[~st.top].max()) - ver.upper) + st.rho) if (~st.top).any() else 0.0
            self.rest_upper = min(self.rest_upper, ver.upper + extra)
        if (~st.top).any():
            extra = (max(0.0, ver.lower - float(v[st.top].min())) + st.rho) if st.top.any() else 0.0
            self.rest_lower = max(self.rest_lower, ver.lower - extra)

    # -- float64 re-check of a run with low-precision HVPs
    def float64_check(self, st: _State) -> tuple[np.ndarray, Tensor, np.ndarray, np.ndarray]:
        """Rayleigh-Ritz of the final Ritz vectors with float64 HVPs (one batched call).

        Returns values (descending), vectors, per-vector residuals and bounds (or residuals when
        there is no certificate). The rest-of-spectrum interval, measured with low-precision HVPs,
        is widened by ``4 sqrt(J) e``, ``e`` the largest measured HVP error on the Ritz vectors and
        ``J`` the HVPs of the run that measured it (an inexact Lanczos run is an exact one for a
        symmetric perturbation of norm <= 2 sqrt(J) max_j ||error_j||).
        """
        Y = self.kry.basis.combine(st.S.T)
        A32Y = self.kry.basis.combine((self.kry.H[:self.kry.m, :self.kry.P] @ st.S).T)
        W = self.hvp64(Y)
        Hy = (Y @ W.T).detach().cpu().numpy()
        vals, S = np.linalg.eigh(0.5 * (Hy + Hy.T))
        order = np.argsort(vals)[::-1]
        vals, S = vals[order], S[:, order]
        St = torch.as_tensor(S.T.copy(), dtype=self.dtype, device=self.device)
        Y2, W2 = St @ Y, St @ W
        R = (W2 - torch.as_tensor(vals, dtype=self.dtype, device=self.device)[:, None] * Y2)
        res = R.norm(dim=1).detach().cpu().numpy()
        rho = float(np.sqrt(max(np.linalg.eigvalsh((R @ R.T).detach().cpu().numpy()).max(), 0.0)))
        err = float((W - A32Y).norm(dim=1).max())
        self.f64 = dict(rho=rho, hvp_error=err)
        if self.cert is None:
            return vals, Y2, res, res
        kind, up, lo = self.cert
        J = max([v["n_hvp"] for v in self.verifications] + [self.kry.P])
        allow = 4 * math.sqrt(J) * err
        up, lo = up + allow, lo - allow
        if kind == "persistent":
            blocked = ((st.top.any() and vals[st.top].min() - rho <= up)
                       or ((~st.top).any() and vals[~st.top].max() + rho >= lo))
            if blocked:
                return vals, Y2, res, res
            up, lo = up + rho, lo - rho
        return vals, Y2, res, _bounds(vals, st.top, rho, up, lo, self.criterion)


def lanczos(target: Union[Objective, SymmetricOperator, Tensor], k: int = 1, which: str = "largest", *,
            tol: float = 1e-4, criterion: Literal["gap", "residual"] = "gap",
            max_iter: Optional[int] = None, seed: int = 0, v0: Optional[Tensor] = None,
            hvp_dtype: HvpDtype = "auto", progress: bool = True) -> EigResult:
    """Extreme eigenpairs by Lanczos with full reorthogonalization and a verified certificate.

    Parameters
    ----------
    target : Objective, operator or matrix
    k : int
        Number of eigenpairs (from each end for ``which="both"``).
    which : {"largest", "smallest", "both"}
        Algebraic ordering (aliases "LA", "SA", "BE").
    tol : float
        Relative accuracy: converged when every returned eigenvalue's error bound is
        ``<= tol * max|theta|`` (scale-invariant).
    criterion : {"gap", "residual"}
        Form of the bound (module docstring): "residual" is Weyl's ``rho`` (first order in the
        joint residual ``rho``), "gap" the quadratic ``~ rho^2 / eta`` with the certified gap
        ``eta`` to the rest of the spectrum (much tighter). Both need the rest-of-spectrum bound
        from a verification run, so both certify the *index* of each eigenvalue.
    max_iter : int, optional
        Maximum Krylov dimension of the main run (default ``min(n, max(40 k + 60, 150))``; the
        basis is allocated as it grows, so a generous cap costs nothing unless it is used).
        Verification runs take at most ``max(30, current dimension)`` further HVPs each.
    seed : int
        Seed of the Gaussian start vector (ignored if ``v0`` is given); the verification runs
        draw from a separate stream derived from it.
    v0 : Tensor, shape (n,), optional
    hvp_dtype : "auto", torch.dtype or None
        Precision of the HVPs that drive the Krylov iteration (basis, recurrences and
        reorthogonalization stay in the target's dtype). ``"auto"``: float32 when the target is
        a float64 objective and ``tol >= F32_MIN_TOL[criterion]`` (1e-6 for "gap", 1e-4 for
        "residual"), else the target's own; ``None``: the target's own. With low-precision HVPs
        the certificate is recomputed in the target's precision: Rayleigh quotients and
        residuals of the final Ritz vectors from one batched full-precision HVP call, and the
        rest-of-spectrum bound widened by the measured HVP error. If that check misses ``tol``
        the run continues in full precision from the Ritz vectors; ``converged`` is never
        claimed from low-precision numbers. Explicit dtypes also work for matrix targets.
    progress : bool
        Show a progress bar.

    Notes
    -----
    ``converged=True`` means: ``|eigenvalues[i] - lambda_i| <= error_bounds[i]`` for the i-th
    wanted eigenvalue ``lambda_i`` (so no wanted eigenvalue was skipped), except with probability
    at most ``CERTIFICATE_FAILURE_PROB`` per verification run and certified end of the spectrum
    (``provenance["certificate"]["verifications"]`` lists them; usually one), over the
    verification runs' random starts, for any matrix. This narrows the usual Krylov caveat: a
    single start vector sees only one copy of a repeated eigenvalue and cannot split a cluster
    tighter than its residual, so the certificate rests on a second, independent start (as a
    block method would); the event bounded is that this start is almost orthogonal to the top
    eigenvector of what the wanted vectors leave out. An explicit ``v0`` changes the main run
    only. Exact arithmetic is assumed up to a slack of ``100 eps * scale`` (full
    reorthogonalization keeps the computed process that close); for low-precision HVPs see
    ``hvp_dtype``. Without a certificate (``converged=False``), ``error_bounds`` are the
    residuals: each value is then within it of *some* eigenvalue only.
    If the main Krylov space becomes invariant, the iteration continues from a fresh random
    vector orthogonal to the basis.
    """
    op = as_operator(target)
    which = _validate(op, k, which)
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if criterion not in ("gap", "residual"):
        raise ValueError(f"criterion must be 'gap' or 'residual', got {criterion!r}")
    hop = _hvp_operator(op, hvp_dtype, tol, criterion)
    n = op.n
    m_max = min(n, max_iter if max_iter is not None else max(40 * k + 60, 150))
    start = time.perf_counter()
    ops = [op] if hop is op else [op, hop]
    before = [o.work() for o in ops]
    run = _Run(op, hop, k, which, tol, criterion, m_max, seed, progress)
    q = v0.to(op.device, op.dtype).reshape(-1).clone() if v0 is not None else run.random_vector()
    if q.shape[0] != n:
        raise ValueError(f"v0 has length {q.shape[0]}, expected {n}")
    run.kry.add(q)
    st = run.iterate()
    vals, vecs, res, bounds, refined, scale = _finish(run, st)
    run.bar.close()
    converged = run.cert is not None and bool(np.all(bounds <= tol * scale))
    work = work_since_all(ops, before)
    prov = dict(op.provenance(), seed=seed, work=work,
                hvp_dtype=str(hop.dtype if not refined else op.dtype).replace("torch.", ""),
                certificate=dict(kind=run.cert[0] if run.cert else "none",
                                 dtype=str(op.dtype).replace("torch.", ""),
                                 failure_probability=CERTIFICATE_FAILURE_PROB,
                                 rest_upper=float(run.cert[1]) if run.cert else float("nan"),
                                 rest_lower=float(run.cert[2]) if run.cert else float("nan"),
                                 verifications=run.verifications,
                                 low_precision_check=run.f64, refined=refined))
    return EigResult(
        eigenvalues=vals.astype(np.float64), eigenvectors=vecs.detach().cpu().numpy(),
        residuals=res.astype(np.float64), error_bounds=bounds.astype(np.float64),
        ritz_history=np.array(run.history), which=which, method="lanczos", converged=converged,
        tol=float(tol), n_iter=run.n_iter, n_hvp=work.get("hvp", 0), wall_time_s=time.perf_counter() - start,
        provenance=prov)


def _finish(run: _Run, st: _State) -> tuple[np.ndarray, Tensor, np.ndarray, np.ndarray, bool, float]:
    """Returned values, vectors, residuals, bounds, whether a full-precision continuation ran, and
    the scale of ``tol``; for low-precision HVPs the float64 re-check, and one full-precision
    continuation from the Ritz vectors if it misses ``tol``."""
    if not run.mixed:
        return _plain(run, st) + (False, st.scale)
    vals, Y, res, bounds = run.float64_check(st)
    if run.cert is None or np.all(bounds <= run.tol * st.scale):
        # certified in full precision, or not even the low-precision run converged: report as is
        return vals, Y, res, bounds, False, st.scale
    run.hvp, run.mixed = run.hvp64, False
    run.kry = _Krylov(run.n, run.dtype, run.device)
    for y in Y:
        run.kry.add(y)
    run.cert, run.rest_upper, run.rest_lower, run.next_verify = None, np.inf, -np.inf, 0
    run.m_max = run.kry.m + run.m_max
    st = run.iterate()
    return _plain(run, st) + (True, st.scale)


def _plain(run: _Run, st: _State) -> tuple[np.ndarray, Tensor, np.ndarray, np.ndarray]:
    """Values, unit vectors, residuals and bounds from the Krylov process itself (all of its
    HVPs in the target's precision); without a certificate the bounds are the residuals."""
    vecs = run.kry.basis.combine(st.S.T)
    vecs = vecs / vecs.norm(dim=1, keepdim=True)
    if run.cert is None:
        return st.values, vecs, st.res, st.res
    kind, up, lo = run.cert
    if kind == "persistent":
        up, lo = up + st.rho, lo - st.rho
    return st.values, vecs, st.res, _bounds(st.values, st.top, st.rho, up, lo, run.criterion)


def _validate(op: SymmetricOperator, k: int, which: str) -> str:
    if which not in _WHICH_ALIASES:
        raise ValueError(f"unknown which={which!r}; use 'largest', 'smallest' or 'both' (algebraic)")
    which = _WHICH_ALIASES[which]
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    need = 2 * k if which == "both" else k
    if need > op.n:
        raise ValueError(f"asked for {need} eigenpairs ({which}) but the operator has only "
                         f"{op.n} parameters; choose k <= {op.n // (2 if which == 'both' else 1)}")
    return which


def dense_eigs(target: Union[Objective, SymmetricOperator, Tensor], k: int = 1,
               which: str = "largest") -> EigResult:
    """Eigenpairs from the dense matrix (``n`` batched HVPs in the target's dtype, then
    ``torch.linalg.eigh``; a float16/bfloat16 matrix is decomposed in float32, which holds its entries
    exactly)."""
    op = as_operator(target)
    which = _validate(op, k, which)
    start = time.perf_counter()
    work0 = op.work()
    hvp0 = work0.get("hvp", 0)
    M = dense_matrix(op)
    if M.dtype in (torch.float16, torch.bfloat16):  # eigh has no half kernels; the entries are exact in float32
        M = M.to(torch.float32)
    evals, evecs = torch.linalg.eigh(M)
    theta = evals.detach().cpu().numpy()
    idx = _wanted(theta, k, which)
    V = evecs[:, torch.as_tensor(idx.copy())].T
    lam = evals[torch.as_tensor(idx.copy())]
    res = (V @ M - lam[:, None] * V).norm(dim=1).detach().cpu().numpy()
    return EigResult(
        eigenvalues=theta[idx].astype(np.float64), eigenvectors=V.detach().cpu().numpy(),
        residuals=res.astype(np.float64), error_bounds=res.astype(np.float64),
        ritz_history=theta[idx][None].astype(np.float64), which=which, method="dense", converged=True,
        tol=0.0, n_iter=1, n_hvp=op.work().get("hvp", 0) - hvp0,
        wall_time_s=time.perf_counter() - start, provenance=dict(op.provenance(), work=work_since(op, work0)))


def hessian_eigs(target: Union[Objective, SymmetricOperator, Tensor], k: int = 1,
                 which: str = "largest", *, method: Literal["auto", "lanczos", "dense"] = "auto",
                 dense_max: int = 1024, hvp_dtype: HvpDtype = "auto", **lanczos_kwargs: Any) -> EigResult:
    """Top/bottom-``k`` Hessian eigenpairs, choosing the dense path when ``n <= dense_max``.

    ``hvp_dtype`` applies to the Lanczos path only (the dense path stays in the target's dtype);
    see :func:`lanczos` for it and the other keyword arguments of the iterative path.
    """
    if method not in ("auto", "lanczos", "dense"):
        raise ValueError(f"method must be 'auto', 'lanczos' or 'dense', got {method!r}")
    op = as_operator(target)
    if method == "dense" or (method == "auto" and op.n <= dense_max):
        return dense_eigs(op, k, which)
    return lanczos(op, k, which, hvp_dtype=hvp_dtype, **lanczos_kwargs)
