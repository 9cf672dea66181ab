"""Run configuration: frozen dataclasses loaded from TOML (``tomllib``), with strict key checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
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


@dataclass(frozen=True)
class ModelConfig:
    """``kind = "mlp"`` (hidden, activation) or ``"cnn"`` (channels, activation)."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (128, 128)
    channels: tuple[int, ...] = (8, 16)
    activation: str = "tanh"
    seed: int = 0


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
    seed: int = 0


@dataclass(frozen=True)
class ScanConfig:
    """``directions``: "filter", "layer", "model", "unit" (random, normalized so), "eigenvector"
    (top Hessian eigenvectors) or "pca" (of the training trajectory)."""

    dims: int = 2
    directions: str = "filter"
    one_d: str = "zero"
    span: float = 1.0
    n_points: int = 25
    float32: bool = False
    log_plot: bool = False
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    hessian: HessianConfig = field(default_factory=HessianConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)

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
