"""A diverged training is never published as a minimum: qlandscape.fit's verdict, the pipeline's warnings,
and a spectral density that raises instead of returning NaN at overflowing curvature."""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pytest
import torch

from qlandscape import jobs
from qlandscape.config import load_config
from qlandscape.curvature.operator import MatrixOperator
from qlandscape.curvature.spectrum import ZERO_SPECTRUM_SIGMA, SpectrumOverflowError, spectral_density
from qlandscape.data import load_digits
from qlandscape.fit import (
    FAILURE_FLAGS,
    FIT_FLAGS,
    FitReport,
    FitThresholds,
    assess_fit,
    gradient_norm,
)
from qlandscape.models import MLP
from qlandscape.train import TrainResult, train


@pytest.fixture(scope="module")
def digits():
    return load_digits(n_samples=300, downsample=4, seed=0)  # 240 training samples, 16 features, 10 classes


def _trained(ds, lr: float, epochs: int, optimizer: str = "sgd"):
    torch.manual_seed(0)
    init = MLP(ds.n_features, [16], ds.n_classes, "tanh")
    model, tr = train(init, ds, epochs=epochs, lr=lr, optimizer=optimizer, batch_size=32, progress=False)
    g = gradient_norm(model, "cross_entropy", ds.train)
    g0 = gradient_norm(init, "cross_entropy", ds.train)
    return assess_fit(tr, n_classes=ds.n_classes, grad_norm=g, initial_grad_norm=g0, n_samples=len(ds.y_train))


def _result(loss, acc, traj=None) -> TrainResult:
    loss, acc = np.asarray(loss, dtype=float), np.asarray(acc, dtype=float)
    T = len(loss)
    return TrainResult(trajectory=np.zeros((T, 3)) if traj is None else np.asarray(traj, dtype=float),
                       steps=np.arange(T) * 10, train_loss=loss, train_metric=acc, test_loss=loss, test_metric=acc)


# ------------------------------------------------------------------------------ the verdict
def test_a_diverged_training_is_flagged_as_failed(digits):
    report = _trained(digits, lr=1e6, epochs=3)
    assert "loss_above_start" in report.flags and report.failed and not report.ok
    assert report.loss > 1e3 * report.initial_loss
    assert any(m.startswith("loss_above_start:") and "diverged" in m and "learning rate" in m
               for m in report.messages)
    assert len(report.messages) == len(report.flags)
    assert "not a minimum" in report.summary()


def test_a_healthy_tiny_training_is_not_flagged(digits):
    report = _trained(digits, lr=0.01, epochs=40, optimizer="adam")
    assert report.ok and report.flags == [] and report.messages == [], report.messages
    assert report.loss < report.initial_loss and report.accuracy > 0.9 and report.grad_norm_rel < 0.2
    assert report.summary().startswith("fit ok")


def test_accuracy_at_chance_is_flagged_with_a_binomial_margin():
    th = FitThresholds()
    # 225 samples at chance 0.1: 2 std = 0.04 < 0.05, so the margin is 0.05
    at_chance = assess_fit(_result([2.3, 2.2], [0.1, 0.14]), n_classes=10, n_samples=225)
    assert at_chance.flags == ["chance_accuracy"] and at_chance.failed
    assert at_chance.chance_threshold == pytest.approx(0.15)
    assert not assess_fit(_result([2.3, 2.2], [0.1, 0.2]), n_classes=10, n_samples=225).flags
    # 40 samples: 2 std = 0.095 widens the margin
    assert th.chance_threshold(0.1, 40) == pytest.approx(0.1 + 2 * math.sqrt(0.09 / 40))
    assert assess_fit(_result([2.3, 2.2], [0.1, 0.19]), n_classes=10, n_samples=40).flags == ["chance_accuracy"]
    # the caller's chance (a majority-class rate) overrides 1 / C; unknown chance is not checked
    assert assess_fit(_result([2.3, 2.2], [0.1, 0.3]), chance_accuracy=0.26).flags == ["chance_accuracy"]
    unknown = assess_fit(_result([2.3, 2.2], [0.1, 0.1]))
    assert unknown.ok and math.isnan(unknown.chance_accuracy)


def test_non_finite_loss_parameters_or_gradient_are_flagged():
    nan_loss = assess_fit(_result([2.3, float("nan")], [0.1, 0.1]))
    assert nan_loss.flags == ["non_finite"] and "nan" in nan_loss.messages[0]
    inf_params = assess_fit(_result([2.3, 1.0], [0.1, 0.9], traj=[[0, 0, 0], [1, np.inf, np.nan]]))
    assert inf_params.flags == ["non_finite"] and "2 of 3 trained parameters" in inf_params.messages[0]
    inf_grad = assess_fit(_result([2.3, 1.0], [0.1, 0.9]), grad_norm=float("inf"), initial_grad_norm=1.0)
    assert inf_grad.flags == ["non_finite"] and inf_grad.failed
    torch.manual_seed(0)
    model = MLP(4, [3], 2, "tanh")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    assert gradient_norm(model, "cross_entropy", (torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1]))) == math.inf


def test_a_gradient_not_halved_is_flagged_but_is_not_a_failure():
    report = assess_fit(_result([2.3, 1.0], [0.1, 0.6]), n_classes=10, grad_norm=0.6, initial_grad_norm=1.0)
    assert report.flags == ["gradient_not_small"] and not report.failed and not report.ok
    assert report.grad_norm_rel == pytest.approx(0.6) and "0.6 of its initial" in report.messages[0]
    assert assess_fit(_result([2.3, 1.0], [0.1, 0.6]), grad_norm=0.4, initial_grad_norm=1.0).ok
    assert math.isnan(assess_fit(_result([2.3, 1.0], [0.1, 0.6]), grad_norm=0.4).grad_norm_rel)  # no initial


def test_the_thresholds_have_their_documented_values():
    th = FitThresholds()
    assert (th.loss_rtol, th.chance_margin, th.chance_stds, th.grad_rel_max) == (0.0, 0.05, 2.0, 0.5)
    assert FIT_FLAGS == ("non_finite", "loss_above_start", "chance_accuracy", "gradient_not_small")
    assert FAILURE_FLAGS == FIT_FLAGS[:3]
    assert th.chance_threshold(0.5, None) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="grad_rel_max"):
        FitThresholds(grad_rel_max=float("nan"))
    strict = FitThresholds(grad_rel_max=0.1)
    assert assess_fit(_result([2.3, 1.0], [0.1, 0.9]), grad_norm=0.2, initial_grad_norm=1.0,
                      thresholds=strict).flags == ["gradient_not_small"]


def test_the_json_dict_round_trips():
    report = assess_fit(_result([2.3, float("nan")], [0.1, float("nan")]), n_classes=10, n_samples=50,
                        grad_norm=float("inf"), initial_grad_norm=2.0)
    raw = json.loads(json.dumps(report.to_dict(), allow_nan=False))  # strict JSON: NaN/inf -> null
    assert raw["loss"] is None and raw["grad_norm"] is None and raw["ok"] is False
    back = FitReport.from_dict(raw)
    assert back.to_dict() == raw and back.flags == report.flags and back.messages == report.messages
    assert back.thresholds == report.thresholds and back.n_samples == 50 and back.initial_loss == 2.3
    with pytest.raises(ValueError, match="unknown fit flag"):
        FitReport.from_dict(dict(raw, flags=["flat_minimum"]))


# ------------------------------------------------------------------------------ the pipeline
TINY = ["data.n_samples=200", "data.downsample=4", "model.hidden=[8]", "train.epochs=2"]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "qlandscape" and r.levelno >= logging.WARNING]


def test_the_pipeline_warns_once_per_flag_for_a_diverged_training(tmp_path, caplog, monkeypatch):
    cfg = load_config(None, TINY + ["train.lr=1e6"])
    with caplog.at_level(logging.INFO, logger="qlandscape"):
        model, tr, ds = jobs.ensure_trained(cfg, tmp_path / "run", progress=False)
        jobs.ensure_trained(cfg, tmp_path / "run", progress=False)  # reused: not warned twice
    warned = _warnings(caplog)
    report = jobs.fit_report(model, tr, ds, cfg)
    assert report.failed and "loss_above_start" in report.flags
    assert len(warned) == len(report.flags) and all(w.startswith("fit check: ") for w in warned), warned
    assert any("loss_above_start" in w and "diverged" in w for w in warned)
    stored = tr.config["fit"]
    assert stored["report"]["flags"] == report.flags and stored["grad_norm"] == report.grad_norm
    # a new process reuses the stored gradient norms (no gradient computed) and warns again
    monkeypatch.setattr(jobs.training, "_FIT_SEEN", {})
    monkeypatch.setattr(jobs.training, "gradient_norm", lambda *a, **k: pytest.fail("gradient recomputed"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qlandscape"):
        jobs.ensure_trained(cfg, tmp_path / "run", progress=False)
    assert _warnings(caplog) == warned


def test_the_pipeline_does_not_warn_for_a_healthy_training(tmp_path, caplog):
    cfg = load_config(None, TINY[:-1] + ["train.epochs=30"])
    with caplog.at_level(logging.INFO, logger="qlandscape"):
        model, tr, ds = jobs.ensure_trained(cfg, tmp_path / "run", progress=False)
    assert _warnings(caplog) == [] and not any("fit check" in r.getMessage() for r in caplog.records)
    report = jobs.fit_report(model, tr, ds, cfg)
    assert report.ok and report.chance_accuracy == pytest.approx(
        float(torch.bincount(ds.y_train).max()) / len(ds.y_train))


# ------------------------------------------------------------------------------ the spectral density
def _diag(values) -> MatrixOperator:
    return MatrixOperator(torch.diag(torch.as_tensor(values, dtype=torch.float64)))


def test_the_density_raises_at_overflowing_curvature_and_is_unchanged_at_normal_curvature():
    ev = torch.linspace(-1.0, 3.0, 16, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray numpy RuntimeWarning either
        with pytest.raises(SpectrumOverflowError, match="trace estimate is not finite") as exc:
            spectral_density(_diag(ev * 1.7e307), n_probes=2, n_steps=16, progress=False)
        with pytest.raises(FloatingPointError, match="Lanczos recurrence is not finite at step 1") as exc2:
            spectral_density(_diag(ev * 1e308), n_probes=2, n_steps=16, progress=False)  # entries overflow: inf
        normal = spectral_density(_diag(ev), n_probes=3, n_steps=16, progress=False)
    for e in (exc, exc2):
        assert "not have curvature of this size" in str(e.value) and "learning rate" in str(e.value)
        assert "rescale" in str(e.value)
    for p in range(3):  # a full Krylov space: nodes are the eigenvalues, weights a probability vector
        assert np.allclose(np.sort(normal.nodes[p]), ev.numpy(), atol=1e-12)
    assert normal.sigma == pytest.approx(4.0 / 200) and np.isfinite(normal.density).all()
    assert np.trapezoid(normal.density, normal.grid) == pytest.approx(1.0, abs=1e-3)


def test_a_huge_but_representable_hessian_gives_its_scaled_spectrum_not_a_collapsed_one():
    ev = torch.linspace(1.0, 10.0, 20, dtype=torch.float64)
    unit = spectral_density(_diag(ev), n_probes=2, n_steps=20, progress=False)
    huge = spectral_density(_diag(ev * 1e200), n_probes=2, n_steps=20, progress=False)
    assert np.all(huge.lengths == 20)  # the overflowing row norm does not end the recurrence
    assert np.allclose(huge.nodes / 1e200, unit.nodes, rtol=1e-9)
    assert huge.lambda_max / 1e200 == pytest.approx(10.0) and huge.lambda_min / 1e200 == pytest.approx(1.0)
    assert huge.trace_estimate / 1e200 == pytest.approx(unit.trace_estimate) and np.isfinite(huge.trace_stderr)


def test_a_zero_hessian_density_is_finite_and_warned_without_numpy_warnings(caplog):
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="qlandscape"):
        warnings.simplefilter("error")
        d = spectral_density(MatrixOperator(torch.zeros(12, 12, dtype=torch.float64)), n_probes=2, n_steps=5,
                             progress=False)
    assert d.sigma == ZERO_SPECTRUM_SIGMA and np.isfinite(d.density).all() and d.lambda_max == 0.0
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-3)
    assert any("every Ritz value" in w and "exactly 0" in w for w in _warnings(caplog))
    with pytest.raises(ValueError, match="sigma must be a finite positive number"):
        spectral_density(MatrixOperator(torch.eye(4, dtype=torch.float64)), sigma=float("nan"), progress=False)
