"""The one configuration: a TOML file plus CLI flags, read once at start.

Each package gets its own typed, frozen settings built here and passed in; no package reads the file
or the environment itself. Unknown keys and bad values fail with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from dicom_node.errors import SettingsError
from dicom_node.settings import NodeSettings, PacsSettings, ReadingSettings, StoreSettings
from server.settings import ServerSettings
from engine.settings import EngineSettings
from raddraft.worker.settings import WorkerSettings

APP_NAME = "RadDraft"
CONFIG_FILE_NAME = "raddraft.toml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(Exception):
    """The configuration is unusable; the message names the file and key."""


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / CONFIG_FILE_NAME


def default_store_root() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "store"


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"

    def __post_init__(self) -> None:
        if self.level.upper() not in LOG_LEVELS:
            raise SettingsError("level", f"must be one of {', '.join(LOG_LEVELS)}, got {self.level!r}")


@dataclass(frozen=True)
class AppConfig:
    source: Path | None
    node: NodeSettings
    store: StoreSettings
    logging: LoggingSettings
    engine: EngineSettings
    pacs: PacsSettings = field(default_factory=PacsSettings)
    reading: ReadingSettings = field(default_factory=ReadingSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    server: ServerSettings = field(default_factory=ServerSettings)


_SECTIONS: dict[str, type] = {"node": NodeSettings, "store": StoreSettings, "logging": LoggingSettings,
                              "engine": EngineSettings, "pacs": PacsSettings, "reading": ReadingSettings,
                              "worker": WorkerSettings, "server": ServerSettings}


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> AppConfig:
    """Read the TOML file (the default location if `path` is None; a missing default is fine) and
    apply `overrides`, a mapping of dotted keys such as "node.port" (None values are ignored)."""
    raw, source = _read_file(path)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{_where(source)}unknown section [{unknown[0]}]; known: {', '.join(_SECTIONS)}")
    store_raw = dict(raw.get("store", {}))
    store_raw.setdefault("root", str(default_store_root()))
    return AppConfig(
        source=source,
        node=build_settings(NodeSettings, raw.get("node", {}), "node", source),
        store=build_settings(StoreSettings, store_raw, "store", source),
        logging=build_settings(LoggingSettings, raw.get("logging", {}), "logging", source),
        engine=build_settings(EngineSettings, raw.get("engine", {}), "engine", source),
        pacs=build_settings(PacsSettings, raw.get("pacs", {}), "pacs", source),
        reading=build_settings(ReadingSettings, raw.get("reading", {}), "reading", source),
        worker=build_settings(WorkerSettings, raw.get("worker", {}), "worker", source),
        server=build_settings(ServerSettings, raw.get("server", {}), "server", source),
    )


def _read_file(path: Path | None) -> tuple[dict[str, Any], Path | None]:
    explicit = path is not None
    path = Path(path) if explicit else default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"configuration file not found: {path}")
        return {}, None
    try:
        with path.open("rb") as f:
            return tomllib.load(f), path
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _where(source: Path | None) -> str:
    return f"{source}: " if source else ""


def build_settings(cls: type, data: Mapping[str, Any], section: str, source: Path | None = None):
    """Build the frozen dataclass `cls` from a TOML table, checking names and types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(source)}[{section}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_where(source)}unknown key '{section}.{unknown[0]}'; known keys: {', '.join(sorted(fields))}"
        )
    values = {name: _coerce(hints[name], value, f"{section}.{name}", source) for name, value in data.items()}
    try:
        return cls(**values)
    except SettingsError as exc:
        raise ConfigError(f"{_where(source)}{section}.{exc.key}: {exc.message}") from exc


def _coerce(hint: Any, value: Any, key: str, source: Path | None) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{_where(source)}{key}: expected {expected}, got {value!r}")

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or value == "":
            return None
        return _coerce(options[0], value, key, source)
    if dataclasses.is_dataclass(hint):
        return build_settings(hint, value, key, source)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise bad("a list")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(item, v, key, source) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise bad("a path")
        return Path(value).expanduser()
    raise ConfigError(f"{key}: unsupported setting type {hint!r}")  # a bug in a settings class
