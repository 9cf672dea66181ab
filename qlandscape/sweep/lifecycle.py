"""The processes of a sweep: pool workers that die with their runner, a runner that stops cleanly on
SIGTERM/SIGINT, and the runner record that says how the last runner ended.

- :func:`init_worker` is the local pool's initializer. A worker ignores SIGINT and SIGTERM (its runner
  handles them and stops it) and dies with its runner however the runner ends: on Linux the kernel sends
  it SIGKILL when the runner dies (``prctl(PR_SET_PDEATHSIG)``), and on every platform a watch thread
  exits it within a second of its parent changing (the runner died and it was re-parented).
- :func:`interruptible` turns SIGTERM (how SLURM, PBS and ``kill`` stop a job), SIGINT (Ctrl-C) and SIGHUP
  in the runner into :class:`SweepInterrupted`, so the runner stops its workers, keeps what finished and
  says so.
- ``DIR/runner.json`` (:func:`write_runner_record`, :func:`read_runner_record`) holds the runner's pid,
  host, start time and state: ``running``, then ``finished``, ``interrupted`` (with the signal) or
  ``executor_failed`` (with the executor's error). A ``running`` record whose process is gone on this host
  is reported as a runner that died (killed).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Iterator, Optional

log = logging.getLogger("qlandscape")

RUNNER_FILE = "runner.json"
_PR_SET_PDEATHSIG = 1
_WATCH_INTERVAL_S = 0.5
_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGINT", None),
                             getattr(signal, "SIGHUP", None)) if s is not None)


class SweepInterrupted(BaseException):
    """The runner received a termination signal (SIGTERM, SIGINT, SIGHUP).

    A ``BaseException`` like ``KeyboardInterrupt``, so that no ``except Exception`` in between swallows it.

    Attributes
    ----------
    signum : int
    kept : list of str
        Runs this runner had to compute that are published (filled in by
        :func:`~qlandscape.sweep.run_sweep` from the files, after its workers are stopped).
    stopped : list of str
        Runs that were in progress and were stopped (their finished steps stay in ``.work`` and resume).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.kept: list[str] = []
        self.stopped: list[str] = []

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's code for death by this signal, 128 + signum (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return (f"interrupted by {self.signal_name}: {len(self.kept)} run(s) finished by this runner are kept; "
                f"{len(self.stopped)} run(s) in progress were stopped (their finished steps stay in .work); rerun "
                "the same command to resume")


class ExecutorFailed(RuntimeError):
    """The executor itself failed (a pool worker died, the Dask scheduler was lost or cannot be reached);
    no run is recorded as failed for it, and a rerun resumes."""


# ------------------------------------------------------------------------------------------ workers
def init_worker(threads: int, parent_pid: int) -> None:
    """Initializer of a local pool worker: ignore SIGINT/SIGTERM, die with the runner ``parent_pid``, pin
    ``threads`` compute threads."""
    from .worker import pin_threads
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    die_with_parent(parent_pid)
    pin_threads(threads)


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit when its parent ``parent_pid`` is gone (see the module docstring)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(_WATCH_INTERVAL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="qlandscape-parent-watch", daemon=True).start()


def stop_pool(pool: Any, timeout: float = 10.0) -> list[int]:
    """Kill the worker processes of a ``concurrent.futures.ProcessPoolExecutor`` and wait for them (at most
    ``timeout`` seconds); returns their pids. Other executors are left alone (returns [])."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    if not procs:
        return []
    # Python 3.14's ProcessPoolExecutor.kill_workers order: shut down first (the manager thread stops
    # feeding the call queue and expects the workers to go), then kill.
    with contextlib.suppress(Exception):
        pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.kill()
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))
    return [p.pid for p in procs if p.pid is not None]


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT/SIGHUP raise :class:`SweepInterrupted` (once: later signals are
    ignored while the runner stops). Outside the main thread signals cannot be handled: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        nonlocal raised
        if raised:
            return
        raised = True
        raise SweepInterrupted(signum)

    old = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, prev in old.items():
            signal.signal(sig, prev)


# ------------------------------------------------------------------------------------------ the runner record
def write_runner_record(out: Path, state: str, **fields: Any) -> None:
    """Write ``out/runner.json`` for this process: pid, host, ``state`` and ``fields`` (merged with the
    record this process wrote before, so the start time is kept)."""
    from ..rundir import write_json
    from .worker import _now, read_json
    path = Path(out) / RUNNER_FILE
    old = read_json(path) or {}
    base = old if old.get("pid") == os.getpid() and old.get("host") == socket.gethostname() else {}
    record = {**base, "pid": os.getpid(), "host": socket.gethostname(), "state": state, "updated": _now(), **fields}
    record.setdefault("started", record["updated"])
    write_json(path, record)


def read_runner_record(out: Path) -> Optional[dict[str, Any]]:
    """``out/runner.json`` with ``state`` turned into ``"died"`` when it says ``running`` but its process is
    gone from this host (killed); None when there is none."""
    from .worker import read_json
    record = read_json(Path(out) / RUNNER_FILE)
    if record is None:
        return None
    if record.get("state") == "running" and record.get("host") == socket.gethostname():
        if not _alive(record.get("pid")):
            record["state"] = "died"
    return record


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_runner(record: Optional[dict[str, Any]]) -> Optional[str]:
    """One line on how the last runner of a sweep directory ended (None without a record)."""
    if record is None:
        return None
    pid, host, state = record.get("pid"), record.get("host"), record.get("state")
    who = f"pid {pid} on {host}"
    if state == "running":
        return f"a runner is running ({who}, started {record.get('started')})"
    if state == "died":
        return (f"the last runner ({who}, started {record.get('started')}) died without finishing (killed); "
                "rerun to resume")
    if state == "interrupted":
        return f"the last runner ({who}) was stopped by {record.get('signal')} at {record.get('updated')}; rerun to resume"
    if state == "executor_failed":
        return (f"the last runner ({who}) stopped at {record.get('updated')}: {record.get('reason')}; rerun (on a "
                "working executor) to resume")
    if state == "finished":
        return None
    return f"the last runner ({who}) is in state {state!r}"
