"""The compiled patch-circuit simulator: segments planned for the work they do, and exact first and
second derivatives whose memory does not grow with depth x batch.

A circuit recorded by :func:`qlandscape.quantum.program.record` is cut into segments
(:func:`~qlandscape.quantum.program.segments`). At a parameter point each segment is run as:

``prep``
    the first segment when it reads weights only: one state per circuit, ``S |0...0>``, shared by all
    samples;
``fold``
    a later weights-only segment folded into its unitary: ``S`` is built once (its gates applied to
    the ``D`` basis states) and applied to every sample as one GEMM;
``gates``
    a weights-only segment applied gate by gate to the samples' states (cheaper than folding when
    there are fewer samples than about ``D`` per call: :mod:`qlandscape.quantum.costmodel` decides);
``data``
    a segment that reads inputs, gate by gate with one matrix per sample.

Derivatives. The circuit is one :class:`torch.autograd.Function`. Its backward is an adjoint pass: it
walks the steps backwards and *un-computes* the states with the inverse gates instead of storing them,
so a gradient keeps O(1) states per sample chunk whatever the depth. The adjoint pass is itself a
Function whose backward (the second derivative, for Hessian-vector products by double backward) is
the forward-mode derivative (``torch.func.jvp``) of the adjoint pass: exact, and again O(1) states.
Samples are processed in chunks sized from a memory budget and the number of samples actually
passed. Weights-only work (the folded unitaries, the prepared state) is done once per call, not per
chunk, and the folded unitaries of the most recent parameter point are kept for the next call.

Under ``torch.func`` transforms (``vmap``, ``jacrev``, ``jvp`` of a model), the same kernels run as
plain differentiable torch ops (a tape, memory growing with depth x batch, exact to any order): the
transforms then differentiate them directly.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from . import costmodel
from .kernels import (
    apply_cols,
    apply_rows,
    contract_cols_t,
    contract_rows_t,
    expectations_adjoint_cols,
    expectations_cols,
    expectations_cols_tangent,
    fuse_rotations,
    fuse_rotations_dual,
    group_wires,
    kron_chain,
    kron_chain_dual,
    partial_traces,
    pauli_tables,
    rotation_generators,
)
from .program import CircuitProgram, Cnot, Diagonal, Layer, Segment, record, segments

__all__ = ["CompiledCircuit", "Plan", "functorch_active", "keep_freed_memory"]


def functorch_active() -> bool:
    """Whether a ``torch.func`` transform (grad, vjp, jvp, vmap, ...) is running around this call."""
    return torch._C._functorch.peek_interpreter_stack() is not None


_MALLOC_TUNED = False


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the OS.

    The simulator allocates and frees the same few-MiB states thousands of times per Hessian-vector
    product; with glibc's defaults a large share of them is unmapped and faulted in again (measured at
    8 qubits, 4 circuits, 50 layers, 300 samples: 300 000 page faults and 1.5 s of a 3.3 s second-order
    pass). This raises the mmap threshold to 64 MiB and the trim threshold to 2 GiB, once per process
    (Linux/glibc only). The process then keeps freed heap for reuse, so its resident size does not fall
    back between calls; the peak stays that of the live states as long as no small result is kept alive
    across a loop of large transient ones (which pins the freed chunks apart; the reverse passes write
    theirs into preallocated tensors for this reason; measured at 16 patches x L=200 x 300 samples: peak 1.9 GiB
    with this tuning, 1.8 without). Set ``QLANDSCAPE_MALLOC_TUNING=0`` to leave the allocator alone.

    Returns
    -------
    bool
        Whether the allocator was tuned (now or before).
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if os.environ.get("QLANDSCAPE_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 64 << 20) == 1 and libc.mallopt(-1, 2 ** 31 - 1) == 1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    _MALLOC_TUNED = ok
    return ok


@dataclass(frozen=True)
class _Bank:
    """How to build the group matrices of one segment's layers from the weights (and inputs).

    ``cols_w`` / ``cols_x`` index the angle of rotation ``t`` of qubit ``q`` in layer ``l`` into the
    weights / inputs padded with one zero column; ``is_x`` says which one applies; ``sigma`` holds the
    generators (identity padding).
    """

    n_layers: int
    cols_w: Tensor  # (nl, T, n) long
    cols_x: Tensor  # (nl, T, n) long
    is_x: Tensor  # (nl, T, n) bool
    sigma: Tensor  # (nl, T, n, 2, 2) complex128
    data: bool
    active: tuple[tuple[int, ...], ...]  # per layer: indices of groups with at least one gate


@dataclass(frozen=True)
class Plan:
    """How one call runs: a mode per segment, and the chunking.

    Attributes
    ----------
    modes : tuple of str
        ``"prep"``, ``"fold"``, ``"gates"`` or ``"data"`` per segment.
    rows : int
        Samples per chunk.
    patches : int
        Circuits (patches) processed together.
    keep : tuple of bool
        Per segment: whether the states after each of its steps are kept (``prep`` and ``fold``
        segments, at the current parameter point; with their tangents during second-order passes)
        instead of being un-computed in the reverse pass.
    reason : str
        The cost-model numbers behind the choice.
    """

    modes: tuple[str, ...]
    rows: int
    patches: int
    keep: tuple[bool, ...] = ()
    reason: str = ""


@dataclass
class _Consts:
    sigma: list[Tensor]
    signs: list[Tensor]
    perms: list[Tensor]
    z_signs: Optional[Tensor]
    e0: Tensor


@dataclass
class _Fixed:
    """A weights-only segment at a parameter point: its result (the prepared state ``(P, D, 1)`` or the
    folded unitary ``(P, D, D)``) and, when kept, the state after each of its steps."""

    final: Tensor
    traj: Optional[list[Tensor]] = None


@dataclass
class _FoldCache:
    """Weights-only results at the most recent parameter point (exact-equality keyed)."""

    weights: Optional[Tensor] = None
    values: dict[int, _Fixed] = field(default_factory=dict)


class CompiledCircuit:
    """One circuit structure run for many patches (each with its own weights) and samples at once.

    Parameters
    ----------
    qfunc : callable or CircuitProgram
        ``qfunc(inputs (n_features,), weights (n_weights,))`` building the circuit with PennyLane ops
        and returning single-qubit Pauli expectation values (e.g. :meth:`CircuitSpec.qfunc`), or an
        already recorded program.
    n_qubits, n_features, n_weights : int
    group_size : int, optional
        Wires per Kronecker group (default: :func:`qlandscape.quantum.costmodel.group_size`).
    fold : "auto", True or False
        Fold weights-only segments into unitaries: by the cost model, always, or never.
    memory_budget : int, optional
        Bytes of state the simulator may hold at once (sets the chunk size); default
        :func:`qlandscape.quantum.costmodel.default_budget`.

    Notes
    -----
    Calling it: ``inputs`` shape ``(P, B, n_features)``, ``weights`` shape ``(P, n_weights)`` ->
    expectation values ``(P, B, n_outputs)`` in the weights' real dtype (complex128 states for
    float64 weights, complex64 for float32), on the weights' device. Derivatives: exact first and
    second order by the hand-written passes; higher orders (a graph of the second derivatives) and
    ``torch.func`` transforms through the same kernels as plain torch ops.
    """

    def __init__(self, qfunc: Union[Callable[..., Any], CircuitProgram], n_qubits: int, n_features: int,
                 n_weights: int, *, group_size: Optional[int] = None, fold: Union[bool, str] = "auto",
                 memory_budget: Optional[int] = None) -> None:
        if fold not in (True, False, "auto"):
            raise ValueError(f"fold must be True, False or 'auto', got {fold!r}")
        if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int)
                                          or memory_budget <= 0):
            raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
        program = qfunc if isinstance(qfunc, CircuitProgram) else record(qfunc, n_qubits, n_features, n_weights)
        if (program.n_qubits, program.n_features, program.n_weights) != (n_qubits, n_features, n_weights):
            raise ValueError("the program was recorded for other sizes")
        self.program = program
        self.n_qubits, self.n_features, self.n_weights = n_qubits, n_features, n_weights
        self.observables = program.observables
        self.segments: tuple[Segment, ...] = segments(program)
        self.groups = group_wires(n_qubits, group_size or costmodel.group_size(n_qubits))
        self.fold = fold
        self.memory_budget = memory_budget
        self._banks = [self._bank(s) for s in self.segments]
        self._consts: dict[tuple[torch.device, torch.dtype], _Consts] = {}
        self._cache = _FoldCache()
        self._ops_cache: dict[int, list[tuple[Any, ...]]] = {}
        self._lock = threading.Lock()
        for cdtype in (torch.complex64, torch.complex128):  # built outside any transform (see _constants)
            self._constants(torch.device("cpu"), cdtype)
        keep_freed_memory()

    # ------------------------------------------------------------------ description
    @property
    def n_outputs(self) -> int:
        return len(self.observables)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_lock"] = None
        state["_cache"] = _FoldCache()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> "CompiledCircuit":
        return self  # stateless apart from a cache keyed by exact weights: copies share it

    # ------------------------------------------------------------------ static tables
    def _bank(self, seg: Segment) -> _Bank:
        n = self.n_qubits
        layers = [s for s in seg.steps if isinstance(s, Layer)]
        depth = max([len(g) for s in layers for g in s.gates.values()] + [1])
        nl = len(layers)
        cols_w = torch.full((nl, depth, n), self.n_weights, dtype=torch.long)
        cols_x = torch.full((nl, depth, n), self.n_features, dtype=torch.long)
        is_x = torch.zeros((nl, depth, n), dtype=torch.bool)
        paulis = pauli_tables()
        sigma = paulis["I"].expand(nl, depth, n, 2, 2).clone()
        active = []
        for li, layer in enumerate(layers):
            for q, rots in layer.gates.items():
                for t, r in enumerate(rots):
                    src, idx = r.source
                    if src == "x":
                        is_x[li, t, q] = True
                        cols_x[li, t, q] = idx
                    else:
                        cols_w[li, t, q] = idx
                    sigma[li, t, q] = paulis[r.pauli]
            active.append(tuple(k for k, wires in enumerate(self.groups) if any(q in layer.gates for q in wires)))
        return _Bank(nl, cols_w, cols_x, is_x, sigma, seg.kind == "data", tuple(active))

    def _constants(self, device: torch.device, cdtype: torch.dtype) -> _Consts:
        key = (device, cdtype)
        if key not in self._consts:
            # plain tensors, never functorch wrappers: built inside a transform they would escape its level
            with torch._C._DisableFuncTorch():
                self._consts[key] = self._build_constants(device, cdtype)
        return self._consts[key]

    def _build_constants(self, device: torch.device, cdtype: torch.dtype) -> _Consts:
        n, D = self.n_qubits, 2 ** self.n_qubits
        rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32
        k = torch.arange(D)
        bits = torch.stack([(k >> (n - 1 - q)) & 1 for q in range(n)])  # (n, D)
        signs, perms = [], []
        for s in self.program.steps:
            if isinstance(s, Diagonal):
                signs.append(torch.prod(torch.stack([1 - 2 * (bits[a] & bits[b]) for a, b in s.pairs]), 0)
                             .to(device, rdtype))
            elif isinstance(s, Cnot):
                perms.append((k ^ (bits[s.control] << (n - 1 - s.target))).to(device))
        zw = [q for p, q in self.observables if p == "Z"]
        z_signs = (1 - 2 * bits[zw]).to(device, rdtype).contiguous() if zw else None
        e0 = torch.zeros(D, dtype=cdtype, device=device)
        e0[0] = 1
        return _Consts(sigma=[b.sigma.to(device, cdtype) for b in self._banks], signs=signs, perms=perms,
                       z_signs=z_signs, e0=e0)

    # ------------------------------------------------------------------ planning
    def plan(self, n_patches: int, n_rows: int, dtype: torch.dtype, device: torch.device) -> Plan:
        """The modes and chunking the cost model chooses for ``n_patches`` circuits x ``n_rows`` samples."""
        D = 2 ** self.n_qubits
        itemsize = 16 if dtype == torch.float64 else 8
        budget = self.memory_budget or costmodel.default_budget(device)
        patches = max(1, min(n_patches, costmodel.patch_block(self.n_qubits, n_patches, dtype, device)))
        modes, notes, keep = [], [], []
        used = 0  # bytes of kept trajectories (value and tangent), within three quarters of the budget
        for si, (seg, bank) in enumerate(zip(self.segments, self._banks)):
            ops = len(self._ops(si))
            if seg.kind == "data":
                modes.append("data")
                keep.append(False)
                continue
            if seg.initial:
                mode = "prep"
            else:
                fits = used + costmodel.trajectory_bytes(ops, patches, self.n_qubits, dtype) <= 3 * budget // 4
                if self.fold == "auto":
                    fold, why = costmodel.fold_pays(self.n_qubits, ops, n_rows, dtype, device, patches, budget, fits)
                    notes.append(why)
                else:
                    fold = bool(self.fold)
                mode = "fold" if fold else "gates"
            modes.append(mode)
            need = 2 * ops * patches * D * (D if mode == "fold" else 1) * itemsize  # states and their tangents
            ok = mode in ("prep", "fold") and used + need <= 3 * budget // 4
            keep.append(ok)
            used += need if ok else 0
        live = costmodel.live_states(len(self.segments))
        rows = int((budget - used) // max(1, patches * D * itemsize * live))
        rows = max(1, min(n_rows, rows, costmodel.row_block(self.n_qubits, patches, dtype, device)))
        return Plan(tuple(modes), rows, patches, tuple(keep), "; ".join(notes))

    # ------------------------------------------------------------------ group matrices
    def _angles(self, si: int, w: Tensor, x: Optional[Tensor]) -> Tensor:
        """Rotation angles of segment ``si``: ``(P, nl, T, n)``, or ``(P, M, nl, T, n)`` for a data segment
        (linear in ``w`` and ``x``: the same call maps tangents to tangents)."""
        bank = self._banks[si]
        P = w.shape[0]
        wz = torch.cat([w, torch.zeros(P, 1, dtype=w.dtype, device=w.device)], dim=-1)
        angles = wz[:, bank.cols_w.to(w.device)]  # (P, nl, T, n)
        if bank.data:
            assert x is not None
            # the two gathers are disjoint: where a rotation reads an input, its weight index is the zero pad
            # column, and the other way round (no torch.where: see kernels.fuse_rotations)
            xz = torch.cat([x, torch.zeros(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)], dim=-1)
            angles = xz[:, :, bank.cols_x.to(w.device)] + angles[:, None]  # (P, M, nl, T, n)
        return angles

    def _build(self, si: int, w: Tensor, x: Optional[Tensor], c: _Consts) -> list[Tensor]:
        """Group matrices of segment ``si``: per group ``(P, nl, G, G)`` or, for a data segment,
        ``(P, M, nl, G, G)``."""
        u = fuse_rotations(0.5 * self._angles(si, w, x), c.sigma[si])  # (..., nl, n, 2, 2)
        return [kron_chain(u[..., list(wires), :, :]) for wires in self.groups]

    def _build_dual(self, si: int, w: Tensor, x: Optional[Tensor], a: Tensor, b: Optional[Tensor],
                    c: _Consts) -> tuple[list[Tensor], list[Tensor]]:
        """:meth:`_build` and its tangent along ``(a, b)`` (written out, no torch.func)."""
        data = self._banks[si].data
        xt = None if not data else (torch.zeros_like(x) if b is None else b)  # type: ignore[arg-type]
        half = 0.5 * self._angles(si, w, x)
        half_dot = 0.5 * self._angles(si, a, xt)
        u, ud = fuse_rotations_dual(half, half_dot, c.sigma[si])
        ks, kts = [], []
        for wires in self.groups:
            k, kd = kron_chain_dual(u[..., list(wires), :, :], ud[..., list(wires), :, :])
            ks.append(k)
            kts.append(kd)
        return ks, kts

    def _ops(self, si: int) -> list[tuple[Any, ...]]:
        """Segment ``si`` as a list of kernel calls: ``("g", layer, group, diagonal or None)``,
        ``("d", diagonal)``, ``("c", cnot)``. In the column layout a CZ diagonal right before a layer
        whose last group has gates is absorbed into that group's matrices (one per value of the other
        wires), which costs nothing: that group is applied first."""
        if si in self._ops_cache:
            return self._ops_cache[si]
        bank = self._banks[si]
        cols = not bank.data
        last = len(self.groups) - 1
        ops: list[tuple[Any, ...]] = []
        pending: Optional[int] = None
        li = 0
        for step in self.segments[si].steps:
            if isinstance(step, Layer):
                active = list(bank.active[li])
                if pending is not None and cols and last in active:
                    ops.append(("g", li, last, pending))
                    active.remove(last)
                elif pending is not None:
                    ops.append(("d", pending))
                pending = None
                ops.extend(("g", li, g, None) for g in active)
                li += 1
            else:
                if pending is not None:
                    ops.append(("d", pending))
                    pending = None
                if isinstance(step, Diagonal):
                    pending = self._diag_index[id(step)]
                else:
                    ops.append(("c", self._cnot_index[id(step)]))
        if pending is not None:
            ops.append(("d", pending))
        self._ops_cache[si] = ops
        return ops

    def _matrix(self, ks: list[Tensor], op: tuple[Any, ...], per_row: bool, c: _Consts) -> Tensor:
        """The matrix a ``("g", layer, group, diagonal)`` op applies: the group matrix, times the absorbed
        diagonal's signs (one matrix per value of the more significant wires) when there is one."""
        _, li, g, d = op
        k = ks[g][:, :, li] if per_row else ks[g][:, li]
        if d is None:
            return k
        A, G = 2 ** self.groups[g][0], 2 ** len(self.groups[g])
        return k[:, None] * c.signs[d].reshape(A, G)[None, :, None, :]

    # ------------------------------------------------------------------ running segments
    def _run(self, si: int, state: Tensor, ks: list[Tensor], c: _Consts) -> Tensor:
        """Apply segment ``si`` to ``state``: (..., D, M) columns for weights-only segments, (..., M, D)
        rows for data segments."""
        for op in self._ops(si):
            state = self._op(si, op, state, ks, c)
        return state

    @property
    def _diag_index(self) -> dict[int, int]:
        if not hasattr(self, "_diag_index_cache"):
            self._diag_index_cache = {id(s): i for i, s in enumerate(
                s for s in self.program.steps if isinstance(s, Diagonal))}
            self._cnot_index_cache = {id(s): i for i, s in enumerate(
                s for s in self.program.steps if isinstance(s, Cnot))}
        return self._diag_index_cache

    @property
    def _cnot_index(self) -> dict[int, int]:
        self._diag_index  # noqa: B018 - builds both
        return self._cnot_index_cache

    def _readout(self, state: Tensor, c: _Consts) -> Tensor:
        """``state`` in columns (P, D, M) -> (P, M, K)."""
        return expectations_cols(state, self.observables, self.n_qubits, c.z_signs)

    # ------------------------------------------------------------------ weights-only work
    def _weights_only(self, w: Tensor, plan: Plan, c: _Consts, use_cache: bool) -> dict[int, _Fixed]:
        """Prepared state ``S|0>`` ``(P, D, 1)`` of a ``prep`` segment and the unitary ``S`` ``(P, D, D)``
        of each ``fold`` segment at ``w``, with the states after each step where the plan keeps them
        (reused from the previous call at exactly the same weights)."""
        wanted = [i for i, m in enumerate(plan.modes) if m in ("prep", "fold")]
        if use_cache:
            with self._lock:
                cached = self._cache
                if (cached.weights is not None and cached.weights.shape == w.shape and cached.weights.dtype == w.dtype
                        and cached.weights.device == w.device and torch.equal(cached.weights, w)
                        and all(i in cached.values and (cached.values[i].traj is not None or not plan.keep[i])
                                for i in wanted)):
                    return {i: cached.values[i] for i in wanted}
        out: dict[int, _Fixed] = {}
        for i in wanted:
            ks = self._build(i, w, None, c)
            final, traj = self._run_keep(i, self._start(plan.modes[i], w.shape[0], c), ks, c, plan.keep[i])
            out[i] = _Fixed(final, traj)
        if use_cache:
            with self._lock:
                self._cache = _FoldCache(w.detach().clone(), out)
        return out

    def _start(self, mode: str, P: int, c: _Consts) -> Tensor:
        D = 2 ** self.n_qubits
        if mode == "prep":
            return c.e0.reshape(1, D, 1).expand(P, D, 1)
        return torch.eye(D, dtype=c.e0.dtype, device=c.e0.device).expand(P, D, D)

    def _run_keep(self, si: int, state: Tensor, ks: list[Tensor], c: _Consts,
                  keep: bool) -> tuple[Tensor, Optional[list[Tensor]]]:
        """:meth:`_run`, optionally keeping the state after each op."""
        if not keep:
            return self._run(si, state, ks, c), None
        traj = []
        for op in self._ops(si):
            state = self._op(si, op, state, ks, c)
            traj.append(state)
        return state, traj

    def _op(self, si: int, op: tuple[Any, ...], state: Tensor, ks: list[Tensor], c: _Consts) -> Tensor:
        per_row = self._banks[si].data
        if op[0] == "g":
            k = self._matrix(ks, op, per_row, c)
            fn = apply_rows if per_row else apply_cols
            return fn(state, k, self.groups[op[2]], self.n_qubits)
        if op[0] == "d":
            sign = c.signs[op[1]]
            return state * (sign if per_row else sign[:, None])
        perm = c.perms[op[1]]
        return state[..., perm] if per_row else state[..., perm, :]

    def _tangent_run(self, si: int, traj: list[Tensor], start: Tensor, ks: list[Tensor], kts: list[Tensor],
                     c: _Consts) -> list[Tensor]:
        """Tangents of the kept states of a weights-only segment (its start state is constant): per op
        ``t_j = op_j(t_{j-1}) + dop_j(x_{j-1})`` with the kept values ``x``."""
        n = self.n_qubits
        out: list[Tensor] = []
        t: Optional[Tensor] = None
        for j, op in enumerate(self._ops(si)):
            if op[0] == "g":
                k, kt = self._op_matrix(ks, kts, op, False, c)
                wires = self.groups[op[2]]
                prev = start if j == 0 else traj[j - 1]
                assert kt is not None  # a tangent run is given the matrices' tangents
                new = apply_cols(prev, kt, wires, n)
                if t is not None:
                    new += apply_cols(t, k, wires, n)
                t = new
            elif t is None:
                t = torch.zeros_like(traj[j])
            else:
                t = self._op(si, op, t, ks, c)
            out.append(t)
        return out

    # ------------------------------------------------------------------ procedures
    def _check(self, inputs: Tensor, weights: Tensor) -> None:
        if inputs.dim() != 3 or inputs.shape[-1] != self.n_features:
            raise ValueError(f"inputs must have shape (P, B, {self.n_features}), got {tuple(inputs.shape)}")
        P = inputs.shape[0]
        if weights.shape != (P, self.n_weights):
            raise ValueError(f"weights must have shape ({P}, {self.n_weights}), got {tuple(weights.shape)}")
        if not weights.dtype.is_floating_point:
            raise ValueError(f"weights must be real floating point, got {weights.dtype}")

    @staticmethod
    def _cdtype(dtype: torch.dtype) -> torch.dtype:
        return torch.complex128 if dtype == torch.float64 else torch.complex64

    def forward(self, x: Tensor, w: Tensor, *, use_cache: bool = False) -> Tensor:
        """Expectation values ``(P, B, K)`` as plain torch ops (differentiable by autograd and torch.func).

        Parameters
        ----------
        x : Tensor, shape (P, B, n_features), real (cast to the weights' dtype)
        w : Tensor, shape (P, n_weights), float64 or float32
        """
        self._check(x, w)
        x = x.to(w.dtype)
        P, B, _ = x.shape
        plan = self.plan(P, B, w.dtype, w.device)
        outs = [self._forward_block(x[p0:p0 + plan.patches], w[p0:p0 + plan.patches], plan, use_cache and
                                    plan.patches == P) for p0 in range(0, P, plan.patches)]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)

    def _layout(self, si: int) -> str:
        return "rows" if self._banks[si].data else "cols"

    @staticmethod
    def _to(state: Tensor, src: str, dst: str) -> Tensor:
        return state if src == dst else state.transpose(-1, -2)

    def _initial(self, fixed: dict[int, _Fixed], plan: Plan, c: _Consts, P: int, M: int) -> tuple[Tensor, str]:
        """The state entering the first non-prep segment (columns)."""
        D = 2 ** self.n_qubits
        if plan.modes and plan.modes[0] == "prep":
            return fixed[0].final.expand(P, D, M), "cols"
        return c.e0.reshape(1, D, 1).expand(P, D, M), "cols"

    def _forward_block(self, x: Tensor, w: Tensor, plan: Plan, use_cache: bool) -> Tensor:
        c = self._constants(w.device, self._cdtype(w.dtype))
        P, B, _ = x.shape
        fixed = self._weights_only(w, plan, c, use_cache)
        weight_ks = {si: self._build(si, w, None, c) for si, m in enumerate(plan.modes) if m == "gates"}
        outs = []
        for b0 in range(0, B, plan.rows):
            xc = x[:, b0:b0 + plan.rows]
            state, layout = self._initial(fixed, plan, c, P, xc.shape[1])
            for si, mode in enumerate(plan.modes):
                if mode == "prep":
                    continue
                want = self._layout(si)
                state, layout = self._to(state, layout, want), want
                if mode == "fold":
                    state = fixed[si].final @ state
                elif mode == "gates":
                    state = self._run(si, state, weight_ks[si], c)
                else:
                    state = self._run(si, state, self._build(si, w, xc, c), c)
            outs.append(self._readout(self._to(state, layout, "cols"), c))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    # ------------------------------------------------------------------ derivatives
    def adjoint(self, x: Tensor, w: Tensor, gout: Tensor, need_x: bool = True, *,
                use_cache: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Outputs and the vector-Jacobian product, by an adjoint pass that un-computes states.

        Parameters
        ----------
        x : Tensor, shape (P, B, n_features)
        w : Tensor, shape (P, n_weights)
        gout : Tensor, shape (P, B, K): cotangent of the outputs
        need_x : bool
            Whether the inputs' cotangent is wanted (else zeros are returned for it).

        Returns
        -------
        out : Tensor, shape (P, B, K)
        w_bar : Tensor, shape (P, n_weights)
        x_bar : Tensor, shape (P, B, n_features)
        """
        return self._sweep(x, w, gout, None, None, need_x, use_cache)

    def adjoint_tangent(self, x: Tensor, w: Tensor, gout: Tensor, a: Tensor, b: Optional[Tensor],
                        need_x: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Forward-mode derivative of :meth:`adjoint` along ``(a, b)`` (tangents of ``w`` and ``x``), ``gout``
        held fixed: ``(J (a, b), d/de w_bar, d/de x_bar)``. With ``gout`` the output cotangent this is the
        second-order part of a Hessian-vector product (exact, hand-written; equal to ``torch.func.jvp`` of
        :meth:`adjoint`).

        Returns
        -------
        out_dot : Tensor, shape (P, B, K)
        w_bar_dot : Tensor, shape (P, n_weights)
        x_bar_dot : Tensor, shape (P, B, n_features)
        """
        if a.shape != w.shape:
            raise ValueError(f"tangent of the weights must have shape {tuple(w.shape)}, got {tuple(a.shape)}")
        if b is not None and b.shape != x.shape:
            raise ValueError(f"tangent of the inputs must have shape {tuple(x.shape)}, got {tuple(b.shape)}")
        return self._sweep(x, w, gout, a, b, need_x, False)

    def _sweep(self, x: Tensor, w: Tensor, gout: Tensor, a: Optional[Tensor], b: Optional[Tensor], need_x: bool,
               use_cache: bool) -> tuple[Tensor, Tensor, Tensor]:
        self._check(x, w)
        x = x.to(w.dtype)
        gout = gout.to(w.dtype)
        if a is not None:
            a = a.to(w.dtype)
            b = None if b is None or not need_x else b.to(w.dtype)
        P, B, _ = x.shape
        plan = self.plan(P, B, w.dtype, w.device)
        parts = []
        for p0 in range(0, P, plan.patches):
            sl = slice(p0, p0 + plan.patches)
            parts.append(self._sweep_block(x[sl], w[sl], gout[sl], None if a is None else a[sl],
                                           None if b is None else b[sl], plan, need_x,
                                           use_cache and plan.patches == P))
        if len(parts) == 1:
            return parts[0]
        return tuple(torch.cat(t, dim=0) for t in zip(*parts))  # type: ignore[return-value]

    # -- dual helpers: tensors carry a leading "order" axis: [value] or [value, tangent] --------------------
    def _matrices(self, si: int, w: Tensor, x: Optional[Tensor], a: Optional[Tensor], b: Optional[Tensor],
                  c: _Consts) -> tuple[list[Tensor], Optional[list[Tensor]]]:
        """Group matrices of segment ``si`` and, with a tangent ``a`` (and ``b``), their tangents."""
        data = self._banks[si].data
        if a is None:
            return self._build(si, w, x if data else None, c), None
        return self._build_dual(si, w, x if data else None, a, b, c)

    def _op_matrix(self, ks: list[Tensor], kts: Optional[list[Tensor]], op: tuple[Any, ...], per_row: bool,
                   c: _Consts) -> tuple[Tensor, Optional[Tensor]]:
        """:meth:`_matrix` and, given the group matrices' tangents, its tangent (linear)."""
        return self._matrix(ks, op, per_row, c), (None if kts is None else self._matrix(kts, op, per_row, c))

    @staticmethod
    def _dual_apply(z: Tensor, k: Tensor, kt: Optional[Tensor], fn: Callable[..., Tensor], wires: tuple[int, ...],
                    n: int) -> Tensor:
        """``[k z0]`` or ``[k z0, k z1 + kt z0]`` for ``z`` of order 1 or 2."""
        out = fn(z, k, wires, n)
        if kt is not None and z.shape[0] == 2:
            out[1] += fn(z[0], kt, wires, n)
        return out

    def _run_dual(self, si: int, z: Tensor, ks: list[Tensor], kts: Optional[list[Tensor]], c: _Consts) -> Tensor:
        """:meth:`_run` on a stack ``[state]`` or ``[state, tangent]`` (leading axis)."""
        per_row = self._banks[si].data
        fn = apply_rows if per_row else apply_cols
        n = self.n_qubits
        for op in self._ops(si):
            if op[0] == "g":
                k, kt = self._op_matrix(ks, kts, op, per_row, c)
                z = self._dual_apply(z, k, kt, fn, self.groups[op[2]], n)
            elif op[0] == "d":
                sign = c.signs[op[1]]
                z = z * (sign if per_row else sign[:, None])
            else:
                perm = c.perms[op[1]]
                z = z[..., perm] if per_row else z[..., perm, :]
        return z

    def _reverse_dual(self, si: int, state: Optional[Tensor], lam_c: Tensor, ks: list[Tensor],
                      kts: Optional[list[Tensor]], c: _Consts, acc: Optional[list[Tensor]],
                      traj: Optional[list[Tensor]] = None,
                      traj_t: Optional[list[Tensor]] = None) -> tuple[Tensor, list[Tensor]]:
        """Adjoint of :meth:`_run_dual` from the *conjugated* output cotangent ``lam_c`` (a stack of order 1
        or 2) and either its output ``state`` (same stack; the states are then un-computed with the
        inverse gates) or the kept states after each op ``traj`` (and, at order 2, their tangents
        ``traj_t``).

        Returns the conjugated input cotangent (same order) and, per group, ``C = lam state^H`` at each of
        its matrices ``k`` ``(o, P, [M,] nl, G, G)`` (torch's gradient of ``k`` is ``C k``; summed over the
        blocks of an absorbed diagonal), added to ``acc`` when given: the value and, at order 2, its tangent.
        """
        bank = self._banks[si]
        per_row = bank.data
        fn = apply_rows if per_row else apply_cols
        contract = contract_rows_t if per_row else contract_cols_t
        n = self.n_qubits
        order = lam_c.shape[0]
        axis = 3 if per_row else 2  # (o, P, [M,] nl, G, G)
        # written in place, op by op: small results kept across a loop of large transient states would pin
        # glibc's freed state-sized chunks apart (measured: +9 MiB of RSS per op of a 401-op folded segment)
        grads = [torch.zeros((order,) + ks[g].shape, dtype=ks[g].dtype, device=ks[g].device)
                 for g in range(len(self.groups))]
        ops = self._ops(si)
        for j in range(len(ops) - 1, -1, -1):
            op = ops[j]
            if traj is not None:
                x0 = traj[j]
                x1 = traj_t[j] if (order == 2 and traj_t is not None) else None
            else:
                assert state is not None
                x0 = state[0]
                x1 = state[1] if order == 2 else None
            if op[0] == "g":
                k, kt = self._op_matrix(ks, kts, op, per_row, c)
                wires = self.groups[op[2]]
                slot = grads[op[2]].select(axis, op[1])  # (o, P, [M,] G, G)
                slot[0].copy_(contract(lam_c[0], x0, wires, n).conj())  # C = lam state^H: torch's gradient of k is C k
                if order == 2:
                    assert x1 is not None
                    slot[1].copy_((contract(lam_c[1], x0, wires, n) + contract(lam_c[0], x1, wires, n)).conj())
                if traj is None:
                    assert state is not None
                    kh = torch.conj_physical(k).transpose(-1, -2).contiguous()
                    kth = None if kt is None else torch.conj_physical(kt).transpose(-1, -2).contiguous()
                    state = self._dual_apply(state, kh, kth, fn, wires, n)  # un-compute: k^H
                ktr = k.transpose(-1, -2).contiguous()
                kttr = None if kt is None else kt.transpose(-1, -2).contiguous()
                lam_c = self._dual_apply(lam_c, ktr, kttr, fn, wires, n)  # conj(k^H lam) = k^T conj(lam)
            elif op[0] == "d":
                sign = c.signs[op[1]]
                sign = sign if per_row else sign[:, None]
                if traj is None:
                    state = state * sign
                lam_c = lam_c * sign
            else:
                perm = c.perms[op[1]]  # an involution
                if traj is None:
                    assert state is not None
                    state = state[..., perm] if per_row else state[..., perm, :]
                lam_c = lam_c[..., perm] if per_row else lam_c[..., perm, :]
        out = grads if acc is None else [acc[g] + grads[g] for g in range(len(grads))]
        return lam_c, out

    def _builder_grads(self, si: int, w: Tensor, x: Optional[Tensor], cs: list[Tensor], a: Optional[Tensor],
                       b: Optional[Tensor], c: _Consts, need_x: bool) -> tuple[Tensor, Optional[Tensor]]:
        """Torch's gradients of ``w`` (and ``x``) from the contractions ``C`` at segment ``si``'s group matrices
        (per group ``(o, ...)``, from :meth:`_reverse_dual`): order 1, their value; order 2 (tangents ``a``, ``b``
        given), their tangent, the gates' own second derivatives included.

        Every group matrix ``k`` is unitary, so an angle ``theta`` of qubit ``j``'s fused rotations has
        gradient ``Re tr(C^H dk/dtheta k^H) = Re tr(N_j^H Gamma)``: ``N_j`` is the partial trace of ``C`` over
        the group's other wires and ``Gamma = d u_j / d theta u_j^H`` (:func:`~.kernels.rotation_generators`).
        Only 2x2 matrices per rotation: no reverse-mode transform (so saved-tensor hooks do not interfere)
        and no forward-mode transform (``torch.func.jvp`` costs more than these small tensors)."""
        bank = self._banks[si]
        data = bank.data
        with_x = data and need_x
        order = cs[0].shape[0]
        xt = None
        if order == 2 and data:
            xt = torch.zeros_like(x) if b is None else b  # type: ignore[arg-type]
        half = 0.5 * self._angles(si, w, x if data else None)
        half_dot = None
        if order == 2:
            assert a is not None
            half_dot = 0.5 * self._angles(si, a, xt)
        gam, gam_dot = rotation_generators(half, c.sigma[si], half_dot)  # (..., nl, T, n, 2, 2)
        n_tr = [torch.cat([partial_traces(cs[g][o], len(wires)) for g, wires in enumerate(self.groups)], dim=-3)
                for o in range(order)]  # (..., nl, n, 2, 2): groups cover the wires in order
        if order == 1:
            abar = (n_tr[0].conj()[..., None, :, :, :] * gam).real.sum(dim=(-1, -2))
        else:
            assert gam_dot is not None
            abar = (n_tr[1].conj()[..., None, :, :, :] * gam
                    + n_tr[0].conj()[..., None, :, :, :] * gam_dot).real.sum(dim=(-1, -2))
        return self._scatter(si, w, x, abar, with_x)  # abar: (..., nl, T, n), gradients of the angles

    def _scatter(self, si: int, w: Tensor, x: Optional[Tensor], abar: Tensor,
                 with_x: bool) -> tuple[Tensor, Optional[Tensor]]:
        """Angle gradients back onto the weights (and inputs): the transpose of :meth:`_angles`."""
        bank = self._banks[si]
        P, W = w.shape
        cols_w, cols_x = bank.cols_w.to(w.device), bank.cols_x.to(w.device)
        if not bank.data:
            w_bar = torch.zeros(P, W + 1, dtype=w.dtype, device=w.device).index_add(
                1, cols_w.reshape(-1), abar.reshape(P, -1))
            return w_bar[:, :W], None
        # rotations that read an input send their weight part to the pad column, and the other way round
        w_bar = torch.zeros(P, W + 1, dtype=w.dtype, device=w.device).index_add(
            1, cols_w.reshape(-1), abar.sum(dim=1).reshape(P, -1))[:, :W]
        if not with_x:
            return w_bar, None
        assert x is not None
        M, F = x.shape[1], x.shape[2]
        x_bar = torch.zeros(P, M, F + 1, dtype=x.dtype, device=x.device).index_add(
            2, cols_x.reshape(-1), abar.reshape(P, M, -1))
        return w_bar, x_bar[:, :, :F]

    def _readout_dual(self, z: Tensor, c: _Consts) -> tuple[Tensor, Optional[Tensor]]:
        value = self._readout(z[0], c)
        if z.shape[0] == 1:
            return value, None
        return value, expectations_cols_tangent(z[0], z[1], self.observables, self.n_qubits, c.z_signs)

    def _sweep_block(self, x: Tensor, w: Tensor, gout: Tensor, a: Optional[Tensor], b: Optional[Tensor], plan: Plan,
                     need_x: bool, use_cache: bool) -> tuple[Tensor, Tensor, Tensor]:
        """One block of circuits: order 1 (``a`` None) returns ``(out, w_bar, x_bar)``; order 2 returns
        ``(out_dot, w_bar_dot, x_bar_dot)``."""
        c = self._constants(w.device, self._cdtype(w.dtype))
        P, B, F = x.shape
        D = 2 ** self.n_qubits
        modes = plan.modes
        order = 1 if a is None else 2
        # weights-only segments: matrices (and tangents), prepared state / folded unitary (and tangents)
        mats = {si: self._matrices(si, w, None, a, None, c) for si, m in enumerate(modes) if m != "data"}
        kept = self._weights_only(w, plan, c, use_cache or order == 2)
        fixed: dict[int, Tensor] = {}  # (o, P, D, cols): value [and tangent] of each prep/fold result
        tangents: dict[int, list[Tensor]] = {}  # tangents of the kept states
        for si, f in kept.items():
            if order == 1:
                fixed[si] = f.final[None]
            elif f.traj is not None:
                kts = mats[si][1]
                assert kts is not None
                tangents[si] = self._tangent_run(si, f.traj, self._start(modes[si], P, c), mats[si][0], kts, c)
                fixed[si] = torch.stack([f.final, tangents[si][-1]])
            else:
                start = self._start(modes[si], P, c)
                z = torch.stack([start, torch.zeros_like(start)])
                fixed[si] = self._run_dual(si, z, *mats[si], c)
        acc: dict[int, Optional[list[Tensor]]] = {si: None for si, m in enumerate(modes) if m == "gates"}
        fold_bar: dict[int, Tensor] = {}
        prep_bar: Optional[Tensor] = None
        w_bar = torch.zeros_like(w)
        x_bars: list[Tensor] = []
        outs: list[Tensor] = []
        seq = [si for si, m in enumerate(modes) if m != "prep"]
        for b0 in range(0, B, plan.rows):
            xc = x[:, b0:b0 + plan.rows]
            bc = None if b is None else b[:, b0:b0 + plan.rows]
            M = xc.shape[1]
            if modes and modes[0] == "prep":
                state = fixed[0].expand(order, P, D, M)
            else:
                state = c.e0.reshape(1, 1, D, 1).expand(1, P, D, M)
                if order == 2:
                    state = torch.cat([state, torch.zeros_like(state)])
            layout = "cols"
            bounds: list[Tensor] = []
            data_mats: dict[int, tuple[list[Tensor], Optional[list[Tensor]]]] = {}
            for si in seq:
                mode = modes[si]
                want = self._layout(si)
                state, layout = self._to(state, layout, want), want
                bounds.append(state)
                if mode == "data":
                    data_mats[si] = self._matrices(si, w, xc, a, bc, c)
                    state = self._run_dual(si, state, *data_mats[si], c)
                elif mode == "fold":
                    s = fixed[si]
                    out = s[0] @ state
                    if order == 2:
                        out[1] += s[1] @ state[0]
                    state = out
                else:
                    state = self._run_dual(si, state, *mats[si], c)
            final = self._to(state, layout, "cols")
            value, tangent = self._readout_dual(final, c)
            if order == 1:
                outs.append(value)
            else:
                assert tangent is not None  # order 2 reads out the tangent too
                outs.append(tangent)
            lam = expectations_adjoint_cols(final, gout[:, b0:b0 + M], self.observables, self.n_qubits, c.z_signs)
            lam_layout = "cols"
            xc_bar: Optional[Tensor] = None
            for j in range(len(seq) - 1, -1, -1):
                si = seq[j]
                mode = modes[si]
                want = self._layout(si)
                lam, lam_layout = self._to(lam, lam_layout, want), want
                if mode == "fold":
                    s, psi = fixed[si], bounds[j]
                    bar = lam[0] @ psi[0].transpose(-1, -2)  # conj of torch's gradient of S
                    if order == 2:
                        bar = torch.stack([bar, lam[1] @ psi[0].transpose(-1, -2) + lam[0] @ psi[1].transpose(-1, -2)])
                    else:
                        bar = bar[None]
                    fold_bar[si] = bar if si not in fold_bar else fold_bar[si] + bar
                    new = s[0].transpose(-1, -2) @ lam
                    if order == 2:
                        new[1] += s[1].transpose(-1, -2) @ lam[0]
                    lam = new
                    continue
                after = state if j == len(seq) - 1 else self._to(bounds[j + 1], self._layout(seq[j + 1]), want)
                if mode == "gates":
                    lam, acc[si] = self._reverse_dual(si, after, lam, *mats[si], c, acc[si])
                else:
                    ks, kts = data_mats[si]
                    lam, kb = self._reverse_dual(si, after, lam, ks, kts, c, None)
                    gw, gx = self._builder_grads(si, w, xc, kb, a, bc, c, need_x)
                    w_bar = w_bar + gw
                    if need_x and gx is not None:
                        xc_bar = gx if xc_bar is None else xc_bar + gx
            if modes and modes[0] == "prep":
                sm = self._to(lam, lam_layout, "cols").sum(dim=-1, keepdim=True)  # (o, P, D, 1)
                prep_bar = sm if prep_bar is None else prep_bar + sm
            if need_x:
                x_bars.append(torch.zeros_like(xc) if xc_bar is None else xc_bar)
        for si, mode in enumerate(modes):
            if mode == "data":
                continue
            if mode == "gates":
                kept_grads = acc[si]
                if kept_grads is None:
                    continue
                kb = kept_grads
            else:
                seg_bar = prep_bar if mode == "prep" else fold_bar.get(si)
                if seg_bar is None:
                    continue
                bar = seg_bar
                f = kept[si]
                if f.traj is not None:
                    _, kb = self._reverse_dual(si, None, bar, *mats[si], c, None, traj=f.traj, traj_t=tangents.get(si))
                    tangents.pop(si, None)
                else:
                    _, kb = self._reverse_dual(si, fixed[si], bar, *mats[si], c, None)
            gw, _ = self._builder_grads(si, w, None, kb, a, None, c, False)
            w_bar = w_bar + gw
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        x_bar = (x_bars[0] if len(x_bars) == 1 else torch.cat(x_bars, dim=1)) if need_x else torch.zeros_like(x)
        return out, w_bar, x_bar

    # ------------------------------------------------------------------ calling
    def __call__(self, inputs: Tensor, weights: Tensor) -> Tensor:
        self._check(inputs, weights)
        if functorch_active():
            return self.forward(inputs, weights)
        if torch.is_grad_enabled() and (weights.requires_grad or inputs.requires_grad):
            return _Circuit.apply(weights, inputs, self)
        with torch.no_grad():
            return self.forward(inputs, weights, use_cache=True)


class _Circuit(torch.autograd.Function):
    """``(weights, inputs) -> expectation values``; backward = :class:`_CircuitVJP` (adjoint pass)."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, x: Tensor, sim: CompiledCircuit) -> Tensor:  # type: ignore[override]
        out = sim.forward(x, w, use_cache=True)
        ctx.save_for_backward(w, x)
        ctx.sim = sim
        ctx.x_dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx: Any, gout: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None]:  # type: ignore[override]
        w, x = ctx.saved_tensors
        need_x = bool(ctx.needs_input_grad[1])
        w_bar, x_bar = _CircuitVJP.apply(w, x, gout, ctx.sim, need_x)
        return (w_bar if ctx.needs_input_grad[0] else None,
                x_bar.to(ctx.x_dtype) if need_x else None, None)


class _CircuitVJP(torch.autograd.Function):
    """``(weights, inputs, gout) -> (w_bar, x_bar)``; its backward is the forward-mode derivative of
    the adjoint pass (Hessian-vector products by double backward). Asked for a graph of that (third
    derivatives, ``create_graph=True`` twice), it differentiates the plain torch ops instead (a tape,
    exact to any order)."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, x: Tensor, gout: Tensor, sim: CompiledCircuit,  # type: ignore[override]
                need_x: bool) -> tuple[Tensor, Tensor]:
        _, w_bar, x_bar = sim.adjoint(x, w, gout, need_x, use_cache=True)
        ctx.save_for_backward(w, x, gout)
        ctx.sim, ctx.need_x = sim, need_x
        return w_bar, x_bar

    @staticmethod
    def backward(ctx: Any, a: Optional[Tensor], b: Optional[Tensor]) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor],  # type: ignore[override]
                                                          None, None]:
        w, x, gout = ctx.saved_tensors
        sim, need_x = ctx.sim, ctx.need_x
        a = torch.zeros_like(w) if a is None else a
        b = None if (b is None or not need_x) else b
        if torch.is_grad_enabled():  # a graph of the second derivatives is wanted: differentiate the plain ops
            return _second_order_graph(sim, w, x, gout, a, b, need_x)
        out_dot, w_dot, x_dot = sim.adjoint_tangent(x, w, gout, a, b, need_x)
        return w_dot, (x_dot.to(x.dtype) if need_x else None), out_dot.to(gout.dtype), None, None


def _second_order_graph(sim: CompiledCircuit, w: Tensor, x: Tensor, gout: Tensor, a: Tensor, b: Optional[Tensor],
                        need_x: bool) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], None, None]:
    """:class:`_CircuitVJP`'s backward as differentiable torch ops (``torch.func`` partial derivatives of
    the plain forward, which the outer autograd differentiates again): ``d/de (w_bar, x_bar)`` along
    ``(a, b)`` with ``gout`` held fixed, and ``J (a, b)`` (the gradient with respect to ``gout``)."""
    xw = x.to(w.dtype)
    g = gout.to(w.dtype)

    def f(w_: Tensor, x_: Tensor) -> Tensor:
        return sim.forward(x_, w_)

    def grads(w_: Tensor, x_: Tensor) -> tuple[Tensor, Tensor]:
        return torch.func.grad(lambda u, v: (f(u, v) * g).sum(), argnums=(0, 1))(w_, x_)

    bt = torch.zeros_like(xw) if b is None else b.to(w.dtype)
    out_dot = torch.func.jvp(f, (w, xw), (a.to(w.dtype), bt))[1]
    w_dot, x_dot = torch.func.jvp(grads, (w, xw), (a.to(w.dtype), bt))[1]
    return w_dot, (x_dot.to(x.dtype) if need_x else None), out_dot.to(gout.dtype), None, None
