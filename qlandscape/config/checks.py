"""Checks of configuration values: each raises one ``ValueError`` naming ``section.key``, the value and
what is allowed. Shared by the run configuration and the sweep specification."""

from __future__ import annotations

import functools
import math
from typing import Any, NoReturn, Optional, Union, get_args, get_origin, get_type_hints


def show(value: Any) -> str:
    """``repr`` of a config value as the user wrote it (tuples as TOML-like lists)."""
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def _omitted(optional: Union[bool, str]) -> str:
    """Suffix of an expectation for keys that may be left unset (``optional`` names what unset means)."""
    if not optional:
        return ""
    meaning = optional if isinstance(optional, str) else "the default"
    return f" (or omitted / none for {meaning})"


def fail(section: str, key: str, value: Any, expected: str) -> NoReturn:
    raise ValueError(f"{section}.{key} must be {expected}, got {show(value)}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _interval(low: Optional[float], high: Optional[float], low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def _in_interval(value: float, low: Optional[float], high: Optional[float], low_open: bool,
                 high_open: bool) -> bool:
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return not (high is not None and (value > high or (high_open and value == high)))


def check_int(section: str, key: str, value: Any, low: int, optional: Union[bool, str] = False,
               high: Optional[int] = None) -> None:
    """An integer (not a bool) in ``[low, high]``; None allowed when ``optional``."""
    if value is None and optional:
        return
    if not is_int(value) or not _in_interval(value, low, high, False, False):
        what = f"an integer{_interval(low, high, False, False)}"
        fail(section, key, value, what + _omitted(optional))


def check_number(section: str, key: str, value: Any, *, positive: bool = False,
                  optional: Union[bool, str] = False, low: Optional[float] = None, high: Optional[float] = None,
                  low_open: bool = False, high_open: bool = False) -> None:
    """A finite number (int or float, not a bool) in the given interval (``positive``: ``> 0``)."""
    if value is None and optional:
        return
    if positive:
        low, low_open = 0, True
    if not is_number(value) or not _in_interval(value, low, high, low_open, high_open):
        fail(section, key, value, f"a finite number{_interval(low, high, low_open, high_open)}"
              + _omitted(optional))


def check_choice(section: str, key: str, value: Any, allowed: tuple[Any, ...],
                  optional: Union[bool, str] = False) -> None:
    """One of ``allowed`` (compared by value and type, so ``1`` is not ``True``)."""
    if value is None and optional:
        return
    if not any(value == a and type(value) is type(a) for a in allowed):
        fail(section, key, value, f"one of {list(allowed)}" + _omitted(optional))


def check_bool(section: str, key: str, value: Any, optional: Union[bool, str] = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, bool):
        fail(section, key, value, "true or false (on the command line also yes/no, on/off, 1/0)"
              + _omitted(optional))


def check_int_list(section: str, key: str, value: Any, low: int, high: Optional[int] = None, *,
                    min_len: int = 1, distinct: bool = False, optional: Union[bool, str] = False,
                    example: str = "") -> None:
    """A list of at least ``min_len`` integers in ``[low, high]`` (pairwise distinct if asked)."""
    if value is None and optional:
        return
    ok = (isinstance(value, tuple) and len(value) >= min_len
          and all(is_int(v) and _in_interval(v, low, high, False, False) for v in value)
          and (not distinct or len(set(value)) == len(value)))
    if not ok:
        what = "a list of " + (f"at least {min_len} " if min_len > 1 else "one or more ")
        what += "distinct " if distinct else ""
        what += f"integers{_interval(low, high, False, False)}" if high is None else f"integers in {low}..{high}"
        fail(section, key, value, what + (f", e.g. {example}" if example else "") + _omitted(optional))


def check_str_list(section: str, key: str, value: Any, optional: Union[bool, str] = False,
                    example: str = "") -> None:
    """A non-empty list of non-empty strings."""
    if value is None and optional:
        return
    if not (isinstance(value, tuple) and value and all(isinstance(v, str) and v for v in value)):
        fail(section, key, value, "a non-empty list of non-empty strings"
              + (f", e.g. {example}" if example else "") + _omitted(optional))


@functools.lru_cache(maxsize=None)
def field_kinds(cls: type) -> dict[str, tuple[str, bool]]:
    """``{field: (base, optional)}`` with base "bool", "int", "float", "str" or "list"."""
    out = {}
    for name, hint in get_type_hints(cls).items():
        optional = False
        if get_origin(hint) is Union:
            args = [a for a in get_args(hint) if a is not type(None)]
            optional = len(args) < len(get_args(hint))
            hint = args[0]
        if get_origin(hint) is tuple:
            out[name] = ("list", optional)
        else:
            out[name] = ({bool: "bool", int: "int", float: "float", str: "str"}[hint], optional)
    return out


def normalize(obj: Any) -> None:
    """In place on a frozen dataclass: integers -> float for float keys, lists -> tuples for list keys
    (so equal configurations compare and hash equal, whether they came from TOML or Python)."""
    cls: type = type(obj)
    for name, (base, _) in field_kinds(cls).items():
        value = getattr(obj, name)
        if base == "float" and is_int(value):
            object.__setattr__(obj, name, float(value))
        elif base == "list" and isinstance(value, list):
            object.__setattr__(obj, name, tuple(value))
