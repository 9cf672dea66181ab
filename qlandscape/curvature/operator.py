"""The Hessian as a linear operator (torch block products, scipy ``LinearOperator``, dense).

Curvature routines accept anything with the :class:`SymmetricOperator` shape, so the same
Lanczos / trace / density code runs on a model's Hessian and on an explicit matrix with a
known spectrum (which is how the routines are tested).
"""

from __future__ import annotations

import zlib
from typing import Any, Optional, Protocol, Union, runtime_checkable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor

from ..objective import MemoryBudgetError, Objective, counter_diff, default_memory_budget, format_bytes


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


def dense_matrix_bytes(n: int, dtype: torch.dtype, block_size: int = 256) -> int:
    """Peak bytes :func:`dense_matrix` holds for an ``n x n`` operator in ``dtype``: the matrix itself
    plus three ``(block_size, n)`` blocks (identity rows, their products, a symmetrization block).
    The operator's own working memory during a product (e.g. an HVP's graph) comes on top."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(n) * int(n) * itemsize + 3 * min(int(block_size), int(n)) * int(n) * itemsize


def _check_dense_fits(op: SymmetricOperator, block_size: int, memory_budget: Optional[int], what: str) -> None:
    """Refuse (:class:`~qlandscape.objective.MemoryBudgetError`) a dense matrix over the budget, before any product."""
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float))
                                      or not memory_budget >= 0):
        raise ValueError(f"memory_budget must be a number of bytes >= 0 or None, got {memory_budget!r}")
    need = dense_matrix_bytes(op.n, op.dtype, int(block_size))
    budget = int(memory_budget) if memory_budget is not None else default_memory_budget(op.device)
    if need > budget:
        source = "given" if memory_budget is not None else "default: a quarter of the available memory, at most 4 GiB"
        raise MemoryBudgetError(
            f"{what}: the dense ({op.n}, {op.n}) {str(op.dtype).replace('torch.', '')} matrix needs "
            f"~{format_bytes(need)} and {op.n} HVPs, over the memory budget of {format_bytes(budget)} ({source}); "
            "for large models use hessian_eigs(..., method='lanczos'), hessian_trace(..., method='hutchinson') or "
            "spectral_density (HVPs only, O(n) memory), restrict the parameters (Objective(..., params=...)), "
            f"or pass memory_budget={need} or more to build it anyway")


def dense_matrix(op: SymmetricOperator, block_size: int = 256, *, memory_budget: Optional[int] = None) -> Tensor:
    """Dense ``(n, n)`` matrix of an operator from identity blocks (symmetrized).

    Parameters
    ----------
    op : SymmetricOperator
    block_size : int
        Identity rows per batched product.
    memory_budget : int, optional
        Bytes the matrix and its working blocks may take (:func:`dense_matrix_bytes`); default
        :func:`~qlandscape.objective.default_memory_budget` of the operator's device. An explicit
        matrix (:class:`MatrixOperator`) is copied without a check.

    Raises
    ------
    MemoryBudgetError
        When the matrix would exceed the budget; raised before any product is computed.
    """
    if isinstance(op, MatrixOperator):
        return op.dense()
    _check_dense_fits(op, block_size, memory_budget, "dense_matrix")
    return _dense(op, int(block_size))


def _dense(op: SymmetricOperator, block_size: int) -> Tensor:
    """Rows of the matrix filled in place, then ``0.5 * (M + M^T)`` block by block (values identical to
    the whole-matrix expression; peak memory one matrix plus a few blocks)."""
    n = op.n
    M: Optional[Tensor] = None
    for s in range(0, n, block_size):
        b = min(block_size, n - s)
        E = torch.zeros(b, n, dtype=op.dtype, device=op.device)
        E[torch.arange(b), torch.arange(s, s + b)] = 1.0
        rows = op.matmat(E)
        del E
        if M is None:
            M = torch.empty(n, n, dtype=rows.dtype, device=rows.device)
        M[s:s + b] = rows
        del rows
    assert M is not None
    for s in range(0, n, block_size):
        e = min(s + block_size, n)
        avg = 0.5 * (M[s:e, s:] + M[s:, s:e].T)  # rows s:e and columns s:e from column s on
        M[s:e, s:] = avg
        M[s:, s:e] = avg.T
    return M


def dense_hessian(objective: Objective, block_size: int = 256, *, memory_budget: Optional[int] = None) -> Tensor:
    """Dense ``(n, n)`` Hessian of the full-data loss at the objective's reference point,
    from batched HVPs against identity blocks (``n`` HVPs).

    Parameters
    ----------
    objective : Objective
    block_size : int
        HVPs per batched call.
    memory_budget : int, optional
        Bytes the matrix and its working blocks may take (``n**2`` times the dtype's size, plus
        three ``(block_size, n)`` blocks); default
        :func:`~qlandscape.objective.default_memory_budget` of the objective's device (a quarter
        of the available memory, at most 4 GiB).

    Raises
    ------
    MemoryBudgetError
        When the matrix would exceed the budget (e.g. a 301k-parameter model needs ~676 GiB in
        float64); raised before any HVP. Large models need the iterative routines instead
        (:func:`~qlandscape.curvature.lanczos.hessian_eigs`, :func:`~qlandscape.curvature.trace.hessian_trace`,
        :func:`~qlandscape.curvature.spectrum.spectral_density`) or a parameter subset.
    """
    op = HessianOperator(objective)
    _check_dense_fits(op, block_size, memory_budget, "dense_hessian")
    return _dense(op, int(block_size))
