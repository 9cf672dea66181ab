"""The run directory: atomic writes, one process at a time, and stamps that say what each file is.

Every job step (``train``, ``hessian_eigs``, ``scan``, ...) that finishes writes a *stamp*,
``DIR/.stamps/<step>.json``, after its files:

- ``reads``: every configuration value the computation read (``"hessian.tol": 0.0001``, recorded by
  :class:`~qlandscape.configview.ConfigReads`), and ``figure_reads``, those its figures read;
- ``upstream``: the identity of each step whose output it used (e.g. the trained model);
- ``files`` and ``figures``: the SHA-256 of each file it wrote (figures only when drawing them worked).

A step is reused only when its stamp is readable, its upstream identities and every recorded value
are unchanged, and each file still has its recorded checksum; anything else is reported in one log
line and the step recomputed. Recomputing a step first deletes its old files and figures, and those of
every step downstream of it, so the directory never shows a stale picture as current.

``DIR/.lock`` serializes processes: :func:`open_rundir` takes an exclusive lock on it without
waiting (the ``filelock`` package: ``flock`` on Unix, ``msvcrt`` locking on Windows), so a second
process on the same directory fails at once with :class:`RunDirBusy`, naming the directory and the
holder's pid (written into the lock file by the holder; "unknown" where it cannot be read). The
operating system releases the lock when its holder exits, however it exits, so a killed run never
blocks the next one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import filelock

from .configview import ConfigReads, changed_reads

log = logging.getLogger("qlandscape")

STAMP_DIR = ".stamps"
LOCK_FILE = ".lock"
STAMP_FORMAT = 1
"""Version of the stamp layout; stamps of another version are not trusted (their step recomputes)."""


def _holder(path: Path) -> str:
    """The pid the lock's holder wrote into ``path``, or "unknown"."""
    try:
        with open(path, "rb") as fh:
            return fh.read(64).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


class RunDirError(Exception):
    """The output directory cannot be used (not a directory, not writable)."""


class RunDirBusy(RunDirError):
    """Another process holds the run directory's lock."""


# ---------------------------------------------------------------------------------------- files
def _umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # the portable way: set and restore
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, ``fsync`` and rename: a crash never leaves a
    half-written file behind. The file gets the mode an ordinary ``open`` would give it
    (``0o666`` less the umask), not the ``0o600`` of a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_ready(value: Any) -> Any:
    """A JSON-able copy of a summary: numpy arrays to lists, numpy scalars to Python numbers, NaN/inf to None
    (JSON has no NaN; a missing number is null)."""
    import numpy as np  # numpy only where a summary needs it: reading a run directory does not

    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented, key-sorted JSON, written atomically."""
    atomic_write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode())


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(value: Any) -> str:
    """Short stable hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def png_bytes(figure_or_axes: Any, dpi: int = 120) -> bytes:
    """Render a matplotlib figure (or the figure of an Axes) to PNG bytes and close it."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    fig = figure_or_axes if isinstance(figure_or_axes, Figure) else figure_or_axes.figure
    try:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()
    finally:
        plt.close(fig)


def draw_figures(out: Path, drawers: Mapping[str, Callable[[], Any]], dpi: int = 110) -> list[str]:
    """Draw and write ``out/<name>`` for each ``name -> draw()`` (a matplotlib figure) in order; returns the
    names written. A figure that fails to draw is logged in one line, left out, and any older file of that
    name deleted, so a summary never links a stale picture and a figure never costs the results."""
    written = []
    for name, draw in drawers.items():
        try:
            data = png_bytes(draw(), dpi=dpi)
        except Exception as exc:  # noqa: BLE001 - a figure must never cost the results
            (out / name).unlink(missing_ok=True)
            log.warning("could not draw %s (%s: %s); left out", out / name, type(exc).__name__,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            continue
        atomic_write_bytes(out / name, data)
        written.append(name)
    return written


# ---------------------------------------------------------------------------------------- stamps
@dataclasses.dataclass
class Stamp:
    """What a finished step wrote and what it was computed from (see the module docstring)."""

    step: str
    reads: dict[str, Any]
    upstream: dict[str, str]
    files: dict[str, str]
    figures: dict[str, str] = dataclasses.field(default_factory=dict)
    figure_reads: dict[str, Any] = dataclasses.field(default_factory=dict)
    figure_errors: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        """Digest of the configuration values read and the upstream identities: the step's cache key."""
        return digest({"reads": self.reads, "upstream": self.upstream})

    @property
    def identity(self) -> str:
        """Digest of the key and the files' checksums: changes whenever the step's output does."""
        return digest({"step": self.step, "key": self.key, "files": self.files})

    def to_json(self) -> dict[str, Any]:
        return {"format": STAMP_FORMAT, "key": self.key, "identity": self.identity, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, raw: Any) -> "Stamp":
        if not isinstance(raw, dict) or raw.get("format") != STAMP_FORMAT:
            raise ValueError("not a stamp of this version")
        names = {f.name for f in dataclasses.fields(cls)}
        stamp = cls(**{k: v for k, v in raw.items() if k in names})
        for name in ("reads", "upstream", "files", "figures", "figure_reads", "figure_errors"):
            if not isinstance(getattr(stamp, name), dict):
                raise ValueError(f"stamp field {name} is not a table")
        return stamp


Drawers = Mapping[str, Callable[[], Any]]
"""Figure file name -> function returning the matplotlib Figure or Axes to save."""

FigurePlan = Callable[[Any], Drawers]
"""Given the (tracked) configuration, the figures a step draws."""


class RunDir:
    """One process's session on a run directory; make it with :func:`open_rundir`.

    Attributes
    ----------
    path : Path
    fresh : set of str
        Steps computed during this session: ``force`` recomputes a step at most once per session.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fresh: set[str] = set()
        self._lock: Optional[filelock.BaseFileLock] = None
        self._depth = 0

    # ----------------------------------------------------------------- lock
    def _acquire(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunDirError(f"output directory {p} exists and is not a directory")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create output directory {p}: {exc.strerror or exc}") from None
        if not os.access(p, os.W_OK | os.X_OK):
            raise RunDirError(f"output directory {p} is not writable")
        path = p / LOCK_FILE
        lock = filelock.FileLock(str(path), timeout=0)  # created 0o666 & ~umask, as every file written here
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RunDirBusy(f"output directory {p} is in use by another qlandscape process (pid {_holder(path)}); "
                             "wait for it to finish or use another output directory") from None
        except OSError as exc:
            raise RunDirError(f"cannot write to output directory {p}: {exc.strerror or exc}") from None
        try:  # the holder's pid, for the message a second process prints (the lock does not depend on it)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            finally:
                os.close(fd)
        except OSError:  # e.g. a locked byte range on Windows: the message then says "unknown"
            pass
        self._lock = lock

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()  # also released by the OS when the process exits, however it exits
            self._lock = None

    # ----------------------------------------------------------------- stamps
    def stamp_path(self, step: str) -> Path:
        return self.path / STAMP_DIR / f"{step}.json"

    def read_stamp(self, step: str, warn: bool = True) -> Optional[Stamp]:
        """The stamp of ``step``, or None when there is none (or it is unreadable: logged)."""
        path = self.stamp_path(step)
        if not path.is_file():
            return None
        try:
            return Stamp.from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError, TypeError) as exc:
            if warn:
                log.warning("%s is unreadable (%s); recomputing %s", path, _short(exc), step)
            return None

    def check(self, step: str, config: Any, upstream: Mapping[str, str], outputs: tuple[str, ...]) -> Optional[Stamp]:
        """The stamp of ``step`` when its files can be reused with ``config``, else None.

        Logs one line saying why not: at INFO level for a changed configuration or upstream step, as
        a WARNING naming the file for a missing, truncated or modified file.
        """
        stamp = self.read_stamp(step)
        if stamp is None:
            if not self.stamp_path(step).is_file():
                present = [n for n in outputs if (self.path / n).exists()]
                if present:
                    log.info("%s has no stamp (interrupted, or written by an older version); recomputing %s",
                             self.path / present[0], step)
            return None
        if set(stamp.files) != set(outputs):
            log.info("%s lists other files than %s writes; recomputing it", self.stamp_path(step), step)
            return None
        moved = sorted(k for k in set(stamp.upstream) | set(upstream) if stamp.upstream.get(k) != upstream.get(k))
        if moved:
            log.info("recomputing %s: %s changed", step, ", ".join(f"step {m}" for m in moved))
            return None
        changed = changed_reads(config, stamp.reads)
        if changed:
            log.info("recomputing %s: %s changed", step, ", ".join(changed))
            return None
        for name, checksum in stamp.files.items():
            problem = self.file_problem(name, checksum)
            if problem:
                log.warning("%s %s; recomputing %s", self.path / name, problem, step)
                return None
        return stamp

    def file_problem(self, name: str, checksum: str) -> Optional[str]:
        """Why ``name`` is not the file with ``checksum`` (None when it is)."""
        path = self.path / name
        if not path.is_file():
            return "is missing"
        try:
            if sha256_file(path) != checksum:
                return "does not match its recorded checksum (truncated or modified)"
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        return None

    def begin(self, step: str, figure_names: tuple[str, ...] = ()) -> None:
        """Forget ``step`` before recomputing it: delete its stamp, its files, the figures it may have
        drawn (``figure_names`` and those its stamp lists) and, recursively, every step downstream."""
        self._forget(step, set(figure_names), set())

    def _forget(self, step: str, extra: set[str], seen: set[str]) -> None:
        if step in seen:
            return
        seen.add(step)
        stamp = self.read_stamp(step, warn=False)
        names = set(extra)
        if stamp is not None:
            names |= set(stamp.files) | set(stamp.figures) | set(stamp.figure_errors)
        with contextlib.suppress(FileNotFoundError):
            self.stamp_path(step).unlink()
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        for other in self._downstream_of(step):
            log.info("deleting %s: it was computed from the previous %s", other, step)
            self._forget(other, set(), seen)

    def _downstream_of(self, step: str) -> list[str]:
        stamps = self.path / STAMP_DIR
        if not stamps.is_dir():
            return []
        out = []
        for p in sorted(stamps.glob("*.json")):
            stamp = self.read_stamp(p.stem, warn=False)
            if stamp is not None and step in stamp.upstream:
                out.append(p.stem)
        return out

    def commit(self, stamp: Stamp) -> None:
        """Write the stamp (last, after the step's files: a crash before it leaves the step unclaimed)."""
        write_json(self.stamp_path(stamp.step), stamp.to_json())

    def stamp_files(self, step: str, names: tuple[str, ...], reads: Mapping[str, Any],
                    upstream: Mapping[str, str]) -> Stamp:
        """A stamp for the just-written files ``names`` of ``step`` (checksums read back from disk)."""
        return Stamp(step=step, reads=dict(reads), upstream=dict(upstream),
                     files={n: sha256_file(self.path / n) for n in names})

    # ----------------------------------------------------------------- figures
    def draw(self, stamp: Stamp, plan: FigurePlan, config: Any, redraw: bool = False) -> Stamp:
        """Draw the figures of ``plan`` that the stamp does not vouch for and record them in it.

        A figure is (re)drawn when it is missing, differs from its recorded checksum, was never drawn,
        or its configuration values changed (then all are redrawn); ``redraw`` draws them all. A figure
        that fails to draw is logged, deleted and kept out of ``stamp.figures``. Commits the stamp when
        anything changed; returns it.
        """
        changed = changed_reads(config, stamp.figure_reads)
        if changed and not redraw:
            log.info("redrawing the figures of %s: %s changed", stamp.step, ", ".join(changed))
        redraw = redraw or bool(changed)
        rec = ConfigReads(config)
        drawers = plan(rec.view)
        before = dataclasses.replace(stamp)
        figures, errors = dict(stamp.figures), {}
        for name in set(figures) - set(drawers):  # no longer part of the plan: not current
            figures.pop(name)
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        for name, draw in drawers.items():
            problem = None if redraw else ("was never drawn" if name not in figures
                                           else self.file_problem(name, figures[name]))
            if not redraw and problem is None:
                continue
            if problem and name in figures:
                log.warning("%s %s; redrawing it from the stored %s result", self.path / name, problem, stamp.step)
            figures.pop(name, None)
            try:
                data = png_bytes(draw())
            except Exception as exc:  # noqa: BLE001 - a figure must never cost the computed result
                with contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()
                errors[name] = _short(exc)
                log.warning("could not draw %s (%s); the %s result is kept without it", self.path / name,
                            errors[name], stamp.step)
                continue
            atomic_write_bytes(self.path / name, data)
            figures[name] = hashlib.sha256(data).hexdigest()
        stamp = dataclasses.replace(stamp, figures=figures, figure_errors=errors,
                                    figure_reads={**stamp.figure_reads, **rec.reads} if not redraw else rec.reads)
        if stamp != before:
            self.commit(stamp)
        return stamp


def _short(exc: BaseException) -> str:
    """One line describing an exception."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------- sessions
_SESSIONS: dict[str, RunDir] = {}
_SESSIONS_LOCK = threading.Lock()


@contextlib.contextmanager
def open_rundir(path: Path) -> Iterator[RunDir]:
    """Hold the run directory ``path`` (created if needed) for this process.

    Re-entrant: nested calls on the same directory share one :class:`RunDir` session (and its
    :attr:`~RunDir.fresh` set); the lock is released when the outermost call exits.

    Raises
    ------
    RunDirError
        ``path`` is a file or cannot be created or written.
    RunDirBusy
        Another process holds the directory (the message names it and that process's pid).
    """
    path = Path(path)
    key = os.path.abspath(path)
    with _SESSIONS_LOCK:
        rd = _SESSIONS.get(key)
        if rd is None:
            rd = RunDir(path)
            rd._acquire()
            _SESSIONS[key] = rd
        rd._depth += 1
    try:
        yield rd
    finally:
        with _SESSIONS_LOCK:
            rd._depth -= 1
            if rd._depth == 0:
                del _SESSIONS[key]
                rd._release()
