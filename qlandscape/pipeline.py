"""The jobs behind the CLI: train (or reuse) a model, then Hessian analysis and scans.

Every step writes its result atomically into the output directory, then a stamp recording the
configuration values it read, the steps it built on and the checksums of its files
(:mod:`qlandscape.rundir`); a rerun reuses a finished step while all of those hold (so an interrupted
job resumes) and recomputes it, with one log line saying why, when any does not.

Every step that uses the trained model first checks that it is at (near) a minimum (:func:`fit_report`,
:mod:`qlandscape.fit`): a training that failed (diverged, non-finite, at chance accuracy) is one WARNING per
flag, one that only has not converged (gradient not small) an INFO line, once per process and trained model.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from .adversarial import Attack, valid_range
from .config import OBJECTIVE_LOSSES, RANDOM_DIRECTIONS, RunConfig
from .configview import ConfigReads, recorder_of
from .curvature import DensityResult, EigResult, TraceResult, hessian_eigs, hessian_trace, spectral_density
from .data import Dataset, load_digits
from .fit import FitReport, FitThresholds, assess_fit, gradient_norm
from .landscape import (
    LandscapeScan,
    eigenvector_directions,
    pca_directions,
    random_direction,
    resolve_one_d,
    scan_1d,
    scan_2d,
    trajectory_spans,
)
from .losses import LossFunction, LossSpec
from .models import MLP, PatchMLP, SmallCNN
from .objective import Objective
from .results import Result, ResultFileError
from .rundir import Drawers, RunDir, Stamp, atomic_write_bytes, open_rundir
from .train import TrainResult, train

log = logging.getLogger("qlandscape")

_DTYPES = {"float64": torch.float64, "float32": torch.float32}
_BUILD_LOCK = threading.RLock()

FIT_LOSS = "cross_entropy"
"""The loss :func:`ensure_trained` trains with (:func:`~qlandscape.train.train`'s default), so the loss whose
gradient :func:`fit_report` measures."""
_FIT_SEEN: dict[tuple[str, str], FitReport] = {}  # (run directory, train identity) -> report, logged once


def build_dataset(cfg: RunConfig) -> Dataset:
    """The ``[data]`` dataset: sklearn digits, or MNIST from local files (``n_samples`` -> ``n_train``);
    ``(N, 1, H, W)`` images for ``model.kind="cnn"``, flat ``(N, H*W)`` inputs otherwise."""
    d = cfg.data
    if d.dataset == "mnist":
        from .data import load_mnist
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


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
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


def _train_step(rd: RunDir, cfg: RunConfig, progress: bool,
                force: bool) -> tuple[tuple[nn.Module, TrainResult, Dataset], Stamp]:
    """The ``train`` step in an open run directory; also returns its stamp (whose identity keys
    every downstream step)."""
    weights = rd.path / "model.pt"

    def compute(c: RunConfig) -> tuple[nn.Module, TrainResult, Dataset]:
        ds = build_dataset(c)
        model = build_model(c, ds)
        t = c.train
        trained, result = train(model, ds, epochs=t.epochs, lr=t.lr, optimizer=t.optimizer,  # type: ignore[arg-type]
                                momentum=t.momentum, weight_decay=t.weight_decay, batch_size=t.batch_size,
                                record_every=t.record_every, seed=t.seed, progress=progress,
                                schedule=t.schedule, t_max=t.t_max, select=t.minimum,  # type: ignore[arg-type]
                                record_steps=t.record_steps,
                                attack=build_attack(c, ds) if t.adversarial else None)
        try:  # ``model`` is still the initialization: train() trained a copy
            report = fit_report(trained, result, ds, initial_model=model, batch_size=t.batch_size)
        except (ValueError, RuntimeError, FloatingPointError) as exc:  # the check never costs a finished training
            log.warning("fit check: the full-data gradient could not be computed (%s); the trained model is "
                        "not checked for being at a minimum", _first_line(exc))
        else:
            result.config["fit"] = {"grad_norm": report.grad_norm, "initial_grad_norm": report.initial_grad_norm,
                                    "report": report.to_dict()}
        return trained, result, ds

    def save(value: tuple[nn.Module, TrainResult, Dataset], key: str) -> None:
        trained, result, _ = value
        result.config["config_digest"] = key
        result.config["model_info"] = model_info(trained)
        buf = io.BytesIO()
        torch.save(trained.state_dict(), buf)
        atomic_write_bytes(weights, buf.getvalue())
        result.save(rd.path / "train")
        log.info("trained %s: train loss %.4g, test accuracy %.3f", type(trained).__name__,
                 result.train_loss[result.minimum], result.test_metric[result.minimum])

    def load() -> tuple[nn.Module, TrainResult, Dataset]:
        ds = build_dataset(cfg)
        model = build_model(cfg, ds)
        try:
            model.load_state_dict(_load_weights(weights))
        except RuntimeError as exc:  # shapes or names that do not fit the configured model
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ResultFileError(f"{weights} does not fit the configured model ({first})") from None
        model.eval()
        return model, TrainResult.load(rd.path / "train"), ds

    value, stamp = _step(rd, "train", cfg, outputs=("model.pt", "train.npz", "train.json"), upstream={},
                         force=force, compute=compute, save=save, load=load)
    _check_fit(rd, stamp, cfg, *value)
    return value, stamp


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _majority_rate(y: torch.Tensor) -> Optional[float]:
    """Fraction of the most frequent class among the labels ``y`` (N,): the accuracy of always predicting it;
    None when there is only one class."""
    counts = torch.bincount(y.detach().to("cpu", torch.int64).reshape(-1))
    rate = float(counts.max()) / float(counts.sum()) if counts.numel() else 1.0
    return rate if rate < 1 else None


def fit_report(model: nn.Module, tr: TrainResult, ds: Dataset, cfg: Optional[RunConfig] = None, *,
               initial_model: Optional[nn.Module] = None, batch_size: Optional[int] = None,
               thresholds: Optional[FitThresholds] = None) -> FitReport:
    """Whether the trained ``model`` is at (near) a minimum of its training loss (:func:`qlandscape.fit.assess_fit`).

    Chance accuracy is the majority-class rate of ``ds``'s training labels (>= ``1 / n_classes``: the
    accuracy of always predicting the most frequent class), with the binomial margin of its
    ``N = len(ds.y_train)`` samples. The gradient norms are those the train step stored in
    ``tr.config["fit"]`` (:func:`ensure_trained` computes them once, after training); a result without them
    (trained by an older version, or by :func:`~qlandscape.train.train` directly) gets them computed here:
    two full-data gradients of the cross-entropy (:data:`FIT_LOSS`) on ``ds.train``, in float64.
    No logging: :func:`ensure_trained` logs the flags.

    Parameters
    ----------
    model : nn.Module
        The trained model (``tr``'s record :attr:`~TrainResult.minimum`).
    tr : TrainResult
    ds : Dataset
        The data it was trained on.
    cfg : RunConfig, optional
        Builds the initial model (:func:`build_model`, deterministic) and sets the gradient chunks
        (``train.batch_size``) when the norms must be computed.
    initial_model : nn.Module, optional
        The initialization, instead of building it from ``cfg``. With neither, the initial gradient is taken
        at ``tr.trajectory[0]`` in ``model`` (exact for models without buffers; with BatchNorm the running
        statistics are the trained ones).
    batch_size : int, optional
        Gradient chunks (samples); default ``cfg.train.batch_size``, else one chunk.
    thresholds : FitThresholds, optional

    Returns
    -------
    FitReport
    """
    stored = tr.config.get("fit") if isinstance(tr.config, dict) else None
    if isinstance(stored, dict) and "grad_norm" in stored and "initial_grad_norm" in stored:
        g, g0 = stored["grad_norm"], stored["initial_grad_norm"]
        g = float("nan") if g is None else float(g)
        g0 = float("nan") if g0 is None else float(g0)
    else:
        chunk = batch_size if batch_size is not None else (cfg.train.batch_size if cfg is not None else None)
        g = gradient_norm(model, FIT_LOSS, ds.train, batch_size=chunk)
        if initial_model is None and cfg is not None:
            initial_model = build_model(cfg, ds)
        if initial_model is not None:
            g0 = gradient_norm(initial_model, FIT_LOSS, ds.train, batch_size=chunk)
        else:
            g0 = gradient_norm(model, FIT_LOSS, ds.train, theta=np.asarray(tr.trajectory)[0], batch_size=chunk)
    return assess_fit(tr, n_classes=ds.n_classes, grad_norm=g, initial_grad_norm=g0, thresholds=thresholds,
                      n_samples=int(ds.y_train.shape[0]), chance_accuracy=_majority_rate(ds.y_train))


def _check_fit(rd: RunDir, stamp: Stamp, cfg: RunConfig, model: nn.Module, tr: TrainResult,
               ds: Dataset) -> Optional[FitReport]:
    """The fit of the train step's model, logged once per process and trained model: one WARNING per flag when
    the training failed (a flag of :data:`~qlandscape.fit.FAILURE_FLAGS`), an INFO line when it only has not
    converged (``gradient_not_small`` alone: every short smoke run)."""
    key = (str(rd.path.resolve()), stamp.identity)
    if key in _FIT_SEEN:
        _FIT_SEEN[key] = _FIT_SEEN.pop(key)  # most recent last (checked_fit)
        return _FIT_SEEN[key]
    try:
        report = fit_report(model, tr, ds, cfg)
    except (ValueError, RuntimeError, FloatingPointError) as exc:
        log.warning("fit check: not done (%s); the trained model is not checked for being at a minimum",
                    _first_line(exc))
        return None
    _FIT_SEEN[key] = report
    level = logging.WARNING if report.failed else logging.INFO
    for message in report.messages:
        log.log(level, "fit check: %s", message)
    return report


def checked_fit(out: Path) -> Optional[FitReport]:
    """The fit verdict of the model most recently trained or reused in the run directory ``out`` by this
    process (what the train step checked and logged), or None when none was checked here."""
    path = str(Path(out).resolve())
    reports = [report for (where, _), report in _FIT_SEEN.items() if where == path]
    return reports[-1] if reports else None


def ensure_trained(cfg: RunConfig, out: Path, progress: bool = True,
                   force: bool = False) -> tuple[nn.Module, TrainResult, Dataset]:
    """Train the configured model, or reuse ``out/model.pt`` trained from the same configuration values.

    ``force`` retrains, once per run-directory session (a command that trains and then analyses
    trains once). The trained model's fit is checked (:func:`fit_report`; its gradient norms are stored in
    ``train.json``'s ``config["fit"]``) and each flag logged once per process: as a WARNING when the training
    failed (diverged, non-finite, chance accuracy), at INFO when it only has not converged
    (``gradient_not_small`` alone).
    """
    with open_rundir(out) as rd:
        value, _ = _train_step(rd, cfg, progress, force)
    return value


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
    """The per-sample loss of ``objective.loss`` for the pipeline's models (logits ``(B, C)``, integer
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
                     reduction=o.reduction, mode=o.mode, dtype=_DTYPES[o.dtype],  # type: ignore[arg-type]
                     params=list(o.params) if o.params else None, batch_size=o.batch_size,
                     dropout=o.dropout, seed=cfg.hessian.seed)  # type: ignore[arg-type]


T = TypeVar("T")


def _step(rd: RunDir, step: str, cfg: RunConfig, *, outputs: tuple[str, ...], upstream: Mapping[str, str],
          force: bool, compute: Callable[[RunConfig], T], save: Callable[[T, str], None], load: Callable[[], T],
          figures: Optional[Callable[[T, RunConfig], Drawers]] = None,
          figure_names: tuple[str, ...] = ()) -> tuple[T, Stamp]:
    """Reuse or compute one step of the pipeline (see :mod:`qlandscape.rundir`).

    Parameters
    ----------
    rd : RunDir
        The open run directory.
    step : str
        Its name (the stamp's name).
    cfg : RunConfig
        The configuration; ``compute`` and ``figures`` get a view of it that records what they read.
    outputs : tuple of str
        The files ``save`` writes, relative to the run directory.
    upstream : mapping
        Identity of each earlier step whose output ``compute`` uses.
    force : bool
        Recompute, unless this session already computed the step.
    compute, save, load
        ``compute(cfg_view)`` makes the value, ``save(value, key)`` writes ``outputs`` (``key``: the
        digest of the values read, for the files' own provenance), ``load()`` reads them back (raising
        :class:`~qlandscape.results.ResultFileError` when they are unusable).
    figures : callable, optional
        ``figures(value, cfg_view)``: the figures of the step, drawn after saving, and redrawn from the
        stored value when missing.
    figure_names : tuple of str
        Every figure the step may draw under any configuration: deleted before it recomputes.

    Returns
    -------
    value, Stamp
    """
    if not (force and step not in rd.fresh):
        stamp = rd.check(step, cfg, upstream, outputs)
        if stamp is not None:
            try:
                value = load()
            except ResultFileError as exc:
                log.warning("%s; recomputing %s", exc, step)
            else:
                log.info("reusing %s (config digest %s)", step, stamp.key)
                if figures is not None:
                    stamp = rd.draw(stamp, functools.partial(figures, value), cfg)
                return value, stamp
    rd.begin(step, figure_names)
    rec = ConfigReads(cfg)
    value = compute(rec.typed_view(RunConfig))
    key = Stamp(step, rec.reads, dict(upstream), {}).key
    save(value, key)
    stamp = rd.stamp_files(step, outputs, rec.reads, upstream)
    rd.commit(stamp)
    rd.fresh.add(step)
    if figures is not None:
        stamp = rd.draw(stamp, functools.partial(figures, value), cfg, redraw=True)
    return value, stamp


def _save(result: Result, path: Path, digest: str, info: Optional[dict[str, Any]] = None) -> None:
    result.provenance["config_digest"] = digest  # type: ignore[attr-defined]
    if info is not None:
        result.provenance["model_info"] = info  # type: ignore[attr-defined]
    result.save(path)


R = TypeVar("R", bound=Result)


def _result_step(rd: RunDir, step: str, cls: type[R], cfg: RunConfig, upstream: Mapping[str, str], force: bool,
                 info: dict[str, Any], compute: Callable[[RunConfig], R],
                 figures: Optional[Callable[[R, RunConfig], Drawers]] = None,
                 figure_names: tuple[str, ...] = ()) -> R:
    """:func:`_step` for a :class:`Result` stored as ``<step>.npz`` + ``<step>.json``."""
    path = rd.path / step
    value, _ = _step(rd, step, cfg, outputs=(f"{step}.npz", f"{step}.json"), upstream=upstream, force=force,
                     compute=compute, save=lambda res, key: _save(res, path, key, info),
                     load=lambda: cls.load(path), figures=figures, figure_names=figure_names)
    return value


HESSIAN_PARTS: tuple[str, ...] = ("eigs", "trace", "density")


def run_hessian(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False,
                parts: Sequence[str] = HESSIAN_PARTS) -> dict[str, Result]:
    """Top-k eigenpairs, trace and spectral density of the trained model's Hessian (three steps,
    ``hessian_eigs``, ``hessian_trace`` and ``hessian_density``, each reused on its own).

    ``force`` recomputes them and the training they depend on; ``parts`` chooses which of
    "eigs", "trace" and "density" to compute (the returned dict has those keys).
    """
    unknown = sorted(set(parts) - set(HESSIAN_PARTS))
    if unknown:
        raise ValueError(f"unknown Hessian part(s) {unknown}; choose from {list(HESSIAN_PARTS)}")
    with open_rundir(out) as rd:
        (model, _, ds), trained = _train_step(rd, cfg, progress, force)
        upstream = {"train": trained.identity}
        info = model_info(model)
        shared: list[tuple[Objective, ConfigReads]] = []

        def objective(c: RunConfig) -> Objective:
            """Built once, on first need (its cached graph serves all three steps); every step that
            uses it is keyed by the configuration values that building it read."""
            if not shared:
                rec = ConfigReads(cfg)
                shared.append((build_objective(rec.typed_view(RunConfig), model, ds), rec))
            recorder_of(c).merge(shared[0][1])
            return shared[0][0]

        def eigs(c: RunConfig) -> EigResult:
            h = c.hessian
            return hessian_eigs(objective(c), k=h.top_k, which=h.which, method=h.eig_method,  # type: ignore[arg-type]
                                tol=h.tol, seed=h.seed, progress=progress)

        def trace(c: RunConfig) -> TraceResult:
            h = c.hessian
            return hessian_trace(objective(c), method=h.trace_method,  # type: ignore[arg-type]
                                 n_probes=h.trace_probes, seed=h.seed, progress=progress)

        def density(c: RunConfig) -> DensityResult:
            h = c.hessian
            return spectral_density(objective(c), n_probes=h.density_probes, n_steps=h.density_steps,
                                    seed=h.seed, progress=progress)

        def density_figures(res: DensityResult, c: RunConfig) -> Drawers:
            return {"hessian_density.png": res.plot}

        steps: dict[str, Callable[[], Result]] = {
            "eigs": lambda: _result_step(rd, "hessian_eigs", EigResult, cfg, upstream, force, info, eigs),
            "trace": lambda: _result_step(rd, "hessian_trace", TraceResult, cfg, upstream, force, info, trace),
            "density": lambda: _result_step(rd, "hessian_density", DensityResult, cfg, upstream, force, info, density,
                                            figures=density_figures, figure_names=("hessian_density.png",)),
        }
        return {part: step() for part, step in steps.items() if part in parts}


def scan_directions(cfg: RunConfig, objective: Objective, trajectory: Optional[np.ndarray],
                    progress: bool = True, center: int = -1,
                    ) -> tuple[list[torch.Tensor], dict[str, Any], Optional[np.ndarray]]:
    """Directions for the configured scan, a description of them, and (for PCA) the
    trajectory's coordinates in the scan plane, whose origin is checkpoint ``center`` (the trained
    model's: :attr:`TrainResult.minimum`)."""
    s = cfg.scan  # ScanConfig has checked dims (1 or 2) and the direction kind
    info: dict[str, Any] = {"directions": s.directions, "seed": s.seed}
    coords = None
    if s.directions in RANDOM_DIRECTIONS:
        dirs = [random_direction(objective.space, objective.theta0, normalization=s.directions,  # type: ignore[arg-type]
                                 one_d=s.one_d, seed=s.seed + i) for i in range(s.dims)]  # type: ignore[arg-type]
        info.update(normalization=s.directions, one_d=resolve_one_d(objective.space, s.one_d))  # type: ignore[arg-type]
    elif s.directions == "eigenvector":
        eig = hessian_eigs(objective, k=s.dims, tol=cfg.hessian.tol, seed=s.seed, progress=progress)
        dirs = eigenvector_directions(eig, s.dims)
        info.update(eigenvalues=eig.eigenvalues.tolist())
    elif s.directions == "pca":
        if trajectory is None or trajectory.shape[0] < s.dims + 1:
            raise ValueError("PCA directions need a training trajectory with more checkpoints than scan.dims")
        if objective.n_params != trajectory.shape[1]:
            raise ValueError("PCA directions need objective.params to cover all parameters")
        pca = pca_directions(trajectory, k=s.dims, center=center)
        dirs = [torch.as_tensor(pca.directions[i]) for i in range(s.dims)]
        info.update(explained_variance_ratio=pca.explained_variance_ratio.tolist())
        coords = pca.coords
    else:
        raise ValueError(f"unknown scan.directions {s.directions!r}; use filter, layer, model, unit, none, "
                         "eigenvector or pca")
    if s.dims == 2 and s.directions in RANDOM_DIRECTIONS:
        info["cosine_d1_d2"] = float(torch.nn.functional.cosine_similarity(dirs[0], dirs[1], dim=0))
    return dirs, info, coords


def _scan_figures(name: str, trajectory: np.ndarray, center: int, res: LandscapeScan, cfg: RunConfig) -> Drawers:
    """``<name>.png`` (curve or contours, a PCA scan with its trajectory) and, in 2D, ``<name>_surface.png``."""
    log_plot = cfg.scan.log_plot
    if res.loss.ndim == 1:
        return {f"{name}.png": res.plot}

    def contour() -> Any:
        from .landscape.plot import plot_contour
        coords = pca_directions(trajectory, k=2, center=center).coords if res.info.get("directions") == "pca" else None
        return plot_contour(res, log=log_plot, trajectory=coords)

    return {f"{name}.png": contour, f"{name}_surface.png": lambda: res.plot_surface(log=log_plot)}


def run_scan(cfg: RunConfig, out: Path, progress: bool = True, force: bool = False,
             name: str = "scan") -> LandscapeScan:
    """1D or 2D loss-landscape scan of the trained model; writes ``out/<name>.{npz,json}`` and PNGs.

    ``force`` recomputes it and the training it depends on.
    """
    with open_rundir(out) as rd:
        (model, tr, ds), trained = _train_step(rd, cfg, progress, force)

        def compute(cfg: RunConfig) -> LandscapeScan:
            s = cfg.scan
            objective = build_objective(cfg, model, ds)
            dirs, info, coords = scan_directions(cfg, objective, tr.trajectory, progress, center=tr.minimum)
            spans: list[tuple[float, float]] = [(-s.fixed_span(), s.fixed_span())] * s.dims
            if s.resolved_span_mode() == "trajectory":
                assert coords is not None
                spans = trajectory_spans(coords, s.margin)
                info.update(span_mode="trajectory", margin=s.margin, spans=[list(sp) for sp in spans])
            if s.dims == 1:
                return scan_1d(objective, dirs[0], span=spans[0], n_points=s.n_points, float32=s.float32,
                               info=info, progress=progress)
            return scan_2d(objective, dirs[0], dirs[1], span=(spans[0], spans[1]), n_points=s.n_points,
                           float32=s.float32, info=info, progress=progress)

        return _result_step(rd, name, LandscapeScan, cfg, {"train": trained.identity}, force, model_info(model),
                            compute, figures=functools.partial(_scan_figures, name, tr.trajectory, tr.minimum),
                            figure_names=(f"{name}.png", f"{name}_surface.png"))
