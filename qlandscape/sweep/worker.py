"""One sweep run, as a worker executes it: train, measure at the minimum, publish atomically.

The run is computed in ``ROOT/.work/<dirname>/``, a job run directory
(:mod:`qlandscape.rundir`): each step (training, the Hessian parts, the scans, the gradient variance)
is written atomically with its stamp as it finishes, so a run killed half-way resumes from its last
finished step. When every step is done the worker writes ``run.json`` (the plan, package versions,
device, host, times), ``metrics.json`` (the scalars of the results table, with the fit verdict
``fit_ok`` / ``fit_failed`` / ``fit_flags`` / ``fit`` of :mod:`qlandscape.fit`: whether the measured
point is a minimum), ``arrays.npz`` (the curves and spectra) and, last, ``manifest.json`` (the SHA-256
of every file, :mod:`~qlandscape.sweep.manifest`), fsyncs them, and renames the directory to
``ROOT/runs/<dirname>/`` in one atomic
step: a run directory under ``runs/`` is always complete. A run that raises is recorded in
``ROOT/failed/<dirname>.json`` (error, traceback, the end of its log) and its finished steps stay in
``.work`` for a retry.

:func:`execute_run` takes and returns only JSON-able values, so any ``concurrent.futures`` executor
(a spawn process pool, Dask) can run it; nothing is pickled to disk.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import shutil
import socket
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, cast

import numpy as np

if TYPE_CHECKING:
    from ..curvature import DensityResult, EigResult, TraceResult
    from ..fit import FitReport

from .manifest import write_manifest

RUNS_DIR = "runs"
WORK_DIR = ".work"
FAILED_DIR = "failed"
RUN_FILES = ("run.json", "metrics.json", "arrays.npz")
_PACKAGES = ("qlandscape", "torch", "numpy", "scipy", "pennylane", "pennylane_lightning",
             "pennylane_lightning_gpu", "matplotlib")

log = logging.getLogger("qlandscape")


def pin_threads(threads: int = 1) -> None:
    """Limit this process to ``threads`` compute threads (OpenMP, MKL, OpenBLAS and torch): workers that
    each use every core oversubscribe the machine (measured 10-100x slowdowns here)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel region
        torch.set_num_interop_threads(threads)


def package_versions() -> dict[str, Optional[str]]:
    """Installed versions of the packages a result depends on (None: not installed)."""
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fsync_tree(path: Path) -> None:
    """fsync every file and directory under ``path`` (files written with atomic_write_bytes already are;
    figures and directory entries may not be)."""
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _run_log(path: Path) -> Iterator[None]:
    """Copy the ``qlandscape`` logger's records of this run into ``path`` (appending: resumed runs keep
    their earlier lines)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ident = threading.get_ident()
    handler.addFilter(lambda record: record.thread == ident)  # this run's thread only
    logger = logging.getLogger("qlandscape")
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def is_done(root: Path, dirname: str) -> bool:
    """Whether the run is published (``runs/<dirname>/run.json`` exists: publication is one rename)."""
    return (Path(root) / RUNS_DIR / dirname / "run.json").is_file()


class BadFitError(RuntimeError):
    """The run's training did not reach a minimum and ``sweep.bad_fit = "fail"`` (:class:`~qlandscape.fit.FitReport`)."""


_RUN_LOCK = threading.Lock()
"""One run at a time per process: torch's global RNG (model initialization), its thread count and the
``qlandscape`` logger are process-wide, so runs sharing a process concurrently (a Dask worker with
several threads) would change each other's results; such a worker queues its runs instead (start Dask
workers with ``--nthreads 1`` and as many ``--nworkers`` as runs should run at once)."""


def execute_run(plan: dict[str, Any], root: str, threads: int = 1) -> dict[str, Any]:
    """Run one grid point and publish it under ``root/runs/`` (or record its failure); one at a time
    per process (see :data:`_RUN_LOCK`).

    Parameters
    ----------
    plan : dict
        :meth:`qlandscape.sweep.spec.RunPlan.to_dict`.
    root : str
        The sweep directory (shared by all workers: on a cluster, a shared filesystem).
    threads : int
        Compute threads of this run (:func:`pin_threads`).

    Returns
    -------
    dict
        ``dirname``, ``status`` ("done"; "skipped": already published; "busy": another live process holds
        the run's work directory, nothing recorded; or "failed"), ``wall_s``, and ``error`` (one line) for a
        failure or busy run. Never raises for a failing run.
    """
    with _RUN_LOCK:
        return _execute_run(plan, root, threads)


def _execute_run(plan: dict[str, Any], root: str, threads: int) -> dict[str, Any]:
    from .spec import RunPlan
    pin_threads(threads)
    p = RunPlan.from_dict(plan)
    base = Path(root)
    dirname = p.dirname
    if is_done(base, dirname):
        return {"dirname": dirname, "status": "skipped", "wall_s": 0.0}
    work = base / WORK_DIR / dirname
    start = time.perf_counter()
    from ..rundir import RunDirBusy, open_rundir
    try:
        with open_rundir(work):
            if is_done(base, dirname):  # published by another process between the check above and the lock
                shutil.rmtree(work, ignore_errors=True)
                return {"dirname": dirname, "status": "skipped", "wall_s": 0.0}
            with _run_log(work / "run.log"):
                log.info("run %s (%s) on %s, pid %d", dirname, p.run_id, socket.gethostname(), os.getpid())
                metrics, arrays, info = _measure(p, work)
            _write_record(work, p, metrics, arrays, info, time.perf_counter() - start)
            write_manifest(work)  # last: the checksums of everything published, run.json included
            _publish(work, base / RUNS_DIR / dirname)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base / FAILED_DIR / f"{dirname}.json")
        return {"dirname": dirname, "status": "done", "wall_s": time.perf_counter() - start}
    except RunDirBusy as exc:  # another live process computes this run (only open_rundir(work) raises it)
        return {"dirname": dirname, "status": "busy", "wall_s": 0.0, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a failing run is recorded and the sweep goes on
        wall = time.perf_counter() - start
        _record_failure(base, work, p, exc, wall)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"dirname": dirname, "status": "failed", "wall_s": wall, "error": f"{type(exc).__name__}: {first}"}


# ------------------------------------------------------------------------------------------ measuring
def _measure(p: Any, work: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Every step of the run in the run directory ``work`` (each reused when already finished)."""
    import dataclasses

    from .. import jobs
    cfg, m = p.config, p.measure
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    model, tr, ds = jobs.ensure_trained(cfg, work, progress=False)
    times["train"] = time.perf_counter() - t0
    info = jobs.model_info(model)
    arrays: dict[str, np.ndarray] = {}
    sel = tr.minimum
    steps_per_epoch = float(tr.steps[-1]) / cfg.train.epochs if cfg.train.epochs else 1.0
    metrics: dict[str, Any] = {
        **_architecture(cfg, ds, info), **p.coords, "run_id": p.run_id, "label": p.label, "model_kind": cfg.model.kind,
        "n_params": info["n_params"], "lr": cfg.train.lr, "epochs": cfg.train.epochs,
        "minimum_epoch": int(round(float(tr.steps[sel]) / steps_per_epoch)) if steps_per_epoch else 0,
        "train_loss": float(tr.train_loss[sel]), "train_acc": float(tr.train_metric[sel]),
        "test_loss": float(tr.test_loss[sel]), "test_acc": float(tr.test_metric[sel]),
        "final_train_loss": float(tr.train_loss[-1]), "final_test_acc": float(tr.test_metric[-1]),
        "device": (info.get("device_choice") or {}).get("name", "torch"),
    }
    for key in ("train_loss", "train_metric", "test_loss", "test_metric", "steps"):
        arrays[f"train/{key}"] = np.asarray(getattr(tr, key))
    arrays["train/lr"] = np.asarray(tr.lr)
    fit: Optional[FitReport] = None
    try:
        fit = jobs.checked_fit(work) or jobs.fit_report(model, tr, ds, cfg)  # the train step's verdict
    except (ValueError, RuntimeError, FloatingPointError) as exc:  # the check must not cost the run
        log.warning("fit check of %s not done (%s: %s); fit_ok is null", p.dirname, type(exc).__name__, exc)
        metrics.update(fit_ok=None, fit_failed=None, fit_flags=None, fit=None)
    if fit is not None:
        metrics.update(fit_ok=fit.ok, fit_failed=fit.failed, fit_flags=list(fit.flags), fit=fit.to_dict())
    if fit is not None and not fit.ok and p.bad_fit == "fail":
        raise BadFitError(f"the training did not reach a minimum ({'; '.join(fit.messages)}); not measured "
                          "(sweep.bad_fit = 'fail'; 'flag' measures it and flags the results)")

    parts = [name for name, on in (("eigs", m.eigs), ("trace", m.trace), ("density", m.density)) if on]
    if parts:
        t0 = time.perf_counter()
        res = jobs.run_hessian(cfg, work, progress=False, parts=parts)
        times["hessian"] = time.perf_counter() - t0
        if "eigs" in res:
            e = cast("EigResult", res["eigs"])
            metrics.update(lambda_max=float(e.eigenvalues[0]), lambda_max_bound=float(e.error_bounds[0]),
                           lambda_max_converged=bool(e.converged), eigenvalues=[float(v) for v in e.eigenvalues],
                           eigenvalue_bounds=[float(v) for v in e.error_bounds], eig_hvps=int(e.n_hvp))
            arrays["hessian/eigenvalues"] = np.asarray(e.eigenvalues)
            arrays["hessian/error_bounds"] = np.asarray(e.error_bounds)
            if cfg.hessian.which == "smallest":  # the smallest end only: eigenvalues[0] is not lambda_max
                metrics["lambda_max"] = metrics["lambda_max_bound"] = None
        if "trace" in res:
            t = cast("TraceResult", res["trace"])
            metrics.update(trace=float(t.estimate), trace_stderr=float(t.stderr), trace_method=t.method)
        if "density" in res:
            d = cast("DensityResult", res["density"])
            arrays["hessian/density_grid"] = np.asarray(d.grid)
            arrays["hessian/density"] = np.asarray(d.density)
    for kind in m.scans:
        t0 = time.perf_counter()
        scan = jobs.run_scan(p.scan_config(kind), work, progress=False, name=f"scan_{kind}")
        times[f"scan_{kind}"] = time.perf_counter() - t0
        arrays[f"scan_{kind}/alphas"] = np.asarray(scan.alphas)
        arrays[f"scan_{kind}/betas"] = np.asarray(scan.betas)
        arrays[f"scan_{kind}/loss"] = np.asarray(scan.loss)
        metrics[f"scan_{kind}_max_loss"] = float(np.nanmax(scan.loss))
        metrics[f"scan_{kind}_center_loss"] = float(scan.center_loss)
    if m.grad_var_inits:
        t0 = time.perf_counter()
        gv = _gradient_variance(p, work, ds)
        times["grad_var"] = time.perf_counter() - t0
        metrics.update(grad_var=float(gv.mean_variance), grad_var_inits=len(gv.seeds))
        arrays["grad_var/variance"] = np.asarray(gv.variance)
    metrics["step_times_s"] = times
    run_info = {"model_info": info, "train_config": dataclasses.asdict(cfg.train)}
    return metrics, arrays, run_info


def _architecture(cfg: Any, ds: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The resolved patch architecture of the run (preset defaults filled in): ``patches``, ``layers``,
    ``qubits``, ``ansatz``, ``aggregation`` of the patch QNN, or, for the classical baseline, of the QNN
    it is matched to (plus ``matched_qnn_params``)."""
    from .. import jobs
    qnn = info.get("config") if cfg.model.kind == "patch_qnn" else None
    out: dict[str, Any] = {}
    if qnn is None:  # the classical baseline: describe the QNN whose parameter count it matches
        qnn_model = jobs.build_patch_qnn(cfg, ds)
        qnn = jobs.model_info(qnn_model).get("config", {})
        out["matched_qnn_params"] = jobs.model_info(qnn_model)["n_params"]
    for key, name in (("n_patches", "patches"), ("layers", "layers"), ("n_qubits", "qubits"), ("ansatz", "ansatz"),
                      ("aggregation", "aggregation")):
        out[name] = qnn.get(key)
    return out


def _gradient_variance(p: Any, work: Path, ds: Any) -> Any:
    """The gradient variance at initialization (reused from ``work/grad_var.*`` when already there)."""
    from .. import jobs
    from ..results import ResultFileError
    from ..trainability import GradientVarianceResult, gradient_variance
    path = work / "grad_var"
    if path.with_suffix(".json").is_file():
        with contextlib.suppress(ResultFileError):
            return GradientVarianceResult.load(path)
    cfg, m = p.config, p.measure
    x, y = ds.train
    if m.grad_var_samples is not None:
        x, y = x[:m.grad_var_samples], y[:m.grad_var_samples]
    res = gradient_variance(lambda s: jobs.build_model(p.with_init_seed(s), ds), "cross_entropy", (x, y),
                            n_inits=m.grad_var_inits, seed=int(p.coords["seed"]),
                            dtype=jobs.DTYPES[cfg.objective.dtype], batch_size=cfg.objective.batch_size,
                            progress=False)
    res.save(path)
    return res


# ------------------------------------------------------------------------------------------ publishing
def _write_record(work: Path, p: Any, metrics: dict[str, Any], arrays: dict[str, np.ndarray],
                  info: dict[str, Any], wall: float) -> None:
    from ..rundir import atomic_write_bytes, write_json
    metrics = dict(metrics, wall_s=wall)
    record = {"run_id": p.run_id, "dirname": p.dirname, "label": p.label, "plan": p.to_dict(),
              "identity": p.identity(), "versions": package_versions(), "host": socket.gethostname(),
              "platform": platform.platform(), "pid": os.getpid(), "execution": uuid.uuid4().hex,
              "finished": _now(), "wall_s": wall, **info}
    buf = io.BytesIO()
    np.savez(buf, **cast(dict[str, Any], arrays))  # (numpy's stubs read ** as its allow_pickle keyword)
    atomic_write_bytes(work / "arrays.npz", buf.getvalue())
    write_json(work / "metrics.json", _finite_json(metrics))
    write_json(work / "run.json", _finite_json(record))  # last: its presence marks a complete record
    if not p.save_model:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(work / "model.pt")


def _finite_json(value: Any) -> Any:
    """NaN/inf -> None (strict JSON)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _publish(work: Path, final: Path) -> None:
    """fsync ``work`` and rename it to ``final`` (atomic on POSIX; ``final`` must not exist)."""
    _fsync_tree(work)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise FileExistsError(f"{final} already exists: the run was published by another process")
    os.rename(work, final)
    _fsync_dir(final.parent)
    _fsync_dir(work.parent)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(final / ".lock")  # our lock (filelock: flock on Unix) holds the renamed inode until released


def _record_failure(root: Path, work: Path, p: Any, exc: BaseException, wall: float) -> None:
    from ..rundir import write_json
    tail = ""
    with contextlib.suppress(OSError):
        tail = "".join((work / "run.log").read_text(errors="replace").splitlines(keepends=True)[-40:])
    record = {"run_id": p.run_id, "dirname": p.dirname, "label": p.label, "coords": p.coords,
              "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(), "log_tail": tail,
              "host": socket.gethostname(), "pid": os.getpid(), "failed": _now(), "wall_s": wall,
              "versions": package_versions()}
    try:
        write_json(root / FAILED_DIR / f"{p.dirname}.json", _finite_json(record))
    except OSError as err:  # the failure itself is still returned to the runner
        log.error("cannot record the failure of %s: %s", p.dirname, err)


def read_json(path: Path) -> Optional[dict[str, Any]]:
    """A JSON file's object, or None when missing or unreadable."""
    try:
        value = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def remove_work(root: Path, dirname: str) -> None:
    """Delete an unfinished run's work directory (``--restart``-style cleanups)."""
    shutil.rmtree(Path(root) / WORK_DIR / dirname, ignore_errors=True)
