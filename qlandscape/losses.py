"""Per-sample losses and metrics.

The engine sums per-sample losses over chunks and divides by the dataset size itself, so
an uneven last batch is weighted correctly and ``reduction`` is a property of the
:class:`~qlandscape.objective.Objective`, never of the loss function.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn

PerSampleLoss = Callable[[Tensor, Tensor], Tensor]
"""``(outputs (B, ...), targets (B, ...)) -> per-sample losses (B,)``."""

LossSpec = Union[str, nn.Module, PerSampleLoss]


def _mean_over_sample(per_element: Tensor) -> Tensor:
    """Reduce a ``(B, ...)`` per-element loss to ``(B,)`` by averaging the non-batch dims."""
    if per_element.dim() <= 1:
        return per_element
    return per_element.reshape(per_element.shape[0], -1).mean(dim=1)


def _cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(out, y, reduction="none")


def _nll(out: Tensor, y: Tensor) -> Tensor:
    return F.nll_loss(out, y, reduction="none")


def _mse(out: Tensor, y: Tensor) -> Tensor:
    return _mean_over_sample(F.mse_loss(out, y.reshape(out.shape).to(out.dtype), reduction="none"))


def _bce_logits(out: Tensor, y: Tensor) -> Tensor:
    return _mean_over_sample(
        F.binary_cross_entropy_with_logits(out, y.reshape(out.shape).to(out.dtype), reduction="none"))


def _accuracy_argmax(out: Tensor, y: Tensor) -> Tensor:
    return (out.argmax(dim=-1) == y).to(out.dtype)


def _accuracy_sign(out: Tensor, y: Tensor) -> Tensor:
    return _mean_over_sample(((out > 0).to(out.dtype) == y.reshape(out.shape).to(out.dtype)).to(out.dtype))


_NAMED: dict[str, tuple[PerSampleLoss, Optional[PerSampleLoss]]] = {
    "cross_entropy": (_cross_entropy, _accuracy_argmax),
    "nll": (_nll, _accuracy_argmax),
    "mse": (_mse, None),
    "bce_with_logits": (_bce_logits, _accuracy_sign),
}


@dataclass(frozen=True)
class LossFunction:
    """A per-sample loss with an optional per-sample metric (accuracy for classifiers).

    Attributes
    ----------
    name : str
        Human-readable name recorded in result provenance.
    per_sample : callable
        ``(outputs (B, ...), targets (B, ...)) -> (B,)`` losses.
    metric : callable or None
        ``(outputs, targets) -> (B,)`` per-sample metric in ``[0, 1]`` (accuracy), or None.
    """

    name: str
    per_sample: PerSampleLoss
    metric: Optional[PerSampleLoss] = None


def make_loss(spec: LossSpec, metric: Optional[PerSampleLoss] = None) -> LossFunction:
    """Normalize a loss specification.

    Parameters
    ----------
    spec : str, nn.Module or callable
        ``"cross_entropy"``, ``"nll"``, ``"mse"``, ``"bce_with_logits"``; a torch loss module
        with a ``reduction`` attribute (``nn.CrossEntropyLoss()`` ...), which is copied with
        ``reduction="none"`` (the given module is not modified); or a callable that already
        returns per-sample losses of shape ``(B,)``.
    metric : callable, optional
        Per-sample metric overriding the default (accuracy for classification losses).

    Raises
    ------
    ValueError
        For an unknown loss name.
    """
    if isinstance(spec, LossFunction):
        return spec if metric is None else LossFunction(spec.name, spec.per_sample, metric)
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(f"unknown loss {spec!r}; choose one of {sorted(_NAMED)} "
                             "or pass a callable returning per-sample losses")
        fn, default_metric = _NAMED[spec]
        return LossFunction(spec, fn, metric if metric is not None else default_metric)
    if isinstance(spec, nn.Module) and hasattr(spec, "reduction"):
        module = copy.deepcopy(spec)
        module.reduction = "none"
        default_metric = None
        if isinstance(spec, (nn.CrossEntropyLoss, nn.NLLLoss)):
            default_metric = _accuracy_argmax
        elif isinstance(spec, nn.BCEWithLogitsLoss):
            default_metric = _accuracy_sign

        def per_sample(out: Tensor, y: Tensor) -> Tensor:
            return _mean_over_sample(module(out, y))

        return LossFunction(type(spec).__name__, per_sample, metric if metric is not None else default_metric)
    if callable(spec):
        return LossFunction(getattr(spec, "__name__", type(spec).__name__), spec, metric)
    raise TypeError(f"loss must be a name, a torch loss module or a callable, got {type(spec).__name__}")
