"""Model zoo: classical baselines (quantum patch networks live in ``qlandscape.quantum``)."""

from .classical import MLP, SmallCNN

__all__ = ["MLP", "SmallCNN"]
