"""The run directory never lies: cache keys from the values read, checked files, current figures,
``--force``, unusable ``--out``, file modes and one process per directory."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qlandscape import LandscapeScan
from qlandscape.cli import main
from qlandscape.config import RunConfig, ScanConfig, load_config
from qlandscape.configview import ConfigReads, changed_reads
from qlandscape.jobs import load_weights
from qlandscape.results import ResultFileError
from qlandscape.rundir import RunDirBusy, atomic_write_bytes, open_rundir

TINY = ["data.n_samples=200", "train.epochs=1", "model.hidden=[8]", "hessian.top_k=1", "hessian.trace_probes=4",
        "hessian.density_probes=2", "hessian.density_steps=5", "scan.n_points=5"]
RESULTS = ("model.pt", "train", "hessian_eigs", "hessian_trace", "hessian_density", "scan")


def _args(cmd: str, out: Path, extra=(), force: bool = False) -> list[str]:
    args = [cmd, "--out", str(out), "--no-progress"] + (["--force"] if force else [])
    for o in TINY + list(extra):
        args += ["--set", o]
    return args


def _checksums(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.suffix in (".npz", ".pt")}


def _messages(caplog, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "qlandscape" and r.levelno >= level]


def _rerun(args: list[str], caplog, capsys) -> tuple[list[str], list[str]]:
    """Run the CLI; returns (warnings, info-or-higher messages). Fails on a traceback anywhere."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qlandscape"):
        assert main(args) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert not any(r.exc_info for r in caplog.records)
    return _messages(caplog, logging.WARNING), _messages(caplog)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """A finished tiny ``demo`` run directory (copy it before changing anything)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(_args("demo", out)) == 0
    return out


@pytest.fixture
def run(demo_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(demo_run, out)
    return out


# ------------------------------------------------------------------------------ cache keys
def test_config_view_records_exactly_the_values_read():
    cfg = load_config(None, ["scan.directions='pca'"])
    rec = ConfigReads(cfg)
    view = rec.typed_view(RunConfig)
    assert isinstance(view, RunConfig) and isinstance(view.scan, ScanConfig)
    assert view.hessian.tol == cfg.hessian.tol and view.model.hidden == (128, 128)
    assert sorted(rec.reads) == ["hessian.tol", "model.hidden"] and rec.reads["model.hidden"] == [128, 128]
    view.scan.resolved_span_mode()  # a method's own attribute reads are recorded, not the whole section
    assert "scan.directions" in rec.reads and "scan.n_points" not in rec.reads
    assert dataclasses.replace(view.scan, dims=1).dims == 1 and "scan.n_points" in rec.reads
    assert changed_reads(load_config(None, ["scan.directions='pca'", "hessian.tol=1e-3"]), rec.reads) == ["hessian.tol"]
    assert changed_reads(load_config(None, ["scan.directions='pca'", "hessian.top_k=2"]), rec.reads) == []


def test_eigenvector_scan_recomputes_when_hessian_tol_changes(tmp_path, caplog, capsys):
    out = tmp_path / "run"
    extra = ["scan.directions='eigenvector'"]
    assert main(_args("scan", out, extra)) == 0
    before = _checksums(out)
    warnings, messages = _rerun(_args("scan", out, extra + ["hessian.tol=1e-2"]), caplog, capsys)
    assert not warnings
    assert any("recomputing scan: hessian.tol changed" in m for m in messages), messages
    after = _checksums(out)
    assert after["model.pt"] == before["model.pt"] and after["train.npz"] == before["train.npz"]
    assert "hessian.tol" in json.loads((out / ".stamps" / "scan.json").read_text())["reads"]


def test_an_unrelated_key_neither_retrains_nor_recomputes_the_hessian(run, caplog, capsys):
    before = _checksums(run)
    _, messages = _rerun(_args("demo", run, ["scan.n_points=3"]), caplog, capsys)
    after = _checksums(run)
    assert {k: v for k, v in after.items() if k != "scan.npz"} == {k: v for k, v in before.items() if k != "scan.npz"}
    assert after["scan.npz"] != before["scan.npz"] and LandscapeScan.load(run / "scan").loss.shape == (3, 3)
    assert sum(m.startswith("reusing") for m in messages) >= 5  # train (twice), eigs, trace, density


def test_retraining_deletes_and_then_recomputes_every_downstream_result(run, caplog, capsys):
    assert main(_args("train", run, ["train.epochs=2"])) == 0
    for name in ("hessian_eigs.npz", "hessian_density.png", "scan.json", "scan.png", "scan_surface.png"):
        assert not (run / name).exists(), name  # computed from the previous model: gone, not stale
    assert not (run / ".stamps" / "scan.json").exists()
    _rerun(_args("hessian", run, ["train.epochs=2"]), caplog, capsys)
    stamp = json.loads((run / ".stamps" / "hessian_eigs.json").read_text())
    train_stamp = json.loads((run / ".stamps" / "train.json").read_text())
    assert stamp["upstream"] == {"train": train_stamp["identity"]}
    assert train_stamp["files"]["model.pt"] in json.dumps(train_stamp)


# ------------------------------------------------------------------------------ damaged files
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x80\x04garbage, not what this file was" * 3)


@pytest.mark.parametrize("name", ["model.pt", "train.npz", "train.json", "hessian_eigs.npz", "hessian_trace.json",
                                  "scan.npz", "scan.json", ".stamps/hessian_density.json"])
@pytest.mark.parametrize("damage", [_truncate, _garbage, Path.unlink], ids=["truncated", "garbage", "deleted"])
def test_a_damaged_file_is_named_in_one_warning_and_recomputed(run, caplog, capsys, name, damage):
    damage(run / name)
    warnings, _ = _rerun(_args("demo", run), caplog, capsys)
    if name.startswith(".stamps") and damage is Path.unlink:
        assert warnings == []  # no stamp: an unclaimed result, recomputed (logged at INFO)
    else:
        assert len(warnings) == 1 and name.split("/")[-1] in warnings[0] and "recomputing" in warnings[0], warnings
    for base in RESULTS[1:]:
        assert (run / f"{base}.npz").is_file() and (run / f"{base}.json").is_file()
    load_weights(run / "model.pt")
    warnings, messages = _rerun(_args("demo", run), caplog, capsys)  # and the directory is whole again
    assert warnings == [] and sum(m.startswith("reusing") for m in messages) == 6


def test_loading_a_damaged_file_never_suggests_unpickling(tmp_path):
    bad = tmp_path / "res"
    bad.with_suffix(".json").write_text(json.dumps({"type": "LandscapeScan"}))
    bad.with_suffix(".npz").write_bytes(b"\x80\x04\x95garbage")  # what np.load would take for a pickle
    with pytest.raises(ResultFileError, match="res.npz is not an npz archive") as exc:
        LandscapeScan.load(bad)
    np.savez(bad.with_suffix(".npz"), loss=np.array([object()], dtype=object))
    with pytest.raises(ResultFileError, match="object arrays are not loaded") as exc2:
        LandscapeScan.load(bad)
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ResultFileError, match="model.pt is not a readable state dict") as exc3:
        load_weights(tmp_path / "model.pt")
    for e in (exc, exc2, exc3):
        assert "pickle" not in str(e.value).replace("unpickl", "") and "weights_only" not in str(e.value)


# ------------------------------------------------------------------------------ figures
def test_a_missing_figure_is_redrawn_without_recomputing(run, caplog, capsys):
    before = _checksums(run)
    (run / "scan.png").unlink()
    (run / "hessian_density.png").write_bytes(b"not a png")
    warnings, _ = _rerun(_args("demo", run), caplog, capsys)
    assert _checksums(run) == before
    assert (run / "scan.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "hessian_density.png").read_bytes()[:4] == b"\x89PNG"
    assert len(warnings) == 2 and all("redrawing it from the stored" in w for w in warnings), warnings


def test_a_figure_that_fails_to_draw_is_reported_and_not_claimed(run, caplog, capsys, monkeypatch):
    import qlandscape.landscape.plot as plot

    def broken(*args, **kwargs):
        raise RuntimeError("no surface today")

    monkeypatch.setattr(plot, "plot_surface", broken)
    warnings, _ = _rerun(_args("scan", run, ["scan.n_points=4"]), caplog, capsys)
    assert len(warnings) == 1 and "scan_surface.png" in warnings[0] and "no surface today" in warnings[0]
    stamp = json.loads((run / ".stamps" / "scan.json").read_text())
    assert not (run / "scan_surface.png").exists() and "scan_surface.png" not in stamp["figures"]
    assert "scan.png" in stamp["figures"] and "scan_surface.png" in stamp["figure_errors"]
    monkeypatch.undo()
    scan = (run / "scan.npz").read_bytes()
    warnings, _ = _rerun(_args("scan", run, ["scan.n_points=4"]), caplog, capsys)
    assert warnings == [] and (run / "scan_surface.png").is_file() and (run / "scan.npz").read_bytes() == scan


def test_switching_a_scan_to_1d_removes_the_stale_surface_figure(run, caplog, capsys):
    _rerun(_args("scan", run, ["scan.dims=1"]), caplog, capsys)
    assert (run / "scan.png").is_file() and not (run / "scan_surface.png").exists()
    assert set(json.loads((run / ".stamps" / "scan.json").read_text())["figures"]) == {"scan.png"}


def test_a_changed_plot_option_redraws_without_recomputing(run, caplog, capsys):
    before, png = _checksums(run), (run / "scan.png").read_bytes()
    _rerun(_args("scan", run, ["scan.log_plot=true"]), caplog, capsys)
    assert _checksums(run) == before and (run / "scan.png").read_bytes() != png


# ------------------------------------------------------------------------------ --force
def test_force_recomputes_everything_training_once(run, caplog, capsys):
    _garbage(run / "model.pt")
    names = ("model.pt", "train.npz", "hessian_eigs.npz", "hessian_trace.npz", "hessian_density.npz", "scan.npz",
             "scan.png")
    before = {n: (run / n).stat().st_mtime_ns for n in names}
    _, messages = _rerun(_args("demo", run, force=True), caplog, capsys)
    assert sum(m.startswith("trained ") for m in messages) == 1
    assert not any(m.startswith("reusing") and "train" not in m for m in messages), messages
    assert all((run / n).stat().st_mtime_ns != before[n] for n in names)
    load_weights(run / "model.pt")


# ------------------------------------------------------------------------------ --out, modes, lock
def test_out_that_is_a_file_is_a_one_line_error_before_any_work(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("a file")
    for out in (target, target / "sub"):
        assert main(_args("train", out)) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(out) in err and err.startswith("qlandscape: error: --out"), err
    assert target.read_text() == "a file" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_unwritable_out_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere: make the permission check say no
        import qlandscape.rundir as rundir
        real = os.access
        monkeypatch.setattr(rundir.os, "access", lambda p, mode, **kw: False if Path(p) == out else real(p, mode))
    assert main(_args("train", out)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(out) in err and "not writable" in err, err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_are_written_with_the_umask_mode(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "x.bin", b"data")
        if mask == 0o027:
            assert main(_args("scan", tmp_path / "run", ["scan.n_points=3"])) == 0
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]  # results, figures, stamps, config.json, .lock
    assert len(files) == (1 if mask == 0o022 else 12)
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}


_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "QLANDSCAPE_PROGRESS": "0", "MPLBACKEND": "Agg"}
_HOLDER = "import sys, time\nfrom qlandscape.rundir import open_rundir\nwith open_rundir(sys.argv[1]):\n" \
          "    print('locked', flush=True)\n    time.sleep(120)\n"


@pytest.mark.skipif(sys.platform == "win32", reason="not verified on Windows (the holder pid is written through a second handle)")
def test_a_second_process_fails_fast_naming_the_directory_and_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=_ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        assert main(_args("train", out)) == 1
        assert time.perf_counter() - start < 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(out) in err and f"pid {holder.pid}" in err, err
        assert not (out / "model.pt").exists() and not (out / "config.json").exists()
        with pytest.raises(RunDirBusy):
            with open_rundir(out):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the OS drops the lock
        holder.wait()
        holder.stdout.close()
    assert main(_args("train", out)) == 0


@pytest.mark.skipif(sys.platform == "win32", reason="not verified on Windows (the holder pid is written through a second handle)")
def test_two_processes_on_one_directory_train_once(tmp_path, caplog, capsys):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "qlandscape.cli", *_args("train", out)], env=_ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not ((out / ".lock").is_file() and (out / ".lock").read_text().strip() == str(child.pid)):
            assert time.time() < deadline and child.poll() is None
            time.sleep(0.01)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="qlandscape"):
            rc = main(_args("train", out))  # while the child trains (turned away) or after (reused)
        child_err = child.communicate(timeout=60)[1]
    finally:
        child.kill()
        child.wait()
    err = capsys.readouterr().err
    assert child.returncode == 0 and "INFO qlandscape: trained" in child_err, child_err
    assert (rc == 1 and f"pid {child.pid}" in err) or (rc == 0 and _messages(caplog)[0].startswith("reusing train"))
    assert not any(m.startswith("trained ") for m in _messages(caplog))
    assert isinstance(load_weights(out / "model.pt"), dict)


def test_nested_sessions_in_one_process_share_the_lock(tmp_path):
    with open_rundir(tmp_path) as outer:
        with open_rundir(tmp_path) as inner:
            assert inner is outer
        outer.fresh.add("x")
    with open_rundir(tmp_path) as again:
        assert again is not outer and not again.fresh


# ------------------------------------------------------------------------------ compare
TINY_COMPARE = ["data.n_samples=40", "train.epochs=2", "patch.layers=1", "hessian.top_k=2", "hessian.tol=1e-2",
                "hessian.trace_probes=4", "hessian.density_probes=1", "hessian.density_steps=4", "scan.n_points=3"]


def test_compare_keeps_the_run_directory_guarantees(tmp_path, caplog, capsys, monkeypatch):
    out = tmp_path / "cmp"
    args = ["compare", "--out", str(out), "--no-progress", "--fast"] + [a for o in TINY_COMPARE for a in ("--set", o)]
    assert main(args) == 0
    capsys.readouterr()
    _garbage(out / "patch_mlp" / "hessian_eigs.npz")
    import qlandscape.landscape.plot as plot

    def broken(*a, **k):
        raise RuntimeError("no density today")

    monkeypatch.setattr(plot, "plot_density", broken)
    warnings, messages = _rerun(args, caplog, capsys)
    assert len(warnings) == 2, warnings
    assert "patch_mlp/hessian_eigs.npz" in warnings[0] and "recomputing hessian_eigs" in warnings[0]
    assert "density.png" in warnings[1] and "no density today" in warnings[1]
    report = json.loads((out / "report.json").read_text())
    assert "density.png" not in report["figures"] and not (out / "density.png").exists()
    assert "[density.png]" not in (out / "report.md").read_text()
    monkeypatch.undo()
    from qlandscape.jobs.compare import compare_overrides, model_config, run_model
    cfg = model_config(load_config(None, compare_overrides(True) + TINY_COMPARE), "patch_mlp")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qlandscape"):
        run_model(cfg, out / "patch_mlp", progress=False, force=True)  # compare --force, for one model
    messages = _messages(caplog)
    assert sum(m.startswith("trained ") for m in messages) == 1  # once, not once per step
    assert not any(m.startswith("reusing") and "train" not in m for m in messages), messages


def test_the_lock_is_the_same_os_lock_as_a_raw_flock_and_an_unreadable_holder_is_unknown(tmp_path):
    """filelock takes the OS lock a raw ``flock`` holder takes (so old and new processes exclude each other);
    a holder that wrote no pid is named "unknown"; once it is killed the next process gets the lock and writes
    its own pid."""
    pytest.importorskip("fcntl")  # the holder below takes a raw flock
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "print('locked', flush=True)\ntime.sleep(120)\n", str(out / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=r"in use by another qlandscape process \(pid unknown\)"):
            with open_rundir(out):
                pass
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with open_rundir(out):
        assert (out / ".lock").read_text().strip() == str(os.getpid())
