"""The patch circuit of Kawase (2025), generalized: trainable blocks interleaved with data
(re-)uploading encodings, read out as Pauli expectation values.

Structure (``E = n_encodings``, ``L = layers``)::

    block 0 (L layers) -> encoding 1 -> CZ ring -> block 1 (L layers) -> ... -> encoding E
    -> CZ ring -> block E (L layers) -> expectation values

With ``E = 2`` and the ``"rxry_cz"`` ansatz this is exactly the paper's circuit: blocks A, B, C,
the final layer of the final block without its CZ ring.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pennylane as qml
from torch import Tensor

ENCODINGS = ("reupload", "angle")
ANSATZE = ("rxry_cz", "strongly_entangling")
_PAULIS = {"X": qml.PauliX, "Y": qml.PauliY, "Z": qml.PauliZ}
_READOUT_ORDER = ("X", "Z", "Y")


def readout_observables(n_qubits: int, n_outputs: int) -> tuple[str, ...]:
    """Default single-qubit Pauli readout for ``n_outputs`` scores.

    Paulis are used in the order X, Z, Y; ``m`` = the fewest Paulis with ``m * n_qubits >=
    n_outputs``; the outputs are split among them as evenly as possible, the first ones taking
    the extra. 8 qubits and 10 outputs give ``X0..X4, Z0..Z4`` (the paper's readout).

    Raises
    ------
    ValueError
        When ``n_outputs > 3 * n_qubits``.
    """
    if n_outputs < 1:
        raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
    if n_outputs > 3 * n_qubits:
        raise ValueError(f"readout asks for more observables than n_qubits allow: {n_outputs} outputs need at least "
                         f"{-(-n_outputs // 3)} qubits (3 single-qubit Paulis each), got n_qubits={n_qubits}; "
                         "use more qubits, fewer classes, or aggregation='linear' with explicit observables")
    m = -(-n_outputs // n_qubits)
    base, extra = divmod(n_outputs, m)
    out: list[str] = []
    for i, pauli in enumerate(_READOUT_ORDER[:m]):
        out += [f"{pauli}{q}" for q in range(base + (1 if i < extra else 0))]
    return tuple(out)


def _parse_observable(name: str, n_qubits: int) -> tuple[str, int]:
    if not isinstance(name, str) or len(name) < 2 or name[0].upper() not in _PAULIS or not name[1:].isdigit():
        raise ValueError(f"observable {name!r} is not a single-qubit Pauli like 'X0', 'Z4' or 'Y1'")
    wire = int(name[1:])
    if wire >= n_qubits:
        raise ValueError(f"observable {name!r} acts on qubit {wire}, but the circuit has {n_qubits} qubits (0..{n_qubits - 1})")
    return name[0].upper(), wire


@dataclass(frozen=True)
class CircuitSpec:
    """One patch circuit.

    Attributes
    ----------
    n_qubits : int
    layers : int
        ``L``: layers per trainable block (there are ``n_encodings + 1`` blocks).
    n_features : int
        Features per patch; each encoding takes ``n_features / n_encodings`` of them, qubit ``q``
        taking ``k = n_features / (n_encodings * n_qubits)`` consecutive ones (must be an integer).
    encoding : str
        ``"reupload"``: feature ``j`` of a qubit is ``RY(w) RX(x) RY(w')`` for even ``j`` and
        ``RX(w) RY(x) RX(w')`` for odd ``j`` (two trainable angles around every data rotation, as
        the paper); ``"angle"``: plain ``RX(x)`` (even ``j``) / ``RY(x)`` (odd ``j``).
    n_encodings : int
        Number of data encodings (the paper: 2, the first half of the features in the first).
    ansatz : str
        ``"rxry_cz"`` (the paper's layer): RX on every qubit, RY on every qubit, CZ ring
        ``(i, i+1 mod n)``; ``"strongly_entangling"``: ``Rot`` (3 angles) on every qubit, then a
        CNOT ring ``(i, i+r mod n)``, ``r = 1 + (l mod (n-1))`` for layer ``l`` of its block, i.e.
        every block is exactly ``qml.StronglyEntanglingLayers``.
    observables : tuple of str, optional
        Readout, e.g. ``("X0", "Z4")``; default: :func:`readout_observables` for ``n_outputs``.
    n_outputs : int, optional
        Number of readout scores when ``observables`` is not given.

    Notes
    -----
    A "CZ ring" on 2 qubits is one CZ (the pair ``(0,1), (1,0)`` would cancel); on 1 qubit it is
    empty. The final ``rxry_cz`` layer of the final block has no CZ ring (as the paper).

    Weight layout (flat vector of :attr:`n_weights`), in circuit order: block 0, encoding 1,
    block 1, ..., encoding E, block E. A ``rxry_cz`` layer holds ``2n`` angles ``[RX_0..RX_{n-1},
    RY_0..RY_{n-1}]``; a ``strongly_entangling`` layer ``3n``: ``Rot`` of qubit ``q`` at
    ``3q..3q+2``; a block is its ``L`` layers in order. A ``reupload`` encoding holds ``2 * n_features
    / n_encodings`` angles: feature ``j`` of qubit ``q`` (patch feature ``e*F/E + q*k + j``) has its
    pair (before, after) at ``2*(q*k + j)`` and ``2*(q*k + j) + 1``; ``angle`` encodings hold none.
    """

    n_qubits: int
    layers: int
    n_features: int
    encoding: str = "reupload"
    n_encodings: int = 2
    ansatz: str = "rxry_cz"
    observables: Optional[tuple[str, ...]] = None
    n_outputs: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("n_qubits", "layers", "n_features", "n_encodings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CircuitSpec.{name} must be a positive int, got {value!r}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; choose one of {ENCODINGS}")
        if self.ansatz not in ANSATZE:
            raise ValueError(f"unknown ansatz {self.ansatz!r}; choose one of {ANSATZE}")
        per = self.n_encodings * self.n_qubits
        if self.n_features % per:
            raise ValueError(f"{self.n_features} features per patch do not divide among {self.n_encodings} encodings x "
                             f"{self.n_qubits} qubits ({per} slots); choose n_features a multiple of {per} (patch size), "
                             f"or n_qubits / n_encodings whose product divides {self.n_features}")
        if self.observables is None:
            if self.n_outputs is None:
                raise ValueError("CircuitSpec needs observables or n_outputs")
            object.__setattr__(self, "observables", readout_observables(self.n_qubits, self.n_outputs))
        else:
            obs = tuple(self.observables)
            if not obs:
                raise ValueError("observables must not be empty")
            for o in obs:
                _parse_observable(o, self.n_qubits)
            if self.n_outputs is not None and self.n_outputs != len(obs):
                raise ValueError(f"n_outputs={self.n_outputs} but {len(obs)} observables were given")
            object.__setattr__(self, "observables", tuple(o[0].upper() + o[1:] for o in obs))
        object.__setattr__(self, "n_outputs", len(self.observables))  # type: ignore[arg-type]

    @property
    def features_per_qubit(self) -> int:
        """Features each qubit takes in each encoding."""
        return self.n_features // (self.n_encodings * self.n_qubits)

    @property
    def weights_per_layer(self) -> int:
        return (2 if self.ansatz == "rxry_cz" else 3) * self.n_qubits

    @property
    def weights_per_encoding(self) -> int:
        return 2 * self.n_features // self.n_encodings if self.encoding == "reupload" else 0

    @property
    def n_weights(self) -> int:
        """Trainable angles of one circuit: ``(E+1) * L * weights_per_layer + E * weights_per_encoding``
        (the paper, 8 qubits and 64 features: ``(6L + 16) * 8``)."""
        return ((self.n_encodings + 1) * self.layers * self.weights_per_layer
                + self.n_encodings * self.weights_per_encoding)

    def _ring(self, gate: Any, r: int = 1) -> None:
        n = self.n_qubits
        pairs = [(0, 1)] if n == 2 and gate is qml.CZ else [(i, (i + r) % n) for i in range(n)] if n > 1 else []
        for a, b in pairs:
            gate(wires=[a, b])

    def _block(self, w: Sequence[Any], final: bool) -> None:
        """``L`` layers reading angles ``w[0], w[1], ...`` (an indexable of per-angle tensors)."""
        n, i = self.n_qubits, 0
        for layer in range(self.layers):
            if self.ansatz == "rxry_cz":
                for q in range(n):
                    qml.RX(w[i + q], wires=q)
                for q in range(n):
                    qml.RY(w[i + n + q], wires=q)
                if not (final and layer == self.layers - 1):
                    self._ring(qml.CZ)
            else:
                for q in range(n):
                    qml.Rot(w[i + 3 * q], w[i + 3 * q + 1], w[i + 3 * q + 2], wires=q)
                if n > 1:
                    self._ring(qml.CNOT, 1 + layer % (n - 1))
            i += self.weights_per_layer

    def _encode(self, x: Sequence[Any], w: Sequence[Any]) -> None:
        """One encoding of features ``x[0..F/E)`` with angles ``w``."""
        k = self.features_per_qubit
        for q in range(self.n_qubits):
            for j in range(k):
                f = q * k + j
                data, wrap = (qml.RX, qml.RY) if j % 2 == 0 else (qml.RY, qml.RX)
                if self.encoding == "reupload":
                    wrap(w[2 * f], wires=q)
                    data(x[f], wires=q)
                    wrap(w[2 * f + 1], wires=q)
                else:
                    data(x[f], wires=q)
        self._ring(qml.CZ)

    def qfunc(self, inputs: Tensor, weights: Tensor) -> list[Any]:
        """Quantum function for a QNode (works with PennyLane parameter broadcasting).

        Parameters
        ----------
        inputs : Tensor or array, shape (Bt, n_features) or (n_features,)
        weights : Tensor or array, shape (Bt, n_weights) or (n_weights,)
            Layout in the class docstring; ``Bt`` (when present in both) must agree.

        Returns
        -------
        list of ``qml.expval``, one per observable.
        """
        if inputs.shape[-1] != self.n_features:
            raise ValueError(f"circuit expects {self.n_features} features per patch, got inputs of shape "
                             f"{tuple(inputs.shape)}")
        if weights.shape[-1] != self.n_weights:
            raise ValueError(f"circuit expects {self.n_weights} weights, got shape {tuple(weights.shape)}")
        # per-angle slices, shape (Bt,) or (); plain indexing works for torch, numpy and autograd arrays
        w = [weights[..., i] for i in range(self.n_weights)]
        x = [inputs[..., i] for i in range(self.n_features)]
        per_block = self.layers * self.weights_per_layer
        per_enc = self.weights_per_encoding
        chunk = self.n_features // self.n_encodings
        at = 0
        for e in range(self.n_encodings + 1):
            self._block(w[at:at + per_block], final=e == self.n_encodings)
            at += per_block
            if e < self.n_encodings:
                self._encode(x[e * chunk:(e + 1) * chunk], w[at:at + per_enc])
                at += per_enc
        return [qml.expval(_PAULIS[p](wires=q)) for p, q in (_parse_observable(o, self.n_qubits)
                                                            for o in self.observables)]  # type: ignore[union-attr]


@dataclass(frozen=True)
class QuantumFunction:
    """A patch circuit of the user's own: any PennyLane quantum function, run on every patch with that
    patch's weights (``PatchQNN(..., circuit=QuantumFunction(...))``).

    Parameters
    ----------
    qfunc : callable
        ``qfunc(inputs, weights)`` applies PennyLane gates and returns a list of ``qml.expval(...)``, one
        score per output. ``inputs`` has shape ``(n_features,)`` or, broadcast, ``(Bt, n_features)``, in
        radians (the patch's scaled pixels plus the positional bias); ``weights`` ``(n_weights,)`` or
        ``(Bt, n_weights)``. Index the last axis (``inputs[..., j]``, ``weights[..., k]``) so that a batch
        runs in one broadcast call, as the built-in circuit does.
    n_qubits : int
        Wires ``0 .. n_qubits - 1``.
    n_weights : int
        Trainable angles per patch circuit (each patch has its own).
    layers : int
        Depth hint for the simulator choice (``device="auto"``, ``simulator="auto"``): the number of
        layers of single-qubit rotations, roughly. It changes how the circuit is run, never what it computes.
    name : str
        Recorded in the model's configuration and provenance.
    n_features, n_outputs, observables
        Filled in by :meth:`bind` (``PatchQNN`` binds the circuit to its patch size): features per patch,
        the number of expectation values ``qfunc`` returns, and their observables as text.

    Notes
    -----
    Every route runs the function itself: on default.qubit and lightning devices as a QNode; on the torch
    statevector simulators (compiled or tape) after recording it once, which needs its gates to be RX, RY, RZ,
    Rot, CZ or CNOT (templates are decomposed into them where PennyLane can), each angle exactly one input
    or one weight, and single-qubit Pauli expectation values. ``device="auto"`` takes torch.statevector
    when the recording succeeds and default.qubit (backprop, exact to any order) when it does not.
    """

    qfunc: Any
    n_qubits: int
    n_weights: int
    layers: int = 1
    name: str = "custom"
    n_features: Optional[int] = None
    n_outputs: Optional[int] = None
    observables: Optional[tuple[str, ...]] = None

    encoding = "custom"
    ansatz = "custom"
    n_encodings = 0

    def __post_init__(self) -> None:
        if not callable(self.qfunc):
            raise TypeError(f"QuantumFunction.qfunc must be a quantum function qfunc(inputs, weights), got "
                            f"{type(self.qfunc).__name__}")
        for key in ("n_qubits", "n_weights", "layers"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"QuantumFunction.{key} must be a positive int, got {value!r}")

    def bind(self, n_features: int) -> "QuantumFunction":
        """This circuit for patches of ``n_features`` features, checked before any device is built.

        The function is recorded once (no simulation) on zero inputs ``(n_features,)`` and weights
        ``(n_weights,)``, then on a broadcast pair of each.

        Raises
        ------
        ValueError
            When the function raises on inputs and weights of these shapes, acts on a wire outside
            ``0 .. n_qubits - 1``, returns anything but expectation values (or none), or does not broadcast
            over a batch of inputs and weights; each message names the shapes it was given.
        """
        import torch
        x, w = torch.zeros(n_features, dtype=torch.float64), torch.zeros(self.n_weights, dtype=torch.float64)
        shapes = f"inputs of shape ({n_features},) and weights of shape ({self.n_weights},)"
        try:
            tape = qml.tape.make_qscript(self.qfunc)(x, w)
        except Exception as exc:  # noqa: BLE001 - the user's function: report whatever it raised
            raise ValueError(f"circuit {self.name!r} raised {type(exc).__name__} when called with {shapes} "
                             f"(a patch has {n_features} features; n_weights={self.n_weights}): {exc}") from exc
        wires = {int(q) for op in [*tape.operations, *tape.measurements] for q in op.wires}
        outside = sorted(q for q in wires if not 0 <= q < self.n_qubits)
        if outside:
            raise ValueError(f"circuit {self.name!r} acts on wire(s) {outside}, outside 0..{self.n_qubits - 1} "
                             f"(n_qubits={self.n_qubits})")
        if not tape.measurements:
            raise ValueError(f"circuit {self.name!r} returns no measurement; return a list of qml.expval(...), one "
                             "per output score")
        bad = [m for m in tape.measurements if not isinstance(m, qml.measurements.ExpectationMP)]
        if bad:
            raise ValueError(f"circuit {self.name!r} must return expectation values (qml.expval), one per output "
                             f"score; got {bad[0]}")
        if not self._broadcasts(n_features, len(tape.measurements)):
            raise ValueError(f"circuit {self.name!r} does not broadcast over a batch: called with inputs of shape "
                             f"({_BATCH}, {n_features}) and weights of shape ({_BATCH}, {self.n_weights}) it does not "
                             f"give the {_BATCH} results of its rows called one by one; index the last axis "
                             "(inputs[..., j], weights[..., k])")
        observables = tuple(_observable_name(m.obs) for m in tape.measurements)
        return dataclasses.replace(self, n_features=n_features, n_outputs=len(observables), observables=observables)

    def _broadcasts(self, n_features: int, n_outputs: int) -> bool:
        """Whether a batch of ``_BATCH`` rows gives each row's own results: compared with the rows run one by
        one on default.qubit (random angles, to 1e-10) up to ``_VALUE_CHECK_MAX_QUBITS`` qubits; above, only
        that the recorded circuit has a batch dimension of ``_BATCH`` (no state is simulated before the
        model's memory check)."""
        import torch
        gen = torch.Generator().manual_seed(0)
        xs = torch.rand(_BATCH, n_features, generator=gen, dtype=torch.float64) * math.pi
        ws = torch.rand(_BATCH, self.n_weights, generator=gen, dtype=torch.float64) * math.pi
        try:
            batched_tape = qml.tape.make_qscript(self.qfunc)(xs, ws)
            if batched_tape.batch_size != _BATCH or len(batched_tape.measurements) != n_outputs:
                return False
            if self.n_qubits > _VALUE_CHECK_MAX_QUBITS:
                return True
            qnode = qml.QNode(self.qfunc, qml.device("default.qubit", wires=self.n_qubits), interface="torch")
            batched = torch.stack([torch.as_tensor(v) for v in qnode(xs, ws)], dim=-1)
            rows = torch.stack([torch.stack([torch.as_tensor(v) for v in qnode(xs[i], ws[i])])
                                for i in range(_BATCH)])
        except Exception:  # noqa: BLE001 - a function that fails on a batch does not broadcast
            return False
        return batched.shape == rows.shape and bool(torch.allclose(batched, rows, rtol=0, atol=1e-10))


_BATCH = 3  # rows of the broadcast check (odd, so a weight vector of length 2 cannot pass for a batch)
_VALUE_CHECK_MAX_QUBITS = 16  # above this the broadcast check records the circuit without simulating it


def _observable_name(obs: Any) -> str:
    """``"X0"`` for a single-qubit Pauli, else PennyLane's own text of the observable."""
    names = {"PauliX": "X", "PauliY": "Y", "PauliZ": "Z"}
    if obs is not None and getattr(obs, "name", None) in names and len(obs.wires) == 1:
        return f"{names[obs.name]}{int(obs.wires[0])}"
    return str(obs)
