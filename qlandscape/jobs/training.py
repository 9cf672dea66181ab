"""The ``train`` step every job builds on, and the check that its model is at (near) a minimum.

Every step that uses the trained model first checks that it is at (near) a minimum (:func:`fit_report`,
:mod:`qlandscape.fit`): a training that failed (diverged, non-finite, at chance accuracy) is one WARNING per
flag, one that only has not converged (gradient not small) an INFO line, once per process and trained model.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..config import RunConfig
from ..data import Dataset
from ..fit import FitReport, FitThresholds, assess_fit, gradient_norm
from ..results import ResultFileError
from ..rundir import RunDir, Stamp, atomic_write_bytes, open_rundir
from ..train import TrainResult, train
from .build import build_attack, build_dataset, build_model, load_weights, model_info
from .steps import step

__all__ = ["FIT_LOSS", "train_step", "ensure_trained", "fit_report", "checked_fit"]

log = logging.getLogger("qlandscape")


FIT_LOSS = "cross_entropy"
"""The loss :func:`ensure_trained` trains with (:func:`~qlandscape.train.train`'s default), so the loss whose
gradient :func:`fit_report` measures."""


_FIT_SEEN: dict[tuple[str, str], FitReport] = {}  # (run directory, train identity) -> report, logged once


def train_step(rd: RunDir, cfg: RunConfig, progress: bool,
               force: bool) -> tuple[tuple[nn.Module, TrainResult, Dataset], Stamp]:
    """The ``train`` step in an open run directory: train the configured model, or reuse ``model.pt``
    and ``train.{npz,json}`` trained from the same configuration values.

    Parameters
    ----------
    rd : RunDir
        The open run directory (:func:`~qlandscape.rundir.open_rundir`).
    cfg : RunConfig
    progress : bool
        Progress bar over epochs.
    force : bool
        Retrain, unless this run-directory session already trained.

    Returns
    -------
    (model, TrainResult, Dataset), Stamp
        The trained model (its weights at :attr:`TrainResult.minimum`), its training record,
        the data, and the step's stamp: pass ``{"train": stamp.identity}`` as the ``upstream`` of every step
        that uses the model. The model's fit is checked and logged once (:func:`fit_report`).
    """
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
            model.load_state_dict(load_weights(weights))
        except RuntimeError as exc:  # shapes or names that do not fit the configured model
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ResultFileError(f"{weights} does not fit the configured model ({first})") from None
        model.eval()
        return model, TrainResult.load(rd.path / "train"), ds

    value, stamp = step(rd, "train", cfg, outputs=("model.pt", "train.npz", "train.json"), upstream={},
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
        value, _ = train_step(rd, cfg, progress, force)
    return value
