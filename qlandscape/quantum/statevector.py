"""The gate-by-gate torch statevector simulator (the "tape" route): the recorded circuit as plain
differentiable torch ops, for circuits made of RX, RY, RZ, Rot, CZ and CNOT with single-qubit Pauli
expectation values.

:class:`qlandscape.quantum.compiled.CompiledCircuit` supersedes it for patch QNNs (``PatchQNN``'s
default ``simulator="compiled"``): same circuits, same results, with folded segments and derivatives
that do not keep a tape. This one stays as an independent route for tests and benchmarks, and for
``simulator="tape"``.

The circuit is never written twice: :func:`compile_qfunc` records the PennyLane quantum function
(the same ``qfunc`` a QNode runs) once with marker values for its inputs and weights, and reads
back which gate takes which input or weight. Execution is then a short sequence of torch ops
batched over patches ``P`` and samples ``B``:

* consecutive single-qubit gates on a qubit are multiplied into one 2x2 matrix per qubit
  (gates built for all qubits at once from ``cos(t/2) I - i sin(t/2) sigma``), then applied with
  one ``einsum`` per qubit; gates that read only weights are built once per patch, not per sample;
* runs of CZ gates are one elementwise sign flip; CNOT is an index permutation;
* expectation values of X, Y, Z on any qubits are one gather and one reduction.

Everything is plain torch autograd, so derivatives of every order are exact, ``torch.func``
transforms (vmap, jvp, grad) run through it, and it matches PennyLane's ``default.qubit`` to
float64 rounding (tested to 1e-10). Memory for backpropagation grows with
``P * B * 2**n_qubits`` per applied step (a tape), which is what the compiled simulator avoids.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from . import program

SUPPORTED_GATES = program.SUPPORTED_GATES
_PAULI = {
    "I": torch.eye(2, dtype=torch.complex128),
    "X": torch.tensor([[0, 1], [1, 0]], dtype=torch.complex128),
    "Y": torch.tensor([[0, -1j], [1j, 0]], dtype=torch.complex128),
    "Z": torch.tensor([[1, 0], [0, -1]], dtype=torch.complex128),
}
_Layer, _Diagonal, _Cnot = program.Layer, program.Diagonal, program.Cnot


def compile_qfunc(qfunc: Callable[[Tensor, Tensor], Any], n_qubits: int, n_features: int,
                  n_weights: int) -> tuple[list[Any], list[tuple[str, int]]]:
    """Record ``qfunc(inputs, weights)`` into a fused program and its readout
    (:func:`qlandscape.quantum.program.record`).

    Returns
    -------
    steps : list of Layer / Diagonal / Cnot
    observables : list of (pauli, wire)
    """
    prog = program.record(qfunc, n_qubits, n_features, n_weights)
    return list(prog.steps), list(prog.observables)


class TorchStatevector:
    """Runs one circuit for many patches (each with its own weights) and samples at once.

    Parameters
    ----------
    qfunc : callable
        ``qfunc(inputs (n_features,), weights (n_weights,))`` building the circuit with PennyLane
        ops and returning expectation values (e.g. :meth:`CircuitSpec.qfunc`).
    n_qubits, n_features, n_weights : int

    Notes
    -----
    Calling it: ``inputs`` shape ``(P, B, n_features)``, ``weights`` shape ``(P, n_weights)`` ->
    expectation values ``(P, B, n_outputs)`` in the weights' real dtype (complex128 state for
    float64 weights, complex64 for float32). Stateless: copies and threads may share it.
    """

    def __init__(self, qfunc: Callable[[Tensor, Tensor], Any], n_qubits: int, n_features: int,
                 n_weights: int) -> None:
        self.n_qubits, self.n_features, self.n_weights = n_qubits, n_features, n_weights
        self.steps, self.observables = compile_qfunc(qfunc, n_qubits, n_features, n_weights)
        n, D = n_qubits, 2 ** n_qubits
        k = torch.arange(D)
        bits = torch.stack([(k >> (n - 1 - q)) & 1 for q in range(n)])  # (n, D): bit of wire q
        self._bits = bits
        self._layers = [self._layer_tables(s) for s in self.steps if isinstance(s, _Layer)]
        self._signs = [torch.prod(torch.stack([1 - 2 * (bits[a] & bits[b]) for a, b in s.pairs]), 0).double()
                       for s in self.steps if isinstance(s, _Diagonal)]
        self._perms = [k ^ (bits[s.control] << (n - 1 - s.target)) for s in self.steps if isinstance(s, _Cnot)]
        perm, phase = [], []
        for pauli, q in self.observables:
            flip = k ^ (1 << (n - 1 - q))
            if pauli == "Z":
                perm.append(k)
                phase.append((1 - 2 * bits[q]).to(torch.complex128))
            elif pauli == "X":
                perm.append(flip)
                phase.append(torch.ones(D, dtype=torch.complex128))
            else:  # (Y psi)_k = i (2 b_k - 1) psi_{flip(k)}
                perm.append(flip)
                phase.append(1j * (2 * bits[q] - 1).to(torch.complex128))
        self._obs_perm = torch.stack(perm)  # (K, D)
        self._obs_phase = torch.stack(phase)  # (K, D)
        self._cache: dict[tuple[torch.device, torch.dtype], dict[str, Any]] = {}
        for cdtype in (torch.complex64, torch.complex128):  # the usual ones, built outside any transform
            self._consts(torch.device("cpu"), cdtype)

    @property
    def n_outputs(self) -> int:
        return len(self.observables)

    def _layer_tables(self, layer: program.Layer) -> dict[str, Any]:
        """Index tables for building all of a layer's gates at once: per position ``t`` in the
        per-qubit gate lists, the angle column and Pauli of every qubit (identity padding)."""
        wires = sorted(layer.gates)
        depth = max(len(g) for g in layer.gates.values())
        pad = self.n_weights + self.n_features  # index of an all-zero angle column
        cols = torch.full((depth, len(wires)), pad, dtype=torch.long)
        sig = torch.zeros(depth, len(wires), 2, 2, dtype=torch.complex128)
        data = False
        for j, q in enumerate(wires):
            for t in range(depth):
                gates = layer.gates[q]
                if t < len(gates):
                    src, idx = gates[t].source
                    data |= src == "x"
                    cols[t, j] = idx if src == "w" else self.n_weights + idx
                    sig[t, j] = _PAULI[gates[t].pauli]
                else:
                    sig[t, j] = _PAULI["I"]
        return dict(wires=wires, cols=cols, sigma=sig, data=data)

    def _consts(self, device: torch.device, cdtype: torch.dtype) -> dict[str, Any]:
        key = (device, cdtype)
        if key not in self._cache:
            # cached constants must be plain tensors: built inside a torch.func transform (the first float32 HVP
            # of a forward-over-reverse Hessian) they would escape their transform level on the next call
            # (functorch's "level <= current_level ... escaped?" assertion)
            with torch._C._DisableFuncTorch():
                self._cache[key] = self._build_consts(device, cdtype)
        return self._cache[key]

    def _build_consts(self, device: torch.device, cdtype: torch.dtype) -> dict[str, Any]:
        return dict(
                layers=[dict(t, cols=t["cols"].to(device), sigma=t["sigma"].to(device, cdtype)) for t in self._layers],
                signs=[s.to(device, torch.float64 if cdtype == torch.complex128 else torch.float32)
                       for s in self._signs],
                perms=[p.to(device) for p in self._perms],
                obs_perm=self._obs_perm.to(device), obs_phase=self._obs_phase.to(device, cdtype),
                eye=torch.eye(2, dtype=cdtype, device=device))

    def __call__(self, inputs: Tensor, weights: Tensor) -> Tensor:
        if inputs.dim() != 3 or inputs.shape[-1] != self.n_features:
            raise ValueError(f"inputs must have shape (P, B, {self.n_features}), got {tuple(inputs.shape)}")
        P, B, _ = inputs.shape
        if weights.shape != (P, self.n_weights):
            raise ValueError(f"weights must have shape ({P}, {self.n_weights}), got {tuple(weights.shape)}")
        rdtype = weights.dtype
        cdtype = torch.complex128 if rdtype == torch.float64 else torch.complex64
        c = self._consts(weights.device, cdtype)
        n, D = self.n_qubits, 2 ** self.n_qubits
        zero = torch.zeros(P, 1, 1, dtype=rdtype, device=weights.device)
        angles_w = torch.cat([weights[:, None, :], zero.expand(P, 1, self.n_features + 1)], dim=-1)  # (P, 1, W+F+1)
        angles_x = torch.cat([weights[:, None, :].expand(P, B, self.n_weights), inputs.to(rdtype),
                              zero.expand(P, B, 1)], dim=-1)  # (P, B, W+F+1)
        half_w = 0.5 * angles_w
        half_x = 0.5 * angles_x
        cos_w, sin_w = torch.cos(half_w).to(cdtype), torch.sin(half_w).to(cdtype)
        cos_x, sin_x = torch.cos(half_x).to(cdtype), torch.sin(half_x).to(cdtype)
        state = torch.zeros(P, B, D, dtype=cdtype, device=weights.device)
        state[..., 0] = 1
        li = si = pi = 0
        for step in self.steps:
            if isinstance(step, _Layer):
                t = c["layers"][li]
                li += 1
                cs, sn = (cos_x, sin_x) if t["data"] else (cos_w, sin_w)
                mats = None
                for pos in range(t["cols"].shape[0]):
                    cc = cs[..., t["cols"][pos]][..., None, None]  # (P, B', nq, 1, 1)
                    ss = sn[..., t["cols"][pos]][..., None, None]
                    g = cc * c["eye"] - 1j * ss * t["sigma"][pos]  # (P, B', nq, 2, 2)
                    mats = g if mats is None else g @ mats
                assert mats is not None
                for j, q in enumerate(t["wires"]):
                    m = mats[:, :, j].expand(P, B, 2, 2)
                    s = state.view(P, B, 2 ** q, 2, 2 ** (n - q - 1))
                    state = torch.einsum("pbij,pbljr->pblir", m, s).reshape(P, B, D)
            elif isinstance(step, _Diagonal):
                state = state * c["signs"][si]
                si += 1
            else:
                state = state[..., c["perms"][pi]]
                pi += 1
        flipped = state[..., c["obs_perm"]]  # (P, B, K, D)
        return (state.conj()[..., None, :] * flipped * c["obs_phase"]).sum(-1).real.to(rdtype)
