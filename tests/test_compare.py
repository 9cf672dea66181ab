"""Patch models through the configuration, the pipeline and the CLI; ``qlandscape compare``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from qlandscape import LandscapeScan, TrainResult
from qlandscape.cli import main
from qlandscape.config import (
    PATCH_AGGREGATIONS,
    PATCH_ANSATZE,
    PATCH_DEVICES,
    PATCH_DIFF_METHODS,
    PATCH_ENCODINGS,
    PATCH_PRESETS,
    load_config,
)
from qlandscape.jobs import build_dataset, build_model

# A tiny patch QNN: 4 patches of 4 qubits, one layer, no positional bias.
TINY_QNN = ["model.kind='patch_qnn'", "patch.layers=1", "patch.positional_bias=false", "train.epochs=2",
            "train.optimizer='adam'", "train.lr=0.05", "hessian.top_k=2", "hessian.eig_method='lanczos'",
            "hessian.tol=1e-2", "hessian.trace_method='hutchinson'", "hessian.trace_probes=4",
            "hessian.density_probes=1", "hessian.density_steps=4", "scan.n_points=3"]


def _args(cmd, out, overrides):
    args = [cmd, "--out", str(out), "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    return args


# ------------------------------------------------------------------ configuration
def test_patch_choices_agree_with_the_quantum_package():
    from qlandscape.quantum import circuits, devices, patch_qnn
    assert PATCH_ENCODINGS == circuits.ENCODINGS and PATCH_ANSATZE == circuits.ANSATZE
    assert PATCH_AGGREGATIONS == patch_qnn.AGGREGATIONS
    assert PATCH_DEVICES == ("auto", *devices.KNOWN_DEVICES) and PATCH_DIFF_METHODS == devices.DIFF_METHODS
    assert set(PATCH_PRESETS) == set(patch_qnn._PRESETS)


def test_patch_section_defaults_and_overrides():
    cfg = load_config(None, ["patch.n_patches=9", "patch.coefficient=5", "patch.device='default.qubit'"])
    assert cfg.patch.preset == "digits" and cfg.patch.layers is None and cfg.patch.coefficient == 5.0
    assert cfg.patch.overrides() == {"n_patches": 9, "coefficient": 5.0, "device": "default.qubit",
                                     "simulator": "auto", "order": 2, "torch_device": "auto"}


@pytest.mark.parametrize("override, key, words", [
    ("patch.device='gpu'", "device", ["'gpu'", "lightning.qubit", "auto"]),        # bad choice
    ("patch.preset='mnist'", "preset", ["'mnist'", "kawase2025"]),
    ("patch.aggregation='max'", "aggregation", ["'max'", "linear"]),
    ("patch.n_qubits='four'", "n_qubits", ["'four'", "integer"]),                  # bad type
    ("patch.coefficient='big'", "coefficient", ["'big'", "number"]),
    ("patch.positional_bias=maybe", "positional_bias", ["true or false"]),
    ("patch.layers=0", "layers", [">= 1", "got 0"]),                               # out of range
    ("patch.coefficient=-1", "coefficient", ["> 0"]),
    ("patch.seed=-3", "seed", [">= 0"]),
    ("model.kind='rnn'", "kind", ["'rnn'", "patch_qnn", "patch_mlp"]),
    ("scan.span_mode='extent'", "span_mode", ["'auto'", "trajectory"]),
    ("hessian.eig_method='qr'", "eig_method", ["lanczos"]),
    ("patch.qubits=4", "qubits", ["unknown key", "n_qubits"]),
])
def test_bad_patch_configuration_is_exit_code_2_with_one_line(tmp_path, capsys, override, key, words):
    for cmd in ("train", "compare"):
        assert main([cmd, "--out", str(tmp_path), "--set", override]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("qlandscape: configuration error:")
        assert key in err and all(w in err for w in words), err


@pytest.mark.parametrize("override", ["model.dropout=0.2", "model.batchnorm=true"])
def test_compare_refuses_options_the_patch_models_lack_before_any_work(tmp_path, capsys, override):
    out = tmp_path / "run"
    assert main(["compare", "--fast", "--out", str(out), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and override.split("=")[0] in err and "patch_qnn" in err
    assert not out.exists()


def test_bad_patch_value_in_a_toml_file_is_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[patch]\nn_encodings = 1.5\n")
    assert main(["hessian", "--config", str(bad), "--out", str(tmp_path)]) == 2
    assert "n_encodings" in capsys.readouterr().err


# ------------------------------------------------------------------ models from the config
def test_build_model_patch_kinds_share_the_grid():
    cfg = load_config(None, ["model.kind='patch_qnn'", "data.n_samples=50", "patch.n_patches=9"])
    ds = build_dataset(cfg)
    assert ds.x_train.shape[1:] == (64,)  # flat digits: PatchQNN views them as images
    qnn = build_model(cfg, ds)
    mlp = build_model(load_config(None, ["model.kind='patch_mlp'", "data.n_samples=50", "patch.n_patches=9"]), ds)
    assert type(qnn).__name__ == "PatchQNN" and type(mlp).__name__ == "PatchMLP"
    assert mlp.grid == qnn.grid and mlp.grid.n_patches == 9
    assert mlp.matched_info["qnn_n_params"] == qnn.n_params
    assert qnn(ds.x_train[:3]).shape == mlp(ds.x_train[:3]).shape == (3, 10)


def cfg_patches(extra):
    return load_config(None, TINY_QNN + list(extra)).patch.n_patches or 4


def _run_patch_qnn_commands(out, device, extra=()):
    overrides = TINY_QNN + [f"patch.device='{device}'", *extra]
    assert main(_args("train", out, overrides)) == 0
    assert main(_args("hessian", out, overrides)) == 0
    assert main(_args("scan", out, overrides + ["scan.directions='pca'", "scan.span_mode='trajectory'"])) == 0
    info = json.loads((out / "train.json").read_text())["config"]["model_info"]
    assert info["class"] == "PatchQNN" and info["device_choice"]["name"] == device
    assert info["device_choice"]["reason"] and info["grid"]["n_patches"] == cfg_patches(extra)
    eig = json.loads((out / "hessian_eigs.json").read_text())
    assert eig["provenance"]["model_info"]["device_choice"]["name"] == device
    scan = LandscapeScan.load(out / "scan")
    tr = TrainResult.load(out / "train")
    assert scan.info["directions"] == "pca" and scan.info["span_mode"] == "trajectory"
    assert np.all(np.isfinite(scan.loss))
    # the trajectory (relative to the trained point) lies inside the scanned rectangle
    from qlandscape import pca_directions
    coords = pca_directions(tr.trajectory, k=2).coords
    assert scan.alphas[0] < coords[:, 0].min() and coords[:, 0].max() < scan.alphas[-1]
    # model.pt loads into a freshly built PatchQNN and reproduces the trained parameters
    cfg = load_config(None, overrides)
    ds = build_dataset(cfg)
    fresh = build_model(cfg, ds)
    fresh.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    theta = np.concatenate([p.detach().double().reshape(-1).numpy() for p in fresh.parameters()])
    assert np.allclose(theta, tr.trajectory[-1])
    return fresh, ds


def test_patch_qnn_train_hessian_scan_on_default_qubit(tmp_path):
    _run_patch_qnn_commands(tmp_path, "default.qubit", ["data.n_samples=40"])


@pytest.mark.slow  # ~18 s on one thread
def test_patch_qnn_train_hessian_scan_on_lightning_qubit(tmp_path):
    """lightning.qubit: adjoint gradients, Hessian-vector products by central differences of them
    (one tape per sample: a single 8x8 patch keeps this test fast)."""
    pytest.importorskip("pennylane_lightning")
    _run_patch_qnn_commands(tmp_path, "lightning.qubit", ["data.n_samples=20", "patch.n_patches=1"])
    prov = json.loads((tmp_path / "hessian_eigs.json").read_text())["provenance"]
    assert prov["second_order"] == "finite-difference-of-gradients"


def test_patch_mlp_interpolation_and_scan(tmp_path):
    """The classical baseline through the pipeline, and an init -> trained interpolation."""
    import qlandscape as ql
    from qlandscape.jobs import build_objective, ensure_trained
    overrides = ["model.kind='patch_mlp'", "data.n_samples=60", "train.epochs=2", "scan.n_points=3"]
    assert main(_args("scan", tmp_path, overrides)) == 0
    cfg = load_config(None, overrides)
    model, tr, ds = ensure_trained(cfg, tmp_path, progress=False)
    info = tr.config["model_info"]
    assert info["class"] == "PatchMLP" and info["matched"]["mlp_n_params"] == info["n_params"]
    res = ql.interpolate(build_objective(cfg, model, ds), torch.as_tensor(tr.trajectory[0]),
                         torch.as_tensor(tr.trajectory[-1]), n_points=5, progress=False)
    assert np.isfinite(res.barrier)


# ------------------------------------------------------------------ compare
TINY_COMPARE = ["data.n_samples=60", "train.epochs=2", "patch.layers=1", "hessian.top_k=2", "hessian.tol=1e-2",
                "hessian.trace_probes=4", "hessian.density_probes=1", "hessian.density_steps=4", "scan.n_points=3"]


def test_compare_writes_the_report_and_reuses_results(tmp_path, caplog):
    out = tmp_path / "cmp"
    args = _args("compare", out, TINY_COMPARE) + ["--fast"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"patch_qnn", "patch_mlp"} and report["fast"] is True
    for kind, entry in report["models"].items():
        for key in ("kind", "n_params", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                    "top_eigenvalues", "eigenvalue_error_bounds", "trace", "trace_stderr", "device_choice",
                    "wall_time_per_train_step_s", "wall_time_s", "scans"):
            assert key in entry, (kind, key)
        assert len(entry["top_eigenvalues"]) == len(entry["eigenvalue_error_bounds"]) == 2
        assert entry["kind"] == kind and (out / kind / "model.pt").is_file()
    q, m = report["models"]["patch_qnn"], report["models"]["patch_mlp"]
    assert q["device_choice"]["name"] == "torch.statevector" and q["device_choice"]["reason"]
    assert m["device_choice"] is None and m["matched"]["qnn_n_params"] == q["n_params"]
    assert report["data"]["n_train"] == 48
    md = (out / "report.md").read_text()
    assert "| parameters |" in md and "patch_qnn" in md and "torch.statevector" in md
    for png in ("density.png", "landscape_pca.png", "landscape_random.png", "learning_curves.png"):
        assert (out / png).stat().st_size > 1000, png
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*.npz")}
    assert len(stamps) == 2 * 6  # train, 3 hessian results, 2 scans per model
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qlandscape"):
        assert main(args) == 0  # rerun: every step reused
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.npz")} == stamps
    assert sum("reusing" in r.getMessage() for r in caplog.records) >= 2 * 6
    assert json.loads((out / "report.json").read_text())["models"]["patch_qnn"]["trace"] == q["trace"]


def test_every_new_key_is_documented_in_the_default_toml():
    import dataclasses
    from pathlib import Path

    import qlandscape
    from qlandscape.config import PatchConfig
    text = (Path(qlandscape.__file__).parent / "configs" / "default.toml").read_text()
    for f in dataclasses.fields(PatchConfig):
        assert f"# {f.name}:" in text or f"\n{f.name} = " in text, f.name
    for key in ("span_mode", "margin", "eig_method", "patch_qnn", "patch_mlp"):
        assert key in text
