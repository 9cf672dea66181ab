"""Quantum models: PennyLane circuits as torch modules that describe their own capabilities."""

from . import qnode_info  # noqa: F401  (registers the PennyLane inspectors)
from .circuits import CircuitSpec, readout_observables
from .patch_qnn import PatchCircuit, PatchQNN

__all__ = ["CircuitSpec", "PatchCircuit", "PatchQNN", "readout_observables"]
