"""``RunConfig``: all sections, the checks across them, and the digest that keys cached results."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from .adversarial import AdversarialConfig
from .checks import fail
from .common import DataConfig, ModelConfig, ObjectiveConfig, PatchConfig, TrainConfig
from .hessian import HessianConfig
from .merge import MergeConfig
from .ntk import NTKConfig, SpawnConfig
from .scan import ScanConfig

# Keys added after results were first cached: while at these values they are left out of
# RunConfig.digest, so outputs computed before the keys existed stay reusable.
_DIGEST_OMITTED_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"dataset": "digits", "path": None, "source": "idx", "preprocessing": "kawase2025"},
    "model": {"dropout": 0.0, "batchnorm": False},
    "objective": {"loss": "cross_entropy", "dropout": "refuse"},
    "train": {"schedule": "constant", "t_max": None, "minimum": "last", "record_steps": 0, "adversarial": False},
    # how the patch circuits are simulated, not what they compute (same numbers to rounding); results cached by
    # the tape simulator are reused by the compiled one
    "patch": {"simulator": "auto", "order": 2, "torch_device": "auto", "memory_budget_mib": None},
}
# Sections added after results were first cached: left out of the whole-config digest while at their defaults.
_DIGEST_OMITTED_SECTIONS: tuple[str, ...] = ("ntk", "spawn", "adversarial", "merge")


@dataclass(frozen=True)
class RunConfig:
    """All sections; combinations across sections are checked when it is built."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    hessian: HessianConfig = field(default_factory=HessianConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    ntk: NTKConfig = field(default_factory=NTKConfig)
    spawn: SpawnConfig = field(default_factory=SpawnConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)

    def __post_init__(self) -> None:
        hints = get_type_hints(RunConfig)
        for name in hints:
            value = getattr(self, name)
            if not isinstance(value, hints[name]):
                raise ValueError(f"[{name}] must be a {hints[name].__name__}, got {type(value).__name__}")
        s, t, o, m = self.scan, self.train, self.objective, self.model
        n_records = t.n_checkpoints()
        if s.directions == "pca" and n_records is not None and n_records < s.dims + 1:
            raise ValueError(f"scan.directions='pca' with scan.dims={s.dims} needs at least {s.dims + 1} trajectory "
                             f"checkpoints, but train.epochs={t.epochs} with train.record_every={t.record_every} "
                             f"records {n_records}; train longer or record more often")
        if o.mode == "train" and m.dropout > 0 and o.dropout == "refuse":
            fail("objective", "dropout", o.dropout, f"'fixed' with objective.mode='train' and model.dropout="
                  f"{m.dropout} (train-mode Dropout makes the loss random; or use objective.mode='eval')")
        if m.batchnorm and t.batch_size < 2:
            fail("train", "batch_size", t.batch_size, ">= 2 with model.batchnorm=true (batch statistics of "
                  "one sample are undefined)")
        if m.batchnorm and o.mode == "train" and o.batch_size == 1:
            fail("objective", "batch_size", o.batch_size, ">= 2 (or omitted) with objective.mode='train' and "
                  "model.batchnorm=true (batch statistics of one sample are undefined)")

    def check_spawn(self) -> None:
        """Checks of the ``spawn`` command only (other commands never read ``[spawn]``, so a default
        ``spawn.times`` beyond a short ``train.epochs`` must not stop them): every ``spawn.times`` entry
        <= ``train.epochs`` and a constant learning rate (children restart the schedule otherwise).

        Raises
        ------
        ValueError
            One line naming the keys.
        """
        sp, t = self.spawn, self.train
        late = [x for x in sp.times if x > t.epochs]
        if late:
            fail("spawn", "times", sp.times, f"spawn epochs <= train.epochs={t.epochs} (children train to "
                  f"train.epochs in all; {late} spawn later)")
        if t.schedule != "constant":
            fail("train", "schedule", t.schedule, "'constant' for qlandscape spawn (parent and children train "
                  "with a constant learning rate)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """Stable hash of the named sections (all if none): identifies reusable outputs.

        The hash is of what the settings mean: ``scan.span_mode`` and ``scan.span`` enter as
        :meth:`ScanConfig.resolved_span_mode` and :meth:`ScanConfig.fixed_span`, and keys added later
        are left out while at their defaults, so results cached before they existed are reused.
        """
        return hashlib.sha256(json.dumps(self.canonical(*sections), sort_keys=True).encode()).hexdigest()[:16]

    def canonical(self, *sections: str) -> dict[str, Any]:
        """The named sections (all if none) as :meth:`digest` hashes them: what the settings mean (resolved
        scan ranges), keys added later left out while at their defaults, and, with no sections named,
        sections added later left out while at their defaults."""
        d = self.to_dict()
        d["scan"]["span_mode"] = self.scan.resolved_span_mode()
        d["scan"]["span"] = self.scan.fixed_span()
        for section, defaults in _DIGEST_OMITTED_DEFAULTS.items():
            for key, default in defaults.items():
                if d[section][key] == default:
                    del d[section][key]
        for section in _DIGEST_OMITTED_SECTIONS:  # sections added later: left out while at their defaults
            if not sections and d[section] == dataclasses.asdict(type(getattr(self, section))()):
                del d[section]
        return {k: d[k] for k in (sections or d.keys())}
