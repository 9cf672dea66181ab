"""CLI and configuration: strict configs, the main job end-to-end on a tiny setting, resume."""


import numpy as np
import pytest

from qlandscape import LandscapeScan
from qlandscape.cli import main
from qlandscape.config import RunConfig, load_config

TINY = ["data.n_samples=150", "model.hidden=[8]", "train.epochs=3", "hessian.top_k=2",
        "hessian.trace_probes=10", "hessian.density_probes=2", "hessian.density_steps=10",
        "scan.n_points=5"]


def _args(cmd, out, extra=()):
    args = [cmd, "--out", str(out), "--no-progress"]
    for o in TINY + list(extra):
        args += ["--set", o]
    return args


def test_default_config_is_the_benchmark_workload():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.model.hidden == (128, 128) and cfg.model.activation == "tanh"
    assert cfg.objective.dtype == "float64"


def test_config_overrides_are_typed():
    cfg = load_config(None, ["hessian.top_k=3", "scan.directions=pca", "train.lr=1"])
    assert cfg.hessian.top_k == 3 and cfg.scan.directions == "pca" and cfg.train.lr == 1.0


@pytest.mark.parametrize("override, match", [
    ("hessian.topk=3", "unknown key"),
    ("nonsense.x=1", "unknown section"),
    ("top_k=3", "section.key=value"),
])
def test_bad_configuration_is_a_clear_error(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_cli_reports_configuration_errors_with_exit_code_2(tmp_path, capsys):
    assert main(["hessian", "--out", str(tmp_path), "--set", "hessian.topk=3"]) == 2
    assert "unknown key" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[hessian\n")
    assert main(["scan", "--config", str(bad), "--out", str(tmp_path)]) == 2


def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args("demo", out)) == 0
    text = capsys.readouterr().out
    assert "eigenvalues" in text and "trace" in text and "SLQ" in text and "scan (5, 5)" in text
    for f in ("model.pt", "train.npz", "hessian_eigs.json", "hessian_trace.npz", "hessian_density.png",
              "scan.npz", "scan.png", "scan_surface.png", "config.json"):
        assert (out / f).is_file(), f
    scan = LandscapeScan.load(out / "scan")
    assert scan.loss[2, 2] == scan.center_loss
    stamp = (out / "hessian_eigs.npz").stat().st_mtime_ns
    assert main(_args("hessian", out)) == 0  # same config: reused, not recomputed
    assert (out / "hessian_eigs.npz").stat().st_mtime_ns == stamp
    assert main(_args("hessian", out, ["hessian.top_k=1"])) == 0  # changed config: recomputed
    assert (out / "hessian_eigs.npz").stat().st_mtime_ns != stamp


@pytest.mark.parametrize("directions", ["pca", "eigenvector", "unit"])
def test_scan_directions_from_config(tmp_path, directions):
    out = tmp_path / directions
    assert main(_args("scan", out, [f"scan.directions={directions}", "scan.dims=2"])) == 0
    scan = LandscapeScan.load(out / "scan")
    assert scan.info["directions"] == directions
    if directions == "eigenvector":
        d = scan.directions
        assert np.allclose(np.linalg.norm(d, axis=1), 1.0) and abs(float(d[0] @ d[1])) < 1e-8


def test_one_dimensional_scan(tmp_path):
    assert main(_args("scan", tmp_path, ["scan.dims=1", "scan.n_points=7"])) == 0
    assert LandscapeScan.load(tmp_path / "scan").loss.shape == (7,)


def test_unknown_scan_direction_kind_is_a_configuration_error(tmp_path, capsys):
    assert main(_args("scan", tmp_path, ["scan.directions=spiral"])) == 2
    err = capsys.readouterr().err
    assert "scan.directions must be one of" in err and "'spiral'" in err and "'pca'" in err
    assert not (tmp_path / "model.pt").exists()


def test_cnn_model_runs_through_the_pipeline(tmp_path):
    args = _args("hessian", tmp_path, ["model.kind=\"cnn\"", "model.channels=[2, 3]", "data.downsample=4"])
    assert main(args) == 0
    assert (tmp_path / "hessian_eigs.json").is_file()
