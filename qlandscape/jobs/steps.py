"""The step API every job is built from: compute a value once, store it in the run directory, reuse it.

A *step* is one named, resumable unit of a job (``train``, ``hessian_eigs``, ``scan``, ...). :func:`step`
runs it inside an open :class:`~qlandscape.rundir.RunDir`: when the directory holds a stamp of this
step whose configuration values, upstream step identities and file checksums all still hold, the stored
value is loaded (:func:`step`'s ``load``); otherwise the value is computed, written atomically
(``save``) and stamped. :func:`result_step` is the same for a :class:`~qlandscape.results.Result`
stored as ``<name>.npz`` + ``<name>.json``. A new job is a function that opens a run directory
(:func:`~qlandscape.rundir.open_rundir`), calls :func:`~qlandscape.jobs.train_step` (or not) and then
one :func:`result_step` per measurement, passing each the identities of the steps it builds on.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar

from ..config import RunConfig
from ..configview import ConfigReads, recorder_of
from ..results import Result, ResultFileError
from ..rundir import Drawers, RunDir, Stamp

__all__ = ["step", "result_step", "built_once"]

log = logging.getLogger("qlandscape")


T = TypeVar("T")


def step(rd: RunDir, name: str, cfg: RunConfig, *, outputs: tuple[str, ...], upstream: Mapping[str, str],
          force: bool, compute: Callable[[RunConfig], T], save: Callable[[T, str], None], load: Callable[[], T],
          figures: Optional[Callable[[T, RunConfig], Drawers]] = None,
          figure_names: tuple[str, ...] = ()) -> tuple[T, Stamp]:
    """Reuse or compute one step of a job (see :mod:`qlandscape.rundir`).

    Parameters
    ----------
    rd : RunDir
        The open run directory.
    name : str
        The step's name (its stamp's name; unique within the run directory).
    cfg : RunConfig
        The configuration; ``compute`` and ``figures`` get a view of it that records what they read.
    outputs : tuple of str
        The files ``save`` writes, relative to the run directory.
    upstream : mapping
        Identity of each earlier step whose output ``compute`` uses.
    force : bool
        Recompute, unless this session already computed the step.
    compute : callable
        ``compute(cfg_view)`` makes the value; what it reads through ``cfg_view`` keys the step.
    save : callable
        ``save(value, key)`` writes ``outputs`` (``key``: the digest of the values read, for the files'
        own provenance).
    load : callable
        ``load()`` reads them back, raising :class:`~qlandscape.results.ResultFileError` when they are
        unusable (the step is then recomputed).
    figures : callable, optional
        ``figures(value, cfg_view)``: the figures of the step, drawn after saving, and redrawn from the
        stored value when missing.
    figure_names : tuple of str
        Every figure the step may draw under any configuration: deleted before it recomputes.

    Returns
    -------
    value, Stamp
    """
    if not (force and name not in rd.fresh):
        stamp = rd.check(name, cfg, upstream, outputs)
        if stamp is not None:
            try:
                value = load()
            except ResultFileError as exc:
                log.warning("%s; recomputing %s", exc, name)
            else:
                log.info("reusing %s (config digest %s)", name, stamp.key)
                if figures is not None:
                    stamp = rd.draw(stamp, functools.partial(figures, value), cfg)
                return value, stamp
    rd.begin(name, figure_names)
    rec = ConfigReads(cfg)
    value = compute(rec.typed_view(RunConfig))
    key = Stamp(name, rec.reads, dict(upstream), {}).key
    save(value, key)
    stamp = rd.stamp_files(name, outputs, rec.reads, upstream)
    rd.commit(stamp)
    rd.fresh.add(name)
    if figures is not None:
        stamp = rd.draw(stamp, functools.partial(figures, value), cfg, redraw=True)
    return value, stamp


def _save(result: Result, path: Path, digest: str, info: Optional[dict[str, Any]] = None) -> None:
    result.provenance["config_digest"] = digest  # type: ignore[attr-defined]
    if info is not None:
        result.provenance["model_info"] = info  # type: ignore[attr-defined]
    result.save(path)


R = TypeVar("R", bound=Result)


def result_step(rd: RunDir, name: str, cls: type[R], cfg: RunConfig, upstream: Mapping[str, str], force: bool,
                 info: dict[str, Any], compute: Callable[[RunConfig], R],
                 figures: Optional[Callable[[R, RunConfig], Drawers]] = None,
                 figure_names: tuple[str, ...] = ()) -> R:
    """:func:`step` for a :class:`~qlandscape.results.Result` stored as ``<name>.npz`` + ``<name>.json``.

    Parameters
    ----------
    rd : RunDir
        The open run directory.
    name : str
        The step's name, also the stem of its two files.
    cls : type
        The :class:`~qlandscape.results.Result` subclass (a dataclass with a ``provenance`` dict field),
        whose ``load`` reads the files back.
    cfg : RunConfig
    upstream : mapping
    force : bool
    compute : callable
        ``compute(cfg_view)`` returns the Result.
    figures : callable, optional
    figure_names : tuple of str
        As in :func:`step`.
    info : dict
        JSON-able description of the model (:func:`~qlandscape.jobs.model_info`), stored in the result's
        provenance beside the configuration digest.

    Returns
    -------
    Result
        Computed now, or loaded from the run directory.
    """
    path = rd.path / name
    value, _ = step(rd, name, cfg, outputs=(f"{name}.npz", f"{name}.json"), upstream=upstream, force=force,
                     compute=compute, save=lambda res, key: _save(res, path, key, info),
                     load=lambda: cls.load(path), figures=figures, figure_names=figure_names)
    return value


def built_once(cfg: RunConfig, make: Callable[[RunConfig], T]) -> Callable[[RunConfig], T]:
    """An object several steps share, built on first need, with what building it read charged to each step.

    Parameters
    ----------
    cfg : RunConfig
        The job's configuration.
    make : callable
        ``make(cfg_view)`` builds the object (an objective, a model and its data, ...), reading the
        configuration through ``cfg_view``.

    Returns
    -------
    callable
        ``get(c)``: inside a step's ``compute(c)``, the object (built by the first call only), with the
        configuration values ``make`` read merged into ``c``'s record, so every step that uses it is keyed by
        them as if it had read them itself.
    """
    shared: list[tuple[T, ConfigReads]] = []

    def get(c: RunConfig) -> T:
        if not shared:
            rec = ConfigReads(cfg)
            shared.append((make(rec.typed_view(RunConfig)), rec))
        recorder_of(c).merge(shared[0][1])
        return shared[0][0]

    return get
