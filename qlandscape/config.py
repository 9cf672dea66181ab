"""Run configuration: frozen dataclasses loaded from TOML (``tomllib``), with strict key checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class DataConfig:
    """sklearn digits options (see :func:`qlandscape.data.load_digits`)."""

    classes: Optional[tuple[int, ...]] = None
    test_size: float = 0.2
    downsample: Optional[int] = None
    n_samples: Optional[int] = None
    seed: int = 0


def _fail(section: str, key: str, value: Any, expected: str) -> None:
    raise ValueError(f"[{section}] {key} must be {expected}, got {value!r}")


def _check_int(section: str, key: str, value: Any, low: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(section, key, value, f"an integer >= {low}" + (" (or omitted for the preset default)"
                                                             if optional else ""))


def _check_number(section: str, key: str, value: Any, *, positive: bool = False, optional: bool = False) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        _fail(section, key, value, ("a finite number > 0" if positive else "a finite number")
              + (" (or omitted for the preset default)" if optional else ""))


def _check_choice(section: str, key: str, value: Any, allowed: tuple[Any, ...], optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in allowed:
        _fail(section, key, value, f"one of {list(allowed)}" + (" (or omitted for the preset default)"
                                                                 if optional else ""))


MODEL_KINDS: tuple[str, ...] = ("mlp", "cnn", "patch_qnn", "patch_mlp")
PATCH_KINDS: tuple[str, ...] = ("patch_qnn", "patch_mlp")


@dataclass(frozen=True)
class ModelConfig:
    """``kind``: "mlp" (hidden, activation), "cnn" (channels, activation), "patch_qnn" (the patch quantum
    network configured by ``[patch]``) or "patch_mlp" (its classical baseline: same patches, one small tanh
    MLP per patch, hidden width chosen to match the QNN's parameter count). ``seed`` seeds the classical
    initialization."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (128, 128)
    channels: tuple[int, ...] = (8, 16)
    activation: str = "tanh"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("model", "kind", self.kind, MODEL_KINDS)


# Choices of PatchQNN's knobs, repeated here so that reading a config never imports PennyLane
# (tests/test_compare.py checks they agree with qlandscape.quantum).
PATCH_PRESETS: tuple[str, ...] = ("digits", "kawase2025")
PATCH_ENCODINGS: tuple[str, ...] = ("reupload", "angle")
PATCH_ANSATZE: tuple[str, ...] = ("rxry_cz", "strongly_entangling")
PATCH_AGGREGATIONS: tuple[str, ...] = ("mean", "sum", "linear")
PATCH_DEVICES: tuple[str, ...] = ("auto", "torch.statevector", "default.qubit", "lightning.qubit", "lightning.gpu",
                                  "lightning.kokkos")
PATCH_DIFF_METHODS: tuple[str, ...] = ("auto", "backprop", "adjoint", "parameter-shift")


@dataclass(frozen=True)
class PatchConfig:
    """The patch quantum network (``model.kind = "patch_qnn"``, and the patch geometry, aggregation,
    coefficient, positional bias and input scale of its ``"patch_mlp"`` baseline).

    ``None`` means "the preset's default" (see :class:`qlandscape.quantum.PatchQNN`).
    """

    preset: str = "digits"
    n_patches: Optional[int] = None
    layers: Optional[int] = None
    n_qubits: Optional[int] = None
    encoding: Optional[str] = None
    n_encodings: Optional[int] = None
    ansatz: Optional[str] = None
    aggregation: Optional[str] = None
    coefficient: Optional[float] = None
    positional_bias: Optional[bool] = None
    input_scale: Optional[float] = None
    device: str = "auto"
    diff_method: Optional[str] = None
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        s = "patch"
        _check_choice(s, "preset", self.preset, PATCH_PRESETS)
        for key in ("n_patches", "layers", "n_qubits", "n_encodings"):
            _check_int(s, key, getattr(self, key), 1, optional=True)
        _check_int(s, "seed", self.seed, 0, optional=True)
        _check_choice(s, "encoding", self.encoding, PATCH_ENCODINGS, optional=True)
        _check_choice(s, "ansatz", self.ansatz, PATCH_ANSATZE, optional=True)
        _check_choice(s, "aggregation", self.aggregation, PATCH_AGGREGATIONS, optional=True)
        _check_choice(s, "device", self.device, PATCH_DEVICES)
        _check_choice(s, "diff_method", self.diff_method, PATCH_DIFF_METHODS, optional=True)
        _check_number(s, "coefficient", self.coefficient, positive=True, optional=True)
        _check_number(s, "input_scale", self.input_scale, optional=True)
        if self.positional_bias is not None and not isinstance(self.positional_bias, bool):
            _fail(s, "positional_bias", self.positional_bias, "true or false (or omitted for the preset default)")

    def overrides(self) -> dict[str, Any]:
        """The keyword arguments of ``PatchQNN(preset, **overrides)``: every key that is not None."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "preset" and v is not None}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    record_every: int = 1
    seed: int = 0


@dataclass(frozen=True)
class ObjectiveConfig:
    """Which loss the analysis differentiates."""

    split: str = "train"
    reduction: str = "mean"
    mode: str = "eval"
    dtype: str = "float64"
    batch_size: Optional[int] = None
    params: Optional[tuple[str, ...]] = None


@dataclass(frozen=True)
class HessianConfig:
    top_k: int = 5
    which: str = "largest"
    tol: float = 1e-4
    trace_method: str = "auto"
    trace_probes: int = 100
    density_probes: int = 5
    density_steps: int = 80
    eig_method: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("hessian", "eig_method", self.eig_method, ("auto", "dense", "lanczos"))


SPAN_MODES: tuple[str, ...] = ("fixed", "trajectory")


@dataclass(frozen=True)
class ScanConfig:
    """``directions``: "filter", "layer", "model", "unit" (random, normalized so), "eigenvector"
    (top Hessian eigenvectors) or "pca" (of the training trajectory). ``span_mode``: "fixed" scans
    ``[-span, span]`` on both axes; "trajectory" (PCA directions only) scans each axis over the extent of
    the trajectory's coordinates (and 0), widened by ``margin`` times that extent on both sides."""

    dims: int = 2
    directions: str = "filter"
    one_d: str = "zero"
    span: float = 1.0
    n_points: int = 25
    float32: bool = False
    log_plot: bool = False
    span_mode: str = "fixed"
    margin: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("scan", "span_mode", self.span_mode, SPAN_MODES)
        _check_number("scan", "margin", self.margin)
        if self.margin < 0:
            _fail("scan", "margin", self.margin, "a number >= 0")
        if self.span_mode == "trajectory" and self.directions != "pca":
            raise ValueError(f"[scan] span_mode='trajectory' needs directions='pca', got directions="
                             f"{self.directions!r}")



@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    hessian: HessianConfig = field(default_factory=HessianConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """Stable hash of the named sections (all if none): identifies reusable outputs."""
        d = self.to_dict()
        chosen = {k: d[k] for k in (sections or d.keys())}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def _coerce(section: str, cls: type, values: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{section}]; valid keys: {sorted(names)}")
    out = {}
    for k, v in values.items():
        hint = str(hints[k])
        if isinstance(v, list):
            v = tuple(v)
        if "float" in hint and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        out[k] = v
    return cls(**out)


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts; unknown sections/keys are errors."""
    sections = {f.name: f for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; valid sections: {sorted(sections)}")
    hints = get_type_hints(RunConfig)
    kwargs = {}
    for name, value in raw.items():
        if not isinstance(value, dict):
            raise ValueError(f"[{name}] must be a table of keys, got {value!r}")
        kwargs[name] = _coerce(name, hints[name], value)
    return RunConfig(**kwargs)


def load_config(path: Union[str, Path, None] = None, overrides: Optional[list[str]] = None) -> RunConfig:
    """Read a TOML file (default: the bundled ``configs/default.toml``) and apply
    ``section.key=value`` overrides (values in TOML syntax, e.g. ``hessian.top_k=3``)."""
    p = Path(path) if path is not None else Path(__file__).parent / "configs" / "default.toml"
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p} is not valid TOML: {exc}") from exc
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        section, name = key.strip().split(".", 1)
        try:
            parsed = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value.strip()  # bare words such as filter or largest
        raw.setdefault(section, {})[name] = parsed
    return config_from_dict(raw)
