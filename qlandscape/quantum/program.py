"""A patch circuit recorded once from its PennyLane quantum function, and cut into segments by what
each part of it reads.

:func:`record` runs the quantum function (the same ``qfunc`` a QNode runs) once on marker values for
its inputs and weights, and reads back which gate takes which input or weight. The result is a short
program of fused steps:

* :class:`Layer`: single-qubit gates on distinct qubits, per qubit the rotations in circuit order
  (consecutive single-qubit gates on a qubit are one fused 2x2 matrix when simulated);
* :class:`Diagonal`: a run of CZ gates (one elementwise sign flip);
* :class:`Cnot`: an index permutation.

:func:`segments` then cuts the program into maximal runs of steps that read the weights only
(``"weights"``) and runs that read at least one input (``"data"``). A weights-only run does not depend
on the sample: at a parameter point it is one unitary (or, acting on the fixed initial state, one
state) shared by every sample, which is what the compiled simulator
(:mod:`qlandscape.quantum.compiled`) exploits. CZ/CNOT steps read nothing; between a data run and a
following weights run they join the weights run, where they cost nothing once folded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

import pennylane as qml
import torch
from torch import Tensor

__all__ = ["Cnot", "CircuitProgram", "Diagonal", "Layer", "Rotation", "SUPPORTED_GATES", "Segment", "Step",
           "record", "segments"]

_ROTATIONS = {"RX": "X", "RY": "Y", "RZ": "Z"}
SUPPORTED_GATES = ("RX", "RY", "RZ", "Rot", "CZ", "CNOT")


@dataclass(frozen=True)
class Rotation:
    """``exp(-i angle/2 sigma)`` on one qubit; ``source`` is ``("w", k)`` (weight k) or ``("x", f)`` (input f)."""

    wire: int
    pauli: str
    source: tuple[str, int]


@dataclass(frozen=True)
class Layer:
    """Single-qubit gates on distinct qubits: per qubit, rotations applied in order."""

    gates: dict[int, tuple[Rotation, ...]]

    @property
    def reads_inputs(self) -> bool:
        return any(r.source[0] == "x" for rs in self.gates.values() for r in rs)


@dataclass(frozen=True)
class Diagonal:
    """Product of CZ gates on the given wire pairs."""

    pairs: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Cnot:
    control: int
    target: int


Step = Union[Layer, Diagonal, Cnot]


@dataclass(frozen=True)
class CircuitProgram:
    """A recorded circuit.

    Attributes
    ----------
    n_qubits, n_features, n_weights : int
    steps : tuple of Layer / Diagonal / Cnot
        In circuit order, acting on ``|0...0>``.
    observables : tuple of (pauli, wire)
        Single-qubit Pauli expectation values read out, in output order.
    """

    n_qubits: int
    n_features: int
    n_weights: int
    steps: tuple[Step, ...]
    observables: tuple[tuple[str, int], ...]

    @property
    def n_outputs(self) -> int:
        return len(self.observables)

    @property
    def n_rotations(self) -> int:
        """Single-qubit rotations (gates) in the circuit."""
        return sum(len(rs) for s in self.steps if isinstance(s, Layer) for rs in s.gates.values())


def _decode(value: Any, n_features: int, n_weights: int, gate: str, origin: str = "") -> tuple[str, int]:
    v = float(value)
    idx = round(abs(v)) - 1
    if abs(abs(v) - (idx + 1)) > 1e-9 or not (0 <= idx < (n_features if v < 0 else n_weights)):
        raise ValueError(f"gate {gate}{origin} takes a fixed angle or one computed from the inputs/weights ({v}); "
                         "the torch statevector simulator needs every gate angle to be one input or one weight. "
                         "Use device='default.qubit' for this circuit")
    return ("x" if v < 0 else "w", idx)


def record(qfunc: Callable[[Tensor, Tensor], Any], n_qubits: int, n_features: int, n_weights: int) -> CircuitProgram:
    """Record ``qfunc(inputs (n_features,), weights (n_weights,))`` into a fused program.

    Raises
    ------
    ValueError
        A gate outside :data:`SUPPORTED_GATES` (after PennyLane's decomposition of templates), an
        angle that is not exactly one input or one weight, or a measurement that is not a single-qubit
        Pauli expectation value; each message names the PennyLane device that runs such circuits.
    """
    x = -torch.arange(1, n_features + 1, dtype=torch.float64)
    w = torch.arange(1, n_weights + 1, dtype=torch.float64)
    tape = qml.tape.make_qscript(qfunc)(x, w)
    operations: list[tuple[Any, str]] = []  # (gate, which gate of the circuit it was decomposed from)
    for op in tape.operations:
        if op.name in SUPPORTED_GATES:
            operations.append((op, ""))
        else:  # templates, e.g. StronglyEntanglingLayers, and gates such as Hadamard
            (part,), _ = qml.transforms.decompose(qml.tape.QuantumScript([op]), gate_set=set(SUPPORTED_GATES))
            operations += [(g, f" (from decomposing {op.name})") for g in part.operations]
    steps: list[Step] = []
    pending: dict[int, list[Rotation]] = {}
    diag: list[tuple[int, int]] = []

    def flush_diag() -> None:
        if diag:
            steps.append(Diagonal(tuple(diag)))
            diag.clear()

    def flush(wires: tuple[int, ...]) -> None:
        gates = {q: tuple(pending.pop(q)) for q in wires if pending.get(q)}
        if not gates:
            return
        # gates from the same program region on different qubits merge into one layer
        if steps and isinstance(steps[-1], Layer) and not (set(steps[-1].gates) & set(gates)):
            steps[-1] = Layer({**steps[-1].gates, **gates})
        else:
            steps.append(Layer(gates))

    for op, origin in operations:
        name, wires = op.name, tuple(int(q) for q in op.wires)
        if name in _ROTATIONS or name == "Rot":
            q = wires[0]
            if any(q in pair for pair in diag):  # the pending CZs do not commute with this gate
                flush(tuple(range(n_qubits)))
                flush_diag()
            params = [_decode(p, n_features, n_weights, name, origin) for p in op.parameters]
            paulis = [_ROTATIONS[name]] if name in _ROTATIONS else ["Z", "Y", "Z"]  # Rot = RZ(c) RY(b) RZ(a)
            pending.setdefault(q, []).extend(Rotation(q, s, p) for s, p in zip(paulis, params))
        elif name == "CZ":
            flush(wires)  # earlier gates on these wires come first; gates elsewhere commute with CZ
            diag.append(wires)  # type: ignore[arg-type]
        elif name == "CNOT":
            flush(tuple(range(n_qubits)))
            flush_diag()
            steps.append(Cnot(*wires))
        else:
            raise ValueError(f"the torch statevector simulator supports {SUPPORTED_GATES}, the circuit uses "
                             f"{name}; use device='default.qubit' or a lightning device")
    flush(tuple(range(n_qubits)))
    flush_diag()
    observables = []
    for m in tape.measurements:
        obs = m.obs
        if not isinstance(m, qml.measurements.ExpectationMP) or obs is None or obs.name not in (
                "PauliX", "PauliY", "PauliZ") or len(obs.wires) != 1:
            raise ValueError(f"the torch statevector simulator reads single-qubit Pauli expectation values, got {m}")
        observables.append((obs.name[-1], int(obs.wires[0])))
    if not observables:
        raise ValueError("the circuit measures nothing; return a list of single-qubit Pauli expectation values")
    return CircuitProgram(n_qubits, n_features, n_weights, tuple(steps), tuple(observables))


SegmentKind = Literal["weights", "data"]


@dataclass(frozen=True)
class Segment:
    """A maximal run of steps that read the weights only, or that read inputs.

    Attributes
    ----------
    kind : "weights" or "data"
    steps : tuple of steps
    initial : bool
        Whether the segment acts on the fixed initial state ``|0...0>`` (it is the first one).
    """

    kind: SegmentKind
    steps: tuple[Step, ...]
    initial: bool

    @property
    def n_layers(self) -> int:
        """Single-qubit-gate layers (fused steps) in the segment."""
        return sum(isinstance(s, Layer) for s in self.steps)


def segments(program: CircuitProgram) -> tuple[Segment, ...]:
    """Cut ``program`` into weights-only and data-reading segments (see the module docstring).

    A circuit with no inputs is one weights segment; with no weights-only gates, one data segment.
    Neutral steps (CZ, CNOT) join the following weights segment when one follows, else the current
    segment.
    """
    kinds: list[str] = []
    for s in program.steps:
        kinds.append("n" if not isinstance(s, Layer) else ("data" if s.reads_inputs else "weights"))
    resolved = list(kinds)
    for i, k in enumerate(kinds):
        if k != "n":
            continue
        nxt = next((kinds[j] for j in range(i + 1, len(kinds)) if kinds[j] != "n"), None)
        prev = next((resolved[j] for j in range(i - 1, -1, -1) if resolved[j] != "n"), None)
        resolved[i] = "weights" if nxt == "weights" else (prev or nxt or "weights")
    out: list[Segment] = []
    run: list[Step] = []
    for i, (s, k) in enumerate(zip(program.steps, resolved)):
        if run and k != resolved[i - 1]:
            out.append(Segment(resolved[i - 1], tuple(run), initial=not out))  # type: ignore[arg-type]
            run = []
        run.append(s)
    if run:
        out.append(Segment(resolved[-1], tuple(run), initial=not out))  # type: ignore[arg-type]
    return tuple(out)
