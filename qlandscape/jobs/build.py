"""Objects a job builds from its configuration: the dataset, the model, the attack, the loss, the objective."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adversarial import Attack, valid_range
from ..config import OBJECTIVE_LOSSES, RunConfig
from ..data import Dataset, load_digits
from ..losses import LossFunction, LossSpec
from ..models import MLP, PatchMLP, SmallCNN
from ..objective import Objective
from ..results import ResultFileError

__all__ = ["DTYPES", "build_dataset", "shape_only_dataset", "build_patch_qnn", "build_model", "model_info",
           "load_weights", "build_attack", "build_loss", "build_objective"]


DTYPES = {"float64": torch.float64, "float32": torch.float32}


_BUILD_LOCK = threading.RLock()


def build_dataset(cfg: RunConfig) -> Dataset:
    """The ``[data]`` dataset: sklearn digits, or MNIST from local files (``n_samples`` -> ``n_train``);
    ``(N, 1, H, W)`` images for ``model.kind="cnn"``, flat ``(N, H*W)`` inputs otherwise."""
    d = cfg.data
    if d.dataset == "mnist":
        from ..data import load_mnist
        return load_mnist(d.path, source=d.source, classes=d.classes, n_train=d.n_samples,
                          preprocessing=d.preprocessing, images=cfg.model.kind == "cnn", seed=d.seed)
    return load_digits(classes=d.classes, test_size=d.test_size, downsample=d.downsample,
                       n_samples=d.n_samples, images=cfg.model.kind == "cnn", seed=d.seed)


def shape_only_dataset(cfg: RunConfig) -> Dataset:
    """A two-sample stand-in (zeros) with the input shape and classes :func:`build_dataset` would give:
    models are built from shapes, so a configuration's model can be checked without loading data."""
    d = cfg.data
    if d.dataset == "mnist":
        side = 14 if d.preprocessing == "kawase2025" else 28
    else:
        side = d.downsample or 8
    classes = tuple(d.classes) if d.classes else tuple(range(10))
    shape = (2, 1, side, side) if cfg.model.kind == "cnn" else (2, side * side)
    x, y = torch.zeros(shape), torch.arange(2) % len(classes)
    return Dataset(x, y, x, y, (side, side), classes)


def build_patch_qnn(cfg: RunConfig, ds: Dataset) -> nn.Module:
    """The ``[patch]`` quantum network for this dataset's image shape and class count.

    Digits inputs stay flat ``(N, H*W)``: PatchQNN views them as images itself.
    """
    from ..quantum import PatchQNN  # PennyLane is imported only when a quantum model is built
    p = cfg.patch
    kw = p.overrides()
    kw.pop("device", None)
    return PatchQNN(p.preset, device=p.device, image_shape=tuple(ds.image_shape), n_classes=ds.n_classes,
                    batch_size=cfg.train.batch_size, **kw)


def build_model(cfg: RunConfig, ds: Dataset) -> nn.Module:
    """The configured model, deterministically initialized (``model.seed``; ``patch.seed`` for the QNN).

    ``"patch_mlp"`` is :meth:`PatchMLP.matched_to` the ``"patch_qnn"`` this config would build.
    """
    m = cfg.model
    with _BUILD_LOCK:  # the seeded draws come from torch's process-wide generator: one build at a time
        torch.manual_seed(m.seed)
        if m.kind == "mlp":
            return MLP(ds.n_features, m.hidden, ds.n_classes, m.activation, dropout=m.dropout, batchnorm=m.batchnorm)
        if m.kind == "cnn":
            return SmallCNN(1, m.channels, ds.n_classes, m.activation, dropout=m.dropout, batchnorm=m.batchnorm)
        if m.kind == "patch_qnn":
            return build_patch_qnn(cfg, ds)
        if m.kind == "patch_mlp":
            return PatchMLP.matched_to(build_patch_qnn(cfg, ds), seed=m.seed)
    raise ValueError(f"unknown model kind {m.kind!r}; use 'mlp', 'cnn', 'patch_qnn' or 'patch_mlp'")


def model_info(model: nn.Module) -> dict[str, Any]:
    """JSON-able description of a model for provenance: class, parameter count and, for the patch
    models, their resolved configuration (QNN: the simulator device choice and why; MLP: the matched
    parameter counts) and patch grid."""
    info: dict[str, Any] = {"class": type(model).__name__,
                            "n_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad))}
    grid = getattr(model, "grid", None)
    if grid is not None:
        info["grid"] = {"image_shape": list(grid.image_shape), "patch_shape": list(grid.patch_shape),
                        "stride": list(grid.stride), "n_patches": grid.n_patches, "n_features": grid.n_features}
    choice = getattr(model, "device_choice", None)
    if choice is not None:
        info["device_choice"] = choice.as_dict()
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        info["config"] = json.loads(json.dumps(config, default=str))
    matched = getattr(model, "matched_info", None)
    if matched:
        info["matched"] = dict(matched)
    return info


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)``; an unreadable file is a :class:`ResultFileError`
    (torch's own message would suggest unpickling it with ``weights_only=False``)."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ResultFileError(f"{path} is missing") from None
    except Exception:  # noqa: BLE001 - RuntimeError, UnpicklingError, EOFError, ...: all mean "not weights"
        raise ResultFileError(f"{path} is not a readable state dict (truncated or corrupted)") from None
    if not isinstance(state, dict):
        raise ResultFileError(f"{path} does not hold a state dict")
    return state


def build_attack(cfg: RunConfig, ds: Dataset, *, evaluation: bool = False) -> Attack:
    """The ``[adversarial]`` attack on ``ds``: for training, or (``evaluation``) the stronger one that measures
    robust accuracy (``eval_steps`` steps). ``clamp="data"`` keeps inputs within the range of the train and test
    inputs; the random starts are seeded by ``train.seed``."""
    a = cfg.adversarial
    clamp = valid_range(ds.x_train, ds.x_test) if a.clamp == "data" else None
    return Attack(kind=a.kind, norm=a.norm, epsilon=a.epsilon,  # type: ignore[arg-type]
                  steps=a.eval_steps if evaluation else a.steps, step_size=a.step_size,
                  random_start=a.random_start, clamp=clamp, seed=cfg.train.seed)


def _one_hot_targets(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(y.long(), out.shape[-1]).to(out.dtype)


def _mse_one_hot(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out - _one_hot_targets(out, y)).square().mean(dim=-1)


def _bce_one_hot(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(
        out, _one_hot_targets(out, y), reduction="none").mean(dim=-1)


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(dim=-1) == y).to(out.dtype)


def build_loss(name: str) -> LossSpec:
    """The per-sample loss of ``objective.loss`` for the jobs' models (logits ``(B, C)``, integer
    labels ``(B,)``).

    Parameters
    ----------
    name : {"cross_entropy", "mse", "bce_with_logits"}
        Cross-entropy of the logits; the squared error of the logits against one-hot targets, averaged
        over the ``C`` classes (``F.mse_loss(logits, one_hot(y))`` per sample); or one-vs-rest binary
        cross-entropy of the logits against one-hot targets, averaged over the classes. The last two
        report argmax accuracy as their metric.

    Returns
    -------
    str or LossFunction
        Something :class:`~qlandscape.objective.Objective` accepts as ``loss``.
    """
    if name == "cross_entropy":
        return name
    if name == "mse":
        return LossFunction("mse_one_hot", _mse_one_hot, _accuracy)
    if name == "bce_with_logits":
        return LossFunction("bce_with_logits_one_hot", _bce_one_hot, _accuracy)
    raise ValueError(f"objective.loss must be one of {list(OBJECTIVE_LOSSES)}, got {name!r}")


def build_objective(cfg: RunConfig, model: nn.Module, ds: Dataset) -> Objective:
    """The ``[objective]`` loss (:func:`build_loss`) of ``model`` on the configured split of ``ds``;
    fixed train-mode Dropout masks are seeded by ``hessian.seed``."""
    o = cfg.objective
    return Objective(model, build_loss(o.loss), ds.train if o.split == "train" else ds.test,
                     reduction=o.reduction, mode=o.mode, dtype=DTYPES[o.dtype],  # type: ignore[arg-type]
                     params=list(o.params) if o.params else None, batch_size=o.batch_size,
                     dropout=o.dropout, seed=cfg.hessian.seed)  # type: ignore[arg-type]
