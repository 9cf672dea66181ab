"""Permutation symmetry of feed-forward chains: which tensor axes a hidden-unit permutation acts on.

A network made of a chain of Linear / Conv2d layers computes the same function after its hidden
units (the out-features of a hidden Linear, the out-channels of a hidden Conv2d) are permuted,
provided every tensor indexed by those units is permuted with them: the producing layer's weight
rows and bias, a BatchNorm's affine parameters and running statistics, and the next layer's weight
columns (input channels). The output layer is never permuted.

Convention: ``perms[l][i]`` is the index, in the original network, of the unit of hidden layer
``l`` placed at position ``i`` of the permuted one, so every permuted axis is ``index_select(axis,
perms[l])``, and the inverse of ``p`` is ``np.argsort(p)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union, cast

import numpy as np
import torch
from torch import Tensor, nn

from ..adapter import copy_module
from ..models import MLP, SmallCNN

__all__ = ["SUPPORTED", "PermutationSpec", "permutation_spec", "apply_permutations", "check_permutations",
           "identity_permutations", "random_permutations", "permute_state"]

_ELEMENTWISE = (nn.Tanh, nn.ReLU, nn.GELU, nn.Sigmoid, nn.Softplus, nn.LeakyReLU, nn.Identity,
                nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
SUPPORTED = ("qlandscape.models.MLP, qlandscape.models.SmallCNN, or an nn.Sequential chain of Linear, "
             "Conv2d (groups=1), BatchNorm1d, BatchNorm2d, Tanh, ReLU, GELU, Sigmoid, Softplus, LeakyReLU, "
             "Identity, Dropout, Flatten (first, or right after AdaptiveAvgPool2d(1)) and AdaptiveAvgPool2d(1) "
             "(between the convs and a Linear)")

Permutations = Sequence[Union[np.ndarray, Sequence[int], Tensor]]


@dataclass(frozen=True)
class PermutationSpec:
    """Permutation structure of a model.

    Attributes
    ----------
    widths : tuple of int, length L
        Number of units of each hidden layer (permutation group).
    kinds : tuple of str, length L
        ``"linear"`` or ``"conv"``: the layer type producing each group.
    producers : tuple of str, length L
        Module name of the Linear / Conv2d layer producing each group.
    activations : tuple of str, length L
        Module name whose output is the group's post-activation (the last module of the layer's
        block: activation, Dropout, BatchNorm or the layer itself); used by activation matching.
    axes : mapping of str to tuple of (int or None)
        For every ``state_dict`` key: the group permuting each of its axes (None: not permuted).
    parameters : frozenset of str
        The keys that are parameters (the others are buffers).
    """

    widths: tuple[int, ...]
    kinds: tuple[str, ...]
    producers: tuple[str, ...]
    activations: tuple[str, ...]
    axes: Mapping[str, tuple[Optional[int], ...]]
    parameters: frozenset[str]

    @property
    def n_layers(self) -> int:
        """Number ``L`` of permuted hidden layers."""
        return len(self.widths)


def _unsupported(name: str, module: nn.Module, why: str = "") -> ValueError:
    where = f"module {name!r} ({type(module).__name__})" if name else f"a {type(module).__name__} model"
    return ValueError(f"{where} is not supported by permutation alignment{': ' + why if why else ''}; "
                      f"supported: {SUPPORTED}")


def _expand(prefix: str, seq: nn.Sequential) -> list[tuple[str, nn.Module]]:
    """The children of ``seq`` with qualified names, nested ``nn.Sequential`` expanded in place."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in seq.named_children():
        full = f"{prefix}{name}"
        if type(child) is nn.Sequential:
            out.extend(_expand(full + ".", child))
        else:
            out.append((full, child))
    return out


def _chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model as a flat chain of ``(name, module)``; name "" marks a stand-in for a functional op."""
    if type(model) is MLP:
        return _expand("net.", model.net)
    if type(model) is SmallCNN:  # forward: head(features(x).mean(dim=(2, 3)))
        return _expand("features.", model.features) + [("", nn.AdaptiveAvgPool2d(1)), ("", nn.Flatten()),
                                                       ("head", model.head)]
    if type(model) is nn.Sequential:
        return _expand("", model)
    raise _unsupported("", model, "only these exact model classes are understood (a subclass may change forward)")


class _Walker:
    """Builds a :class:`PermutationSpec` from a chain in one pass (state machine over the feature axis)."""

    def __init__(self, chain: list[tuple[str, nn.Module]]) -> None:
        weights = [i for i, (_, m) in enumerate(chain) if type(m) in (nn.Linear, nn.Conv2d)]
        if not weights:
            raise ValueError(f"the model has no Linear or Conv2d layer, nothing to permute; supported: {SUPPORTED}")
        self.chain, self.last = chain, weights[-1]
        self.group: Optional[int] = None  # group of the current feature axis (None: input or output)
        self.layout: Optional[str] = None  # None (input), "flat" (B, F), "spatial" (B, C, H, W), "pooled"
        self.widths: list[int] = []
        self.kinds: list[str] = []
        self.producers: list[str] = []
        self.activations: list[str] = []
        self.axes: dict[str, tuple[Optional[int], ...]] = {}

    def run(self) -> None:
        for i, (name, m) in enumerate(self.chain):
            t = type(m)
            if t in (nn.Linear, nn.Conv2d):
                self._weight(i, name, m)
            elif t in _BATCHNORM:
                self._batchnorm(name, m)
            elif t in _ELEMENTWISE:
                self._extend_block(name)
            elif t is nn.Flatten:
                self._flatten(name, cast(nn.Flatten, m))
            elif t is nn.AdaptiveAvgPool2d:
                if m.output_size not in (1, (1, 1)) or self.layout != "spatial":
                    raise _unsupported(name, m, "only AdaptiveAvgPool2d(1) after a Conv2d")
                self.layout = "pooled"
            else:
                raise _unsupported(name, m)
        if self.layout == "pooled":
            raise ValueError(f"AdaptiveAvgPool2d(1) must be followed by Flatten; supported: {SUPPORTED}")

    def _weight(self, i: int, name: str, m: nn.Module) -> None:
        conv = type(m) is nn.Conv2d
        if conv and (self.layout in ("flat", "pooled") or m.groups != 1):
            raise _unsupported(name, m, "a Conv2d needs groups=1 and image input (no Linear or Flatten before it)")
        if not conv and self.layout in ("spatial", "pooled"):
            raise _unsupported(name, m, "a Linear after a Conv2d needs AdaptiveAvgPool2d(1) + Flatten before it")
        n_in = m.in_channels if conv else m.in_features
        if self.group is not None and n_in != self.widths[self.group]:
            raise ValueError(f"module {name!r} takes {n_in} inputs but the layer before it has "
                             f"{self.widths[self.group]} units")
        out: Optional[int] = None
        if i != self.last:
            out = len(self.widths)
            self.widths.append(cast(int, m.out_channels if conv else m.out_features))
            self.kinds.append("conv" if conv else "linear")
            self.producers.append(name)
            self.activations.append(name)
        self.axes[f"{name}.weight"] = (out, self.group) + ((None, None) if conv else ())
        if m.bias is not None:
            self.axes[f"{name}.bias"] = (out,)
        self.group = out
        self.layout = "spatial" if conv else "flat"

    def _batchnorm(self, name: str, m: nn.Module) -> None:
        want = "spatial" if type(m) is nn.BatchNorm2d else "flat"
        if self.layout not in (None, want):
            raise _unsupported(name, m, f"it follows a {self.layout} feature map")
        if self.group is not None and m.num_features != self.widths[self.group]:
            raise ValueError(f"module {name!r} has {m.num_features} features but the layer before it has "
                             f"{self.widths[self.group]} units")
        for key in ("weight", "bias", "running_mean", "running_var"):
            if getattr(m, key, None) is not None:
                self.axes[f"{name}.{key}"] = (self.group,)
        if getattr(m, "num_batches_tracked", None) is not None:
            self.axes[f"{name}.num_batches_tracked"] = ()
        self._extend_block(name)

    def _extend_block(self, name: str) -> None:
        if self.group is not None and name and self.layout in ("flat", "spatial"):
            self.activations[self.group] = name

    def _flatten(self, name: str, m: nn.Flatten) -> None:
        if (m.start_dim, m.end_dim) != (1, -1):
            raise _unsupported(name, m, "only Flatten(start_dim=1, end_dim=-1)")
        if self.layout == "pooled":
            self.layout = "flat"
        elif self.layout is None:
            self.layout = "flat"
        else:
            raise _unsupported(name, m, "Flatten is understood only as the first module or right after "
                                        "AdaptiveAvgPool2d(1)")


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """Permutation structure of a supported model.

    Parameters
    ----------
    model : nn.Module
        :class:`~qlandscape.models.MLP`, :class:`~qlandscape.models.SmallCNN` or a plain
        ``nn.Sequential`` chain (see ``SUPPORTED``); it is only read.

    Returns
    -------
    PermutationSpec

    Raises
    ------
    ValueError
        An unsupported module (named, with the supported list) or an inconsistent chain.
    """
    walker = _Walker(_chain(model))
    walker.run()
    keys = list(model.state_dict().keys())
    missing = [k for k in keys if k not in walker.axes]
    if missing:
        raise ValueError(f"the model holds tensors outside its layer chain ({missing}); supported: {SUPPORTED}")
    return PermutationSpec(widths=tuple(walker.widths), kinds=tuple(walker.kinds), producers=tuple(walker.producers),
                           activations=tuple(walker.activations), axes={k: walker.axes[k] for k in keys},
                           parameters=frozenset(n for n, _ in model.named_parameters()))


def check_permutations(spec: PermutationSpec, perms: Permutations) -> list[np.ndarray]:
    """Validate ``perms`` against ``spec``; returns them as int64 arrays.

    Raises
    ------
    ValueError
        Wrong number of permutations, or one that is not a permutation of ``0..width-1``.
    """
    if isinstance(perms, (np.ndarray, Tensor)) or not isinstance(perms, Sequence):
        raise ValueError(f"perms must be a list of {spec.n_layers} integer arrays (one per hidden layer), "
                         f"got {type(perms).__name__}")
    if len(perms) != spec.n_layers:
        raise ValueError(f"perms has {len(perms)} entries but the model has {spec.n_layers} hidden layers "
                         f"of widths {list(spec.widths)}; pass one permutation per hidden layer")
    out = []
    for layer, (p, n) in enumerate(zip(perms, spec.widths)):
        arr = p.detach().cpu().numpy() if isinstance(p, Tensor) else np.asarray(p)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"perms[{layer}] must hold integers, got dtype {arr.dtype}")
        if arr.shape != (n,) or not np.array_equal(np.sort(arr), np.arange(n)):
            raise ValueError(f"perms[{layer}] must be a permutation of 0..{n - 1} (hidden layer {layer} has {n} units), "
                             f"got {arr.tolist()}")
        out.append(arr.astype(np.int64))
    return out


def identity_permutations(spec: PermutationSpec) -> list[np.ndarray]:
    """``[arange(w) for w in spec.widths]``."""
    return [np.arange(n, dtype=np.int64) for n in spec.widths]


def random_permutations(spec: PermutationSpec, seed: int = 0) -> list[np.ndarray]:
    """Uniformly random permutations of every hidden layer (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n).astype(np.int64) for n in spec.widths]


def permute_state(state: Mapping[str, Tensor], spec: PermutationSpec, perms: Sequence[np.ndarray]) -> dict[str, Tensor]:
    """Permuted copies of the tensors in ``state`` (keys of ``spec.axes``; perms already validated)."""
    out = {}
    for key, value in state.items():
        for axis, group in enumerate(spec.axes[key]):
            if group is not None:
                value = value.index_select(axis, torch.as_tensor(perms[group], device=value.device))
        out[key] = value
    return out


def apply_permutations(model: nn.Module, perms: Permutations) -> nn.Module:
    """A deep copy of ``model`` with its hidden units permuted; ``model`` is not modified.

    Parameters
    ----------
    model : nn.Module
        A supported model (see :func:`permutation_spec`).
    perms : list of int arrays, length L
        ``perms[l]`` has shape ``(widths[l],)``; ``perms[l][i]`` is the original index of the unit
        placed at position ``i``.

    Returns
    -------
    nn.Module
        Computes the same function as ``model`` (exactly, up to floating-point summation order).
    """
    spec = permutation_spec(model)
    perms = check_permutations(spec, perms)
    copy = copy_module(model)
    target = copy.state_dict()
    with torch.no_grad():
        for key, value in permute_state(model.state_dict(), spec, perms).items():
            target[key].copy_(value)
    return copy
