"""Flat-vector <-> named-parameter mapping over a chosen subset of a model's parameters.

Every engine routine works on one flat vector ``theta`` of shape ``(n,)``; a
:class:`ParamSpace` records which named parameters the vector covers, in which order,
and with which shapes, so that ``unflatten(flatten(p)) == p`` exactly.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Mapping, Pattern, Sequence, Union

import torch
from torch import Tensor, nn

ParamSelector = Union[None, str, Pattern[str], Sequence[Union[str, Pattern[str]]]]
"""How to choose parameters: ``None`` (all with ``requires_grad``), a glob such as
``"layers.0.*"``, a compiled regex, or a list of exact names / globs / regexes."""


def select_parameter_names(model: nn.Module, selector: ParamSelector = None) -> list[str]:
    """Names of the parameters of ``model`` chosen by ``selector``, in module order.

    Parameters
    ----------
    model : nn.Module
        The model; it is only read.
    selector : ParamSelector
        ``None`` selects every parameter with ``requires_grad=True``. A string is an exact
        name or a glob (``fnmatch``); a compiled ``re.Pattern`` is matched with
        ``fullmatch``; a sequence selects the union, still in module order.

    Raises
    ------
    ValueError
        If the selection is empty or names a parameter the model does not have.
    """
    names = [name for name, _ in model.named_parameters()]
    if selector is None:
        chosen = [name for name, p in model.named_parameters() if p.requires_grad]
        if not chosen:
            raise ValueError("the model has no parameter with requires_grad=True; "
                             "pass params=[...] to choose parameters explicitly")
        return chosen
    patterns: list[Union[str, Pattern[str]]]
    if isinstance(selector, (str, re.Pattern)):
        patterns = [selector]
    else:
        patterns = list(selector)
    if not patterns:
        raise ValueError("params selection is an empty list; pass None to select all parameters")
    chosen_set: set[str] = set()
    for pat in patterns:
        if isinstance(pat, re.Pattern):
            hits = [n for n in names if pat.fullmatch(n)]
        elif isinstance(pat, str):
            hits = [n for n in names if n == pat or fnmatch.fnmatchcase(n, pat)]
        else:
            raise TypeError(f"parameter selector entries must be str or re.Pattern, got {type(pat).__name__}")
        if not hits:
            raise ValueError(f"parameter selector {pat!r} matches none of the model's parameters; "
                             f"available: {names}")
        chosen_set.update(hits)
    return [n for n in names if n in chosen_set]


@dataclass(frozen=True)
class ParamSpace:
    """Layout of a flat parameter vector.

    Attributes
    ----------
    names : tuple of str
        Parameter names, in vector order.
    shapes : tuple of torch.Size
        Shape of each parameter.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def from_module(cls, model: nn.Module, selector: ParamSelector = None) -> "ParamSpace":
        """Layout of the parameters of ``model`` chosen by ``selector``."""
        params = dict(model.named_parameters())
        names = select_parameter_names(model, selector)
        return cls(tuple(names), tuple(params[n].shape for n in names))

    @cached_property
    def numels(self) -> tuple[int, ...]:
        """Number of entries of each parameter."""
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start index of each parameter in the flat vector, plus the total at the end."""
        out = [0]
        for k in self.numels:
            out.append(out[-1] + k)
        return tuple(out)

    @cached_property
    def size(self) -> int:
        """Length ``n`` of the flat vector."""
        return self.offsets[-1]

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Concatenate the named tensors into a flat vector of shape ``(n,)``."""
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise KeyError(f"missing parameters for flatten: {missing}")
        parts = []
        for name, shape in zip(self.names, self.shapes):
            t = tensors[name]
            if t.shape != shape:
                raise ValueError(f"parameter {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
            parts.append(t.reshape(-1))
        return torch.cat(parts)

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split ``vec`` of shape ``(..., n)`` into named views of shape ``(..., *shape)``."""
        if vec.shape[-1] != self.size:
            raise ValueError(f"flat vector has length {vec.shape[-1]}, this parameter space has {self.size}")
        lead = vec.shape[:-1]
        offs = self.offsets
        sizes = [offs[i + 1] - offs[i] for i in range(len(self.names))]
        # torch.split, not one slice per tensor: its backward is one concatenation, where each slice's backward
        # would scatter into its own zero vector of length n (per output row under jacrev/vmap)
        parts = torch.split(vec, sizes, dim=-1)
        return {name: part.reshape(*lead, *shape) for name, shape, part in zip(self.names, self.shapes, parts)}

    def slices(self) -> Iterable[tuple[str, slice, torch.Size]]:
        """Yield ``(name, slice into the flat vector, shape)`` for each parameter."""
        offs = self.offsets
        for i, (name, shape) in enumerate(zip(self.names, self.shapes)):
            yield name, slice(offs[i], offs[i + 1]), shape

    def from_module_values(self, model: nn.Module, dtype: torch.dtype | None = None) -> Tensor:
        """Current values of the selected parameters of ``model`` as a detached flat copy."""
        params = dict(model.named_parameters())
        vec = self.flatten({n: params[n].detach() for n in self.names}).clone()
        return vec if dtype is None else vec.to(dtype)
