"""Loading: TOML files, nested dicts and ``--set section.key=value`` overrides."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Optional, Union, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .checks import _omitted, fail, field_kinds
from .run import RunConfig


def _sections() -> dict[str, type]:
    return dict(get_type_hints(RunConfig))


def _coerce(section: str, cls: type, values: dict[str, Any]) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{section}]; valid keys: {sorted(names)}")
    return cls(**values)


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts; unknown sections/keys and bad values are errors."""
    sections = _sections()
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; valid sections: {sorted(sections)}")
    kwargs = {}
    for name, value in raw.items():
        if not isinstance(value, dict):
            raise ValueError(f"[{name}] must be a table of keys, got {value!r}")
        kwargs[name] = _coerce(name, sections[name], value)
    return RunConfig(**kwargs)


_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")
_NONE_WORDS = ("none", "null")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_override_value(section: str, key: str, text: str, cls: Optional[type] = None) -> Any:
    """The value of ``--set section.key=text``, parsed by the key's declared type.

    Parameters
    ----------
    section, key : str
        Where the value goes (an unknown section or key is parsed as TOML and reported later).
    text : str
        What follows the ``=``.
    cls : type, optional
        The dataclass of ``section`` when it is not a :class:`RunConfig` section (sweep specs).

    Returns
    -------
    object
        ``None`` for ``none``/``null`` on a key that may be unset; ``True``/``False`` for a boolean
        key (``true``/``yes``/``on``/``1``, ``false``/``no``/``off``/``0``, any case, quotes allowed);
        else the TOML value, a float for a float key that only Python reads (``.5``), or the bare
        text as a string.

    Raises
    ------
    ValueError
        For a boolean key given anything else.
    """
    text = text.strip()
    cls = cls if cls is not None else _sections().get(section)
    base, optional = field_kinds(cls).get(key, (None, False)) if cls is not None else (None, False)
    word = _unquote(text).strip().lower()
    if optional and word in _NONE_WORDS:
        return None
    if base == "bool":
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        fail(section, key, text, "true or false (on the command line also yes/no, on/off, 1/0)"
              + _omitted(optional))
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    if base == "float":
        try:
            return float(text)
        except ValueError:
            pass
    return text  # bare words such as filter or largest


def load_config(path: Union[str, Path, None] = None, overrides: Optional[list[str]] = None) -> RunConfig:
    """Read a TOML file (default: the bundled ``configs/default.toml``) and apply
    ``section.key=value`` overrides (see :func:`parse_override_value`), then validate everything.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For invalid TOML, a malformed override, an unknown section or key, or a bad value; the
        message is one line naming ``section.key``, the value and what is allowed.
    """
    p = Path(path) if path is not None else Path(__file__).parent.parent / "configs" / "default.toml"
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p} is not valid TOML: {exc}".replace("\n", " ")) from exc
    apply_overrides(raw, overrides or [])
    return config_from_dict(raw)


def apply_overrides(raw: dict[str, Any], overrides: list[str], classes: Optional[dict[str, type]] = None) -> None:
    """Apply ``section.key=value`` overrides to the nested dict ``raw`` (in place), each value parsed by
    :func:`parse_override_value` with the section's dataclass (``classes``: extra sections, e.g. a sweep
    spec's ``grid``; :class:`RunConfig`'s sections are known).

    Raises
    ------
    ValueError
        A malformed override, a section that is not a table, or a bad boolean.
    """
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        section, name = (part.strip() for part in key.strip().split(".", 1))
        parsed = parse_override_value(section, name, value, (classes or {}).get(section))
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"[{section}] must be a table of keys, got {table!r}")
        table[name] = parsed
