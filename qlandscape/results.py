"""Result containers: plain dataclasses saved as ``<path>.npz`` (arrays) + ``<path>.json``
(everything else). No pickle is written or read."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Type, TypeVar, Union

import numpy as np

R = TypeVar("R", bound="Result")
PathLike = Union[str, "os.PathLike[str]"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)  # 'nan' / 'inf' survive the round trip, see _unjson
    return value


def _unjson(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unjson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unjson(v) for v in value]
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename: a crash never leaves a
    half-written result behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _base(path: PathLike) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".npz", ".json") else p


@dataclasses.dataclass
class Result:
    """Base class: ``np.ndarray`` fields go to the npz file, the rest to JSON."""

    def save(self, path: PathLike) -> Path:
        """Write ``<path>.npz`` and ``<path>.json``; returns the base path."""
        import io
        base = _base(path)
        arrays, meta = {}, {"type": type(self).__name__}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            else:
                meta[f.name] = _jsonable(value)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(base.with_suffix(".npz"), buf.getvalue())
        atomic_write_bytes(base.with_suffix(".json"),
                           json.dumps(meta, indent=2, sort_keys=True).encode())
        return base

    @classmethod
    def load(cls: Type[R], path: PathLike) -> R:
        """Read a result written by :meth:`save`."""
        base = _base(path)
        meta = json.loads(base.with_suffix(".json").read_text())
        kind = meta.pop("type", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"{base} holds a {kind}, not a {cls.__name__}")
        with np.load(base.with_suffix(".npz"), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        kwargs = {f.name: arrays[f.name] if f.name in arrays else _unjson(meta.get(f.name))
                  for f in dataclasses.fields(cls) if f.name in arrays or f.name in meta}
        return cls(**kwargs)
