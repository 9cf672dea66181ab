"""The Hessian as a linear operator (torch block products, scipy ``LinearOperator``, dense).

Curvature routines accept anything with the :class:`SymmetricOperator` shape, so the same
Lanczos / trace / density code runs on a model's Hessian and on an explicit matrix with a
known spectrum (which is how the routines are tested).
"""

from __future__ import annotations

from typing import Any, Protocol, Union, runtime_checkable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor

from ..objective import Objective, counter_diff


@runtime_checkable
class SymmetricOperator(Protocol):
    """A symmetric ``n x n`` operator applied to blocks of row vectors."""

    n: int
    dtype: torch.dtype
    device: torch.device

    def matmat(self, V: Tensor) -> Tensor:
        """``V (b, n) -> (A V^T)^T (b, n)``."""
        ...

    def work(self) -> dict[str, int]:
        """Counters of work done so far (at least ``hvp``)."""
        ...

    def provenance(self) -> dict[str, Any]:
        """Description recorded in results."""
        ...


class HessianOperator:
    """Hessian of an :class:`~qlandscape.objective.Objective` at its reference point."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.n = objective.n_params
        self.dtype = objective.dtype
        self.device = objective.device

    def matmat(self, V: Tensor) -> Tensor:
        return self.objective.hvp(V)

    def work(self) -> dict[str, int]:
        return self.objective.counters.as_dict()

    def provenance(self) -> dict[str, Any]:
        return self.objective.provenance()

    def to_scipy(self) -> LinearOperator:
        """A float64 ``scipy.sparse.linalg.LinearOperator`` view (for ``eigsh`` and friends)."""
        return _scipy_view(self)


class MatrixOperator:
    """An explicit symmetric matrix, shape ``(n, n)``, as an operator."""

    def __init__(self, A: Union[Tensor, np.ndarray]) -> None:
        A = torch.as_tensor(A)
        if A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"matrix must be square, got shape {tuple(A.shape)}")
        if not torch.allclose(A, A.T, rtol=1e-10, atol=1e-12 * float(A.abs().max().clamp_min(1e-300))):
            raise ValueError("matrix must be symmetric")
        self.A = A
        self.n = int(A.shape[0])
        self.dtype = A.dtype
        self.device = A.device
        self._hvp = 0

    def matmat(self, V: Tensor) -> Tensor:
        self._hvp += V.shape[0]
        return V @ self.A

    def work(self) -> dict[str, int]:
        return {"hvp": self._hvp}

    def provenance(self) -> dict[str, Any]:
        return {"operator": "matrix", "n_params": self.n, "dtype": str(self.dtype).replace("torch.", "")}

    def dense(self) -> Tensor:
        self._hvp += self.n
        return self.A.clone()

    def to_scipy(self) -> LinearOperator:
        return _scipy_view(self)


def _scipy_view(op: Any) -> LinearOperator:
    def matmat(X: np.ndarray) -> np.ndarray:
        X2 = np.asarray(X).reshape(op.n, -1)
        V = torch.from_numpy(np.ascontiguousarray(X2.T)).to(op.device, op.dtype)
        return op.matmat(V).T.detach().cpu().numpy().astype(np.float64).reshape(X.shape)

    return LinearOperator((op.n, op.n), matvec=matmat, matmat=matmat, rmatvec=matmat,
                          dtype=np.float64)


def work_since(op: SymmetricOperator, before: dict[str, int]) -> dict[str, int]:
    """Work counters (HVPs, loss/gradient passes, graph builds) spent since ``before``."""
    return counter_diff(op.work(), before)


def as_operator(target: Union[Objective, SymmetricOperator, Tensor, np.ndarray]) -> SymmetricOperator:
    """Wrap an objective (its Hessian) or a matrix; pass operators through."""
    if isinstance(target, Objective):
        return HessianOperator(target)
    if isinstance(target, (Tensor, np.ndarray)):
        return MatrixOperator(target)
    if isinstance(target, SymmetricOperator):
        return target
    raise TypeError(f"expected an Objective, a symmetric operator or a matrix, got {type(target).__name__}")


def dense_matrix(op: SymmetricOperator, block_size: int = 256) -> Tensor:
    """Dense ``(n, n)`` matrix of an operator from identity blocks (symmetrized)."""
    if isinstance(op, MatrixOperator):
        return op.dense()
    cols = []
    for s in range(0, op.n, block_size):
        b = min(block_size, op.n - s)
        E = torch.zeros(b, op.n, dtype=op.dtype, device=op.device)
        E[torch.arange(b), torch.arange(s, s + b)] = 1.0
        cols.append(op.matmat(E))
    M = torch.cat(cols)
    return 0.5 * (M + M.T)


def dense_hessian(objective: Objective, block_size: int = 256) -> Tensor:
    """Dense ``(n, n)`` Hessian of the full-data loss at the objective's reference point,
    from batched HVPs against identity blocks (``n`` HVPs)."""
    return dense_matrix(HessianOperator(objective), block_size)
