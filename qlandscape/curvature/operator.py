"""The Hessian as a linear operator (torch block products, scipy ``LinearOperator``, dense).

Curvature routines accept anything with the :class:`SymmetricOperator` shape, so the same
Lanczos / trace / density code runs on a model's Hessian and on an explicit matrix with a
known spectrum (which is how the routines are tested).
"""

from __future__ import annotations

import zlib
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


def work_since_all(ops: "tuple[SymmetricOperator, ...] | list[SymmetricOperator]",
                   before: "list[dict[str, int]]") -> dict[str, int]:
    """Summed work of several operators (e.g. an objective's Hessian and its float32 copy, which
    count separately) since the snapshots ``before`` (one per operator)."""
    total: dict[str, int] = {}
    for op, b in zip(ops, before):
        for key, v in work_since(op, b).items():
            total[key] = total.get(key, 0) + v
    return total


def as_operator(target: Union[Objective, SymmetricOperator, Tensor, np.ndarray]) -> SymmetricOperator:
    """Wrap an objective (its Hessian) or a matrix; pass operators through."""
    if isinstance(target, Objective):
        return HessianOperator(target)
    if isinstance(target, (Tensor, np.ndarray)):
        return MatrixOperator(target)
    if isinstance(target, SymmetricOperator):
        return target
    raise TypeError(f"expected an Objective, a symmetric operator or a matrix, got {type(target).__name__}")


def with_hvp_dtype(op: SymmetricOperator, dtype: torch.dtype) -> SymmetricOperator:
    """The same operator with its products computed in ``dtype`` (e.g. float32 HVPs of a float64
    objective). Vectors passed to ``matmat`` are cast down by the operator; callers cast results up.

    Raises
    ------
    TypeError
        For operators whose precision cannot be changed (only objectives' Hessians and explicit
        matrices can).
    """
    if dtype == op.dtype:
        return op
    if isinstance(op, HessianOperator):
        return HessianOperator(op.objective.with_dtype(dtype))
    if isinstance(op, MatrixOperator):
        return MatrixOperator(op.A.to(dtype))
    raise TypeError(f"cannot run the products of a {type(op).__name__} in {dtype}: hvp_dtype needs an "
                    "Objective (its Hessian) or an explicit matrix")


def low_precision_operator(op: SymmetricOperator, hvp_dtype: Any) -> SymmetricOperator:
    """Resolve an ``hvp_dtype`` argument of the stochastic estimators (trace, density).

    ``"auto"``: float32 products when ``op`` is the Hessian of a float64 objective, else ``op``
    itself; ``None``: ``op``; a torch dtype: that precision (objectives and matrices only).
    """
    if hvp_dtype is None:
        return op
    if isinstance(hvp_dtype, str):
        if hvp_dtype != "auto":
            raise ValueError(f"hvp_dtype must be 'auto', None or a torch dtype, got {hvp_dtype!r}")
        auto = isinstance(op, HessianOperator) and op.dtype == torch.float64
        return with_hvp_dtype(op, torch.float32) if auto else op
    if not isinstance(hvp_dtype, torch.dtype) or not hvp_dtype.is_floating_point:
        raise ValueError(f"hvp_dtype must be 'auto', None or a floating torch dtype, got {hvp_dtype!r}")
    return with_hvp_dtype(op, hvp_dtype)


class CastOperator:
    """``op`` seen in another dtype: ``matmat`` casts its input to ``op``'s dtype and the result
    back (the products keep ``op``'s precision; vectors and everything around them use ``dtype``).
    Work counters and provenance are ``op``'s."""

    def __init__(self, op: SymmetricOperator, dtype: torch.dtype) -> None:
        self.op, self.n, self.dtype, self.device = op, op.n, dtype, op.device

    def matmat(self, V: Tensor) -> Tensor:
        return self.op.matmat(V.to(self.op.device, self.op.dtype)).to(self.device, self.dtype)

    def work(self) -> dict[str, int]:
        return self.op.work()

    def provenance(self) -> dict[str, Any]:
        return self.op.provenance()


def estimator_generator(seed: int, estimator: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for one estimator's random draws, derived from ``seed``.

    Each estimator (``"hutchinson"``, ``"hutch++"``, ``"slq"``, ``"lanczos-verify"``, ...) gets its
    own stream: ``numpy.random.SeedSequence(seed, spawn_key=(crc32(estimator),))``, so the same
    ``seed`` gives reproducible draws per estimator that are independent across estimators (SLQ's
    probes are not Hutchinson's, and a trace cross-check between them is a real check).
    """
    key = zlib.crc32(estimator.encode("utf-8"))
    state = np.random.SeedSequence(int(seed), spawn_key=(key,)).generate_state(1, np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


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
