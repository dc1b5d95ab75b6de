"""Writing the configuration file back (the desktop's settings dialog): validate, then replace atomically.

Only the keys that were changed are touched; the rest of the file's values stay. Comments are not kept
(the file is rewritten from its parsed values).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dicom_node.durable import write_text_atomically
from raddraft.config import _SECTIONS, AppConfig, ConfigError, build_settings, default_store_root, load_config


def read_raw(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc


def apply_changes(raw: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with dotted `changes` ("pacs.port": 104) applied; a None value removes the key (its default)."""
    out = {section: dict(values) if isinstance(values, Mapping) else values for section, values in raw.items()}
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        table = out.setdefault(section, {})
        if value is None:
            table.pop(key, None)
        else:
            table[key] = str(value) if isinstance(value, Path) else value
    return {section: values for section, values in out.items() if values != {}}


def validate(raw: Mapping[str, Any], source: Path | None = None) -> None:
    """ConfigError naming the key when `raw` is not a valid configuration."""
    for section, values in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section [{section}]")
        if section == "store":
            values = {"root": str(default_store_root()), **values}
        build_settings(_SECTIONS[section], values, section, source)


def save_changes(path: Path, changes: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> AppConfig:
    """Apply `changes` to the file at `path` (created if missing) after validating them; return the new
    configuration, with the command line's `overrides` that the changes do not replace."""
    raw = apply_changes(read_raw(path), changes)
    validate(raw, path)
    write_text_atomically(path, toml_text(raw))
    kept = {k: v for k, v in (overrides or {}).items() if k not in changes}
    return load_config(path, kept)


def toml_text(raw: Mapping[str, Any]) -> str:
    """TOML for our configuration's shapes: tables (nested one level, like [node.tls]) of strings,
    numbers, booleans and lists of those."""
    lines: list[str] = []
    for section, values in raw.items():
        _table(lines, section, values)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], name: str, values: Mapping[str, Any]) -> None:
    lines.extend(["", f"[{name}]"])
    nested = {k: v for k, v in values.items() if isinstance(v, Mapping)}
    for key, value in values.items():
        if key not in nested:
            lines.append(f"{key} = {_value(value)}")
    for key, value in nested.items():
        _table(lines, f"{name}.{key}", value)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write {value!r} to TOML")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, (str, Path)):
        return '"' + "".join(_escape(c) for c in str(value)) + '"'
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def _escape(char: str) -> str:
    if char in ('"', "\\"):
        return "\\" + char
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"\\u{ord(char):04X}"
    return char
