"""Classical baselines: an MLP, a small CNN, and a patch MLP matched to the patch quantum network."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..patches import PatchGrid, PatchNetwork

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def _check_dropout(dropout: float) -> float:
    """A dropout probability in ``[0, 1)``."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    return float(dropout)


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
        dropout = _check_dropout(dropout)
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
    """3x3 conv layers (two by default) + global average pooling + linear head, for (B, C, h, w) images.

    Parameters
    ----------
    in_channels : int
    channels : sequence of int
        Output channels of the conv layers (3x3, padding 1).
    n_classes : int
    activation : str
        As for :class:`MLP`.
    dropout : float
        Dropout probability (elementwise) after each conv activation (0 disables).
    batchnorm : bool
        BatchNorm2d after each conv layer.
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (8, 16), n_classes: int = 10,
                 activation: str = "tanh", dropout: float = 0.0, batchnorm: bool = False) -> None:
        super().__init__()
        dropout = _check_dropout(dropout)
        layers: list[nn.Module] = []
        c = in_channels
        for k in channels:
            layers.append(nn.Conv2d(c, k, kernel_size=3, padding=1))
            if batchnorm:
                layers.append(nn.BatchNorm2d(k))
            layers.append(_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            c = k
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (B, C, h, w) -> logits (B, n_classes)."""
        if x.dim() != 4:
            raise ValueError(f"SmallCNN expects (B, C, h, w) images, got shape {tuple(x.shape)}")
        return self.head(self.features(x).mean(dim=(2, 3)))


_AGGREGATIONS = ("mean", "sum", "linear")


class PatchMLP(PatchNetwork):
    """Classical patch network with the patch structure of :class:`qlandscape.quantum.PatchQNN`.

    ``forward``: images -> ``x * input_scale + positional bias`` -> patches ``(B, P, F)`` (the same
    :class:`~qlandscape.patches.PatchGrid`) -> one independent MLP ``F -> hidden (tanh) -> n_out`` per
    patch -> ``(B, P, n_out)`` -> ``coefficient * mean`` (or ``sum``, or a linear head) -> logits.
    Only the per-patch function differs from the quantum model (a small MLP instead of a circuit).

    Parameters
    ----------
    grid : PatchGrid
        Patch geometry (image shape, patch shape, stride).
    hidden : int
        Hidden width of every patch MLP (>= 1).
    n_classes : int
        Number of classes (>= 2).
    n_out : int, optional
        Scores per patch; default ``n_classes``. Must equal ``n_classes`` unless ``aggregation="linear"``.
    aggregation : {"mean", "sum", "linear"}
        How patch scores become logits: their mean, their sum, or a linear head ``P * n_out -> n_classes``.
    coefficient : float
        Logit multiplier (applied after the aggregation, as in PatchQNN).
    positional_bias : bool
        Learn an ``(H, W)`` bias added to the scaled image before patching (zero-initialized).
    input_scale : float
        Pixel multiplier applied before the positional bias.
    seed : int, optional
        Seeds the initialization (default: torch's global generator).

    Attributes
    ----------
    patch_nets : nn.ModuleList of nn.Sequential
        One ``Linear(F, hidden) -> Tanh -> Linear(hidden, n_out)`` per patch.
    pos_bias : nn.Parameter, shape (H, W), or None
    head : nn.Linear or None
        ``P * n_out -> n_classes`` when ``aggregation="linear"``.
    """

    def __init__(self, grid: PatchGrid, hidden: int, n_classes: int = 10, *, n_out: Optional[int] = None,
                 aggregation: str = "mean", coefficient: float = 1.0, positional_bias: bool = True,
                 input_scale: float = 1.0, seed: Optional[int] = None) -> None:
        super().__init__()
        if not isinstance(grid, PatchGrid):
            raise TypeError(f"grid must be a PatchGrid, got {type(grid).__name__}")
        for name, value, low in (("hidden", hidden, 1), ("n_classes", n_classes, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if aggregation not in _AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {_AGGREGATIONS}, got {aggregation!r}")
        n_out = n_classes if n_out is None else n_out
        if isinstance(n_out, bool) or not isinstance(n_out, int) or n_out < 1:
            raise ValueError(f"n_out must be an int >= 1, got {n_out!r}")
        if aggregation != "linear" and n_out != n_classes:
            raise ValueError(f"aggregation={aggregation!r} needs n_out == n_classes ({n_classes}), got {n_out}; "
                             "use aggregation='linear'")
        self.grid = grid
        self.hidden = hidden
        self.n_classes = n_classes
        self.n_out = n_out
        self.aggregation = aggregation
        self.coefficient = float(coefficient)
        self.input_scale = float(input_scale)
        P, F = grid.n_patches, grid.n_features
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.patch_nets = nn.ModuleList([
                nn.Sequential(nn.Linear(F, hidden), nn.Tanh(), nn.Linear(hidden, n_out)) for _ in range(P)])
            self.head: Optional[nn.Linear] = nn.Linear(P * n_out, n_classes) if aggregation == "linear" else None
        self.pos_bias: Optional[nn.Parameter] = (nn.Parameter(torch.zeros(grid.image_shape))
                                                 if positional_bias else None)
        self.matched_info: Optional[dict[str, int]] = None  # set by matched_to

    @staticmethod
    def count_params(grid: PatchGrid, hidden: int, n_classes: int = 10, *, n_out: Optional[int] = None,
                     aggregation: str = "mean", positional_bias: bool = True) -> int:
        """Trainable parameters of a PatchMLP with these settings (without building it)."""
        n_out = n_classes if n_out is None else n_out
        P, F = grid.n_patches, grid.n_features
        total = P * (F * hidden + hidden + hidden * n_out + n_out)
        if aggregation == "linear":
            total += P * n_out * n_classes + n_classes
        if positional_bias:
            total += grid.image_shape[0] * grid.image_shape[1]
        return total

    @classmethod
    def matched_to(cls, qnn: Any, *, seed: Optional[int] = None, max_hidden: int = 4096) -> "PatchMLP":
        """The PatchMLP whose trainable parameter count is closest to ``qnn``'s.

        Parameters
        ----------
        qnn : PatchQNN-like
            Anything with ``.grid`` (PatchGrid), ``.n_params`` (int) and ``.config`` (dict with
            ``n_classes``, ``aggregation``, ``coefficient``, ``positional_bias``, ``input_scale`` and
            ``observables``); the quantum package is not imported.
        seed : int, optional
            Initialization seed of the MLP.
        max_hidden : int
            Largest hidden width considered.

        Returns
        -------
        PatchMLP
            Same grid, aggregation, coefficient, positional bias and input scale; ``hidden`` minimizes
            ``|mlp.n_params - qnn.n_params|`` (ties: the smaller width). ``mlp.matched_info`` records both
            counts.
        """
        cfg = dict(qnn.config)
        missing = sorted({"n_classes", "aggregation", "coefficient", "positional_bias", "input_scale"} - set(cfg))
        if missing:
            raise ValueError(f"qnn.config lacks key(s) {missing} needed to match a PatchMLP")
        n_classes = int(cfg["n_classes"])
        aggregation = str(cfg["aggregation"])
        n_out = len(cfg.get("observables") or ()) or n_classes
        if aggregation != "linear":
            n_out = n_classes
        target = int(qnn.n_params)
        kw = dict(n_out=n_out, aggregation=aggregation, positional_bias=bool(cfg["positional_bias"]))
        best = min(range(1, max_hidden + 1),
                   key=lambda h: (abs(cls.count_params(qnn.grid, h, n_classes, **kw) - target), h))  # type: ignore[arg-type]
        mlp = cls(qnn.grid, best, n_classes, coefficient=float(cfg["coefficient"]),
                  input_scale=float(cfg["input_scale"]), seed=seed, **kw)  # type: ignore[arg-type]
        mlp.matched_info = {"qnn_n_params": target, "mlp_n_params": mlp.n_params, "hidden": best,
                            "params_per_hidden_unit": qnn.grid.n_patches * (qnn.grid.n_features + 1 + n_out)}
        return mlp

    @property
    def n_params(self) -> int:
        """Trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def config(self) -> dict[str, Any]:
        """Every setting (JSON-able), with the parameter count."""
        g = self.grid
        return dict(image_shape=list(g.image_shape), patch_size=list(g.patch_shape), stride=list(g.stride),
                    n_patches=g.n_patches, hidden=self.hidden, n_classes=self.n_classes, n_out=self.n_out,
                    aggregation=self.aggregation, coefficient=self.coefficient,
                    positional_bias=self.pos_bias is not None, input_scale=self.input_scale,
                    n_params=self.n_params)

    def patch_outputs(self, patches: Tensor) -> Tensor:
        """Run every patch's MLP.

        Parameters
        ----------
        patches : Tensor, shape (B, P, n_features)

        Returns
        -------
        Tensor, shape (B, P, n_out)
        """
        return torch.stack([net(patches[:, p]) for p, net in enumerate(self.patch_nets)], dim=1)

    def extra_repr(self) -> str:
        g = self.grid
        return (f"patches={g.n_patches} ({g.patch_shape[0]}x{g.patch_shape[1]}, stride {g.stride}), "
                f"hidden={self.hidden}, aggregation={self.aggregation}, params={self.n_params}")
