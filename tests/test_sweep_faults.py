"""Sweeps under faults: whatever happens to the runner, its workers, the executor or the published files, no
finished run is lost, nothing is left running, what the tool says is true, and the rerun ends bit-identical
to an uninterrupted sweep.

Each case injects one fault into a real sweep (runner subprocesses through the CLI, a real spawn pool, a
real Dask scheduler process), then compares every metric and array of the resumed sweep with a serial,
uninterrupted reference of the same spec (``==``: CPU float64, one thread, every random choice seeded).
Runs are tiny classical patch MLPs on a 120-sample digits subset (about a second each).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qlandscape.sweep import ExecutorFailed, IncompleteSweepError, load_spec, run_sweep, sweep_report, sweep_status
from tests.test_sweep import SPEC_TOML, _assert_same_results, _env, _published

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; signals")

FAULT_TOML = (SPEC_TOML.replace('name = "cli"', 'name = "faults"').replace("seeds = [0]", "seeds = [0, 1]")
              .replace("epochs = 3", "epochs = {epochs}"))
"""test_sweep's CLI spec with two seeds (4 runs) and long enough runs for a fault to land mid-run."""


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "faults.toml"
    path.write_text(FAULT_TOML.format(epochs=25))
    return path


@pytest.fixture(scope="module")
def reference(spec_file, tmp_path_factory):
    """The uninterrupted sweep of ``spec_file`` (serial, in this process)."""
    out = tmp_path_factory.mktemp("ref") / "ref"
    run_sweep(load_spec(str(spec_file)), out, executor="serial", progress=False)
    return out


def _names(spec_file: Path) -> list[str]:
    return sorted(p.dirname for p in load_spec(str(spec_file)).runs())


def _runner(spec_file: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``qlandscape sweep run`` in its own session (so its process group is exactly its processes)."""
    cmd = [sys.executable, "-m", "qlandscape.cli", "sweep", "run", str(spec_file), "--out", str(out),
           "--no-progress", *extra]
    return subprocess.Popen(cmd, env=_env(), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _work_started(out: Path) -> bool:
    work = out / ".work"
    return work.is_dir() and any(d.is_dir() for d in work.iterdir())


def _cleanup(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for pid in _group(proc.pid):
        os.kill(pid, signal.SIGKILL)


def _rerun_matches(spec_file: Path, out: Path, reference: Path) -> None:
    """The rerun (the CLI, in this process, serial: the executor is not the point here) completes the sweep
    with exit code 0 and every result equal to the uninterrupted reference."""
    from qlandscape.cli import main
    assert main(["sweep", "run", str(spec_file), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    names = _names(spec_file)
    assert _published(out) == names
    _assert_same_results(out, reference, names)
    st = sweep_status(out)
    assert st.complete and st.runner is None and not st.failed


# ------------------------------------------------------------------------------------------ 1. the runner killed
@pytest.mark.parametrize("workers, point", [(1, "mid-run"), (2, "mid-run"), (1, "after-publish")])
def test_sigkill_of_the_runner_leaves_no_process_and_the_rerun_matches(spec_file, reference, tmp_path, workers,
                                                                       point):
    out = tmp_path / "killed"
    proc = _runner(spec_file, out, "--workers", str(workers))
    try:
        ready = _work_started if point == "mid-run" else (lambda o: bool(_published(o)))
        _wait_for(lambda: ready(out) or proc.poll() is not None, 120, point)
        assert proc.poll() is None, proc.communicate()
        assert len(_group(proc.pid)) >= 2  # the runner and at least one pool worker
        os.kill(proc.pid, signal.SIGKILL)  # the runner only: its workers must follow it
        proc.wait(timeout=30)
        _wait_for(lambda: not _group(proc.pid), 10, "the pool workers to exit after their runner died")
        finished = {d: json.loads((out / "runs" / d / "run.json").read_text())["execution"] for d in _published(out)}
        time.sleep(1.5)  # nothing publishes after the runner died
        assert {d: json.loads((out / "runs" / d / "run.json").read_text())["execution"]
                for d in _published(out)} == finished
        st = sweep_status(out)
        assert not st.failed and not st.complete
        assert st.runner is not None and "died without finishing" in st.runner
    finally:
        _cleanup(proc)
    _rerun_matches(spec_file, out, reference)
    for d, execution in finished.items():  # finished runs were kept, not recomputed
        assert json.loads((out / "runs" / d / "run.json").read_text())["execution"] == execution


# ------------------------------------------------------------------------------------------ 2. SIGTERM / SIGINT
@pytest.mark.parametrize("sig, code, group", [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, False),
                                              (signal.SIGINT, 130, True)],
                         ids=["SIGTERM-runner", "SIGINT-runner", "Ctrl-C-whole-group"])
def test_sigterm_and_sigint_stop_the_workers_keep_finished_runs_and_say_so(spec_file, reference, tmp_path, sig, code,
                                                                          group):
    out = tmp_path / "stopped"
    proc = _runner(spec_file, out, "--workers", "2")
    try:
        _wait_for(lambda: bool(_published(out)) or proc.poll() is not None, 120, "a published run")
        assert proc.poll() is None, proc.communicate()
        if group:  # a terminal's Ctrl-C (and SLURM's SIGTERM) reach every process of the foreground group
            os.killpg(proc.pid, sig)
        else:  # the runner only, as `kill PID`
            os.kill(proc.pid, sig)
        t0 = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10
        assert proc.returncode == code, stdout + stderr
        assert "Traceback (most recent call last)" not in stderr
        name = signal.Signals(sig).name
        assert f"interrupted by {name}" in stderr and "rerun the same command to resume" in stderr
        _wait_for(lambda: not _group(proc.pid), 10, "every process of the stopped sweep to exit")
        st = sweep_status(out)
        assert st.runner is not None and f"stopped by {name}" in st.runner
        assert f"{len(st.done)}/{st.total} done" in stdout  # the status printed on the way out
        record = json.loads((out / "runner.json").read_text())
        assert record["state"] == "interrupted" and sorted(record["kept"]) == sorted(st.done)  # a fresh DIR
    finally:
        _cleanup(proc)
    _rerun_matches(spec_file, out, reference)


# ------------------------------------------------------------------------------------------ 3. a run held elsewhere
def test_a_run_computed_by_another_process_is_not_a_failure_and_the_summary_agrees(spec_file, reference, tmp_path,
                                                                                   capsys):
    from qlandscape.cli import main
    out = tmp_path / "held"
    held = _names(spec_file)[0]
    lock_dir = out / ".work" / held
    lock_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, f'{os.getpid()}\\n'.encode())\n"
                               "print('locked', flush=True)\ntime.sleep(120)\n", str(lock_dir / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["sweep", "run", str(spec_file), "--out", str(out), "--executor", "serial", "--no-progress"])
        text = capsys.readouterr().out
        assert rc == 1
        assert "0 failed, 1 being computed by another process" in text
        assert "3/4 done, 0 failed, 1 started" in text
        assert not (out / "failed").exists() or not list((out / "failed").iterdir())
        st = sweep_status(out)
        assert st.started == [held] and not st.failed
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert main(["sweep", "run", str(spec_file), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    assert "4/4 done, 0 failed" in capsys.readouterr().out
    _assert_same_results(out, reference, _names(spec_file))


def test_a_run_published_while_waiting_for_its_lock_is_not_computed_again(spec_file, reference, tmp_path,
                                                                          monkeypatch):
    from qlandscape.sweep import worker
    out = tmp_path / "race"
    shutil.copytree(reference, out)
    plan = load_spec(str(spec_file)).runs()[0]
    before = (out / "runs" / plan.dirname / "run.json").read_bytes()
    calls = []
    real = worker.is_done

    def published_meanwhile(root, dirname):  # not yet published at the first look, published once locked
        calls.append(dirname)
        return real(root, dirname) if len(calls) > 1 else False

    monkeypatch.setattr(worker, "is_done", published_meanwhile)
    res = worker.execute_run(plan.to_dict(), str(out))
    assert res["status"] == "skipped" and len(calls) == 2
    assert (out / "runs" / plan.dirname / "run.json").read_bytes() == before
    assert not (out / ".work" / plan.dirname).exists() and not (out / "failed").exists()


# ------------------------------------------------------------------------------------------ 4. damaged files
def test_damaged_published_runs_are_found_reported_moved_aside_and_recomputed(spec_file, reference, tmp_path, capsys):
    pytest.importorskip("pandas")
    from qlandscape.cli import main
    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    names = _names(spec_file)
    metrics = out / "runs" / names[0] / "metrics.json"
    metrics.write_bytes(metrics.read_bytes()[:20])
    arrays = out / "runs" / names[1] / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:-100])

    st = sweep_status(out)
    assert sorted(st.damaged) == names[:2] and not st.complete
    assert "metrics.json does not match its checksum" in st.damaged[names[0]]
    assert "arrays.npz does not match its checksum" in st.damaged[names[1]]
    assert main(["sweep", "status", str(out)]) == 0
    assert "2/4 done, 0 failed, 2 damaged" in capsys.readouterr().out

    with pytest.raises(IncompleteSweepError, match="2 of 4 runs") as info:
        sweep_report(out)
    report = (out / "report" / "report.md").read_text()
    assert "Incomplete: 2 of 4 runs" in report and names[0] in report and names[1] in report
    assert len((out / "report" / "results.csv").read_text().strip().splitlines()) == 3  # header + 2 intact runs
    assert set(info.value.missing) == set(names[:2])
    assert main(["sweep", "report", str(out)]) == 1
    assert "--allow-missing" in capsys.readouterr().err
    assert main(["sweep", "report", str(out), "--allow-missing"]) == 0
    capsys.readouterr()

    outcome = run_sweep(load_spec(str(spec_file)), out, executor="serial", progress=False)
    assert sorted(outcome.damaged) == names[:2] and sorted(outcome.done) == names[:2]
    kept = sorted(p.name.split(".")[0] for p in (out / "damaged").iterdir())
    assert kept == names[:2]  # moved aside, never deleted
    assert sweep_status(out).complete
    _assert_same_results(out, reference, names)
    assert main(["sweep", "report", str(out)]) == 0


def test_runs_published_without_a_manifest_are_checked_by_reading_them(spec_file, reference, tmp_path):
    out = tmp_path / "legacy"
    shutil.copytree(reference, out)
    names = _names(spec_file)
    for d in names:
        (out / "runs" / d / "manifest.json").unlink()
    assert sweep_status(out).complete  # older versions' runs stay done
    arrays = out / "runs" / names[2] / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:50])
    assert list(sweep_status(out).damaged) == [names[2]]


def test_every_published_file_is_in_the_manifest(reference):
    for run in (reference / "runs").iterdir():
        files = json.loads((run / "manifest.json").read_text())["files"]
        on_disk = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
        assert set(files) == on_disk - {"manifest.json", ".lock"}
        assert {"run.json", "metrics.json", "arrays.npz", "run.log"} <= set(files)


# ------------------------------------------------------------------------------------------ 5. executor failures
def test_a_local_pool_worker_killed_mid_run_is_one_line_and_status_agrees(spec_file, reference, tmp_path):
    out = tmp_path / "oom"
    proc = _runner(spec_file, out, "--workers", "1")
    try:
        _wait_for(lambda: _work_started(out) or proc.poll() is not None, 120, "a started run")
        workers = [pid for pid in _group(proc.pid) if pid != proc.pid
                   and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert workers
        for pid in workers:  # as the kernel's OOM killer would
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 1
        assert "Traceback (most recent call last)" not in stderr
        assert "a worker process of the local pool died (killed or out of memory) while running" in stderr
        st = sweep_status(out)
        assert not st.failed and "stopped" in (st.runner or "")
        assert f"{len(st.done)}/4 done, 0 failed" in stdout
    finally:
        _cleanup(proc)
    _rerun_matches(spec_file, out, reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.dask
def test_losing_the_dask_scheduler_stops_with_one_line_and_a_new_cluster_resumes(spec_file, reference, tmp_path):
    pytest.importorskip("distributed")
    from distributed import LocalCluster
    out = tmp_path / "dask"
    port = _free_port()
    bindir = Path(sys.executable).parent
    env = _env()
    sched = subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                              "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    worker = subprocess.Popen([str(bindir / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                               "--nworkers", "1", "--no-dashboard", "--death-timeout", "5"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def kill_scheduler_after_first_run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _published(out):
            time.sleep(0.02)
        sched.kill()

    killer = threading.Thread(target=kill_scheduler_after_first_run, daemon=True)
    try:
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(ExecutorFailed) as info:
            run_sweep(load_spec(str(spec_file)), out, executor=f"dask://127.0.0.1:{port}", progress=False,
                      connect_timeout=30)
        assert time.monotonic() - t0 < 120
        assert "\n" not in str(info.value) and "rerun" in str(info.value)
        st = sweep_status(out)
        assert not st.failed and 1 <= len(st.done) < 4
        assert st.runner is not None and "stopped" in st.runner
    finally:
        for p in (sched, worker):
            with pytest.raises(ProcessLookupError) if p.poll() is not None else contextlib.nullcontext():
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    try:
        run_sweep(load_spec(str(spec_file)), out, executor=cluster.scheduler_address, progress=False)
    finally:
        cluster.close()
    names = _names(spec_file)
    assert _published(out) == names and sweep_status(out).complete
    _assert_same_results(out, reference, names)


@pytest.mark.dask
def test_an_unreachable_dask_scheduler_is_one_line_before_any_file(spec_file, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "nowhere"
    t0 = time.monotonic()
    with pytest.raises(ExecutorFailed, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1 within 1 s"):
        run_sweep(load_spec(str(spec_file)), out, executor="dask://127.0.0.1:1", progress=False, connect_timeout=1)
    assert time.monotonic() - t0 < 30
    assert not (out / "sweep.json").exists()


def test_a_bad_executor_and_an_unusable_out_fail_before_any_file_or_model(spec_file, tmp_path, capsys, monkeypatch):
    from qlandscape import jobs
    from qlandscape.cli import main

    def no_build(*a, **k):
        raise AssertionError("a model was built before the argument checks")

    for where in (jobs, jobs.training):  # the sweep's model check and the train step
        monkeypatch.setattr(where, "build_model", no_build)
    out = tmp_path / "o"
    assert main(["sweep", "run", str(spec_file), "--out", str(out), "--executor", "bogus"]) == 2
    assert "unknown executor 'bogus'" in capsys.readouterr().err
    assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["sweep", "run", str(spec_file), "--out", str(blocker), "--no-progress"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        if os.access(readonly, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert main(["sweep", "run", str(spec_file), "--out", str(readonly / "x"), "--no-progress"]) == 2
        assert "--out" in capsys.readouterr().err
    finally:
        readonly.chmod(0o700)


# ------------------------------------------------------------------------------------------ 6. bad fits
def test_healthy_runs_carry_a_clean_fit_verdict(reference):
    for run in (reference / "runs").iterdir():
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["fit_ok"] is True and metrics["fit_flags"] == [], (run.name, metrics["fit"])


def test_a_diverged_training_is_flagged_in_metrics_status_and_report_not_published_as_a_minimum(spec_file, tmp_path,
                                                                                               capsys):
    pytest.importorskip("pandas")
    from qlandscape.cli import main
    out = tmp_path / "diverged"
    argv = ["sweep", "run", str(spec_file), "--out", str(out), "--executor", "serial", "--no-progress",
            "--set", "train.lr=1e6", "--set", "train.epochs=3"]
    assert main(argv) == 0  # measured and published, flagged (the default sweep.bad_fit = "flag")
    text = capsys.readouterr().out
    assert "4 done run(s) were measured where the training did not reach a minimum" in text
    for run in (out / "runs").iterdir():
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["fit_ok"] is False and metrics["fit_failed"] is True
        assert {"loss_above_start", "chance_accuracy"} <= set(metrics["fit_flags"])
        assert metrics["fit"]["loss"] > metrics["fit"]["initial_loss"]
    assert main(["sweep", "report", str(out)]) == 0
    capsys.readouterr()
    report = (out / "report" / "report.md").read_text()
    assert report.count("**2/2 not at a minimum**") == 2  # both architectures, both seeds
    assert "fit_ok" in (out / "report" / "results.csv").read_text().splitlines()[0]


def test_bad_fit_fail_records_the_run_as_failed_before_any_measurement(spec_file, tmp_path, capsys):
    from qlandscape.cli import main
    out = tmp_path / "strict"
    argv = ["sweep", "run", str(spec_file), "--out", str(out), "--executor", "serial", "--no-progress",
            "--set", "train.lr=1e6", "--set", "train.epochs=3", "--set", "sweep.bad_fit=fail"]
    assert main(argv) == 1
    text = capsys.readouterr().out
    assert "0/4 done, 4 failed" in text and "BadFitError: the training did not reach a minimum" in text
    for work in (out / ".work").iterdir():  # trained, never measured
        assert (work / "train.json").is_file() and not list(work.glob("hessian*"))
