"""Quantum models: PennyLane circuits as torch modules that describe their own capabilities."""

from . import qnode_info  # noqa: F401  (registers the PennyLane inspectors)
from .circuits import CircuitSpec, QuantumFunction, readout_observables
from .compiled import CompiledCircuit
from .devices import DeviceUnavailableError, select_device
from .patch_qnn import PatchCircuit, PatchQNN
from .reference import FoldedReference

__all__ = ["CircuitSpec", "CompiledCircuit", "DeviceUnavailableError", "FoldedReference", "PatchCircuit", "PatchQNN",
           "QuantumFunction", "readout_observables", "select_device"]
