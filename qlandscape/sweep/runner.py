"""Running a sweep on a ``concurrent.futures.Executor``, its status, and the results table.

The runner does no scheduling of its own: it submits one :func:`~qlandscape.sweep.worker.execute_run`
per unfinished grid point to an executor and waits on the futures.

- ``executor="local"`` (default): a ``ProcessPoolExecutor`` with the *spawn* context (no forked copies
  of torch/OpenMP state), ``workers`` processes reused across runs, each pinned to ``threads`` compute
  threads (:func:`~qlandscape.sweep.worker.pin_threads`).
- ``executor="dask://HOST:PORT"`` (or ``tcp://...``): ``distributed.Client(address).get_executor()``,
  the supported multi-machine engine (``pip install "qlandscape[dask]"``; on SLURM/PBS start the
  cluster with ``dask-jobqueue`` and pass its scheduler address). Workers must see the sweep directory
  (a shared filesystem), and each run pins its own threads.
- ``executor="serial"``: in this process, one run after another (debugging; the runner's overhead).
- Any ``concurrent.futures.Executor`` instance from Python.

The sweep directory ``DIR`` holds ``sweep.json`` (the current spec and its run list; every spec ever run
is also kept in ``specs/<digest>.json``), ``runs/<dirname>/`` (published runs, the source of truth, each
with a ``manifest.json`` of checksums), ``failed/<dirname>.json`` (failures), ``.work/`` (unfinished
runs), ``damaged/`` (published runs whose files stopped matching their manifest, moved aside, never
deleted), ``runner.json`` (how the last runner ended) and ``report/``. Re-running a spec skips intact
published runs (and, unless ``retry_failed``, failed ones); a changed spec adds only its new grid
points. One runner per directory at a time (``DIR/.lock``). What survives which fault, and what the
rerun does, is the table in the README's "Sweeps" section (each row a test in
``tests/test_sweep_faults.py``).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from ..progress import progress_bar
from .lifecycle import (
    ExecutorFailed,
    SweepInterrupted,
    describe_runner,
    init_worker,
    interruptible,
    read_runner_record,
    stop_pool,
    write_runner_record,
)
from .manifest import move_aside, verify_run
from .spec import RunPlan, SweepSpec
from .worker import FAILED_DIR, RUNS_DIR, WORK_DIR, _now, execute_run, is_done, read_json

log = logging.getLogger("qlandscape")

SWEEP_FILE = "sweep.json"
ExecutorSpec = Union[str, cf.Executor]


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did.

    Attributes
    ----------
    done : list of str
        Runs finished now (directory names).
    failed : dict
        Runs that failed now: directory name -> one-line error.
    skipped : list of str
        Runs already published before (or failed before, without ``retry_failed``).
    wall_s : float
        Seconds for the whole call.
    run_wall_s : dict
        Directory name -> seconds of each run finished now.
    busy : dict
        Runs another live process was computing (their run directory was locked): name -> its message.
        Not failures; ``sweep status`` shows them as started.
    damaged : dict
        Published runs whose files did not match their manifest: name -> the problem. They were moved to
        ``DIR/damaged/`` and computed again.
    """

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    run_wall_s: dict[str, float] = field(default_factory=dict)
    busy: dict[str, str] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)


def _spec_digest(spec: SweepSpec) -> str:
    return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def check_executor(executor: ExecutorSpec, workers: int = 1) -> None:
    """Raise ValueError for an executor name :func:`make_executor` does not know or a bad ``workers``
    (called before any file is written)."""
    if isinstance(executor, cf.Executor):
        return
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if executor in ("local", "serial"):
        return
    if isinstance(executor, str) and executor.startswith(("dask://", "tcp://", "tls://")):
        return
    raise ValueError(f"unknown executor {executor!r}; use 'local', 'serial' or 'dask://HOST:PORT'")


@contextlib.contextmanager
def make_executor(executor: ExecutorSpec = "local", workers: int = 1, threads: int = 1,
                  connect_timeout: float = 10.0) -> Iterator[cf.Executor]:
    """The executor named by ``executor`` (see the module docstring), shut down on exit (an executor
    instance passed in is left running).

    The local pool's workers ignore SIGINT/SIGTERM and die with this process however it ends
    (:func:`~qlandscape.sweep.lifecycle.init_worker`).

    Raises
    ------
    ValueError
        Unknown executor name or ``workers < 1``.
    ImportError
        ``dask://`` without ``distributed`` installed (names the extra to install).
    ExecutorFailed
        No Dask scheduler answers at the address within ``connect_timeout`` seconds.
    """
    check_executor(executor, workers)
    if isinstance(executor, cf.Executor):
        yield executor
        return
    if executor == "local":
        ctx = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                                      initargs=(threads, os.getpid()))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    if executor == "serial":
        yield _SerialExecutor()
        return
    assert isinstance(executor, str)
    try:
        from distributed import Client
    except ImportError:
        raise ImportError('executor="dask://..." needs Dask distributed: pip install "qlandscape[dask]"') from None
    address = "tcp://" + executor[len("dask://"):] if executor.startswith("dask://") else executor
    try:
        client = Client(address, timeout=f"{connect_timeout}s")
    except Exception as exc:  # noqa: BLE001 - OSError/TimeoutError/ValueError from Dask's comm layer
        raise ExecutorFailed(f"cannot reach the Dask scheduler at {address} within {connect_timeout:g} s "
                             f"({_one_line(exc)}); start it (`dask scheduler`) or check the address") from None
    try:
        yield client.get_executor(pure=False)
    finally:
        with contextlib.suppress(Exception):  # a lost scheduler must not turn into a traceback on exit
            client.close(timeout=5)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class _SerialExecutor(cf.Executor):
    """Runs each submitted call at once, in this process (results through ordinary futures)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future:  # type: ignore[override]
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future, as pools do
            fut.set_exception(exc)
        return fut


def _write_sweep_file(out: Path, spec: SweepSpec, plans: list[RunPlan]) -> None:
    from ..rundir import write_json
    runs = [{"dirname": p.dirname, "run_id": p.run_id, "label": p.label, "coords": p.coords} for p in plans]
    record = {"name": spec.name, "digest": _spec_digest(spec), "spec": spec.to_dict(), "runs": runs}
    write_json(out / "specs" / f"{record['digest']}.json", record)
    write_json(out / SWEEP_FILE, record)


def validate_models(plans: list[RunPlan]) -> None:
    """Build every distinct architecture of the sweep once, on shape-only data, so that a grid point
    that cannot be built (patches that do not tile the image, an unavailable device, too few qubits for
    the classes) fails before any training.

    Raises
    ------
    ValueError
        Naming the grid point and the reason.
    """
    from .. import jobs
    seen: set[str] = set()
    for p in plans:
        d = p.config.to_dict()  # the grid's seeds (initialization, minibatch order) do not change the architecture
        key = json.dumps({**d, "model": {**d["model"], "seed": 0}, "patch": {**d["patch"], "seed": 0},
                          "train": {**d["train"], "seed": 0}}, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            jobs.build_model(p.config, jobs.shape_only_dataset(p.config))
        except Exception as exc:  # noqa: BLE001 - any reason a model cannot be built is a spec error
            if type(exc).__name__ == "DeviceUnavailableError" and p.config.patch.device != "auto":
                # e.g. lightning.gpu named explicitly: the GPU may be on the workers only; they check it
                log.warning("grid point %s: %s here; the workers must provide it", p.label, exc)
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"grid point {p.label}: the model cannot be built: {first}") from None


def run_sweep(spec: SweepSpec, out: Union[str, Path], *, workers: int = 1, executor: ExecutorSpec = "local",
              threads: int = 1, retry_failed: bool = False, progress: bool = True,
              connect_timeout: float = 10.0) -> SweepOutcome:
    """Run every unfinished grid point of ``spec`` into the sweep directory ``out``.

    Parameters
    ----------
    spec : SweepSpec
    out : path
        The sweep directory (created; one runner at a time).
    workers : int
        Processes of the local pool (ignored by other executors).
    executor : str or Executor
        "local", "serial", "dask://HOST:PORT", or an executor instance.
    threads : int
        Compute threads per run.
    retry_failed : bool
        Run the grid points recorded as failed again (otherwise they are skipped and reported).
    progress : bool
        A progress bar: runs done / failed / remaining and the time per run.
    connect_timeout : float
        Seconds to wait for a Dask scheduler to answer.

    Returns
    -------
    SweepOutcome

    Raises
    ------
    ValueError
        A bad executor name or worker count, a grid point whose model cannot be built (before any work).
    qlandscape.rundir.RunDirError
        ``out`` cannot be created or written (before any work); :class:`~qlandscape.rundir.RunDirBusy` when
        another runner holds it.
    ExecutorFailed
        A local pool worker died (killed, out of memory), the Dask scheduler was lost or cannot be reached.
        Finished runs are kept, no run is recorded as failed for it, and a rerun resumes.
    SweepInterrupted
        SIGTERM, SIGINT or SIGHUP: the workers are stopped, finished runs kept (named in the exception).

    Notes
    -----
    Order of the checks: the executor name, then ``out`` (created, writable, locked), then every
    architecture is built once on shape-only data, then the executor is started (a Dask scheduler
    reached); only then is ``sweep.json`` written. Published runs whose files no longer match their
    manifest are moved to ``out/damaged/`` and computed again. ``out/runner.json`` records how this call
    ended (see :mod:`~qlandscape.sweep.lifecycle`).
    """
    from ..rundir import open_rundir
    start = time.perf_counter()
    out = Path(out)
    check_executor(executor, workers)
    plans = spec.runs()
    outcome = SweepOutcome()
    with interruptible(), open_rundir(out):
        validate_models(plans)
        try:
            with make_executor(executor, workers, threads, connect_timeout) as ex:
                _write_sweep_file(out, spec, plans)
                write_runner_record(out, "running", started=_now(), executor=_executor_name(executor),
                                    workers=workers, spec=spec.name)
                todo, n_failed_before = _plan_todo(out, plans, retry_failed, outcome)
                try:
                    _drive(ex, out, spec, plans, todo, n_failed_before, threads, outcome, progress)
                except SweepInterrupted as exc:
                    stop_pool(ex)
                    # from the files, after the workers are gone: a run published just before its worker
                    # was killed is kept too, though its result never reached this process
                    exc.kept = [p.dirname for p in todo if is_done(out, p.dirname)]
                    exc.stopped = _in_progress(out, todo, outcome)
                    raise
                except ExecutorFailed:
                    stop_pool(ex)
                    raise
        except SweepInterrupted as exc:
            write_runner_record(out, "interrupted", signal=exc.signal_name, kept=exc.kept, stopped=exc.stopped)
            raise
        except ExecutorFailed as exc:
            write_runner_record(out, "executor_failed", reason=str(exc))
            raise
        write_runner_record(out, "finished", done_now=len(outcome.done), failed_now=len(outcome.failed))
    outcome.wall_s = time.perf_counter() - start
    return outcome


def _executor_name(executor: ExecutorSpec) -> str:
    return executor if isinstance(executor, str) else type(executor).__name__


def _plan_todo(out: Path, plans: list[RunPlan], retry_failed: bool,
               outcome: SweepOutcome) -> tuple[list[RunPlan], int]:
    """The runs to compute (damaged published runs are moved aside first, and computed again) and the number
    of runs skipped because they failed before."""
    todo = []
    for p in plans:
        if is_done(out, p.dirname):
            problem = verify_run(out / RUNS_DIR / p.dirname)
            if problem is None:
                outcome.skipped.append(p.dirname)
                continue
            moved = move_aside(out, out / RUNS_DIR / p.dirname)
            outcome.damaged[p.dirname] = problem
            log.warning("run %s is damaged (%s); moved to %s and computed again", p.dirname, problem, moved)
            todo.append(p)
        elif (out / FAILED_DIR / f"{p.dirname}.json").is_file() and not retry_failed:
            outcome.skipped.append(p.dirname)
        else:
            todo.append(p)
    n_failed_before = sum(1 for d in outcome.skipped if not is_done(out, d))
    if n_failed_before:
        log.warning("%d run(s) failed before and are skipped; --retry-failed runs them again", n_failed_before)
    return todo, n_failed_before


def _in_progress(out: Path, todo: list[RunPlan], outcome: SweepOutcome) -> list[str]:
    """Runs of ``todo`` neither finished nor failed now that have work in ``.work`` (started, unfinished)."""
    accounted = set(outcome.done) | set(outcome.failed) | set(outcome.busy)
    return [p.dirname for p in todo if p.dirname not in accounted and not is_done(out, p.dirname)
            and (out / WORK_DIR / p.dirname).is_dir()]


def _drive(ex: cf.Executor, out: Path, spec: SweepSpec, plans: list[RunPlan], todo: list[RunPlan],
           n_failed_before: int, threads: int, outcome: SweepOutcome, progress: bool) -> None:
    """Submit ``todo`` to ``ex`` and account for each result as it arrives."""
    bar = progress_bar(len(plans), f"sweep {spec.name}", progress, initial=len(plans) - len(todo), leave=True)
    futures = {ex.submit(execute_run, p.to_dict(), str(out), threads): p for p in todo}
    try:
        for fut in cf.as_completed(futures):
            p = futures[fut]
            try:
                res = fut.result()
            except cf.process.BrokenProcessPool:
                running = _in_progress(out, todo, outcome)
                raise ExecutorFailed(
                    f"a worker process of the local pool died (killed or out of memory) while running "
                    f"{', '.join(running) or 'a run'}; {len(outcome.done)} run(s) finished now are kept and no run "
                    "is recorded as failed: rerun the same command to resume (with fewer --workers if memory "
                    "ran out)") from None
            except Exception as exc:  # noqa: BLE001 - the executor, not the run (execute_run never raises)
                if type(exc).__name__ == "KilledWorker":  # Dask: the run killed every worker it was given
                    res = _record_executor_failure(out, p, exc)
                else:
                    raise ExecutorFailed(
                        f"the executor failed ({_one_line(exc)}) after {len(outcome.done)} run(s) finished now "
                        "(kept; no run is recorded as failed): rerun the same command on a working executor to "
                        "resume") from None
            _account(outcome, res)
            bar.update(1)
            bar.set_postfix(done=len(outcome.done) + len(plans) - len(todo) - n_failed_before,
                            failed=len(outcome.failed) + n_failed_before,
                            left=len(todo) - len(outcome.done) - len(outcome.failed) - len(outcome.busy),
                            s_per_run=f"{_mean(outcome.run_wall_s.values()):.1f}")
    finally:
        for fut in futures:
            fut.cancel()
        bar.close()


def _record_executor_failure(out: Path, p: RunPlan, exc: BaseException) -> dict[str, Any]:
    """Record a run whose every worker died (Dask's KilledWorker: out of memory or a crash in native code)
    as failed, the way a worker records a run that raised."""
    from ..rundir import write_json
    error = f"{_one_line(exc)} (every worker that ran it died: out of memory, or a crash in native code)"
    write_json(out / FAILED_DIR / f"{p.dirname}.json",
               {"run_id": p.run_id, "dirname": p.dirname, "label": p.label, "coords": p.coords, "error": error,
                "traceback": "", "log_tail": "", "failed": _now(), "wall_s": None})
    return {"dirname": p.dirname, "status": "failed", "wall_s": 0.0, "error": error}


def _account(outcome: SweepOutcome, res: dict[str, Any]) -> None:
    name = res["dirname"]
    if res["status"] == "done":
        outcome.done.append(name)
        outcome.run_wall_s[name] = float(res["wall_s"])
        log.info("finished %s in %.1f s", name, res["wall_s"])
    elif res["status"] == "skipped":
        outcome.skipped.append(name)
    elif res["status"] == "busy":
        outcome.busy[name] = res.get("error", "in use by another process")
        log.warning("run %s is being computed by another process, not here: %s", name, outcome.busy[name])
    else:
        outcome.failed[name] = res.get("error", "unknown error")
        log.warning("run %s failed: %s", name, outcome.failed[name])


def _mean(values: Any) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else float("nan")


# ------------------------------------------------------------------------------------------ status
@dataclass
class SweepStatus:
    """The state of a sweep directory against its current spec (``sweep.json``).

    Attributes
    ----------
    name : str
    done, failed, started, remaining : list of str
        Directory names: published and intact (checked against their manifests); recorded as failed; with
        finished steps in ``.work`` but not published (interrupted or running); not started.
    errors : dict
        Failed run -> one-line error.
    run_wall_s : dict
        Published run -> seconds.
    extra : list of str
        Published runs that are not in the current spec (from an earlier spec).
    damaged : dict
        Published runs whose files do not match their manifest -> the problem (the next ``sweep run`` moves
        them to ``damaged/`` and computes them again).
    runner : str or None
        How the last runner ended, when not cleanly (running, killed, interrupted, executor failure).
    unfit : dict
        Done runs whose training did not reach a minimum (``metrics.json``'s ``fit_flags``,
        :mod:`qlandscape.fit`) -> their flags: measured, but not at a minimum.
    """

    name: str
    done: list[str]
    failed: list[str]
    started: list[str]
    remaining: list[str]
    errors: dict[str, str]
    run_wall_s: dict[str, float]
    extra: list[str]
    damaged: dict[str, str] = field(default_factory=dict)
    runner: Optional[str] = None
    unfit: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.done) + len(self.failed) + len(self.started) + len(self.remaining) + len(self.damaged)

    @property
    def complete(self) -> bool:
        """Every run of the spec is published and intact."""
        return len(self.done) == self.total

    def missing(self) -> dict[str, str]:
        """Every run of the spec that is not done -> why (failed: its error; damaged; started; not started)."""
        out = {name: f"failed: {self.errors.get(name, '')}" for name in self.failed}
        out.update({name: f"damaged: {problem}" for name, problem in self.damaged.items()})
        out.update({name: "started, not finished (interrupted or running)" for name in self.started})
        out.update({name: "not started" for name in self.remaining})
        return out

    def summary(self) -> str:
        """Several lines: counts, time per run, failures, damaged runs, the last runner."""
        w = list(self.run_wall_s.values())
        lines = [f"sweep {self.name}: {len(self.done)}/{self.total} done, {len(self.failed)} failed, "
                 + (f"{len(self.damaged)} damaged, " if self.damaged else "")
                 + f"{len(self.started)} started (interrupted or running), {len(self.remaining)} not started"]
        if self.runner:
            lines.append(self.runner)
        if w:
            lines.append(f"time per run: mean {statistics.mean(w):.1f} s, median {statistics.median(w):.1f} s, "
                         f"max {max(w):.1f} s, total {sum(w):.1f} s")
            left = self.total - len(self.done)
            if left:
                lines.append(f"remaining work at the mean time per run: about {left * statistics.mean(w):.0f} "
                             "s of one worker")
        if self.unfit:
            lines.append(f"{len(self.unfit)} done run(s) were measured where the training did not reach a minimum "
                         "(their rows are flagged in the report):")
            lines += [f"  not at a minimum {name}: {', '.join(flags)}" for name, flags in self.unfit.items()]
        for name in self.failed:
            lines.append(f"failed {name}: {self.errors.get(name, '')}")
        if self.failed:
            lines.append("rerun with --retry-failed to run the failed ones again")
        for name, problem in self.damaged.items():
            lines.append(f"damaged {name}: {problem}")
        if self.damaged:
            lines.append("the next `sweep run` moves damaged runs to damaged/ and computes them again")
        if self.extra:
            lines.append(f"{len(self.extra)} published run(s) belong to an earlier spec (kept; not in the report)")
        return "\n".join(lines)


def _read_sweep(out: Path) -> dict[str, Any]:
    record = read_json(Path(out) / SWEEP_FILE)
    if record is None:
        raise FileNotFoundError(f"{out} is not a sweep directory (no readable {SWEEP_FILE}); run "
                                "`qlandscape sweep run SPEC --out DIR` first")
    return record


def sweep_status(out: Union[str, Path]) -> SweepStatus:
    """The state of the sweep in ``out`` (reads files only; safe while a sweep runs). Every published run
    is checked against its manifest (:func:`~qlandscape.sweep.manifest.verify_run`)."""
    out = Path(out)
    record = _read_sweep(out)
    done, failed, started, remaining = [], [], [], []
    errors: dict[str, str] = {}
    walls: dict[str, float] = {}
    damaged: dict[str, str] = {}
    unfit: dict[str, list[str]] = {}
    names = [r["dirname"] for r in record["runs"]]
    for name in names:
        if is_done(out, name):
            problem = verify_run(out / RUNS_DIR / name)
            if problem is not None:
                damaged[name] = problem
                continue
            done.append(name)
            run = read_json(out / RUNS_DIR / name / "run.json") or {}
            if isinstance(run.get("wall_s"), (int, float)):
                walls[name] = float(run["wall_s"])
            metrics = read_json(out / RUNS_DIR / name / "metrics.json") or {}
            if metrics.get("fit_ok") is False:
                unfit[name] = [str(f) for f in metrics.get("fit_flags") or []]
        elif (out / FAILED_DIR / f"{name}.json").is_file():
            failed.append(name)
            rec = read_json(out / FAILED_DIR / f"{name}.json") or {}
            errors[name] = str(rec.get("error", "")).splitlines()[0] if rec.get("error") else ""
        elif (out / WORK_DIR / name).is_dir():
            started.append(name)
        else:
            remaining.append(name)
    published = sorted(p.name for p in (out / RUNS_DIR).glob("*") if (p / "run.json").is_file()) \
        if (out / RUNS_DIR).is_dir() else []
    extra = sorted(set(published) - set(names))
    return SweepStatus(record.get("name", "sweep"), done, failed, started, remaining, errors, walls, extra,
                       damaged=damaged, runner=describe_runner(read_runner_record(out)), unfit=unfit)


# ------------------------------------------------------------------------------------------ collect
class IncompleteSweepError(RuntimeError):
    """``sweep_report`` found expected runs missing or damaged (the report was written and lists them).

    Attributes
    ----------
    paths : dict of str to Path
        The report's files.
    missing : dict of str to str
        Run -> why it is not in the report.
    """

    def __init__(self, message: str, paths: dict[str, Path], missing: dict[str, str]) -> None:
        super().__init__(message)
        self.paths = paths
        self.missing = missing


def collect(out: Union[str, Path], *, all_runs: bool = False) -> list[dict[str, Any]]:
    """The results table from the published, intact run directories (the source of truth): one dict per
    run, from its ``metrics.json``. A run whose files do not match its manifest is left out with a
    WARNING naming it (:func:`sweep_status` and :func:`sweep_report` list it).

    Parameters
    ----------
    out : path
        The sweep directory.
    all_runs : bool
        Include published runs of earlier specs too (default: the current spec's runs only).
    """
    return _collect(Path(out), all_runs=all_runs, verified=frozenset())


def _collect(out: Path, *, all_runs: bool, verified: frozenset[str]) -> list[dict[str, Any]]:
    """:func:`collect`; the runs named in ``verified`` were just checked against their manifests (by
    :func:`sweep_status`) and are not hashed again."""
    names: Optional[set[str]] = None
    if not all_runs:
        names = {r["dirname"] for r in _read_sweep(out)["runs"]}
    rows = []
    runs_dir = out / RUNS_DIR
    for d in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if names is not None and d.name not in names:
            continue
        if not (d / "run.json").is_file():
            continue
        problem = None if d.name in verified else verify_run(d)
        metrics = read_json(d / "metrics.json") if problem is None else None
        if metrics is None:
            log.warning("%s is damaged (%s); left out of the table", d, problem or "metrics.json is unreadable")
            continue
        metrics.setdefault("dirname", d.name)
        rows.append(metrics)
    return rows


def sweep_table(out: Union[str, Path], *, all_runs: bool = False) -> Any:
    """:func:`collect` as a ``pandas.DataFrame`` (``pip install "qlandscape[report]"``)."""
    from .report import to_dataframe
    return to_dataframe(collect(out, all_runs=all_runs))


def sweep_report(out: Union[str, Path], *, all_runs: bool = False, allow_missing: bool = False) -> dict[str, Path]:
    """Write ``out/report/``: ``results.csv``, ``summary.csv``, ``report.md`` and the PNG plots
    (:func:`qlandscape.sweep.report.write_report`); returns the paths.

    ``report.md`` lists every run of the spec that is missing (failed, started, not started) or damaged.

    Raises
    ------
    IncompleteSweepError
        When any run of the spec is missing or damaged and ``allow_missing`` is False (the report is
        written first; the exception carries its paths).
    """
    from .report import write_report
    out = Path(out)
    record = _read_sweep(out)
    st = sweep_status(out)
    missing = st.missing()
    rows = _collect(out, all_runs=all_runs, verified=frozenset(st.done))
    paths = write_report(rows, out / "report", title=f"Sweep {record.get('name', '')}: the landscape at the minimum",
                         missing=missing, expected=st.total)
    if missing and not allow_missing:
        raise IncompleteSweepError(f"{len(missing)} of {st.total} runs of the spec are missing or damaged (listed in "
                                   f"{paths['report']}); the report holds the other {len(st.done)}: finish them with "
                                   "`qlandscape sweep run`, or pass --allow-missing to accept a partial report",
                                   paths, missing)
    return paths
