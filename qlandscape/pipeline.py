"""The jobs behind the CLI: train (or reuse) a model, then Hessian analysis and scans.

Every step writes its result atomically into the output directory together with the digest
of the configuration sections it depends on; a rerun with the same configuration reuses
finished steps (so an interrupted job resumes), a changed configuration recomputes them.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .config import PATCH_KINDS, RunConfig
from .curvature import DensityResult, EigResult, TraceResult, hessian_eigs, hessian_trace, spectral_density
from .data import Dataset, load_digits
from .landscape import LandscapeScan, eigenvector_directions, pca_directions, random_direction, scan_1d, scan_2d
from .models import MLP, PatchMLP, SmallCNN
from .objective import Objective
from .results import Result, atomic_write_bytes
from .train import TrainResult, train

log = logging.getLogger("qlandscape")

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def build_dataset(cfg: RunConfig) -> Dataset:
    d = cfg.data
    return load_digits(classes=d.classes, test_size=d.test_size, downsample=d.downsample,
                       n_samples=d.n_samples, images=cfg.model.kind == "cnn", seed=d.seed)


def model_sections(cfg: RunConfig) -> tuple[str, ...]:
    """Config sections that define the model (``patch`` only matters for the patch models)."""
    return ("data", "model", "patch") if cfg.model.kind in PATCH_KINDS else ("data", "model")


def build_patch_qnn(cfg: RunConfig, ds: Dataset) -> nn.Module:
    """The ``[patch]`` quantum network for this dataset's image shape and class count.

    Digits inputs stay flat ``(N, H*W)``: PatchQNN views them as images itself.
    """
    from .quantum import PatchQNN  # PennyLane is imported only when a quantum model is built
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
    torch.manual_seed(m.seed)
    if m.kind == "mlp":
        return MLP(ds.n_features, m.hidden, ds.n_classes, m.activation)
    if m.kind == "cnn":
        return SmallCNN(1, m.channels, ds.n_classes, m.activation)
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


def _stamp_ok(path: Path, digest: str) -> bool:
    meta = path.with_suffix(".json")
    if not meta.is_file() or not path.with_suffix(".npz").is_file():
        return False
    try:
        stored = json.loads(meta.read_text())
    except json.JSONDecodeError:
        return False
    # results keep the digest in their provenance, a TrainResult in its config
    return digest in (stored.get("provenance", {}).get("config_digest"),
                      stored.get("config", {}).get("config_digest"))


def ensure_trained(cfg: RunConfig, out: Path, progress: bool = True,
                   force: bool = False) -> tuple[nn.Module, TrainResult, Dataset]:
    """Train the configured model, or reuse ``out/model.pt`` trained with the same config."""
    ds = build_dataset(cfg)
    model = build_model(cfg, ds)
    digest = cfg.digest(*model_sections(cfg), "train")
    weights = out / "model.pt"
    if not force and weights.is_file() and _stamp_ok(out / "train", digest):
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
        log.info("reusing trained model %s (config digest %s)", weights, digest)
        return model, TrainResult.load(out / "train"), ds
    t = cfg.train
    trained, result = train(model, ds, epochs=t.epochs, lr=t.lr, optimizer=t.optimizer,  # type: ignore[arg-type]
                            momentum=t.momentum, weight_decay=t.weight_decay, batch_size=t.batch_size,
                            record_every=t.record_every, seed=t.seed, progress=progress)
    result.config["config_digest"] = digest
    result.config["model_info"] = model_info(trained)
    buf = io.BytesIO()
    torch.save(trained.state_dict(), buf)
    atomic_write_bytes(weights, buf.getvalue())
    result.save(out / "train")
    log.info("trained %s: train loss %.4g, test accuracy %.3f", type(trained).__name__,
             result.train_loss[-1], result.test_metric[-1])
    return trained, result, ds


def build_objective(cfg: RunConfig, model: nn.Module, ds: Dataset) -> Objective:
    o = cfg.objective
    if o.split not in ("train", "test"):
        raise ValueError(f"objective.split must be 'train' or 'test', got {o.split!r}")
    if o.dtype not in _DTYPES:
        raise ValueError(f"objective.dtype must be one of {sorted(_DTYPES)}, got {o.dtype!r}")
    return Objective(model, "cross_entropy", ds.train if o.split == "train" else ds.test,
                     reduction=o.reduction, mode=o.mode, dtype=_DTYPES[o.dtype],  # type: ignore[arg-type]
                     params=list(o.params) if o.params else None, batch_size=o.batch_size,
                     seed=cfg.hessian.seed)


def _cached(path: Path, cls: type, digest: str, force: bool) -> Optional[Any]:
    if not force and _stamp_ok(path, digest):
        log.info("reusing %s (config digest %s)", path.name, digest)
        return cls.load(path)
    return None


def _save(result: Result, path: Path, digest: str, info: Optional[dict[str, Any]] = None) -> None:
    result.provenance["config_digest"] = digest  # type: ignore[attr-defined]
    if info is not None:
        result.provenance["model_info"] = info  # type: ignore[attr-defined]
    result.save(path)


def run_hessian(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False) -> dict[str, Result]:
    """Top-k eigenpairs, trace and spectral density of the trained model's Hessian."""
    model, _, ds = ensure_trained(cfg, out, progress, force=False)
    digest = cfg.digest(*model_sections(cfg), "train", "objective", "hessian")
    h = cfg.hessian
    info = model_info(model)
    results: dict[str, Result] = {}
    shared: list[Objective] = []

    def objective() -> Objective:  # built once, on first need: its cached graph serves all three
        if not shared:
            shared.append(build_objective(cfg, model, ds))
        return shared[0]

    eig = _cached(out / "hessian_eigs", EigResult, digest, force)
    if eig is None:
        eig = hessian_eigs(objective(), k=h.top_k, which=h.which, method=h.eig_method,  # type: ignore[arg-type]
                           tol=h.tol, seed=h.seed, progress=progress)
        _save(eig, out / "hessian_eigs", digest, info)
    results["eigs"] = eig
    tr = _cached(out / "hessian_trace", TraceResult, digest, force)
    if tr is None:
        tr = hessian_trace(objective(), method=h.trace_method,  # type: ignore[arg-type]
                           n_probes=h.trace_probes, seed=h.seed, progress=progress)
        _save(tr, out / "hessian_trace", digest, info)
    results["trace"] = tr
    dens = _cached(out / "hessian_density", DensityResult, digest, force)
    if dens is None:
        dens = spectral_density(objective(), n_probes=h.density_probes,
                                n_steps=h.density_steps, seed=h.seed, progress=progress)
        _save(dens, out / "hessian_density", digest, info)
        from .landscape.plot import save_figure
        save_figure(dens.plot(), str(out / "hessian_density.png"))
    results["density"] = dens
    return results


def scan_directions(cfg: RunConfig, objective: Objective, trajectory: Optional[np.ndarray],
                    progress: bool = True) -> tuple[list[torch.Tensor], dict[str, Any], Optional[np.ndarray]]:
    """Directions for the configured scan, a description of them, and (for PCA) the
    trajectory's coordinates in the scan plane."""
    s = cfg.scan
    if s.dims not in (1, 2):
        raise ValueError(f"scan.dims must be 1 or 2, got {s.dims}")
    info: dict[str, Any] = {"directions": s.directions, "seed": s.seed}
    coords = None
    if s.directions in ("filter", "layer", "model", "unit", "none"):
        dirs = [random_direction(objective.space, objective.theta0, normalization=s.directions,  # type: ignore[arg-type]
                                 one_d=s.one_d, seed=s.seed + i) for i in range(s.dims)]  # type: ignore[arg-type]
        info.update(normalization=s.directions, one_d=s.one_d)
    elif s.directions == "eigenvector":
        eig = hessian_eigs(objective, k=s.dims, tol=cfg.hessian.tol, seed=s.seed, progress=progress)
        dirs = eigenvector_directions(eig, s.dims)
        info.update(eigenvalues=eig.eigenvalues.tolist())
    elif s.directions == "pca":
        if trajectory is None or trajectory.shape[0] < s.dims + 1:
            raise ValueError("PCA directions need a training trajectory with more checkpoints than scan.dims")
        if objective.n_params != trajectory.shape[1]:
            raise ValueError("PCA directions need objective.params to cover all parameters")
        pca = pca_directions(trajectory, k=s.dims)
        dirs = [torch.as_tensor(pca.directions[i]) for i in range(s.dims)]
        info.update(explained_variance_ratio=pca.explained_variance_ratio.tolist())
        coords = pca.coords
    else:
        raise ValueError(f"unknown scan.directions {s.directions!r}; use filter, layer, model, unit, "
                         "eigenvector or pca")
    if s.dims == 2 and s.directions in ("filter", "layer", "model", "unit", "none"):
        info["cosine_d1_d2"] = float(torch.nn.functional.cosine_similarity(dirs[0], dirs[1], dim=0))
    return dirs, info, coords


def trajectory_spans(coords: np.ndarray, margin: float) -> list[tuple[float, float]]:
    """Per-axis scan ranges covering a trajectory's plane coordinates and the centre.

    Parameters
    ----------
    coords : ndarray, shape (T, k)
        Checkpoint coordinates relative to the scan centre.
    margin : float
        Each range ``[lo, hi]`` (including 0) is widened by ``margin * (hi - lo)`` on both sides.

    Returns
    -------
    list of (lo, hi), length k
    """
    spans = []
    for c in np.asarray(coords, dtype=np.float64).T:
        lo, hi = min(float(c.min()), 0.0), max(float(c.max()), 0.0)
        extent = hi - lo if hi > lo else 1.0
        spans.append((lo - margin * extent, hi + margin * extent))
    return spans


def run_scan(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False,
             name: str = "scan") -> LandscapeScan:
    """1D or 2D loss-landscape scan of the trained model; writes ``out/<name>.{npz,json}`` and PNGs."""
    model, tr, ds = ensure_trained(cfg, out, progress, force=False)
    digest = cfg.digest(*model_sections(cfg), "train", "objective", "scan")
    s = cfg.scan
    cached = _cached(out / name, LandscapeScan, digest, force)
    if cached is not None:
        return cached
    objective = build_objective(cfg, model, ds)
    dirs, info, coords = scan_directions(cfg, objective, tr.trajectory, progress)
    spans: list[tuple[float, float]] = [(-s.span, s.span)] * s.dims
    if s.span_mode == "trajectory":
        assert coords is not None
        spans = trajectory_spans(coords, s.margin)
        info.update(span_mode="trajectory", margin=s.margin, spans=[list(sp) for sp in spans])
    if s.dims == 1:
        res = scan_1d(objective, dirs[0], span=spans[0], n_points=s.n_points, float32=s.float32,
                      info=info, progress=progress)
    else:
        res = scan_2d(objective, dirs[0], dirs[1], span=(spans[0], spans[1]), n_points=s.n_points,
                      float32=s.float32, info=info, progress=progress)
    _save(res, out / name, digest, model_info(model))
    from .landscape.plot import plot_contour, save_figure
    if s.dims == 2:
        save_figure(plot_contour(res, log=s.log_plot, trajectory=coords), str(out / f"{name}.png"))
        save_figure(res.plot_surface(log=s.log_plot), str(out / f"{name}_surface.png"))
    else:
        save_figure(res.plot(), str(out / f"{name}.png"))
    return res
