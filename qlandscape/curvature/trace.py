"""Hessian trace: exact (``n`` HVPs) when affordable, else Hutchinson or Hutch++ with a
standard error."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..objective import Objective
from ..progress import progress_bar
from ..results import Result
from .operator import SymmetricOperator, as_operator, dense_matrix, work_since


@dataclass
class TraceResult(Result):
    """Trace estimate with its standard error.

    Attributes
    ----------
    estimate : float
        Estimated ``tr(H)`` (loss units per parameter unit^2, summed over parameters).
    stderr : float
        Standard error of the estimate (0 for the exact method).
    method : str
        "exact", "hutchinson" or "hutch++".
    samples : ndarray, shape (m,)
        Per-probe quadratic forms ``z^T H z`` (of the deflated operator for Hutch++).
    n_probes, n_hvp : int
    wall_time_s : float
    provenance : dict
    """

    estimate: float
    stderr: float
    method: str
    samples: np.ndarray
    n_probes: int
    n_hvp: int
    wall_time_s: float
    provenance: dict = field(default_factory=dict)

    def summary(self) -> str:
        return f"trace ({self.method}) = {self.estimate:.6g} +- {self.stderr:.2g} ({self.n_hvp} HVPs)"


def _rademacher(m: int, n: int, gen: torch.Generator, like: SymmetricOperator) -> Tensor:
    z = torch.randint(0, 2, (m, n), generator=gen, dtype=torch.int64).to(torch.float64) * 2 - 1
    return z.to(like.device, like.dtype)


def _quad_forms(op: SymmetricOperator, Z: Tensor, block: int, desc: str, progress: bool,
                rtol: Optional[float] = None, exact_part: float = 0.0) -> Tensor:
    out = []
    bar = progress_bar(Z.shape[0], desc, progress)
    for s in range(0, Z.shape[0], block):
        Zb = Z[s:s + block]
        out.append((Zb * op.matmat(Zb)).sum(dim=1))
        bar.update(Zb.shape[0])
        vals = torch.cat(out)
        if rtol is not None and vals.numel() >= 10:
            est = exact_part + float(vals.mean())
            se = float(vals.std()) / math.sqrt(vals.numel())
            if se <= rtol * abs(est):
                break
    bar.close()
    return torch.cat(out)


def hessian_trace(target: Union[Objective, SymmetricOperator, Tensor], *,
                  method: Literal["auto", "exact", "hutchinson", "hutch++"] = "auto",
                  n_probes: int = 100, block_size: int = 20, exact_max: int = 1024,
                  rtol: Optional[float] = None, seed: int = 0, progress: bool = True) -> TraceResult:
    """Trace of the Hessian.

    Parameters
    ----------
    target : Objective, operator or matrix
    method : {"auto", "exact", "hutchinson", "hutch++"}
        "auto": exact when ``n <= exact_max`` (costs ``n`` HVPs), else Hutchinson.
    n_probes : int
        Rademacher probes (Hutchinson) or total HVP budget (Hutch++: a third sketch, a third
        projection, a third residual probes).
    block_size : int
        Probes per batched HVP call.
    rtol : float, optional
        Hutchinson only: stop early once ``stderr <= rtol * |estimate|`` (checked per block,
        after at least 10 probes).
    seed : int
    progress : bool
    """
    op = as_operator(target)
    if method not in ("auto", "exact", "hutchinson", "hutch++"):
        raise ValueError(f"unknown trace method {method!r}; use 'auto', 'exact', 'hutchinson' or 'hutch++'")
    if n_probes < 2:
        raise ValueError(f"n_probes must be >= 2 for a standard error, got {n_probes}")
    if method == "auto":
        method = "exact" if op.n <= exact_max else "hutchinson"
    gen = torch.Generator(device="cpu").manual_seed(seed)
    start = time.perf_counter()
    work0 = op.work()
    hvp0 = work0.get("hvp", 0)
    if method == "exact":
        diag = torch.diagonal(dense_matrix(op, block_size=max(block_size, 256)))
        samples, estimate, stderr = diag, float(diag.sum()), 0.0
    elif method == "hutchinson":
        Z = _rademacher(n_probes, op.n, gen, op)
        samples = _quad_forms(op, Z, block_size, "trace (hutchinson)", progress, rtol)
        estimate = float(samples.mean())
        stderr = float(samples.std()) / math.sqrt(samples.numel())
    else:
        if n_probes < 6:
            raise ValueError("hutch++ needs n_probes >= 6 (sketch, projection and residual probes)")
        s = n_probes // 3
        g = n_probes - 2 * s
        S = _rademacher(s, op.n, gen, op)
        HS = torch.cat([op.matmat(S[i:i + block_size]) for i in range(0, s, block_size)])
        Qm, _ = torch.linalg.qr(HS.T)          # (n, s) orthonormal basis of range(H S)
        Qt = Qm.T.contiguous()                  # (s, n)
        HQ = torch.cat([op.matmat(Qt[i:i + block_size]) for i in range(0, s, block_size)])
        exact_part = float((Qt * HQ).sum())
        G = _rademacher(g, op.n, gen, op)
        G = G - (G @ Qm) @ Qt                   # project out the sketched range
        samples = _quad_forms(op, G, block_size, "trace (hutch++)", progress)
        estimate = exact_part + float(samples.mean())
        stderr = float(samples.std()) / math.sqrt(samples.numel())
    return TraceResult(estimate=estimate, stderr=stderr, method=method,
                       samples=samples.detach().cpu().numpy().astype(np.float64),
                       n_probes=int(samples.numel()) if method != "exact" else op.n,
                       n_hvp=op.work().get("hvp", 0) - hvp0, wall_time_s=time.perf_counter() - start,
                       provenance=dict(op.provenance(), seed=seed, work=work_since(op, work0)))
