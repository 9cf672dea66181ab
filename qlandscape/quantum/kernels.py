"""State-vector kernels of the compiled simulator: plain torch ops on batches of states.

Two layouts, both with any leading batch dimensions ``...`` (circuits ``P``, and a stack of a state
and its cotangent during adjoint passes), wire 0 the most significant bit of the basis index
(PennyLane's convention), ``D = 2**n``:

* **columns** ``(..., D, M)``: ``M`` states as the columns of a matrix. A group matrix shared by all
  columns acts as one GEMM of shape ``(G x G) @ (G x R*M)`` per block of the more significant wires:
  the layout for weights-only segments (the ``D`` columns of a unitary being folded, or the samples);
* **rows** ``(..., M, D)``: one state per row, for data segments whose gate matrices differ per
  sample (``(..., M, G, G)``): batched small matrix products.

Single-qubit gates act through *groups* of consecutive wires: the fused 2x2 matrices of a group's
wires become one ``2**g x 2**g`` Kronecker product applied at once. A group of 4 does twice the
multiply-adds of four 2x2 applications but runs as one GEMM (measured 3-10x faster per layer than
per-qubit ``einsum``; ``benchmarks/bench_qsim.py --kernels``).

Every kernel works on CPU and CUDA tensors alike and is differentiable by torch (autograd and
``torch.func``), so the same code serves the plain autograd route and the hand-written adjoint
route of :mod:`qlandscape.quantum.compiled`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["apply_cols", "apply_rows", "contract_cols_t", "contract_rows_t", "expectations_adjoint_cols",
           "expectations_cols", "expectations_cols_tangent", "fuse_rotations", "fuse_rotations_dual", "group_wires",
           "kron_chain", "kron_chain_dual", "partial_traces", "pauli_tables", "rotation_generators"]


def group_wires(n_qubits: int, size: int) -> tuple[tuple[int, ...], ...]:
    """Split wires ``0..n-1`` into consecutive groups of at most ``size``, as equal as possible
    (the larger groups first): 8 qubits, size 4 -> ``(0..3), (4..7)``; 6 qubits -> ``(0..2), (3..5)``."""
    if size < 1:
        raise ValueError(f"group size must be >= 1, got {size}")
    count = -(-n_qubits // size)
    base, extra = divmod(n_qubits, count)
    out, at = [], 0
    for i in range(count):
        k = base + (1 if i < extra else 0)
        out.append(tuple(range(at, at + k)))
        at += k
    return tuple(out)


def pauli_tables() -> dict[str, Tensor]:
    """2x2 identity and Pauli matrices (complex128, CPU)."""
    return {"I": torch.eye(2, dtype=torch.complex128),
            "X": torch.tensor([[0, 1], [1, 0]], dtype=torch.complex128),
            "Y": torch.tensor([[0, -1j], [1j, 0]], dtype=torch.complex128),
            "Z": torch.tensor([[1, 0], [0, -1]], dtype=torch.complex128)}


def fuse_rotations(half: Tensor, sigma: Tensor) -> Tensor:
    """Products of rotations ``exp(-i a sigma) = cos(a) I - i sin(a) sigma``.

    Parameters
    ----------
    half : Tensor, real, shape (..., T, n)
        Half-angles ``a = theta / 2`` of the ``T`` rotations of each of ``n`` qubits, in circuit order.
    sigma : Tensor, complex, shape (T, n, 2, 2), broadcastable against ``half``'s trailing dims
        The rotation generators (identity where a qubit has fewer rotations: pad with angle 0).

    Returns
    -------
    Tensor, complex, shape (..., n, 2, 2): ``r_{T-1} ... r_1 r_0`` per qubit.
    """
    cdtype = sigma.dtype
    c = torch.cos(half).to(cdtype)[..., None, None]
    s = torch.sin(half).to(cdtype)[..., None, None]
    eye = torch.eye(2, dtype=cdtype, device=half.device)
    # -i sigma as a tensor: a Python complex scalar (and torch.where) would send torch.func.jvp through Python
    # decompositions whose first use imports torch._dynamo (2 s)
    g = torch.unbind(c * eye + s * _minus_i(sigma), dim=-4)  # T x (..., n, 2, 2); unbind: one backward op, not T
    u = g[0]
    for t in range(1, len(g)):
        u = g[t] @ u
    return u


def _minus_i(sigma: Tensor) -> Tensor:
    """``-i * sigma`` without a Python complex scalar (see :func:`fuse_rotations`)."""
    return torch.complex(sigma.imag, -sigma.real)


def kron_chain(u: Tensor) -> Tensor:
    """Kronecker product of ``g`` 2x2 matrices, the first one on the most significant index.

    ``u``: shape ``(..., g, 2, 2)`` -> shape ``(..., 2**g, 2**g)``.
    """
    parts = torch.unbind(u, dim=-3)
    k = parts[0]
    for b in parts[1:]:
        ga = k.shape[-1]
        k = (k[..., :, None, :, None] * b[..., None, :, None, :]).reshape(*k.shape[:-2], 2 * ga, 2 * ga)
    return k


def _split(n_qubits: int, wires: tuple[int, ...]) -> tuple[int, int, int]:
    q0, g = wires[0], len(wires)
    return 2 ** q0, 2 ** g, 2 ** (n_qubits - q0 - g)


def apply_cols(state: Tensor, k: Tensor, wires: tuple[int, ...], n_qubits: int) -> Tensor:
    """Apply a group matrix to the consecutive ``wires`` of column states.

    Parameters
    ----------
    state : Tensor, shape (..., D, M)
    k : Tensor, shape (P, G, G), or (P, A, G, G) with one matrix per value of the more significant
        wires (``A = 2**wires[0]``; only for the last group, used to absorb a diagonal)
        ``P`` matches ``state``'s last batch dimension; leading dimensions broadcast.

    Returns
    -------
    Tensor, shape (..., D, M).
    """
    *lead, D, M = state.shape
    A, G, R = _split(n_qubits, wires)
    v = state.reshape(*lead, A, G, R * M)
    kk = k if k.dim() == 4 else k[:, None]
    return (kk @ v).reshape(*lead, D, M)


def apply_rows(state: Tensor, k: Tensor, wires: tuple[int, ...], n_qubits: int) -> Tensor:
    """Apply one group matrix per row: ``state`` (..., M, D), ``k`` (..., M, G, G) -> (..., M, D)."""
    *lead, M, D = state.shape
    A, G, R = _split(n_qubits, wires)
    if R == 1:
        out = state.reshape(*lead, M, A, G) @ k.transpose(-1, -2)
    else:
        out = k[..., None, :, :] @ state.reshape(*lead, M, A, G, R)
    return out.reshape(*lead, M, D)


def _z_columns(z: Tensor, observables: tuple[tuple[str, int], ...]) -> dict[int, Tensor]:
    """The rows of ``z`` (P, nZ, M), one per Z observable in order, keyed by their index in ``observables``."""
    z_index = [i for i, (p, _) in enumerate(observables) if p == "Z"]
    return {i: z[:, row] for row, i in enumerate(z_index)}


def expectations_cols(state: Tensor, observables: tuple[tuple[str, int], ...], n_qubits: int,
                      z_signs: Optional[Tensor]) -> Tensor:
    """Single-qubit Pauli expectation values of column states.

    Parameters
    ----------
    state : Tensor, shape (P, D, M)
    observables : tuple of (pauli, wire)
    z_signs : Tensor, real, shape (nZ, D), optional
        ``1 - 2 * bit_q(k)`` for the Z observables in order, or None if there are none.

    Returns
    -------
    Tensor, real, shape (P, M, len(observables)).
    """
    P, D, M = state.shape
    cols: dict[int, Tensor] = {}
    if z_signs is not None:
        prob = state.real.square() + state.imag.square()
        cols = _z_columns(z_signs @ prob, observables)  # (P, nZ, M) -> {observable index: (P, M)}
    pairs: dict[int, Tensor] = {}
    for i, (p, q) in enumerate(observables):
        if p == "Z":
            continue
        if q not in pairs:
            v = state.reshape(P, 2 ** q, 2, 2 ** (n_qubits - q - 1), M)
            pairs[q] = (v[:, :, 0].conj() * v[:, :, 1]).sum(dim=(1, 2))  # (P, M)
        cols[i] = 2 * (pairs[q].real if p == "X" else pairs[q].imag)
    return torch.stack([cols[i] for i in range(len(observables))], dim=-1)


def contract_cols_t(lam_c: Tensor, state: Tensor, wires: tuple[int, ...], n_qubits: int) -> Tensor:
    """``sum over columns and the other wires of lam_c[.., i, ..] * state[.., j, ..]`` (no conjugation).

    With ``lam_c`` the *conjugated* cotangent and ``state`` the value right after a group matrix ``k`` was
    applied, the conjugate of this, ``C = lam state^H``, gives torch's gradient of the loss with respect to
    ``k`` as ``C k`` (conjugate Wirtinger convention). The product runs on plain transposes: a conjugate view
    of a large operand would be materialized. (..., D, M) twice -> (..., G, G).
    """
    *lead, D, M = state.shape
    A, G, R = _split(n_qubits, wires)
    c = lam_c.reshape(*lead, A, G, R * M) @ state.reshape(*lead, A, G, R * M).transpose(-1, -2)
    return c[..., 0, :, :] if A == 1 else c.sum(dim=-3)


def contract_rows_t(lam_c: Tensor, state: Tensor, wires: tuple[int, ...], n_qubits: int) -> Tensor:
    """Per-row :func:`contract_cols_t`: (..., M, D) twice -> (..., M, G, G)."""
    *lead, M, D = state.shape
    A, G, R = _split(n_qubits, wires)
    if R == 1:
        return lam_c.reshape(*lead, M, A, G).transpose(-1, -2) @ state.reshape(*lead, M, A, G)
    c = lam_c.reshape(*lead, M, A, G, R) @ state.reshape(*lead, M, A, G, R).transpose(-1, -2)
    return c[..., 0, :, :] if A == 1 else c.sum(dim=-3)


def expectations_adjoint_cols(state: Tensor, gout: Tensor, observables: tuple[tuple[str, int], ...], n_qubits: int,
                              z_signs: Optional[Tensor]) -> Tensor:
    """Conjugated cotangent of the states for output cotangent ``gout``: ``conj(2 sum_k g_k O_k psi)``.

    Linear in ``state``, so the same call maps a state's tangent to the cotangent's tangent.

    Parameters
    ----------
    state : Tensor, shape (..., P, D, M)
    gout : Tensor, real, shape (P, M, K)
    """
    *lead, P, D, M = state.shape
    g = gout.to(state.real.dtype)
    out = torch.zeros_like(state)
    zi = [i for i, (p, _) in enumerate(observables) if p == "Z"]
    if zi:
        assert z_signs is not None
        h = z_signs.transpose(0, 1) @ g[..., zi].transpose(-1, -2)  # (P, D, M): sum_k g_k z_k(basis)
        out = out + 2 * h * state.conj()
    by_wire: dict[int, list[tuple[str, int]]] = {}
    for i, (p, q) in enumerate(observables):
        if p != "Z":
            by_wire.setdefault(q, []).append((p, i))
    for q, items in by_wire.items():
        gx = sum(g[..., i] for p, i in items if p == "X")
        gy = sum(g[..., i] for p, i in items if p == "Y")
        gx = gx if isinstance(gx, Tensor) else torch.zeros_like(g[..., 0])
        gy = gy if isinstance(gy, Tensor) else torch.zeros_like(g[..., 0])
        R = 2 ** (n_qubits - q - 1)
        v = state.conj().reshape(*lead, P, 2 ** q, 2, R, M)
        # (gX X + gY Y) psi: component 0 = (gX - i gY) psi_1, component 1 = (gX + i gY) psi_0; conjugated
        c0 = (gx + 1j * gy)[:, None, None, :]  # conj(gX - i gY)
        c1 = (gx - 1j * gy)[:, None, None, :]
        part = torch.stack([2 * c0 * v[..., 1, :, :], 2 * c1 * v[..., 0, :, :]], dim=-3)
        out = out + part.reshape(*lead, P, D, M)
    return out


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# -- forward-mode (tangent) versions of the small pieces, written out: torch.func.jvp costs ~0.2 ms per op here,
#    more than these small tensors cost to compute -----------------------------------------------------------------


def fuse_rotations_dual(half: Tensor, half_dot: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`fuse_rotations` and its tangent along ``half_dot`` (same shape as ``half``)."""
    cdtype = sigma.dtype
    c = torch.cos(half).to(cdtype)[..., None, None]
    s = torch.sin(half).to(cdtype)[..., None, None]
    hd = half_dot.to(cdtype)[..., None, None]
    eye = torch.eye(2, dtype=cdtype, device=half.device)
    mis = _minus_i(sigma)
    g = torch.unbind(c * eye + s * mis, dim=-4)
    gd = torch.unbind(hd * (c * mis - s * eye), dim=-4)
    u, ud = g[0], gd[0]
    for t in range(1, len(g)):
        u, ud = g[t] @ u, gd[t] @ u + g[t] @ ud
    return u, ud


def _kron2(a: Tensor, b: Tensor) -> Tensor:
    ga, gb = a.shape[-1], b.shape[-1]
    return (a[..., :, None, :, None] * b[..., None, :, None, :]).reshape(*a.shape[:-2], ga * gb, ga * gb)


def kron_chain_dual(u: Tensor, u_dot: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`kron_chain` and its tangent (product rule)."""
    parts, dparts = torch.unbind(u, dim=-3), torch.unbind(u_dot, dim=-3)
    k, kd = parts[0], dparts[0]
    for b, bd in zip(parts[1:], dparts[1:]):
        k, kd = _kron2(k, b), _kron2(kd, b) + _kron2(k, bd)
    return k, kd


def expectations_cols_tangent(state: Tensor, tangent: Tensor, observables: tuple[tuple[str, int], ...],
                              n_qubits: int, z_signs: Optional[Tensor]) -> Tensor:
    """Tangent of :func:`expectations_cols` along a tangent of the states (both (P, D, M)): ``2 Re <psi|O|t>``."""
    P, D, M = state.shape
    cols: dict[int, Tensor] = {}
    if z_signs is not None:
        dprob = 2 * (state.real * tangent.real + state.imag * tangent.imag)
        cols = _z_columns(z_signs @ dprob, observables)
    pairs: dict[int, Tensor] = {}
    for i, (p, q) in enumerate(observables):
        if p == "Z":
            continue
        if q not in pairs:
            shape = (P, 2 ** q, 2, 2 ** (n_qubits - q - 1), M)
            v, t = state.reshape(shape), tangent.reshape(shape)
            pairs[q] = (t[:, :, 0].conj() * v[:, :, 1] + v[:, :, 0].conj() * t[:, :, 1]).sum(dim=(1, 2))
        cols[i] = 2 * (pairs[q].real if p == "X" else pairs[q].imag)
    return torch.stack([cols[i] for i in range(len(observables))], dim=-1)


def partial_traces(c: Tensor, g: int) -> Tensor:
    """Per wire ``j`` of a ``g``-wire group, the partial trace of ``c`` (..., 2**g, 2**g) over the other wires:
    (..., g, 2, 2)."""
    if g == 1:
        return c[..., None, :, :]
    if g > len(_LETTERS) // 2:
        raise ValueError(f"groups of at most {len(_LETTERS) // 2} wires")
    cb = c.reshape(*c.shape[:-2], *([2] * (2 * g)))
    rows = _LETTERS[:g]
    out = []
    for j in range(g):
        cols = "".join(rows[r] if r != j else "z" for r in range(g))
        out.append(torch.einsum(f"...{rows}{cols}->...{rows[j]}z", cb))
    return torch.stack(out, dim=-3)


def rotation_generators(half: Tensor, sigma: Tensor, half_dot: Optional[Tensor] = None
                        ) -> tuple[Tensor, Optional[Tensor]]:
    """``Gamma_t = A_t (-i sigma_t / 2) A_t^H`` with ``A_t = g_{T-1} ... g_{t+1}`` for the fused rotations of
    :func:`fuse_rotations`: ``d u / d theta_t = Gamma_t u`` (``theta = 2 * half``). Shapes: ``half`` (..., T, n)
    -> (..., T, n, 2, 2); with ``half_dot``, also the tangent of ``Gamma``."""
    cdtype = sigma.dtype
    c = torch.cos(half).to(cdtype)[..., None, None]
    s = torch.sin(half).to(cdtype)[..., None, None]
    eye = torch.eye(2, dtype=cdtype, device=half.device)
    mis = _minus_i(sigma)
    g = torch.unbind(c * eye + s * mis, dim=-4)
    gen = torch.unbind(0.5 * mis.expand(c.shape[:-2] + (2, 2)), dim=-4)  # -i sigma / 2
    gd = None
    if half_dot is not None:
        hd = half_dot.to(cdtype)[..., None, None]
        gd = [h * (cc * m - ss * eye) for h, cc, ss, m in zip(torch.unbind(hd, dim=-4), torch.unbind(c, dim=-4),
                                                               torch.unbind(s, dim=-4), torch.unbind(mis.expand(
                                                                   c.shape[:-2] + (2, 2)), dim=-4))]
    T = len(g)
    out: list[Tensor] = [gen[T - 1]]
    dout: list[Tensor] = [torch.zeros_like(gen[T - 1])]
    a: Optional[Tensor] = None
    ad: Optional[Tensor] = None
    for t in range(T - 2, -1, -1):
        nxt = g[t + 1]
        if a is None:
            a = nxt
            ad = None if gd is None else gd[t + 1]
        else:
            if gd is not None:
                assert ad is not None
                ad = ad @ nxt + a @ gd[t + 1]
            a = a @ nxt
        out.append(a @ gen[t] @ a.mH)
        if ad is not None:
            dout.append(ad @ gen[t] @ a.mH + a @ gen[t] @ ad.mH)
    value = torch.stack(out[::-1], dim=-4)
    return value, (torch.stack(dout[::-1], dim=-4) if gd is not None else None)
