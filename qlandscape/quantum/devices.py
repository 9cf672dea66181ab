"""Simulator device selection for the quantum models, driven by a *measured* cost model.

The quantum models are PennyLane QNodes wrapped in torch modules. Which simulator runs them matters a lot:

* ``default.qubit`` with ``diff_method="backprop"`` takes the whole batch in ONE broadcast call (inputs of shape
  ``(B, n)``) and torch autograd differentiates through it. Very fast for small circuits, but the autograd tape
  stores one ``B * 2**n`` complex state per gate, so its memory (and time) grows with batch x qubits x gates.
* ``lightning.qubit`` (C++) with ``diff_method="adjoint"`` does not broadcast: PennyLane splits a batch into one
  tape per sample. Per-sample overhead dominates for small circuits; its state-vector kernels win for large ones.
  Note: every forward of an adjoint QNode also computes its Jacobian, even under ``torch.no_grad()``
  (measured 2.4-8x slower for evaluation-only paths).
* ``lightning.gpu`` (cuStateVec) wins only for large circuits and needs the ``gpu`` extra and a CUDA GPU.
* ``torch.statevector`` (:mod:`qlandscape.quantum.compiled`, not a PennyLane device) runs the same
  circuit, compiled from the QNode's quantum function, as batched torch ops over patches AND samples:
  weights-only segments folded into unitaries where that pays, an adjoint backward that un-computes states
  and a hand-written second-order pass, so gradients and exact Hessian-vector products keep O(1) states
  per chunk of samples whatever the depth (chunks sized from a memory budget). Exact (matches default.qubit
  to 1e-10), differentiable to any order, ``torch.func``-ready; on CUDA tensors when torch sees a GPU.
  The crossover tables below were measured against its predecessor (the same circuits as a plain autograd
  tape, :mod:`qlandscape.quantum.statevector`), which the compiled simulator beats at every size measured by
  ``benchmarks/bench_qsim.py``, so they mark the earliest size at which lightning.qubit can win first-order work.

Caveats measured with PennyLane 0.45 / lightning 0.45 (torch interface):

* ``diff_method="adjoint"`` is first-order only: a second backward (Hessian-vector products, ``create_graph=True``)
  fails with "element 0 of tensors does not require grad". Second-order work needs ``default.qubit`` + backprop, or
  ``diff_method="parameter-shift"`` with ``max_diff=2`` (pass it to :func:`select_device`).
* lightning.qubit can return the forward expvals in torch's *default* dtype (float32 unless
  ``torch.set_default_dtype(torch.float64)``) for float64 inputs and weights: seen with adjoint (batched or not) and
  with parameter-shift on an unbatched input; gradients stay float64. default.qubit + backprop returns float64.

``select_device("auto", ..., order=2)`` (the default: the jobs need Hessian-vector products) never picks a
first-order device (lightning with adjoint) while an exact second-order route fits: it takes
torch.statevector unless even one sample's states exceed :data:`BACKPROP_MEMORY_LIMIT_BYTES`. With ``order=1``
(training and gradients only) it picks by the crossover qubit counts measured by
``benchmarks/bench_device_crossover.py`` (results in ``benchmarks/results/device_crossover*.{json,md}``), never by
name: :data:`CPU_CROSSOVER` (lightning.qubit vs torch.statevector, the choice ``auto`` makes) and, when
``diff_method="parameter-shift"`` rules out torch.statevector, :data:`DEFAULT_QUBIT_CROSSOVER` (lightning.qubit vs
default.qubit).
Explicit requests that cannot run here raise :class:`DeviceUnavailableError` before anything is built: there is
no silent fallback.
"""

from __future__ import annotations

import bisect
import importlib.util
import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pennylane as qml

__all__ = [
    "CPU_CROSSOVER",
    "DEFAULT_QUBIT_CROSSOVER",
    "DeviceChoice",
    "DeviceUnavailableError",
    "GPU_MIN_QUBITS",
    "KNOWN_DEVICES",
    "check_state_memory",
    "cpu_crossover",
    "create_device",
    "gpu_available",
    "torch_cuda_available",
    "kokkos_installed",
    "lightning_gpu_installed",
    "select_device",
    "state_bytes",
]

log = logging.getLogger("qlandscape")

KNOWN_DEVICES: tuple[str, ...] = ("torch.statevector", "default.qubit", "lightning.qubit", "lightning.gpu",
                                  "lightning.kokkos")
BACKPROP_DEVICES: tuple[str, ...] = ("torch.statevector", "default.qubit")
"""Devices differentiated by torch autograd itself (exact to any order)."""
DIFF_METHODS: tuple[str, ...] = ("auto", "backprop", "adjoint", "parameter-shift")

GPU_FIX = "pip install qlandscape[gpu]"
KOKKOS_FIX = "pip install pennylane-lightning-kokkos"

# ---------------------------------------------------------------------------------------------------------------
# Measured cost model (benchmarks/bench_device_crossover.py -> benchmarks/results/device_crossover.{json,md}, plus
# the larger-size supplements device_crossover_{16q,16q_b64,18q}.{json,md}; merged in device_crossover_merged.md).
# Circuit family of the paper: RX(x) encoding, then per layer RX(w) and RY(w) on every qubit and a CZ ring,
# readout <Z_q> on every qubit; float64; forward + backward of a cross-entropy of the expvals; ONE CPU thread.
# Each table maps (n_layers, batch) -> qubit count from which lightning.qubit+adjoint (one tape per sample) is at
# least as fast as the broadcasting backprop simulator. Between measured points: bilinear in log2(layers),
# log2(batch); outside: clamped. 2 = lightning already wins at the smallest measured size. A ratio within 10 % of
# 1 counts as a tie (VM speed drifts). Measured on this project's CI VM (1 thread, PennyLane 0.45.1, lightning
# 0.45.0, torch 2.13 CPU), sizes 2..14 qubits for all cases, 16 (and 18 for batch <= 16) for lightning vs
# torch.statevector. Rerun the benchmark after upgrading PennyLane or changing the torch simulator.
CROSSOVER_MEASURED_MAX_QUBITS: int = 18
# CPU_CROSSOVER: lightning.qubit vs torch.statevector (P=1 patch, the batch as B): the decision ``auto`` makes.
# Raw ratios lightning/torch.statevector (> 1: torch faster) at 2..18 qubits: batch 1: 1.5-2.5 (2 layers), 1.3-3.0
# (8 layers); batch 4: 3.7-4.8 up to 10 qubits, 1.3-2.0 at 12-18 (2 layers), 1.9-3.9 everywhere (8 layers);
# batch 16: 6-13 up to 10 qubits, 1.3-2.4 at 12-16, 0.72 at 18 (2 layers); batch 64: 19-38 up to 8 qubits, 6-9 at
# 10, 1.7-2.4 at 12, then 0.73 at 14 / 0.44 at 16 (2 layers) and 1.31 at 14 / torch over the 6 GiB budget at 16
# (8 layers).
# 20 (= CROSSOVER_MEASURED_MAX_QUBITS + 2) marks "torch.statevector faster at every measured size up to 18"
# (batch 1 and 4: ratio still 1.9-2.9 at 18; the benchmark's log-linear extrapolation puts the crossover past 30 or
# nowhere, so it is not used). Batch 16: ratio 0.72 at 18 (2 layers); at 8 layers torch.statevector exceeds the
# 6 GiB budget at 18 and at batch 64 at 16 (crossover by the memory of that tape; the compiled simulator keeps no
# tape). Batch 64, 2 layers: 0.73 at 14, 0.44 at 16 (measured crossover 14).
CPU_CROSSOVER: dict[tuple[int, int], float] = {
    (2, 1): 20.0,
    (2, 4): 20.0,
    (2, 16): 18.0,
    (2, 64): 14.0,
    (8, 1): 20.0,
    (8, 4): 20.0,
    (8, 16): 18.0,
    (8, 64): 16.0,
}
# DEFAULT_QUBIT_CROSSOVER: lightning.qubit vs default.qubit+backprop (one broadcast call); this was CPU_CROSSOVER
# before torch.statevector existed. ``auto`` uses it only with diff_method="parameter-shift" (which needs a
# PennyLane device, so default.qubit below it); measured with default.qubit+backprop vs lightning+adjoint, a proxy
# for parameter-shift on both. Raw ratios lightning/default.qubit: batch 1: 0.3-0.7 at every size 2-16 (lightning
# wins everywhere); batch 4: 0.6-1.1 from 6 qubits (2 layers), 0.7-1.0 from 2 qubits (8 layers); batch 16 and
# 64: 1.3-2.4 at 10 qubits, 0.4-0.8 at 12-14 (2-11x at <= 8 qubits). Rerun with three devices: same table.
DEFAULT_QUBIT_CROSSOVER: dict[tuple[int, int], float] = {
    (2, 1): 2.0,
    (2, 4): 6.0,
    (2, 16): 12.0,
    (2, 64): 12.0,
    (8, 1): 2.0,
    (8, 4): 2.0,
    (8, 16): 12.0,
    (8, 64): 12.0,
}
# lightning.gpu: not measurable in this project's CI (no CUDA GPU). PennyLane's own guidance places the
# lightning.gpu advantage over CPU simulators at roughly 20 qubits and above; auto never picks it below this, nor
# below the CPU crossover (a GPU circuit still runs one tape per sample).
GPU_MIN_QUBITS: int = 20
# torch.statevector holds O(1) states per sample and circuit during a Hessian-vector product (chunks of samples are
# sized from its memory budget: qlandscape.quantum.costmodel.live_states, 33 for the paper's 5-segment circuit; 40
# covers circuits of up to 7 segments). auto falls back to lightning (first order only) when one sample's states
# alone exceed BACKPROP_MEMORY_LIMIT_BYTES: from 23 qubits. The memory never depends on the batch_size knob.
COMPILED_STATES_PER_ROW: int = 40
BACKPROP_MEMORY_LIMIT_BYTES: int = 4 * 2**30


@dataclass(frozen=True)
class DeviceChoice:
    """A simulator device and how to differentiate through it.

    Parameters
    ----------
    name : str
        One of :data:`KNOWN_DEVICES`.
    diff_method : str
        ``"backprop"``, ``"adjoint"`` or ``"parameter-shift"``.
    broadcast : bool
        Whether one call can carry a batch dimension (``default.qubit``: True; lightning devices: False, PennyLane
        splits a batch into one tape per sample).
    reason : str
        Why it was chosen (logged to the ``"qlandscape"`` logger and recorded in provenance).
    c_dtype : str
        Complex dtype of the state vector.
    torch_device : str
        Where ``torch.statevector`` runs (``"cpu"`` or ``"cuda[:N]"``); ``"cpu"`` for PennyLane devices.
    """

    name: str
    diff_method: str
    broadcast: bool
    reason: str
    c_dtype: str = "complex128"
    torch_device: str = "cpu"

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form for provenance records."""
        return asdict(self)


class DeviceUnavailableError(RuntimeError):
    """A requested simulator device cannot run here; the message names the fix."""


# ---------------------------------------------------------------------------------------------------------------
# Environment probes (tests monkeypatch these module attributes).


def _module_importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # parent package missing or broken
        return False


def lightning_gpu_installed() -> bool:
    """Whether the ``lightning.gpu`` plugin's compiled kernels (``pennylane_lightning.lightning_gpu_ops``) exist."""
    return _module_importable("pennylane_lightning.lightning_gpu_ops")


def kokkos_installed() -> bool:
    """Whether the ``lightning.kokkos`` plugin's compiled kernels (``pennylane_lightning.lightning_kokkos_ops``)
    exist."""
    return _module_importable("pennylane_lightning.lightning_kokkos_ops")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def gpu_available() -> bool:
    """Whether ``lightning.gpu`` can run: a CUDA GPU is visible to torch AND the plugin is installed."""
    return _cuda_available() and lightning_gpu_installed()


def torch_cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (``torch.statevector`` then runs on it)."""
    return _cuda_available()


def _compiled_row_bytes(n_qubits: int) -> int:
    """States torch.statevector holds per sample and circuit during a Hessian-vector product."""
    return COMPILED_STATES_PER_ROW * (2 ** n_qubits) * 16


_AMPLITUDE_BYTES: dict[str, int] = {"complex64": 8, "complex128": 16}


def state_bytes(n_qubits: int, c_dtype: str = "complex128", states: int = 1) -> int:
    """Bytes of ``states`` state vectors of ``2**n_qubits`` amplitudes in ``c_dtype`` (complex64: 8 bytes
    each, complex128 and anything else: 16)."""
    return int(states) * (2 ** int(n_qubits)) * _AMPLITUDE_BYTES.get(str(c_dtype), 16)


def check_state_memory(n_qubits: int, *, device: str, states: int, budget: int, c_dtype: str = "complex128",
                       why: str = "", budget_note: str = "", fewer: str = "") -> None:
    """Refuse a circuit whose state vectors alone cannot fit the memory budget, before anything is built.

    Parameters
    ----------
    n_qubits : int
        Register width.
    device : str
        The simulator that would hold them (named in the message).
    states : int
        State vectors held at once at the least (1 for lightning's one tape per sample; the broadcast
        rows of one call for default.qubit and the tape simulator).
    budget : int
        Bytes allowed.
    c_dtype : str
        Amplitude dtype.
    why, budget_note, fewer : str
        Message parts: why ``states`` states, where the budget comes from, how to need fewer states.

    Raises
    ------
    qlandscape.objective.MemoryBudgetError
        When ``state_bytes(n_qubits, c_dtype, states) > budget``: the message names the width, the bytes
        needed, the budget, the widest register that fits and the ``memory_budget=`` way out.
    """
    need = state_bytes(n_qubits, c_dtype, states)
    if need <= budget:
        return
    from ..objective import MemoryBudgetError, format_bytes  # torch-free import of this module otherwise

    per = states * _AMPLITUDE_BYTES.get(str(c_dtype), 16)
    widest = int(math.floor(math.log2(budget / per))) if budget >= per else 0
    fit = f"use n_qubits <= {widest}" if widest >= 1 else "no width fits"
    raise MemoryBudgetError(
        f"n_qubits={n_qubits}: {states} state vector(s) of 2**{n_qubits} {c_dtype} amplitudes on {device}"
        f"{f' ({why})' if why else ''} need {format_bytes(need)}, over the memory budget of {format_bytes(budget)}"
        f"{f' ({budget_note})' if budget_note else ''}; {fit}{f', {fewer}' if fewer else ''}, or pass "
        f"memory_budget={need} or more if this machine really has the memory")


TORCH_DEVICES_HINT = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def _resolve_torch_device(torch_device: str) -> tuple[str, str]:
    """``(device, why)`` for ``torch.statevector``; raises DeviceUnavailableError for CUDA without a GPU."""
    if not isinstance(torch_device, str) or not (torch_device in ("auto", "cpu", "cuda")
                                                 or (torch_device.startswith("cuda:")
                                                     and torch_device[5:].isdigit())):
        raise ValueError(f"torch_device must be {TORCH_DEVICES_HINT}, got {torch_device!r}")
    if torch_device == "auto":
        if torch_cuda_available():
            return "cuda", "a CUDA GPU is visible to torch"
        return "cpu", "no CUDA GPU"
    if torch_device.startswith("cuda") and not torch_cuda_available():
        raise DeviceUnavailableError(
            f"torch_device={torch_device!r} requested but torch sees no CUDA GPU here (torch.cuda.is_available() is "
            "False); use torch_device='cpu' or 'auto'")
    return torch_device, "requested"


# ---------------------------------------------------------------------------------------------------------------
# Cost model.


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise-linear interpolation, clamped at the ends."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def cpu_crossover(batch_size: int, n_layers: int = 1) -> float:
    """Measured CPU crossover qubit count for a batch size and layer count.

    Bilinear interpolation of :data:`CPU_CROSSOVER` in ``(log2 layers, log2 batch)``, clamped to the measured range.

    Parameters
    ----------
    batch_size : int
        Samples per QNode call (>= 1).
    n_layers : int
        Variational layers (>= 1).

    Returns
    -------
    float
        Qubit count from which ``lightning.qubit`` + adjoint is expected to beat ``torch.statevector`` (the
        simulator ``auto`` picks below it).
    """
    return _table_crossover(CPU_CROSSOVER, batch_size, n_layers)


def _table_crossover(table: dict[tuple[int, int], float], batch_size: int, n_layers: int) -> float:
    """Bilinear interpolation of a crossover table in ``(log2 layers, log2 batch)``, clamped."""
    layers = sorted({lay for lay, _ in table})
    batches = sorted({b for _, b in table})
    lb = math.log2(batch_size)
    per_layer = [_interp(lb, [math.log2(b) for b in batches], [table[(lay, b)] for b in batches])
                 for lay in layers]
    return _interp(math.log2(n_layers), [math.log2(lay) for lay in layers], per_layer)


def _fmt(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


# ---------------------------------------------------------------------------------------------------------------
# Selection.


def _check_diff_method(name: str, diff_method: str) -> str:
    if diff_method not in DIFF_METHODS:
        raise ValueError(f"diff_method must be one of {DIFF_METHODS}, got {diff_method!r}")
    if diff_method == "auto":
        return "backprop" if name in BACKPROP_DEVICES else "adjoint"
    if diff_method == "backprop" and name not in BACKPROP_DEVICES:
        raise ValueError(
            f"diff_method='backprop' needs device 'torch.statevector' or 'default.qubit' (got {name!r}); use "
            f"diff_method='adjoint' (or 'parameter-shift') with {name}, or device='auto'.")
    if name == "torch.statevector" and diff_method != "backprop":
        raise ValueError(f"device 'torch.statevector' is differentiated by torch autograd (diff_method='backprop'); "
                         f"for diff_method={diff_method!r} use device='default.qubit' or a lightning device.")
    return diff_method


def _require_available(name: str) -> None:
    """Raise DeviceUnavailableError when an explicitly requested device cannot run here."""
    if name == "lightning.gpu":
        if not lightning_gpu_installed():
            raise DeviceUnavailableError(
                f"device 'lightning.gpu' requested but pennylane-lightning-gpu is not installed; {GPU_FIX} "
                "(needs a CUDA GPU), or use device='lightning.qubit' or device='auto'.")
        if not gpu_available():
            raise DeviceUnavailableError(
                "device 'lightning.gpu' requested but no CUDA GPU is available here (torch.cuda.is_available() "
                "is False); use device='lightning.qubit' or device='auto' on this machine.")
    elif name == "lightning.kokkos" and not kokkos_installed():
        raise DeviceUnavailableError(
            f"device 'lightning.kokkos' requested but it is not installed; {KOKKOS_FIX}, "
            "or use device='lightning.qubit' or device='auto'.")


def select_device(requested: str = "auto", *, n_qubits: int, batch_size: int, n_layers: int = 1,
                  diff_method: str = "auto", order: int = 2, torch_device: str = "auto") -> DeviceChoice:
    """Choose the simulator device and differentiation method for a circuit.

    Parameters
    ----------
    requested : str
        ``"auto"`` or one of :data:`KNOWN_DEVICES`. An explicit device that cannot run here raises
        :class:`DeviceUnavailableError` (never a silent fallback).
    n_qubits : int
        Qubits per circuit (>= 1).
    batch_size : int
        Samples per call (>= 1); only the first-order speed crossover (``order=1``) reads it: memory is
        not sized from it (torch.statevector sizes its chunks from the data it is given).
    n_layers : int
        Variational layers (>= 1).
    diff_method : str
        ``"auto"`` (backprop on default.qubit, adjoint on lightning), ``"backprop"`` (default.qubit only),
        ``"adjoint"`` (lightning only) or ``"parameter-shift"`` (any device; exact second derivatives when the
        QNode uses ``max_diff=2``).
    order : int
        Highest derivative order the jobs need: 2 (default; Hessian-vector products) keeps ``auto`` on an
        exact second-order route (torch.statevector) whenever it fits; 1 (training, gradients) lets it take
        lightning where the measured crossover says lightning is faster.
    torch_device : str
        Where torch.statevector runs: ``"auto"`` (CUDA when torch sees a GPU, else the CPU), ``"cpu"``,
        ``"cuda"`` or ``"cuda:N"`` (raises :class:`DeviceUnavailableError` without a GPU).

    Returns
    -------
    DeviceChoice
        The choice; its ``reason`` states the numbers behind it.

    Raises
    ------
    ValueError
        Unknown device or diff method, an invalid combination, or non-positive sizes.
    DeviceUnavailableError
        The requested device is not installed or has no GPU here.
    """
    if requested != "auto" and requested not in KNOWN_DEVICES:
        raise ValueError(f"unknown device {requested!r}; use 'auto' or one of {', '.join(KNOWN_DEVICES)}")
    for label, value in (("n_qubits", n_qubits), ("batch_size", batch_size), ("n_layers", n_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
    if diff_method not in DIFF_METHODS:
        raise ValueError(f"diff_method must be one of {DIFF_METHODS}, got {diff_method!r}")
    if order not in (1, 2) or isinstance(order, bool):
        raise ValueError(f"order must be 1 (gradients only) or 2 (Hessian-vector products), got {order!r}")

    def finish(name: str, why: str) -> DeviceChoice:
        method = _check_diff_method(name, diff_method)
        broadcast = name in BACKPROP_DEVICES
        where = "cpu"
        if name == "torch.statevector":
            where, where_why = _resolve_torch_device(torch_device)
            why = f"{why}; on {where} ({where_why})"
        tail = "broadcast " if broadcast else "one tape per sample, "
        choice = DeviceChoice(name, method, broadcast, f"{why}: {name} {tail}{method}", torch_device=where)
        log.info("quantum device: %s (%s)", choice.name, choice.reason)
        return choice

    if requested != "auto":
        method = _check_diff_method(requested, diff_method)
        _require_available(requested)
        return finish(requested, f"requested explicitly: {requested} with {method}")

    # parameter-shift needs a PennyLane device: below the crossover that is default.qubit, not torch.statevector
    cpu_x = (_table_crossover(DEFAULT_QUBIT_CROSSOVER, batch_size, n_layers) if diff_method == "parameter-shift"
             else cpu_crossover(batch_size, n_layers))
    gpu_x = max(float(GPU_MIN_QUBITS), cpu_x)
    size = f"{n_qubits} qubits, batch {batch_size}, {n_layers} layers"
    row = _compiled_row_bytes(n_qubits)
    fits = row <= BACKPROP_MEMORY_LIMIT_BYTES
    if diff_method == "backprop":  # only the autograd simulators can honour it
        return finish("torch.statevector", f"{size}: diff_method='backprop' requested")
    if diff_method == "parameter-shift":  # a PennyLane rule: needs a PennyLane device
        if n_qubits >= cpu_x:
            return finish("lightning.qubit", f"{size} >= measured CPU crossover {_fmt(cpu_x)} for batch {batch_size}")
        return finish("default.qubit", f"{size} < measured CPU crossover {_fmt(cpu_x)} for batch {batch_size}")
    if diff_method == "adjoint":
        gpu = gpu_available() and n_qubits >= gpu_x
        return finish("lightning.gpu" if gpu else "lightning.qubit", f"{size}: diff_method='adjoint' requested")
    if order == 2 and fits:
        per = f"{row / 2**20:.0f} MiB" if row >= 2 ** 20 else f"{row / 2**10:.0f} KiB"
        return finish("torch.statevector", f"{size}: exact second derivatives wanted (order=2) and one sample's "
                                           f"states fit ({per} per sample and circuit)")
    if not fits:
        why = (f"{size}: one sample's states alone (~{row / 2**30:.1f} GiB) exceed "
               f"{BACKPROP_MEMORY_LIMIT_BYTES / 2**30:.0f} GiB, so no exact second-order route fits; first-order "
               "only, Hessian-vector products by finite differences of gradients")
        return finish("lightning.gpu" if gpu_available() else "lightning.qubit", why)
    if gpu_available() and n_qubits >= gpu_x:
        return finish("lightning.gpu", f"{size} >= GPU crossover {_fmt(gpu_x)} and a CUDA GPU is available (order=1)")
    if n_qubits >= cpu_x:
        return finish("lightning.qubit", f"{size} >= measured CPU crossover {_fmt(cpu_x)} for batch {batch_size} "
                                         "(order=1)")
    return finish("torch.statevector", f"{size} < measured CPU crossover {_fmt(cpu_x)} for batch {batch_size}")


def create_device(choice: DeviceChoice, wires: int) -> qml.devices.Device:
    """Build the PennyLane device for a :class:`DeviceChoice`.

    Parameters
    ----------
    choice : DeviceChoice
        From :func:`select_device`.
    wires : int
        Number of wires (>= 1).

    Returns
    -------
    qml.devices.Device

    Raises
    ------
    DeviceUnavailableError
        The device cannot be built here (plugin missing, no GPU); the message names the fix.
    """
    import pennylane as qml

    try:
        from pennylane.exceptions import DeviceError
    except ImportError:  # pragma: no cover - PennyLane < 0.42
        DeviceError = qml.DeviceError  # type: ignore[attr-defined,misc]

    if choice.name not in KNOWN_DEVICES:
        raise ValueError(f"unknown device {choice.name!r}; use one of {', '.join(KNOWN_DEVICES)}")
    if choice.name == "torch.statevector":
        raise ValueError("torch.statevector is not a PennyLane device: build the circuit with "
                         "qlandscape.quantum.statevector.TorchStatevector (PatchQNN does this)")
    if isinstance(wires, bool) or not isinstance(wires, int) or wires < 1:
        raise ValueError(f"wires must be an integer >= 1, got {wires!r}")
    kwargs: dict[str, Any] = {}
    if choice.name not in BACKPROP_DEVICES:
        import numpy as np
        kwargs["c_dtype"] = np.dtype(choice.c_dtype).type
    try:
        return qml.device(choice.name, wires=wires, **kwargs)
    except (DeviceError, ImportError, RuntimeError, OSError) as exc:
        fix = {"lightning.gpu": f"{GPU_FIX} (needs a CUDA GPU)", "lightning.kokkos": KOKKOS_FIX}.get(
            choice.name, "reinstall pennylane and pennylane-lightning")
        raise DeviceUnavailableError(
            f"cannot create PennyLane device {choice.name!r} here ({type(exc).__name__}: {exc}); {fix}, "
            "or use device='lightning.qubit' or device='auto'.") from exc
