"""Result containers: plain dataclasses saved as ``<path>.npz`` (arrays) + ``<path>.json``
(everything else). No pickle is written or read."""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Type, TypeVar, Union, cast

import numpy as np

from .rundir import atomic_write_bytes

__all__ = ["Result", "ResultFileError", "atomic_write_bytes"]

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


class ResultFileError(ValueError):
    """A stored result file is missing, truncated or not what it claims to be (the message names it)."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ResultFileError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ResultFileError(f"{path} is not readable JSON (truncated or corrupted: {exc})") from None
    if not isinstance(meta, dict):
        raise ResultFileError(f"{path} does not hold a result (a JSON object)")
    return meta


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an npz archive; anything else (including pickled data) is a :class:`ResultFileError`."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except FileNotFoundError:
        raise ResultFileError(f"{path} is missing") from None
    except OSError as exc:
        raise ResultFileError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if magic != b"PK":  # np.load would take anything else for a pickle
        raise ResultFileError(f"{path} is not an npz archive (truncated or corrupted)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        detail = "object arrays are not loaded" if "pickle" in str(exc) else str(exc)
        raise ResultFileError(f"{path} is not a readable npz archive (truncated or corrupted: {detail})") from None


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
        np.savez(buf, **cast(dict[str, Any], arrays))  # (numpy's stubs read ** as its allow_pickle keyword)
        atomic_write_bytes(base.with_suffix(".npz"), buf.getvalue())
        atomic_write_bytes(base.with_suffix(".json"),
                           json.dumps(meta, indent=2, sort_keys=True).encode())
        return base

    @classmethod
    def load(cls: Type[R], path: PathLike) -> R:
        """Read a result written by :meth:`save`.

        Raises
        ------
        ResultFileError
            A file is missing, truncated, corrupted or holds another type (never a hint to unpickle).
        """
        base = _base(path)
        meta = _read_json(base.with_suffix(".json"))
        kind = meta.pop("type", cls.__name__)
        if kind != cls.__name__:
            raise ResultFileError(f"{base.with_suffix('.json')} holds a {kind}, not a {cls.__name__}")
        arrays = _read_npz(base.with_suffix(".npz"))
        kwargs = {f.name: arrays[f.name] if f.name in arrays else _unjson(meta.get(f.name))
                  for f in dataclasses.fields(cls) if f.name in arrays or f.name in meta}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field missing from both files
            raise ResultFileError(f"{base}.{{npz,json}} do not hold a complete {cls.__name__}: {exc}") from None
