"""Classical baselines: an MLP and a small CNN."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class MLP(nn.Module):
    """Fully connected network ``in -> hidden... -> out``.

    Parameters
    ----------
    in_features : int
    hidden : sequence of int
        Widths of the hidden layers (may be empty: a linear model).
    out_features : int
    activation : str
        "tanh" (default, smooth: its Hessian is well defined everywhere), "relu", "gelu", ...
    dropout : float
        Dropout probability after each hidden activation (0 disables).
    batchnorm : bool
        BatchNorm1d after each hidden linear layer.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (128, 128), out_features: int = 10,
                 activation: str = "tanh", dropout: float = 0.0, batchnorm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (B, in_features) or (B, 1, h, w) -> logits (B, out_features)."""
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 conv layers + global average pooling + linear head, for (B, C, h, w) images."""

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (8, 16), n_classes: int = 10,
                 activation: str = "tanh") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for k in channels:
            layers += [nn.Conv2d(c, k, kernel_size=3, padding=1), _activation(activation)]
            c = k
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (B, C, h, w) -> logits (B, n_classes)."""
        if x.dim() != 4:
            raise ValueError(f"SmallCNN expects (B, C, h, w) images, got shape {tuple(x.shape)}")
        return self.head(self.features(x).mean(dim=(2, 3)))
