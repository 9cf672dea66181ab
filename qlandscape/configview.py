"""Read-tracking views of a frozen configuration: which ``section.key`` values did a step use?

A job step computes with a :class:`ConfigReads` view of the :class:`~qlandscape.config.RunConfig`
instead of the configuration itself. The view behaves like the configuration (attribute access,
methods, properties, ``isinstance``, :func:`dataclasses.asdict` and :func:`dataclasses.replace`) and
records every leaf value it hands out. The recorded values are the step's cache key: a step's result
is reused only while every value it read is unchanged, so no hand-written list of dependencies can
forget one.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
from typing import Any, Mapping, TypeVar, cast

C = TypeVar("C")

_MISSING = object()


def json_value(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists): the form the reads are compared in."""
    return json.loads(json.dumps(value, default=repr))


class ConfigReads:
    """Recorder of the configuration values a computation read.

    Parameters
    ----------
    config : dataclass instance
        The configuration (normally a :class:`~qlandscape.config.RunConfig`); it is never modified.

    Attributes
    ----------
    reads : dict
        ``"section.key" -> value`` (JSON form) for every leaf value handed out by :attr:`view`.
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.reads: dict[str, Any] = {}

    @property
    def view(self) -> Any:
        """A tracking stand-in for :attr:`config` (typed as the configuration's own class by callers)."""
        return _wrap(self.config, self, "")

    def typed_view(self, cls: type[C]) -> C:
        """:attr:`view`, typed as ``cls`` for the type checker."""
        return cast(C, self.view)

    def record(self, key: str, value: Any) -> None:
        self.reads.setdefault(key, json_value(value))

    def merge(self, other: "ConfigReads") -> None:
        """Add the reads of ``other`` (a shared object built once, used by several steps)."""
        for key, value in other.reads.items():
            self.reads.setdefault(key, value)


def current_value(config: Any, key: str) -> Any:
    """The value of a dotted ``key`` in ``config`` in JSON form, or a sentinel that equals nothing
    stored when the key no longer exists."""
    value = config
    for part in key.split("."):
        if not dataclasses.is_dataclass(value) or part not in {f.name for f in dataclasses.fields(value)}:
            return _MISSING
        value = getattr(value, part)
    return json_value(value)


def changed_reads(config: Any, reads: Mapping[str, Any]) -> list[str]:
    """The keys of ``reads`` whose value in ``config`` differs (sorted); empty when all still hold."""
    return sorted(k for k, v in reads.items() if current_value(config, k) != v)


# ----------------------------------------------------------------------------------- the view
class _Tracked:
    """Base of the per-class view types made by :func:`_view_type` (see :class:`ConfigReads`)."""

    __slots__ = ("_tracked_obj", "_tracked_rec", "_tracked_prefix")

    def __init__(self, obj: Any, rec: ConfigReads, prefix: str) -> None:
        object.__setattr__(self, "_tracked_obj", obj)
        object.__setattr__(self, "_tracked_rec", rec)
        object.__setattr__(self, "_tracked_prefix", prefix)

    def __getattr__(self, name: str) -> Any:
        obj = object.__getattribute__(self, "_tracked_obj")
        rec = object.__getattribute__(self, "_tracked_rec")
        prefix = object.__getattribute__(self, "_tracked_prefix")
        fields = {f.name for f in dataclasses.fields(obj)}
        if name in fields:
            return _wrap(getattr(obj, name), rec, f"{prefix}{name}")
        static = inspect.getattr_static(type(obj), name, _MISSING)
        if isinstance(static, types.FunctionType):  # a method: its own attribute reads are tracked
            return types.MethodType(static, self)
        if isinstance(static, property) and static.fget is not None:
            return static.fget(self)
        # anything else (class constants, classmethods, ...): conservatively, the whole object was read
        for f in fields:
            _record_all(getattr(obj, f), rec, f"{prefix}{f}")
        return getattr(obj, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r} of a configuration view")

    def __repr__(self) -> str:
        obj = object.__getattribute__(self, "_tracked_obj")
        return f"<reads of {obj!r}>"


_VIEW_TYPES: dict[type, type] = {}


def _view_type(cls: type) -> type:
    """A :class:`_Tracked` subclass that :mod:`dataclasses` and ``isinstance`` take for ``cls``."""
    vt = _VIEW_TYPES.get(cls)
    if vt is None:
        vt = type(f"Tracked{cls.__name__}", (_Tracked,), {
            "__slots__": (),
            "__dataclass_fields__": cls.__dataclass_fields__,  # type: ignore[attr-defined]
            "__class__": property(lambda self: cls),
        })
        _VIEW_TYPES[cls] = vt
    return vt


def _wrap(value: Any, rec: ConfigReads, key: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _view_type(type(value))(value, rec, f"{key}." if key else "")
    rec.record(key, value)
    return value


def _record_all(value: Any, rec: ConfigReads, key: str) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _record_all(getattr(value, f.name), rec, f"{key}.{f.name}")
    else:
        rec.record(key, value)


def unwrap(value: Any) -> Any:
    """The configuration object behind a view (``value`` itself when it is not a view)."""
    if isinstance(value, _Tracked):
        return object.__getattribute__(value, "_tracked_obj")
    return value


def recorder_of(view: Any) -> ConfigReads:
    """The :class:`ConfigReads` a view (from :attr:`ConfigReads.view`) records into."""
    if not isinstance(view, _Tracked):
        raise TypeError(f"{view!r} is not a configuration view")
    return object.__getattribute__(view, "_tracked_rec")
