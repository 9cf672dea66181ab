"""Sweep specifications: a grid of patch networks (quantum and their matched classical baselines),
one base run configuration, and what to measure at each trained minimum.

A spec is TOML (read with ``tomllib``) or built in Python; it becomes frozen dataclasses validated when
built, so a bad spec fails before any work with one line naming the field (``grid.patches``,
``measure.scans``, ``train.lr``, ...). The file has three sweep tables and any sections of the run
configuration (``qlandscape/configs/default.toml`` documents those)::

    [sweep]                      # name, description, save_model, bad_fit
    [grid]                       # the axes: model, patches, layers, qubits, ansatz, aggregation, seeds
    [grid.lr_by_layers]          # optional: learning rate per layers value ("50" = 1e-2, ...)
    [measure]                    # eigs, trace, density, scans, grad_var_inits, grad_var_samples
    [data] [patch] [train] [objective] [hessian] [scan]   # the base configuration of every run

:meth:`SweepSpec.runs` expands the grid into :class:`RunPlan` objects, in a fixed order, each with a
deterministic :attr:`RunPlan.run_id`: the hash of its canonical configuration (everything that can change
its results; ``data.path``, where the data are read from, is left out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..config import PATCH_AGGREGATIONS, PATCH_ANSATZE, RunConfig, apply_overrides, config_from_dict
from ..config.checks import check_bool, check_int, check_int_list, fail, normalize, show

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "presets"
MODEL_KINDS: dict[str, str] = {"quantum": "patch_qnn", "classical": "patch_mlp"}
"""``grid.model`` values and the ``model.kind`` they run: the patch QNN, or its parameter-matched patch MLP."""
SCAN_KINDS: tuple[str, ...] = ("pca", "filter")
"""``measure.scans`` values: scans along the training trajectory's principal directions, or along
filter-normalized random directions (each uses the base ``[scan]`` settings, ``dims`` included, with these
directions)."""
RUN_SECTIONS: tuple[str, ...] = ("data", "model", "patch", "train", "objective", "hessian", "scan")
"""The run-configuration sections a sweep run reads (its identity is made of them)."""
PATCH_AXES: dict[str, str] = {"patches": "n_patches", "layers": "layers", "qubits": "n_qubits", "ansatz": "ansatz",
                              "aggregation": "aggregation"}
"""``[grid]`` axes that set a ``[patch]`` key of every run: axis -> ``patch`` key."""
BAD_FIT_CHOICES: tuple[str, ...] = ("flag", "fail")
"""``sweep.bad_fit`` values (see :class:`SweepMeta`)."""
RUN_FORMAT = 1
"""Version of the run identity's canonical form (a change makes every run id new)."""


def _check_str_choices(section: str, key: str, value: Any, allowed: tuple[str, ...], optional: bool = False,
                       min_len: int = 1) -> None:
    if value is None and optional:
        return
    if not (isinstance(value, tuple) and len(value) >= min_len and all(v in allowed for v in value)
            and len(set(value)) == len(value)):
        extra = " (or omitted for the base configuration's value)" if optional else ""
        fail(section, key, value, f"a list of distinct values from {list(allowed)}{extra}")


# ------------------------------------------------------------------------------------------ tables
@dataclass(frozen=True)
class SweepMeta:
    """``[sweep]``: ``name`` (letters, digits, ``-``, ``_``), ``description``, ``save_model`` (keep the
    minimum's weights, ``model.pt``, in each run directory; the trajectory of recorded checkpoints is
    always in ``train.npz``) and ``bad_fit``: what a run does when its training did not reach a minimum
    (:mod:`qlandscape.fit`: diverged, non-finite, at chance accuracy, gradient not small): ``"flag"``
    (default) measures anyway and records the flags in ``metrics.json`` (``fit_ok``, ``fit_flags``), the
    results table and ``report.md``; ``"fail"`` records the run as failed, with the flags as its error,
    before any measurement. Neither changes a run's id."""

    name: str = "sweep"
    description: str = ""
    save_model: bool = True
    bad_fit: str = "flag"

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name and all(c.isalnum() or c in "-_" for c in self.name)):
            fail("sweep", "name", self.name, "a non-empty string of letters, digits, '-' and '_'")
        if not isinstance(self.description, str):
            fail("sweep", "description", self.description, "a string")
        check_bool("sweep", "save_model", self.save_model)
        if self.bad_fit not in BAD_FIT_CHOICES:
            fail("sweep", "bad_fit", self.bad_fit, f"one of {list(BAD_FIT_CHOICES)}")


@dataclass(frozen=True)
class GridSpec:
    """``[grid]``: the axes of the sweep; every combination is one run.

    ``model``: "quantum" (``model.kind = "patch_qnn"``) and/or "classical" (``"patch_mlp"``, matched to the
    QNN of the same grid point). ``patches``, ``layers``, ``qubits``, ``ansatz``, ``aggregation``: values of
    ``patch.n_patches``, ``patch.layers``, ``patch.n_qubits``, ``patch.ansatz``, ``patch.aggregation``
    (omitted: the base configuration's one value). ``seeds``: each seeds the initialization
    (``patch.seed`` and ``model.seed``) and the minibatch order (``train.seed``); the data split, the
    Hessian probes and scan directions keep the base seeds, so runs differ only in training.
    ``lr_by_layers``: ``train.lr`` for each ``layers`` value (TOML table ``[grid.lr_by_layers]`` with
    keys such as ``"50"``); it must name every value of ``layers``.
    """

    model: tuple[str, ...] = ("quantum",)
    patches: Optional[tuple[int, ...]] = None
    layers: Optional[tuple[int, ...]] = None
    qubits: Optional[tuple[int, ...]] = None
    ansatz: Optional[tuple[str, ...]] = None
    aggregation: Optional[tuple[str, ...]] = None
    seeds: tuple[int, ...] = (0,)
    lr_by_layers: Optional[tuple[tuple[int, float], ...]] = None

    def __post_init__(self) -> None:
        if isinstance(self.lr_by_layers, dict):
            object.__setattr__(self, "lr_by_layers", _lr_table(self.lr_by_layers))
        normalize(self)
        s = "grid"
        _check_str_choices(s, "model", self.model, tuple(MODEL_KINDS))
        for key in ("patches", "layers", "qubits"):
            check_int_list(s, key, getattr(self, key), 1, distinct=True, optional="the base configuration's value")
        _check_str_choices(s, "ansatz", self.ansatz, PATCH_ANSATZE, optional=True)
        _check_str_choices(s, "aggregation", self.aggregation, PATCH_AGGREGATIONS, optional=True)
        check_int_list(s, "seeds", self.seeds, 0, distinct=True, example="[0, 1, 2]")
        if self.lr_by_layers is not None:
            table = self.lr_by_layers
            ok = isinstance(table, tuple) and all(
                isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], int) and not isinstance(p[0], bool)
                and p[0] >= 1 and isinstance(p[1], (int, float)) and not isinstance(p[1], bool) and p[1] > 0
                for p in table)
            if not ok:
                fail(s, "lr_by_layers", table, 'a table of layers -> learning rate > 0, e.g. {"50" = 0.01}')
            if self.layers is None:
                fail(s, "lr_by_layers", dict(table), "omitted unless grid.layers is given")
            missing = sorted(set(self.layers) - {k for k, _ in table})
            if missing:
                fail(s, "lr_by_layers", dict(table), f"a table naming every grid.layers value (missing {missing})")

    def axes(self) -> dict[str, tuple[Any, ...]]:
        """The axes that are set, in expansion order (the last varies fastest)."""
        out: dict[str, tuple[Any, ...]] = {"model": self.model}
        for key in ("patches", "layers", "qubits", "ansatz", "aggregation"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["seed"] = self.seeds
        return out

    def lr_for(self, layers: int) -> Optional[float]:
        return None if self.lr_by_layers is None else float(dict(self.lr_by_layers)[layers])


def _lr_table(raw: dict[Any, Any]) -> Any:
    """``{"50": 0.01}`` (TOML keys are strings) -> ``((50, 0.01),)``; anything unreadable is returned
    as is for :class:`GridSpec` to report."""
    try:
        pairs = [(int(k), float(v) if isinstance(v, int) and not isinstance(v, bool) else v)
                 for k, v in raw.items()]
    except (TypeError, ValueError):
        return tuple(raw.items())
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class MeasureSpec:
    """``[measure]``: what each run measures at its minimum (settings from the base ``[hessian]`` and
    ``[scan]`` sections).

    ``eigs``: the ``hessian.top_k`` extreme eigenvalues (``hessian.which``) with certified error bounds;
    ``trace``: the Hessian trace (``hessian.trace_method``, with its standard error); ``density``: the SLQ
    spectral density; ``scans``: landscape scans (``scan.dims`` 1 or 2, default 2), "pca" (the trajectory's
    PCA directions) and/or "filter" (filter-normalized random directions); ``grad_var_inits``: the gradient variance of the training loss over
    this many random initializations (the barren-plateau diagnostic; 0: off, else >= 2), on the first
    ``grad_var_samples`` training samples (omitted: all).
    """

    eigs: bool = True
    trace: bool = True
    density: bool = False
    scans: tuple[str, ...] = ()
    grad_var_inits: int = 0
    grad_var_samples: Optional[int] = None

    def __post_init__(self) -> None:
        normalize(self)
        s = "measure"
        for key in ("eigs", "trace", "density"):
            check_bool(s, key, getattr(self, key))
        _check_str_choices(s, "scans", self.scans, SCAN_KINDS, min_len=0)
        check_int(s, "grad_var_inits", self.grad_var_inits, 0)
        if self.grad_var_inits == 1:
            fail(s, "grad_var_inits", 1, "0 (off) or >= 2 (a variance needs two initializations)")
        check_int(s, "grad_var_samples", self.grad_var_samples, 1, optional="all training samples")


# ------------------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class RunPlan:
    """One grid point: its coordinates, full configuration and measurements.

    Attributes
    ----------
    coords : dict
        ``model`` ("quantum" / "classical"), ``seed`` and the other grid axes that are set.
    config : RunConfig
        The complete, validated run configuration.
    measure : MeasureSpec
    save_model : bool
    bad_fit : {"flag", "fail"}
        See :class:`SweepMeta`.
    """

    coords: dict[str, Any]
    config: RunConfig
    measure: MeasureSpec
    save_model: bool = True
    bad_fit: str = "flag"

    def identity(self) -> dict[str, Any]:
        """The canonical form hashed into :attr:`run_id`: what can change the run's results, i.e. the
        sections a sweep run reads (:data:`RUN_SECTIONS`) in :meth:`RunConfig.canonical` form, so that keys
        and sections added to the configuration later do not change the ids of finished runs while at their
        defaults. Left out: ``data.path`` (where the data are, not what they are) and ``save_model``."""
        cfg = self.config.canonical(*RUN_SECTIONS)
        cfg["data"].pop("path", None)
        return {"format": RUN_FORMAT, "config": cfg, "measure": dataclasses.asdict(self.measure)}

    @property
    def run_id(self) -> str:
        """16 hex digits of the SHA-256 of :meth:`identity` (canonical JSON)."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """Readable name: ``quantum-p4-L2-s0`` (axes that are set, abbreviated)."""
        short = {"patches": "p", "layers": "L", "qubits": "q", "seed": "s"}
        parts = [str(self.coords["model"])]
        for key in ("patches", "layers", "qubits", "ansatz", "aggregation", "seed"):
            if key in self.coords:
                parts.append(f"{short.get(key, '')}{self.coords[key]}")
        return "-".join(parts)

    @property
    def dirname(self) -> str:
        """The run's directory name: ``<label>-<run_id>``."""
        return f"{self.label}-{self.run_id}"

    def scan_config(self, kind: str) -> RunConfig:
        """The configuration of the ``kind`` scan ("pca" or "filter"): the base ``[scan]`` (its ``dims``,
        1 or 2, ``n_points``, ranges) with these directions (validated)."""
        return dataclasses.replace(self.config, scan=dataclasses.replace(self.config.scan, directions=kind))

    def with_init_seed(self, seed: int) -> RunConfig:
        """The configuration with every initialization seed set to ``seed`` (gradient variance at init)."""
        c = self.config
        return dataclasses.replace(c, model=dataclasses.replace(c.model, seed=seed),
                                   patch=dataclasses.replace(c.patch, seed=seed))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what a worker receives; :meth:`from_dict` inverts it)."""
        return {"coords": dict(self.coords), "config": self.config.to_dict(),
                "measure": dataclasses.asdict(self.measure), "save_model": self.save_model, "bad_fit": self.bad_fit}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunPlan":
        return cls(coords=dict(raw["coords"]), config=config_from_dict(raw["config"]),
                   measure=MeasureSpec(**raw["measure"]), save_model=bool(raw["save_model"]),
                   bad_fit=str(raw.get("bad_fit", "flag")))


# ------------------------------------------------------------------------------------------ spec
_SWEEP_TABLES: dict[str, type] = {"sweep": SweepMeta, "grid": GridSpec, "measure": MeasureSpec}


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: ``grid`` x ``base`` configuration, measured per ``measure``.

    Build it from TOML with :func:`load_spec` (a file or a preset name) or in Python; every grid point's
    configuration is validated when the spec is built.
    """

    meta: SweepMeta = field(default_factory=SweepMeta)
    grid: GridSpec = field(default_factory=GridSpec)
    measure: MeasureSpec = field(default_factory=MeasureSpec)
    base: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        for name, cls in (("meta", SweepMeta), ("grid", GridSpec), ("measure", MeasureSpec), ("base", RunConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"SweepSpec.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if self.measure.grad_var_samples is not None and self.base.data.n_samples is not None:
            n_train = self.base.data.n_samples  # MNIST: n_samples training images
            if self.base.data.dataset == "digits":  # digits: n_samples split into train and test
                n_train -= math.ceil(self.base.data.test_size * n_train)
            if self.measure.grad_var_samples > n_train:
                fail("measure", "grad_var_samples", self.measure.grad_var_samples,
                      f"at most the {n_train} training samples")
        self.runs()  # every grid point's configuration is valid

    @property
    def name(self) -> str:
        return self.meta.name

    def runs(self) -> list[RunPlan]:
        """Every grid point, in a fixed order (axes as in :meth:`GridSpec.axes`, the last fastest).

        Raises
        ------
        ValueError
            A grid point whose configuration is invalid (the message names the point and the key).
        """
        axes = self.grid.axes()
        plans = []
        for values in itertools.product(*axes.values()):
            coords = dict(zip(axes, values))
            try:
                cfg = self._config_at(coords)
            except ValueError as exc:
                raise ValueError(f"grid point {coords}: {exc}") from None
            plans.append(RunPlan(coords, cfg, self.measure, self.meta.save_model, self.meta.bad_fit))
            for kind in self.measure.scans:
                try:
                    plans[-1].scan_config(kind)
                except ValueError as exc:
                    raise ValueError(f"measure.scans = {show(self.measure.scans)} at grid point {coords}: {exc}") \
                        from None
        return plans

    def _config_at(self, coords: dict[str, Any]) -> RunConfig:
        b = self.base
        patch = dataclasses.replace(b.patch, seed=coords["seed"],
                                    **{PATCH_AXES[k]: v for k, v in coords.items() if k in PATCH_AXES})
        model = dataclasses.replace(b.model, kind=MODEL_KINDS[coords["model"]], seed=coords["seed"])
        lr = self.grid.lr_for(coords["layers"]) if "layers" in coords else None
        extra: dict[str, Any] = {"lr": lr} if lr is not None else {}
        train = dataclasses.replace(b.train, seed=coords["seed"], **extra)
        return dataclasses.replace(b, patch=patch, model=model, train=train)

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-able form (``grid.lr_by_layers`` as a table with string keys); :func:`spec_from_dict`
        inverts it."""
        grid = dataclasses.asdict(self.grid)
        if self.grid.lr_by_layers is not None:
            grid["lr_by_layers"] = {str(k): v for k, v in self.grid.lr_by_layers}
        out = {"sweep": dataclasses.asdict(self.meta), "grid": {k: v for k, v in grid.items() if v is not None},
               "measure": dataclasses.asdict(self.measure)}
        out.update(self.base.to_dict())
        return out

    def fast(self) -> "SweepSpec":
        """A smoke-size version of this spec: the first value of every grid axis but ``model`` (all kinds)
        and ``patches`` (the first two), one seed, at most 3 epochs (checkpoints every epoch), at most 300
        training samples in batches (and objective chunks) of at most 25 (so that ``patch.device = "auto"``
        can pick a broadcasting simulator for the paper's large circuits), and cheaper measurements (top-2
        eigenvalues, 10 trace probes, 1 x 20 SLQ, 7 x 7 scans, 4 initializations for the gradient variance)."""
        g, b, m = self.grid, self.base, self.measure
        first: dict[str, Any] = {k: (getattr(g, k)[:1] if getattr(g, k) is not None else None)
                 for k in ("layers", "qubits", "ansatz", "aggregation")}
        grid = dataclasses.replace(g, patches=g.patches[:2] if g.patches else g.patches, seeds=g.seeds[:1], **first)
        if grid.lr_by_layers is not None and grid.layers is not None:
            grid = dataclasses.replace(grid, lr_by_layers=tuple(p for p in grid.lr_by_layers if p[0] in grid.layers))
        n = 300 if b.data.n_samples is None else min(b.data.n_samples, 300)
        data = dataclasses.replace(b.data, n_samples=n)
        epochs = min(b.train.epochs, 3)
        t_max = getattr(b.train, "t_max", None)
        train_kw: dict[str, Any] = {"epochs": epochs, "record_every": 1, "batch_size": min(b.train.batch_size, 25)}
        if t_max is not None:
            train_kw["t_max"] = min(t_max, epochs)
        h = b.hessian
        hessian = dataclasses.replace(h, top_k=min(h.top_k, 2), trace_probes=min(h.trace_probes, 10),
                                      density_probes=1, density_steps=min(h.density_steps, 20))
        scan = dataclasses.replace(b.scan, n_points=min(b.scan.n_points, 7))
        objective = dataclasses.replace(b.objective, batch_size=None if b.objective.batch_size is None
                                        else min(b.objective.batch_size, 25))
        base = dataclasses.replace(b, data=data, train=dataclasses.replace(b.train, **train_kw), hessian=hessian,
                                   scan=scan, objective=objective)
        measure = dataclasses.replace(m, grad_var_inits=min(m.grad_var_inits, 4),
                                      grad_var_samples=None if m.grad_var_samples is None else min(m.grad_var_samples,
                                                                                                   200))
        meta = dataclasses.replace(self.meta, name=f"{self.meta.name}-fast")
        return SweepSpec(meta=meta, grid=grid, measure=measure, base=base)


def spec_from_dict(raw: dict[str, Any]) -> SweepSpec:
    """Build a :class:`SweepSpec` from nested dicts (TOML's tables); unknown keys and bad values are
    one-line errors naming ``table.key``."""
    kwargs: dict[str, Any] = {}
    rest = dict(raw)
    for table, cls in _SWEEP_TABLES.items():
        values = rest.pop(table, {})
        if not isinstance(values, dict):
            raise ValueError(f"[{table}] must be a table of keys, got {values!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in [{table}]; valid keys: {sorted(names)}")
        kwargs["meta" if table == "sweep" else table] = cls(**values)
    unread = sorted(set(rest) - set(RUN_SECTIONS))
    if unread:
        known = {f.name for f in dataclasses.fields(RunConfig)}
        what = "not read by sweep runs" if set(unread) <= known else "unknown"
        raise ValueError(f"table(s) {unread} {what}; a sweep spec holds [sweep], [grid], [measure] and the run "
                         f"sections {', '.join(f'[{t}]' for t in RUN_SECTIONS)}")
    _refuse_keys_the_grid_sets(rest, kwargs.get("grid", GridSpec()))
    base = config_from_dict(rest)
    return SweepSpec(base=base, **kwargs)


def _refuse_keys_the_grid_sets(raw: dict[str, Any], grid: GridSpec) -> None:
    """ValueError for a run-section key that the grid overwrites in every run (it would be ignored)."""
    by_grid = {("model", "kind"): "grid.model", ("model", "seed"): "grid.seeds", ("patch", "seed"): "grid.seeds",
               ("train", "seed"): "grid.seeds"}
    axes = grid.axes()
    by_grid.update({("patch", key): f"grid.{axis}" for axis, key in PATCH_AXES.items() if axis in axes})
    if grid.lr_by_layers is not None:
        by_grid[("train", "lr")] = "grid.lr_by_layers"
    for (section, key), source in by_grid.items():
        table = raw.get(section)
        if isinstance(table, dict) and key in table:
            raise ValueError(f"{section}.{key} = {table[key]!r} would be ignored: {source} sets it for every run; "
                             f"remove it from [{section}] or change {source}")


def preset_names() -> list[str]:
    """The bundled specs (``qlandscape/sweep/presets/*.toml``): ``digits-small`` and ``kawase2025``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_spec(spec: Union[str, Path], overrides: Optional[list[str]] = None, *, fast: bool = False) -> SweepSpec:
    """Read a sweep spec: a TOML file, or the name of a preset (:func:`preset_names`).

    Parameters
    ----------
    spec : str or Path
        A ``.toml`` path or a preset name.
    overrides : list of str, optional
        ``table.key=value`` (``grid.seeds=[0,1,2]``, ``data.path=/data/mnist``, ``train.epochs=5``), parsed
        by each key's declared type as ``--set`` is for run configurations.
    fast : bool
        Shrink the spec with :meth:`SweepSpec.fast` (after the overrides).

    Raises
    ------
    FileNotFoundError
        Neither a file nor a preset.
    ValueError
        Invalid TOML, unknown tables or keys, bad values (one line naming ``table.key``).
    """
    path = Path(spec)
    if not path.is_file():
        if str(spec) in preset_names():
            path = PRESET_DIR / f"{spec}.toml"
        else:
            raise FileNotFoundError(f"sweep spec {str(spec)!r} is neither a file nor a preset; presets: "
                                    f"{', '.join(preset_names())}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}".replace("\n", " ")) from exc
    apply_overrides(raw, list(overrides or []), _SWEEP_TABLES)
    built = spec_from_dict(raw)
    return built.fast() if fast else built
