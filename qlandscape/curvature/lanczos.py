"""Extreme eigenpairs of the Hessian: Lanczos with full reorthogonalization and Ritz-residual
stopping, or a dense path (batched HVPs + ``eigvalsh``) for small parameter counts.

``which`` is always *algebraic*: "largest" is the most positive eigenvalue, never the one of
largest magnitude. Stopping is scale-invariant: a Ritz pair ``(theta_i, y_i)`` is accepted when
its error bound is below ``tol * max_j |theta_j|``, so multiplying the loss by 1e-8 changes no
iteration count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from ..objective import Objective
from ..progress import progress_bar
from ..results import Result
from .operator import SymmetricOperator, as_operator, dense_matrix, work_since

Which = Literal["largest", "smallest", "both"]
_WHICH_ALIASES = {"largest": "largest", "LA": "largest", "smallest": "smallest", "SA": "smallest",
                  "both": "both", "BE": "both"}


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
        Bound on ``|theta - lambda|``: ``min(r, r^2 / gap)`` with the gap to the other Ritz values.
    ritz_history : ndarray, shape (iterations, m)
        The wanted Ritz values after each Lanczos step (NaN where not yet defined).
    which, method : str
    converged : bool
        All returned pairs met ``error_bound <= tol * scale``.
    tol : float
    n_iter, n_hvp : int
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
        from ..landscape.plot import _axes
        ax = _axes(ax)
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


def _gap_bounds(theta: np.ndarray, idx: np.ndarray, res: np.ndarray) -> np.ndarray:
    out = np.empty(len(idx))
    for j, i in enumerate(idx):
        others = np.delete(theta, i)
        gap = np.min(np.abs(others - theta[i])) if others.size else 0.0
        out[j] = min(res[j], res[j] ** 2 / gap) if gap > 0 else res[j]  # no gap known: use r
    return out


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


def lanczos(target: Union[Objective, SymmetricOperator, Tensor], k: int = 1, which: str = "largest", *,
            tol: float = 1e-4, criterion: Literal["gap", "residual"] = "gap",
            max_iter: Optional[int] = None, seed: int = 0, v0: Optional[Tensor] = None,
            progress: bool = True) -> EigResult:
    """Extreme eigenpairs by Lanczos with full (twice-applied) reorthogonalization.

    Parameters
    ----------
    target : Objective, operator or matrix
    k : int
        Number of eigenpairs (from each end for ``which="both"``).
    which : {"largest", "smallest", "both"}
        Algebraic ordering (aliases "LA", "SA", "BE").
    tol : float
        Relative accuracy: stop when every wanted pair's error bound is
        ``<= tol * max|theta|`` (scale-invariant).
    criterion : {"gap", "residual"}
        Error bound used for stopping: "residual" uses the residual norm ``r`` (rigorous:
        an eigenvalue lies within ``r``); "gap" uses ``min(r, r^2/gap)`` with the gap estimated
        from the other Ritz values (the standard a-posteriori bound, much tighter).
    max_iter : int, optional
        Maximum Krylov dimension (default ``min(n, max(20 k + 30, 60))``).
    seed : int
        Seed of the Gaussian start vector (ignored if ``v0`` is given).
    v0 : Tensor, shape (n,), optional
    progress : bool
        Show a progress bar.

    Notes
    -----
    If the Krylov space becomes invariant before the wanted pairs are found (e.g. repeated
    eigenvalues), the iteration continues from a fresh random vector orthogonal to the basis,
    so multiplicities are resolved.
    """
    op = as_operator(target)
    which = _validate(op, k, which)
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if criterion not in ("gap", "residual"):
        raise ValueError(f"criterion must be 'gap' or 'residual', got {criterion!r}")
    n = op.n
    m_max = min(n, max_iter if max_iter is not None else max(20 * k + 30, 60))
    n_want = 2 * k if which == "both" else k
    gen = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    work0 = op.work()
    hvp0 = work0.get("hvp", 0)

    def random_vector() -> Tensor:
        return torch.randn(n, generator=gen, dtype=torch.float64).to(op.device, op.dtype)

    Q = torch.zeros(m_max + 1, n, dtype=op.dtype, device=op.device)
    q = (v0.to(op.device, op.dtype).reshape(-1).clone() if v0 is not None else random_vector())
    if q.shape[0] != n:
        raise ValueError(f"v0 has length {q.shape[0]}, expected {n}")
    Q[0] = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    history: list[np.ndarray] = []
    theta = S = None
    idx = res = bounds = np.zeros(0)
    converged = breakdown = False
    bar = progress_bar(m_max, f"lanczos({which}, k={k})", progress)
    j = 0
    for j in range(m_max):
        w = op.matmat(Q[j:j + 1])[0]
        a = float(torch.dot(Q[j], w))
        w = w - a * Q[j]
        if j > 0:
            w = w - betas[j - 1] * Q[j - 1]
        for _ in range(2):
            w = w - Q[:j + 1].T @ (Q[:j + 1] @ w)
        b = float(w.norm())
        alphas.append(a)
        theta, S = eigh_tridiagonal(np.array(alphas), np.array(betas)) if j > 0 else (
            np.array([a]), np.ones((1, 1)))
        scale = max(float(np.max(np.abs(theta))), np.finfo(float).tiny)
        idx = _wanted(theta, k, which)
        res = b * np.abs(S[-1, idx])
        bounds = _gap_bounds(theta, idx, res) if criterion == "gap" else res.copy()
        row = np.full(n_want, np.nan)
        row[:len(idx)] = theta[idx]
        history.append(row)
        bar.update(1)
        bar.set_postfix(top=f"{theta[idx[0]]:.4g}", res=f"{np.max(res) / scale:.1e}")
        # An exactly invariant Krylov space (b ~ 0) says nothing about eigenvalues outside it
        # (repeated eigenvalues): never accept there, restart orthogonally instead.
        breakdown = b <= 1e3 * np.finfo(float).eps * scale
        if not breakdown and len(idx) == n_want and np.all(bounds <= tol * scale):
            converged = True
            break
        if j + 1 == m_max:
            break
        if breakdown:
            w = random_vector()
            for _ in range(2):
                w = w - Q[:j + 1].T @ (Q[:j + 1] @ w)
            b_next = 0.0
            w = w / w.norm()
        else:
            b_next = b
            w = w / b
        betas.append(b_next)
        Q[j + 1] = w
    bar.close()
    m = len(alphas)
    assert theta is not None and S is not None
    Sw = torch.as_tensor(S[:, idx].T.copy(), dtype=op.dtype, device=op.device)
    vecs = Sw @ Q[:m]
    vecs = vecs / vecs.norm(dim=1, keepdim=True)
    scale = max(float(np.max(np.abs(theta))), np.finfo(float).tiny)
    # at the iteration limit: accept if the bounds hold, unless the space went invariant
    # short of the full dimension (then values outside it were never seen)
    exhausted_space = m == n
    if len(idx) == n_want and np.all(bounds <= tol * scale) and (exhausted_space or not breakdown):
        converged = True
    return EigResult(
        eigenvalues=theta[idx].astype(np.float64), eigenvectors=vecs.detach().cpu().numpy(),
        residuals=res.astype(np.float64), error_bounds=bounds.astype(np.float64),
        ritz_history=np.array(history), which=which, method="lanczos", converged=bool(converged),
        tol=float(tol), n_iter=m, n_hvp=op.work().get("hvp", 0) - hvp0,
        wall_time_s=time.perf_counter() - start,
        provenance=dict(op.provenance(), seed=seed, work=work_since(op, work0)))


def dense_eigs(target: Union[Objective, SymmetricOperator, Tensor], k: int = 1,
               which: str = "largest") -> EigResult:
    """Eigenpairs from the dense matrix (``n`` batched HVPs, then ``torch.linalg.eigh``)."""
    op = as_operator(target)
    which = _validate(op, k, which)
    start = time.perf_counter()
    work0 = op.work()
    hvp0 = work0.get("hvp", 0)
    M = dense_matrix(op)
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
                 dense_max: int = 1024, **lanczos_kwargs: Any) -> EigResult:
    """Top/bottom-``k`` Hessian eigenpairs, choosing the dense path when ``n <= dense_max``.

    See :func:`lanczos` for the keyword arguments of the iterative path.
    """
    if method not in ("auto", "lanczos", "dense"):
        raise ValueError(f"method must be 'auto', 'lanczos' or 'dense', got {method!r}")
    op = as_operator(target)
    if method == "dense" or (method == "auto" and op.n <= dense_max):
        return dense_eigs(op, k, which)
    return lanczos(op, k, which, **lanczos_kwargs)
