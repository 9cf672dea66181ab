"""Model zoo: classical baselines (quantum patch networks live in ``qlandscape.quantum``)."""

from .classical import MLP, PatchMLP, SmallCNN

__all__ = ["MLP", "PatchMLP", "SmallCNN"]
