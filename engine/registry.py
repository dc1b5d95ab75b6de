"""Versioned models in a folder: install a bundle once, switch between versions atomically.

Layout of `models_dir`:
    <name>-<version>/     an installed bundle (a copy; never overwritten) with its `install.json`
    current.json          the pointer to the model in use; absent means the embedded model

Installing copies the bundle into a hidden temp folder beside its final place, syncs every file, writes
the promotion record (`install.json`) and renames the folder into place: a crash leaves either no trace
(a stray temp folder, swept later) or a complete model. Switching rewrites `current.json` the same way
(temp, fsync, rename), so a running service or app sees the old pointer or the new one, never half of it.
The embedded bundle that ships with the app is listed too and can be chosen like any installed version.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicom_node.durable import TEMP_SUFFIX, fsync_dir, write_text_atomically
from engine.bundle import BundleManifest, read_manifest, validate_bundle
from engine.errors import EngineError

POINTER_NAME = "current.json"
RECORD_NAME = "install.json"
EMBEDDED = "embedded"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_STALE_TEMP_S = 3600.0


class RegistryError(EngineError):
    """The registry cannot do what was asked: a version exists already, a bundle is broken, a bad pointer."""


class UnknownModelError(RegistryError):
    """No model has the version asked for; `known` lists the versions there are."""

    def __init__(self, version: str, known: list[str]) -> None:
        listed = ", ".join(known) if known else "none"
        super().__init__(f"no model version {version!r}; known versions: {listed}")
        self.version = version
        self.known = known


@dataclass(frozen=True)
class InstalledModel:
    """One model of the registry. `record` is the promotion record (None for the embedded model);
    `broken` says why a bundle cannot be used (None when it can)."""

    version: str
    name: str
    path: Path
    installed_at: datetime | None
    current: bool
    embedded: bool
    metrics: dict[str, Any]
    record: dict[str, Any] | None
    broken: str | None = None
    card_file: Path | None = None

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def key(self) -> str:
        """What `current.json` names: "embedded" or the folder of an installed model."""
        return EMBEDDED if self.embedded else self.path.name

    @property
    def how(self) -> str:
        """How it got here: embedded, promoted (the comparison said so), forced (promoted anyway) or
        installed (by hand, without a comparison)."""
        if self.embedded:
            return EMBEDDED
        record = self.record or {}
        decision = record.get("decision")
        if record.get("forced") or (isinstance(decision, dict) and decision.get("forced")):
            return "forced"
        return str(record.get("how") or ("promoted" if decision else "installed"))

    def section_f1(self, section: str) -> float | None:
        """The finding-level micro F1 of one section ("findings", "impression") from the bundle's metrics."""
        values = self.metrics.get(section)
        value = values.get("micro_f1") if isinstance(values, dict) else None
        return float(value) if isinstance(value, (int, float)) else None

    def card(self) -> str:
        """The model card (Markdown); empty when the bundle has none."""
        try:
            return self.card_file.read_text(encoding="utf-8") if self.card_file else ""
        except (OSError, UnicodeDecodeError):
            return ""


class ModelRegistry:
    def __init__(self, models_dir: Path, embedded: Path | None = None) -> None:
        self.models_dir = Path(models_dir).expanduser()
        self.embedded = Path(embedded) if embedded is not None else None

    # -- reading -----------------------------------------------------------------------------------
    def models(self) -> list[InstalledModel]:
        """Installed models, newest first, then the embedded one; broken bundles are listed as broken."""
        current = self._current_key_or_none()
        installed = [self._installed(folder, current) for folder in self._folders()]
        installed.sort(key=lambda m: (m.installed_at or datetime.min.replace(tzinfo=UTC), m.version), reverse=True)
        embedded = self._embedded(current)
        return installed + ([embedded] if embedded else [])

    def get(self, version: str) -> InstalledModel:
        """The model with this version ("embedded", the version, or name@version); UnknownModelError lists
        the known ones."""
        models = self.models()
        for model in models:
            if version in (model.version, model.model_id, model.key) or (model.embedded and version == EMBEDDED):
                return model
        raise UnknownModelError(version, [_label(m) for m in models])

    def current(self) -> InstalledModel:
        """The model the pointer names, else the embedded one. A pointer that names a missing version or
        cannot be read is a RegistryError (the caller decides what to fall back to)."""
        key = self._current_key()
        if key == EMBEDDED:
            embedded = self._embedded(EMBEDDED)
            if embedded is None:
                raise RegistryError(f"no model is installed in {self.models_dir} and there is no embedded model")
            return embedded
        folder = self.models_dir / key
        if not folder.is_dir():
            raise RegistryError(f"{self.models_dir / POINTER_NAME} names {key}, which is not installed; "
                                "choose another version (raddraft model use VERSION)")
        return self._installed(folder, key)

    def pointer_token(self) -> bytes | None:
        """Changes whenever the pointer is rewritten: its few bytes, which carry the time of the switch
        (file times and inode numbers can repeat across quick rewrites)."""
        try:
            return (self.models_dir / POINTER_NAME).read_bytes()
        except OSError:
            return None

    # -- changing ----------------------------------------------------------------------------------
    def install(self, bundle_dir: Path, record: dict[str, Any]) -> InstalledModel:
        """Copy a valid bundle to `<models_dir>/<name>-<version>` with its record; never overwrites."""
        bundle_dir = Path(bundle_dir)
        manifest = _validate_all_variants(bundle_dir)
        for part in (manifest.name, manifest.version):
            if not _SAFE.match(part):
                raise RegistryError(f"model bundle {bundle_dir}: name and version must be letters, digits and "
                                    f"._+- (got {part!r})")
        try:
            json.dumps(record)
        except (TypeError, ValueError) as error:
            raise RegistryError(f"the install record is not JSON: {error}") from None
        self._refuse_existing(manifest)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_stale_temps()
        final = self.models_dir / f"{manifest.name}-{manifest.version}"
        temp = self.models_dir / f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            _copy_synced(bundle_dir, temp)
            write_text_atomically(temp / RECORD_NAME, json.dumps({
                "name": manifest.name, "version": manifest.version, "installed_at": _now_iso(),
                "source": str(bundle_dir.resolve()), "record": record}, indent=2) + "\n")
            self._refuse_existing(manifest)  # another process may have installed it meanwhile
            os.rename(temp, final)
        except OSError as error:
            raise RegistryError(f"cannot install {manifest.model_id} into {self.models_dir}: {error}") from None
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
        fsync_dir(self.models_dir)
        return self._installed(final, self._current_key_or_none())

    def use(self, version: str) -> InstalledModel:
        """Make `version` the current model: one atomic rewrite of the pointer."""
        model = self.get(version)
        if model.broken:
            raise RegistryError(f"{_label(model)} cannot be used: {model.broken}")
        pointer = {"version": model.version, "name": model.name, "folder": None if model.embedded else model.key,
                   "embedded": model.embedded, "switched_at": _now_iso()}
        self.models_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.models_dir / POINTER_NAME, json.dumps(pointer, indent=2) + "\n")
        return replace(model, current=True)

    # -- internals ---------------------------------------------------------------------------------
    def _refuse_existing(self, manifest: BundleManifest) -> None:
        folder = self.models_dir / f"{manifest.name}-{manifest.version}"
        taken = [m for m in self.models() if m.version == manifest.version]
        if folder.exists() or taken:
            owner = taken[0].path.name if taken else folder.name
            owner = "the embedded model" if taken and taken[0].embedded else f"as {owner}"
            raise RegistryError(f"version {manifest.version} is already installed ({owner}); a version is never "
                                "overwritten: give the bundle a new version")

    def _folders(self) -> list[Path]:
        if not self.models_dir.is_dir():
            return []
        return [p for p in self.models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def _sweep_stale_temps(self) -> None:
        """Remove temp folders left by an install that crashed (old enough not to be one in progress)."""
        for path in self.models_dir.glob(f".*{TEMP_SUFFIX}"):
            try:
                if path.is_dir() and time.time() - path.stat().st_mtime > _STALE_TEMP_S:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue

    def _current_key(self) -> str:
        path = self.models_dir / POINTER_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return EMBEDDED
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RegistryError(f"{path} cannot be read ({error}); choose a version again "
                                "(raddraft model use VERSION)") from None
        if not isinstance(data, dict) or not (data.get("embedded") or isinstance(data.get("folder"), str)):
            raise RegistryError(f"{path} names no model; choose a version again (raddraft model use VERSION)")
        if data.get("embedded"):
            return EMBEDDED
        folder = data["folder"]
        if Path(folder).name != folder or folder.startswith("."):
            raise RegistryError(f"{path} names {folder!r}, which is not a model folder")
        return folder

    def _current_key_or_none(self) -> str | None:
        try:
            return self._current_key()
        except RegistryError:
            return None

    def _installed(self, folder: Path, current: str | None) -> InstalledModel:
        info, broken = _read_install_record(folder)
        name, _, version = folder.name.rpartition("-")
        name, version = str(info.get("name") or name or folder.name), str(info.get("version") or version)
        metrics: dict[str, Any] = {}
        card = None
        try:
            manifest = validate_bundle(folder)
            name, version, metrics, card = manifest.name, manifest.version, manifest.metrics, folder / manifest.card
        except EngineError as error:
            broken = broken or str(error)
        record = info.get("record")
        return InstalledModel(version=version, name=name, path=folder,
                              installed_at=_parse_time(info.get("installed_at")), current=current == folder.name,
                              embedded=False, metrics=metrics, record=record if isinstance(record, dict) else {},
                              broken=broken, card_file=card)

    def _embedded(self, current: str | None) -> InstalledModel | None:
        if self.embedded is None:
            return None
        try:
            manifest = validate_bundle(self.embedded)
        except EngineError as error:
            return InstalledModel(version=EMBEDDED, name=self.embedded.name, path=self.embedded, installed_at=None,
                                  current=current == EMBEDDED, embedded=True, metrics={}, record=None,
                                  broken=str(error))
        return InstalledModel(version=manifest.version, name=manifest.name, path=self.embedded, installed_at=None,
                              current=current == EMBEDDED, embedded=True, metrics=manifest.metrics, record=None,
                              card_file=self.embedded / manifest.card)


def _label(model: InstalledModel) -> str:
    return f"{model.version} (embedded)" if model.embedded else model.version


def _validate_all_variants(bundle_dir: Path) -> BundleManifest:
    manifest = read_manifest(bundle_dir)
    for variant in manifest.variants:
        validate_bundle(bundle_dir, variant)
    return manifest


def _read_install_record(folder: Path) -> tuple[dict[str, Any], str | None]:
    path = folder / RECORD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, f"{RECORD_NAME} is missing (not installed by RadDraft)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return {}, f"{RECORD_NAME} cannot be read ({error})"
    if not isinstance(data, dict):
        return {}, f"{RECORD_NAME} must hold a JSON object"
    return data, None


def _copy_synced(source: Path, target: Path) -> None:
    """Copy a folder tree (following links), syncing each file and folder, so the rename that follows
    publishes complete files only."""
    target.mkdir()
    for entry in sorted(source.iterdir()):
        if entry.name == RECORD_NAME or entry.name.startswith("."):
            continue  # the record is ours to write; hidden files are temp files of some writer
        if entry.is_dir():
            _copy_synced(entry, target / entry.name)
            continue
        with entry.open("rb") as src, (target / entry.name).open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    fsync_dir(target)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
