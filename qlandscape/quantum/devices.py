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
* ``torch.statevector`` (:mod:`qlandscape.quantum.statevector`, not a PennyLane device) runs the same
  circuit, compiled from the QNode's quantum function, as a few fused torch ops batched over patches
  AND samples: exact (matches default.qubit to 1e-10), differentiable to any order by autograd,
  ``torch.func``-ready, and typically 3-5x faster than default.qubit on the crossover benchmark's circuits
  (1.1-6x; faster than lightning.qubit at every measured size up to 16-18 qubits for batches <= 16). Below the
  crossover it is what ``auto`` picks. Its cost grows with ``B * 2**n``: at large batch x qubits its
  batched state leaves the CPU caches and lightning (one ``2**n`` state per sample) overtakes it
  (batch 64: from 14 qubits at 2 layers, 16 at 8 layers).

Caveats measured with PennyLane 0.45 / lightning 0.45 (torch interface):

* ``diff_method="adjoint"`` is first-order only: a second backward (Hessian-vector products, ``create_graph=True``)
  fails with "element 0 of tensors does not require grad". Second-order work needs ``default.qubit`` + backprop, or
  ``diff_method="parameter-shift"`` with ``max_diff=2`` (pass it to :func:`select_device`).
* lightning.qubit can return the forward expvals in torch's *default* dtype (float32 unless
  ``torch.set_default_dtype(torch.float64)``) for float64 inputs and weights: seen with adjoint (batched or not) and
  with parameter-shift on an unbatched input; gradients stay float64. default.qubit + backprop returns float64.

``select_device("auto", ...)`` picks by the crossover qubit counts measured by
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
    "cpu_crossover",
    "create_device",
    "gpu_available",
    "kokkos_installed",
    "lightning_gpu_installed",
    "select_device",
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
# 6 GiB budget at 18 and at batch 64 at 16 (crossover by memory; the BACKPROP_MEMORY_LIMIT_BYTES guard below
# switches to lightning earlier anyway). Batch 64, 2 layers: 0.73 at 14, 0.44 at 16 (measured crossover 14).
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
# default.qubit backprop keeps one B * 2**n complex state per gate on the autograd tape; above this estimated
# footprint auto prefers lightning.qubit (adjoint needs O(1) states per sample) regardless of the time model.
# The estimate (_backprop_bytes: n + 3 n layers states of B * 2**n complex128) is default.qubit's; auto applies
# it to torch.statevector too. Peak RSS growth of one forward+backward, measured at 14 qubits, 8 layers, batch 64
# (one state = 16 MiB): torch.statevector 5.0 GiB (~320 states: ~2 per fused per-qubit einsum, whose operands are
# copied into contiguous layouts, plus the readout's n flipped copies), default.qubit 7.9 GiB (~500 states), against
# this estimate of 5.5 GiB (350 states). So the estimate tracks torch.statevector's real peak (within ~10 %
# across the cases checked: 16 qubits, 2 layers, batch 64 measured 7.1 GiB for an estimate of 7.0 GiB) and
# undershoots default.qubit's by ~1.4x.
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
    """

    name: str
    diff_method: str
    broadcast: bool
    reason: str
    c_dtype: str = "complex128"

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


def _backprop_bytes(n_qubits: int, batch_size: int, n_layers: int, c_dtype: str) -> int:
    """Estimated autograd-tape footprint of default.qubit backprop: one batched state per gate."""
    n_gates = n_qubits + 3 * n_qubits * n_layers  # encoding RX + per layer RX, RY, CZ ring
    itemsize = 16 if c_dtype == "complex128" else 8
    return n_gates * batch_size * (2**n_qubits) * itemsize


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
                  diff_method: str = "auto") -> DeviceChoice:
    """Choose the simulator device and differentiation method for a circuit.

    Parameters
    ----------
    requested : str
        ``"auto"`` or one of :data:`KNOWN_DEVICES`. An explicit device that cannot run here raises
        :class:`DeviceUnavailableError` (never a silent fallback).
    n_qubits : int
        Qubits per circuit (>= 1).
    batch_size : int
        Samples per QNode call (>= 1).
    n_layers : int
        Variational layers (>= 1).
    diff_method : str
        ``"auto"`` (backprop on default.qubit, adjoint on lightning), ``"backprop"`` (default.qubit only),
        ``"adjoint"`` (lightning only) or ``"parameter-shift"`` (any device; exact second derivatives when the
        QNode uses ``max_diff=2``).

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

    if requested != "auto":
        method = _check_diff_method(requested, diff_method)
        _require_available(requested)
        choice = DeviceChoice(requested, method, requested in BACKPROP_DEVICES,
                              f"requested explicitly: {requested} with {method}")
        log.info("quantum device: %s (%s)", choice.name, choice.reason)
        return choice

    # parameter-shift needs a PennyLane device: below the crossover that is default.qubit, not torch.statevector
    cpu_x = (_table_crossover(DEFAULT_QUBIT_CROSSOVER, batch_size, n_layers) if diff_method == "parameter-shift"
             else cpu_crossover(batch_size, n_layers))
    gpu_x = max(float(GPU_MIN_QUBITS), cpu_x)
    size = f"{n_qubits} qubits, batch {batch_size}, {n_layers} layers"
    mem = _backprop_bytes(n_qubits, batch_size, n_layers, "complex128")
    if diff_method == "backprop":  # only the autograd simulators can honour it
        name, why = "torch.statevector", f"{size}: diff_method='backprop' requested"
    elif gpu_available() and n_qubits >= gpu_x:
        name, why = "lightning.gpu", f"{size} >= GPU crossover {_fmt(gpu_x)} and a CUDA GPU is available"
    elif n_qubits >= cpu_x:
        name, why = "lightning.qubit", f"{size} >= measured CPU crossover {_fmt(cpu_x)} for batch {batch_size}"
    elif mem > BACKPROP_MEMORY_LIMIT_BYTES and diff_method != "parameter-shift":
        name, why = "lightning.qubit", (f"{size} < measured CPU crossover {_fmt(cpu_x)} but the backprop "
                                        f"simulators would hold ~{mem / 2**30:.1f} GiB > "
                                        f"{BACKPROP_MEMORY_LIMIT_BYTES / 2**30:.0f} GiB")
    elif diff_method == "parameter-shift":  # a PennyLane rule: needs a PennyLane device
        name, why = "default.qubit", f"{size} < measured CPU crossover {_fmt(cpu_x)} for batch {batch_size}"
    else:
        name, why = "torch.statevector", f"{size} < measured CPU crossover {_fmt(cpu_x)} for batch {batch_size}"
    method = _check_diff_method(name, diff_method)
    broadcast = name in BACKPROP_DEVICES
    tail = "broadcast " if broadcast else "one tape per sample, "
    choice = DeviceChoice(name, method, broadcast, f"{why}: {name} {tail}{method}")
    log.info("quantum device: %s (%s)", choice.name, choice.reason)
    return choice


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
