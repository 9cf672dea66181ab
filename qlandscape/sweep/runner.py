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
is also kept in ``specs/<digest>.json``), ``runs/<dirname>/`` (published runs, the source of truth),
``failed/<dirname>.json`` (failures), ``.work/`` (unfinished runs) and ``report/``. Re-running a spec
skips published runs (and, unless ``retry_failed``, failed ones); a changed spec adds only its new grid
points. One runner per directory at a time (``DIR/.lock``).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import logging
import multiprocessing
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from ..progress import progress_bar
from .spec import RunPlan, SweepSpec
from .worker import FAILED_DIR, RUNS_DIR, WORK_DIR, execute_run, is_done, pin_threads, read_json

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
    """

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    run_wall_s: dict[str, float] = field(default_factory=dict)


def _spec_digest(spec: SweepSpec) -> str:
    return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def make_executor(executor: ExecutorSpec = "local", workers: int = 1, threads: int = 1) -> Iterator[cf.Executor]:
    """The executor named by ``executor`` (see the module docstring), shut down on exit (an executor
    instance passed in is left running).

    Raises
    ------
    ValueError
        Unknown executor name or ``workers < 1``.
    ImportError
        ``dask://`` without ``distributed`` installed (names the extra to install).
    """
    if isinstance(executor, cf.Executor):
        yield executor
        return
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if executor == "local":
        ctx = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=pin_threads,
                                      initargs=(threads,))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    if executor == "serial":
        yield _SerialExecutor()
        return
    if isinstance(executor, str) and executor.startswith(("dask://", "tcp://", "tls://")):
        try:
            from distributed import Client
        except ImportError:
            raise ImportError('executor="dask://..." needs Dask distributed: pip install "qlandscape[dask]"') from None
        address = "tcp://" + executor[len("dask://"):] if executor.startswith("dask://") else executor
        client = Client(address, timeout="30s")
        try:
            yield client.get_executor(pure=False)
        finally:
            client.close()
        return
    raise ValueError(f"unknown executor {executor!r}; use 'local', 'serial' or 'dask://HOST:PORT'")


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
    from .. import pipeline
    seen: set[str] = set()
    for p in plans:
        d = p.config.to_dict()  # the grid's seeds (initialization, minibatch order) do not change the architecture
        key = json.dumps({**d, "model": {**d["model"], "seed": 0}, "patch": {**d["patch"], "seed": 0},
                          "train": {**d["train"], "seed": 0}}, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            pipeline.build_model(p.config, pipeline.shape_only_dataset(p.config))
        except Exception as exc:  # noqa: BLE001 - any reason a model cannot be built is a spec error
            if type(exc).__name__ == "DeviceUnavailableError" and p.config.patch.device != "auto":
                # e.g. lightning.gpu named explicitly: the GPU may be on the workers only; they check it
                log.warning("grid point %s: %s here; the workers must provide it", p.label, exc)
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"grid point {p.label}: the model cannot be built: {first}") from None


def run_sweep(spec: SweepSpec, out: Union[str, Path], *, workers: int = 1, executor: ExecutorSpec = "local",
              threads: int = 1, retry_failed: bool = False, progress: bool = True) -> SweepOutcome:
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

    Returns
    -------
    SweepOutcome

    Raises
    ------
    ValueError
        A grid point whose model cannot be built (before any work).
    qlandscape.rundir.RunDirBusy
        Another runner holds ``out``.
    RuntimeError
        A worker process died (killed, out of memory); finished runs are kept and a rerun resumes.
    """
    from ..rundir import open_rundir
    start = time.perf_counter()
    out = Path(out)
    plans = spec.runs()
    validate_models(plans)
    outcome = SweepOutcome()
    with open_rundir(out):
        _write_sweep_file(out, spec, plans)
        todo = []
        for p in plans:
            failed_before = (out / FAILED_DIR / f"{p.dirname}.json").is_file()
            if is_done(out, p.dirname) or (failed_before and not retry_failed):
                outcome.skipped.append(p.dirname)
            else:
                todo.append(p)
        n_failed_before = sum(1 for d in outcome.skipped if not is_done(out, d))
        if n_failed_before:
            log.warning("%d run(s) failed before and are skipped; --retry-failed runs them again", n_failed_before)
        bar = progress_bar(len(plans), f"sweep {spec.name}", progress, initial=len(plans) - len(todo), leave=True)
        with make_executor(executor, workers, threads) as ex:
            futures = {ex.submit(execute_run, p.to_dict(), str(out), threads): p for p in todo}
            try:
                for fut in cf.as_completed(futures):
                    p = futures[fut]
                    try:
                        res = fut.result()
                    except cf.process.BrokenProcessPool:
                        raise RuntimeError(f"a worker process died (killed or out of memory) while running one of "
                                           f"the {len(todo) - len(outcome.done) - len(outcome.failed)} unfinished "
                                           f"runs; the {len(outcome.done)} runs finished now are kept: rerun the "
                                           "same command to resume") from None
                    except Exception as exc:  # noqa: BLE001 - e.g. a Dask worker lost: recorded, sweep goes on
                        res = {"dirname": p.dirname, "status": "failed", "wall_s": 0.0,
                               "error": f"{type(exc).__name__}: {exc}"}
                    _account(outcome, res)
                    bar.update(1)
                    bar.set_postfix(done=len(outcome.done) + len(plans) - len(todo) - n_failed_before,
                                    failed=len(outcome.failed) + n_failed_before,
                                    left=len(todo) - len(outcome.done) - len(outcome.failed),
                                    s_per_run=f"{_mean(outcome.run_wall_s.values()):.1f}")
            finally:
                for fut in futures:
                    fut.cancel()
        bar.close()
    outcome.wall_s = time.perf_counter() - start
    return outcome


def _account(outcome: SweepOutcome, res: dict[str, Any]) -> None:
    name = res["dirname"]
    if res["status"] == "done":
        outcome.done.append(name)
        outcome.run_wall_s[name] = float(res["wall_s"])
        log.info("finished %s in %.1f s", name, res["wall_s"])
    elif res["status"] == "skipped":
        outcome.skipped.append(name)
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
        Directory names: published; recorded as failed; with finished steps in ``.work`` but not
        published (interrupted or running); not started.
    errors : dict
        Failed run -> one-line error.
    run_wall_s : dict
        Published run -> seconds.
    extra : list of str
        Published runs that are not in the current spec (from an earlier spec).
    """

    name: str
    done: list[str]
    failed: list[str]
    started: list[str]
    remaining: list[str]
    errors: dict[str, str]
    run_wall_s: dict[str, float]
    extra: list[str]

    @property
    def total(self) -> int:
        return len(self.done) + len(self.failed) + len(self.started) + len(self.remaining)

    def summary(self) -> str:
        """Several lines: counts, time per run, failures."""
        w = list(self.run_wall_s.values())
        lines = [f"sweep {self.name}: {len(self.done)}/{self.total} done, {len(self.failed)} failed, "
                 f"{len(self.started)} started (interrupted or running), {len(self.remaining)} not started"]
        if w:
            lines.append(f"time per run: mean {statistics.mean(w):.1f} s, median {statistics.median(w):.1f} s, "
                         f"max {max(w):.1f} s, total {sum(w):.1f} s")
            left = len(self.failed) + len(self.started) + len(self.remaining)
            if left:
                lines.append(f"remaining work at the mean time per run: about {left * statistics.mean(w):.0f} "
                             "s of one worker")
        for name in self.failed:
            lines.append(f"failed {name}: {self.errors.get(name, '')}")
        if self.failed:
            lines.append("rerun with --retry-failed to run the failed ones again")
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
    """The state of the sweep in ``out`` (reads files only; safe while a sweep runs)."""
    out = Path(out)
    record = _read_sweep(out)
    done, failed, started, remaining = [], [], [], []
    errors: dict[str, str] = {}
    walls: dict[str, float] = {}
    names = [r["dirname"] for r in record["runs"]]
    for name in names:
        if is_done(out, name):
            done.append(name)
            run = read_json(out / RUNS_DIR / name / "run.json") or {}
            if isinstance(run.get("wall_s"), (int, float)):
                walls[name] = float(run["wall_s"])
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
    return SweepStatus(record.get("name", "sweep"), done, failed, started, remaining, errors, walls, extra)


# ------------------------------------------------------------------------------------------ collect
def collect(out: Union[str, Path], *, all_runs: bool = False) -> list[dict[str, Any]]:
    """The results table from the published run directories (the source of truth): one dict per run,
    from its ``metrics.json``.

    Parameters
    ----------
    out : path
        The sweep directory.
    all_runs : bool
        Include published runs of earlier specs too (default: the current spec's runs only).
    """
    out = Path(out)
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
        metrics = read_json(d / "metrics.json")
        if metrics is None:
            log.warning("%s has no readable metrics.json; left out of the table", d)
            continue
        metrics.setdefault("dirname", d.name)
        rows.append(metrics)
    return rows


def sweep_table(out: Union[str, Path], *, all_runs: bool = False) -> Any:
    """:func:`collect` as a ``pandas.DataFrame`` (``pip install "qlandscape[report]"``)."""
    from .report import to_dataframe
    return to_dataframe(collect(out, all_runs=all_runs))


def sweep_report(out: Union[str, Path], *, all_runs: bool = False) -> dict[str, Path]:
    """Write ``out/report/``: ``results.csv``, ``summary.csv``, ``report.md`` and the PNG plots
    (:func:`qlandscape.sweep.report.write_report`); returns the paths."""
    from .report import write_report
    out = Path(out)
    record = _read_sweep(out)
    rows = collect(out, all_runs=all_runs)
    return write_report(rows, out / "report", title=f"Sweep {record.get('name', '')}: the landscape at the minimum")
