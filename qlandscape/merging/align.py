"""Align the hidden units of one network to another's (Git Re-Basin, Ainsworth et al. 2023).

Two methods, both returning a permuted copy of ``model_b`` that computes ``model_b``'s function:

* weight matching (Algorithm 1 of Ainsworth et al.): maximize ``sum_k <W_a[k], P(W_b)[k]>`` over
  all parameters ``k`` by coordinate descent over the hidden layers in a seeded random order, one
  linear assignment problem (LAP) per layer with the other permutations fixed;
* activation matching: one LAP per layer on the cross-correlation of the two models' hidden
  post-activations on a batch of inputs (independent per layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..adapter import copy_module
from .permutation import (
    PermutationSpec,
    apply_permutations,
    identity_permutations,
    permutation_spec,
)

__all__ = ["AlignmentResult", "align_weights", "check_same_architecture", "hidden_activations", "weight_similarity"]

Method = Literal["weight", "activation"]


@dataclass
class AlignmentResult:
    """Output of :func:`align_weights`.

    Attributes
    ----------
    model : nn.Module
        Permuted copy of ``model_b`` aligned to ``model_a`` (same function as ``model_b``).
    permutations : list of int64 ndarray, shape (width_l,) each
        ``permutations[l][i]``: index in ``model_b`` of the unit at position ``i`` of ``model``.
    method : {"weight", "activation"}
    iterations : int
        Weight matching: full passes over the layers (the last one found no improvement unless
        ``max_iter`` was reached). Activation matching: 1.
    similarity_before, similarity_after : float
        Weight matching: ``sum_k <W_a[k], W_b[k]>`` over all parameters, before and after
        permuting ``model_b`` (:func:`weight_similarity`). Activation matching: mean over layers of
        the mean correlation of matched units (unit ``i`` with unit ``i`` before, with
        ``permutations[l][i]`` after).
    identity : list of bool, length L
        Whether each layer's permutation is the identity.
    converged : bool
        Weight matching stopped because a full pass gave no improvement (always True for activation).
    """

    model: nn.Module
    permutations: list[np.ndarray]
    method: str
    iterations: int
    similarity_before: float
    similarity_after: float
    identity: list[bool]
    converged: bool = True


# ---------------------------------------------------------------------------------------------- checks
def check_same_architecture(model_a: nn.Module, model_b: nn.Module) -> None:
    """Raise ValueError, naming the first difference, unless both models have the same layers and shapes.

    Compares the model classes, the module types in order and the ``state_dict`` keys and shapes.
    """
    if type(model_a) is not type(model_b):
        raise ValueError(f"model_a is a {type(model_a).__name__} but model_b is a {type(model_b).__name__}; "
                         "both models need the same architecture")
    sa, sb = model_a.state_dict(), model_b.state_dict()
    for (ka, va), (kb, vb) in zip(sa.items(), sb.items()):
        if ka != kb:
            raise ValueError(f"parameter {ka!r} of model_a has no counterpart in model_b (found {kb!r} there); "
                             "both models need the same architecture")
        if va.shape != vb.shape:
            raise ValueError(f"parameter {ka!r} has shape {tuple(va.shape)} in model_a but {tuple(vb.shape)} in "
                             "model_b; both models need the same layer types and widths")
    if len(sa) != len(sb):
        extra = list(sa)[len(sb):] or list(sb)[len(sa):]
        raise ValueError(f"parameter {extra[0]!r} exists in only one of the models; both models need the same "
                         "architecture")
    for (na, ma), (nb, mb) in zip(model_a.named_modules(), model_b.named_modules()):
        if na != nb or type(ma) is not type(mb):
            raise ValueError(f"module {na!r} is a {type(ma).__name__} in model_a but model_b has "
                             f"{type(mb).__name__} {nb!r} there; both models need the same layer types")


def _numpy_params(model: nn.Module, spec: PermutationSpec) -> dict[str, np.ndarray]:
    """The model's parameters (keys of ``spec.parameters``) as float64 arrays."""
    return {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items() if k in spec.parameters}


def _permute_array(value: np.ndarray, axes: tuple[Optional[int], ...], perms: Sequence[np.ndarray],
                   skip: Optional[int] = None) -> np.ndarray:
    """``value`` permuted along every axis whose group is not None and not ``skip``."""
    for axis, group in enumerate(axes):
        if group is not None and group != skip:
            value = np.take(value, perms[group], axis=axis)
    return value


def weight_similarity(model_a: nn.Module, model_b: nn.Module) -> float:
    """``sum_k <W_a[k], W_b[k]>_F`` over all parameters ``k`` (the inner product of the flat vectors)."""
    check_same_architecture(model_a, model_b)
    pa, pb = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    return float(sum(float((pa[k].detach().double() * pb[k].detach().double()).sum()) for k in pa))


def _total_similarity(pa: dict[str, np.ndarray], pb: dict[str, np.ndarray], spec: PermutationSpec,
                      perms: Sequence[np.ndarray]) -> float:
    return float(sum(float(np.sum(pa[k] * _permute_array(pb[k], spec.axes[k], perms))) for k in pa))


def _layer_matrix(layer: int, pa: dict[str, np.ndarray], pb: dict[str, np.ndarray], spec: PermutationSpec,
                  perms: Sequence[np.ndarray]) -> np.ndarray:
    """``S`` of shape (n, n): ``S[i, j]`` = similarity gained by placing unit ``j`` of b at position ``i``.

    Sums, over every parameter with an axis in group ``layer``, the inner products of the slices
    along that axis, with all other axes permuted by the current ``perms``.
    """
    n = spec.widths[layer]
    S = np.zeros((n, n))
    for key, a in pa.items():
        axes = spec.axes[key]
        for axis, group in enumerate(axes):
            if group == layer:
                b = _permute_array(pb[key], axes, perms, skip=layer)
                S += np.moveaxis(a, axis, 0).reshape(n, -1) @ np.moveaxis(b, axis, 0).reshape(n, -1).T
    return S


def _lap(S: np.ndarray) -> np.ndarray:
    """The permutation ``p`` maximizing ``sum_i S[i, p[i]]``."""
    rows, cols = linear_sum_assignment(S, maximize=True)
    perm = np.empty(S.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm


# ---------------------------------------------------------------------------------------------- weight matching
def _weight_matching(model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec, max_iter: int,
                     seed: int) -> tuple[list[np.ndarray], int, float, float, bool]:
    pa, pb = _numpy_params(model_a, spec), _numpy_params(model_b, spec)
    perms = identity_permutations(spec)
    before = _total_similarity(pa, pb, spec, perms)
    rng = np.random.default_rng(seed)
    iterations, converged = 0, spec.n_layers == 0
    while not converged and iterations < max_iter:
        iterations += 1
        improved = False
        for layer in rng.permutation(spec.n_layers):
            S = _layer_matrix(int(layer), pa, pb, spec, perms)
            rows = np.arange(S.shape[0])
            old = float(S[rows, perms[layer]].sum())
            candidate = _lap(S)
            new = float(S[rows, candidate].sum())
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[layer] = candidate
                improved = True
        converged = not improved
    return perms, iterations, before, _total_similarity(pa, pb, spec, perms), converged


# ---------------------------------------------------------------------------------------------- activation matching
def _as_inputs(data: object, model: nn.Module) -> Tensor:
    if data is None:
        raise ValueError("method='activation' needs data: pass a tensor of inputs, e.g. data=x_train[:500]")
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, Tensor):
        raise ValueError(f"data must be a tensor of inputs (B, ...), got {type(data).__name__}")
    if data.shape[0] < 2:
        raise ValueError(f"activation matching needs at least 2 inputs to correlate, got {data.shape[0]}")
    ref = next(model.parameters())
    return data.detach().to(device=ref.device, dtype=ref.dtype)


def hidden_activations(model: nn.Module, spec: PermutationSpec, x: Tensor) -> list[np.ndarray]:
    """Post-activation outputs of every hidden layer, in eval mode, as float64 ``(samples, units)`` arrays.

    Conv layers are flattened over batch and spatial positions: ``(B * H * W, C)``. ``model`` is
    not modified (a copy runs).
    """
    copy = copy_module(model).eval()
    modules = dict(copy.named_modules())
    outputs: dict[int, Tensor] = {}

    def hook(layer: int):  # type: ignore[no-untyped-def]
        def store(_module: nn.Module, _inputs: object, output: Tensor) -> None:
            outputs[layer] = output.detach()
        return store

    handles = [modules[name].register_forward_hook(hook(i)) for i, name in enumerate(spec.activations)]
    try:
        with torch.no_grad():
            copy(x)
    finally:
        for h in handles:
            h.remove()
    acts = []
    for layer in range(spec.n_layers):
        out = outputs[layer]
        if out.dim() == 4:
            out = out.permute(0, 2, 3, 1)
        acts.append(out.reshape(-1, spec.widths[layer]).double().cpu().numpy())
    return acts


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation ``C[i, j]`` of column ``i`` of ``a`` with column ``j`` of ``b`` (0 for constant units)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    cov = a.T @ b / a.shape[0]
    denom = np.outer(a.std(axis=0), b.std(axis=0))
    return np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)


def _activation_matching(model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec,
                         data: object) -> tuple[list[np.ndarray], float, float]:
    x = _as_inputs(data, model_a)
    acts_a, acts_b = hidden_activations(model_a, spec, x), hidden_activations(model_b, spec, x)
    perms, before, after = [], [], []
    for a, b in zip(acts_a, acts_b):
        C = _correlation(a, b)
        perm = _lap(C)
        perms.append(perm)
        rows = np.arange(C.shape[0])
        before.append(float(C[rows, rows].mean()))
        after.append(float(C[rows, perm].mean()))
    if not perms:
        return perms, 0.0, 0.0
    return perms, float(np.mean(before)), float(np.mean(after))


# ---------------------------------------------------------------------------------------------- entry point
def align_weights(model_a: nn.Module, model_b: nn.Module, method: Method = "weight",
                  data: Optional[Union[Tensor, np.ndarray]] = None, *, max_iter: int = 100,
                  seed: int = 0) -> AlignmentResult:
    """Permute ``model_b``'s hidden units to match ``model_a``'s (neither input is modified).

    Parameters
    ----------
    model_a, model_b : nn.Module
        Supported models (see :func:`~qlandscape.merging.permutation_spec`) of the same architecture.
    method : {"weight", "activation"}
        Weight matching (coordinate descent of LAPs, Ainsworth et al. 2023, Algorithm 1) or
        activation matching (one LAP per layer on the correlation of hidden post-activations).
    data : tensor, shape (B, ...), optional
        Inputs for activation matching (required there, B >= 2; ignored by weight matching).
    max_iter : int
        Weight matching: at most this many full passes over the layers (>= 1).
    seed : int
        Seeds the random layer order of weight matching.

    Returns
    -------
    AlignmentResult

    Notes
    -----
    Weight matching compares parameters only (weights, biases, BatchNorm affine parameters);
    BatchNorm running statistics are permuted with their units but do not enter the objective.
    A layer's permutation changes only if its LAP improves the similarity by more than a relative
    1e-12, so ties keep the current permutation and the descent cannot cycle.

    Raises
    ------
    ValueError
        Unsupported or mismatched architectures (naming the first difference), unknown method,
        missing data for ``method="activation"``, bad ``max_iter``.
    """
    if method not in ("weight", "activation"):
        raise ValueError(f"method must be 'weight' or 'activation', got {method!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    check_same_architecture(model_a, model_b)
    spec = permutation_spec(model_a)
    if method == "weight":
        perms, iterations, before, after, converged = _weight_matching(model_a, model_b, spec, int(max_iter),
                                                                       int(seed))
    else:
        perms, before, after = _activation_matching(model_a, model_b, spec, data)
        iterations, converged = 1, True
    return AlignmentResult(model=apply_permutations(model_b, perms), permutations=perms, method=method,
                           iterations=iterations, similarity_before=before, similarity_after=after,
                           identity=[bool(np.array_equal(p, np.arange(len(p)))) for p in perms],
                           converged=converged)
