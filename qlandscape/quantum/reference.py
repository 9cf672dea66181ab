"""An independent folded-unitary reference for :class:`~qlandscape.quantum.circuits.CircuitSpec` circuits.

Written from the circuit's definition (the :class:`CircuitSpec` docstring), sharing no code with the
recording, planning or kernels of :mod:`qlandscape.quantum.compiled`, and differentiated by plain
torch autograd (a tape: memory grows with depth x batch). The tests compare the compiled simulator
against it, and ``benchmarks/bench_qsim.py`` times it side by side, as the issue that asked for the
compiled simulator described it: every trainable block that takes no data is one ``2**n x 2**n``
unitary per circuit, built once per parameter set (per layer, the Kronecker product of the qubits'
2x2 matrices and one GEMM) and applied to all samples as one GEMM; the first block, acting on
``|0...0>``, is one state per circuit (one ``einsum`` per gate); the encodings run per sample.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .circuits import CircuitSpec

__all__ = ["FoldedReference"]


def _rot(theta: Tensor, axis: str) -> Tensor:
    """``exp(-i theta/2 sigma_axis)`` for a batch of angles: shape ``theta.shape + (2, 2)``."""
    c = torch.cos(theta / 2)
    s = torch.sin(theta / 2)
    z = torch.zeros_like(c)
    cdtype = torch.complex128 if theta.dtype == torch.float64 else torch.complex64
    c, s, z = c.to(cdtype), s.to(cdtype), z.to(cdtype)
    if axis == "X":
        rows = [[c, -1j * s], [-1j * s, c]]
    elif axis == "Y":
        rows = [[c, -s], [s, c]]
    else:
        rows = [[c - 1j * s, z], [z, c + 1j * s]]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


class FoldedReference:
    """Runs ``spec`` for ``P`` circuits (own weights) on ``B`` samples, rows as states.

    Call: ``inputs`` (P, B, n_features), ``weights`` (P, n_weights) -> (P, B, n_outputs), real, in the
    weights' dtype (complex128 states for float64 weights).
    """

    def __init__(self, spec: CircuitSpec, build: str = "gates") -> None:
        if build not in ("gates", "kron"):
            raise ValueError(f"build must be 'gates' or 'kron', got {build!r}")
        self.spec = spec
        self.build = build
        n = spec.n_qubits
        self.n, self.D = n, 2 ** n
        k = torch.arange(self.D)
        self.bits = [((k >> (n - 1 - q)) & 1) for q in range(n)]

    # ---------------------------------------------------------------- primitives on row states (..., M, D)
    def _gate(self, state: Tensor, u: Tensor, q: int) -> Tensor:
        """``u`` (P, 2, 2) or (P, M, 2, 2) on wire ``q`` of every row of ``state`` (P, M, D): a batched
        2x2 product on a view, so autograd keeps one state per gate."""
        P, M, D = state.shape
        v = state.reshape(P, M, 2 ** q, 2, D // 2 ** (q + 1))
        uu = u[:, None, None] if u.dim() == 3 else u[:, :, None]
        return (uu @ v).reshape(P, M, D)

    def _cz_ring(self, state: Tensor) -> Tensor:
        n = self.n
        pairs = [(0, 1)] if n == 2 else [(i, (i + 1) % n) for i in range(n)] if n > 1 else []
        if not pairs:
            return state
        sign = torch.ones(self.D, dtype=torch.long)
        for a, b in pairs:
            sign = sign * (1 - 2 * (self.bits[a] & self.bits[b]))
        return state * sign.to(state.real.dtype)

    def _cnot(self, state: Tensor, control: int, target: int) -> Tensor:
        k = torch.arange(self.D)
        perm = k ^ (self.bits[control] << (self.n - 1 - target))
        return state[..., perm]

    # ---------------------------------------------------------------- circuit pieces
    def _block(self, state: Tensor, w: Tensor, final: bool) -> Tensor:
        """``L`` layers with angles ``w`` (P, L * weights_per_layer), gate by gate (one 2x2 product per qubit)."""
        spec = self.spec
        per = spec.weights_per_layer
        for layer in range(spec.layers):
            for q, u in enumerate(self._layer_gates(w[:, layer * per:(layer + 1) * per], layer)):
                state = self._gate(state, u, q)
            state = self._entangle(state, layer, final)
        return state

    def _layer_gates(self, a: Tensor, layer: int) -> list[Tensor]:
        """Per qubit, the layer's single-qubit matrix (P, 2, 2)."""
        spec, n = self.spec, self.n
        if spec.ansatz == "rxry_cz":  # RX then RY on each qubit
            return [_rot(a[:, n + q], "Y") @ _rot(a[:, q], "X") for q in range(n)]
        # Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi)
        return [_rot(a[:, 3 * q + 2], "Z") @ _rot(a[:, 3 * q + 1], "Y") @ _rot(a[:, 3 * q], "Z") for q in range(n)]

    def _entangle(self, state: Tensor, layer: int, final: bool) -> Tensor:
        spec, n = self.spec, self.n
        if spec.ansatz == "rxry_cz":
            return state if (final and layer == spec.layers - 1) else self._cz_ring(state)
        if n > 1:
            r = 1 + layer % (n - 1)
            for i in range(n):
                state = self._cnot(state, i, (i + r) % n)
        return state

    def _folded_block(self, w: Tensor, final: bool, cdtype: torch.dtype) -> Tensor:
        """The block's unitary as rows ``F = S^T`` (P, D, D). ``build="gates"``: its gates applied to the
        basis states (one 2x2 product per qubit and layer); ``"kron"``: per layer one Kronecker product of
        the qubits' matrices and one D x D GEMM, ``F <- F K^T``, then the entangler on the columns."""
        spec = self.spec
        P = w.shape[0]
        per = spec.weights_per_layer
        rows = torch.eye(self.D, dtype=cdtype).expand(P, self.D, self.D)
        if self.build == "gates":
            return self._block(rows, w, final)
        for layer in range(spec.layers):
            gates = self._layer_gates(w[:, layer * per:(layer + 1) * per], layer)
            k = gates[0]
            for u in gates[1:]:
                k = torch.einsum("pij,pkl->pikjl", k, u).reshape(P, k.shape[1] * 2, k.shape[2] * 2)
            rows = self._entangle(rows @ k.transpose(1, 2), layer, final)
        return rows

    def _encode(self, state: Tensor, x: Tensor, w: Tensor) -> Tensor:
        """One encoding: ``x`` (P, B, F/E) per sample, wrapper angles ``w`` (P, 2F/E) or empty."""
        spec, n = self.spec, self.n
        k = spec.features_per_qubit
        for q in range(n):
            u = None
            for j in range(k):
                f = q * k + j
                data_axis, wrap_axis = ("X", "Y") if j % 2 == 0 else ("Y", "X")
                g = _rot(x[:, :, f], data_axis)  # (P, B, 2, 2)
                if spec.encoding == "reupload":
                    g = _rot(w[:, 2 * f + 1], wrap_axis)[:, None] @ g @ _rot(w[:, 2 * f], wrap_axis)[:, None]
                u = g if u is None else g @ u
            if u is not None:
                state = self._gate(state, u, q)
        return self._cz_ring(state)

    def _readout(self, state: Tensor) -> Tensor:
        outs = []
        for o in self.spec.observables or ():
            pauli, q = o[0], int(o[1:])
            P, M, D = state.shape
            v = state.reshape(P, M, 2 ** q, 2, D // 2 ** (q + 1))
            if pauli == "Z":
                prob = v.real ** 2 + v.imag ** 2
                outs.append((prob[:, :, :, 0] - prob[:, :, :, 1]).sum(dim=(2, 3)))
            else:
                pair = (v[:, :, :, 0].conj() * v[:, :, :, 1]).sum(dim=(2, 3))
                outs.append(2 * (pair.real if pauli == "X" else pair.imag))
        return torch.stack(outs, dim=-1)

    def __call__(self, inputs: Tensor, weights: Tensor) -> Any:
        spec = self.spec
        P, B, F = inputs.shape
        cdtype = torch.complex128 if weights.dtype == torch.float64 else torch.complex64
        x = inputs.to(weights.dtype)
        per_block = spec.layers * spec.weights_per_layer
        per_enc = spec.weights_per_encoding
        chunk = F // spec.n_encodings
        zero = torch.zeros(P, 1, self.D, dtype=cdtype)
        zero[..., 0] = 1
        # block 0 on |0...0>: one state per circuit
        state = self._block(zero, weights[:, :per_block], final=spec.n_encodings == 0).expand(P, B, self.D)
        at = per_block
        for e in range(spec.n_encodings):
            state = self._encode(state, x[:, :, e * chunk:(e + 1) * chunk], weights[:, at:at + per_enc])
            at += per_enc
            folded = self._folded_block(weights[:, at:at + per_block], e == spec.n_encodings - 1, cdtype)
            at += per_block
            state = state @ folded  # row i of `folded` is S e_i: every sample's state times S, one GEMM
        return self._readout(state).to(weights.dtype)
