"""The model registry on real bundles (the tiny exported one and the embedded one): install, list, switch,
never overwrite, the atomic pointer, broken bundles; and the follower that switches a running engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from engine.errors import BundleError
from engine.model_switch import ModelFollower
from engine.registry import POINTER_NAME, RECORD_NAME, ModelRegistry, RegistryError, UnknownModelError
from engine.runtime import load_model
from engine.settings import EngineSettings
from tests.embedded_model import (
    EMBEDDED_DIR,
    EMBEDDED_FINDINGS_F1,
    EMBEDDED_ID,
    EMBEDDED_NAME,
    EMBEDDED_VERSION,
)

RECORD = {"decision": {"promote": True, "forced": False, "reasons": ["overall micro F1 better"]},
          "test_studies": 12}


def bundle_with_version(source: Path, target: Path, version: str) -> Path:
    """A copy of a real bundle under another version (what a new export of the same model would be)."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "model.json").read_text())
    manifest["version"] = version
    (target / "model.json").write_text(json.dumps(manifest))
    return target


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models", embedded=EMBEDDED_DIR)


def test_an_empty_registry_lists_and_uses_the_embedded_model(registry):
    (embedded,) = registry.models()
    assert embedded.embedded and embedded.current and embedded.record is None and embedded.broken is None
    assert (embedded.name, embedded.version, embedded.how) == (EMBEDDED_NAME, EMBEDDED_VERSION, "embedded")
    assert embedded.section_f1("findings") == pytest.approx(EMBEDDED_FINDINGS_F1)
    assert embedded.card().startswith(f"# {EMBEDDED_NAME} {EMBEDDED_VERSION}")
    assert registry.current() == embedded
    assert registry.get("embedded") == registry.get(EMBEDDED_VERSION) == registry.get(EMBEDDED_ID)
    assert not (registry.models_dir / POINTER_NAME).exists()


def test_install_copies_the_bundle_with_its_record_and_lists_newest_first(registry, tiny_bundle, tmp_path):
    installed = registry.install(tiny_bundle, RECORD)
    assert installed.path == registry.models_dir / "tiny-test-0.0.1"
    assert (installed.version, installed.name, installed.how, installed.record) == ("0.0.1", "tiny-test",
                                                                                   "promoted", RECORD)
    assert not installed.current and not installed.embedded and installed.broken is None
    copied = files_of(installed.path)
    assert copied.pop(RECORD_NAME)
    assert copied == files_of(tiny_bundle)
    info = json.loads((installed.path / RECORD_NAME).read_text())
    assert info["record"] == RECORD and info["source"] == str(tiny_bundle.resolve())
    assert registry.current().embedded  # installing does not switch

    forced = {"decision": {"promote": True, "forced": True, "reasons": ["forced"]}}
    time.sleep(0.01)
    newer = registry.install(bundle_with_version(tiny_bundle, tmp_path / "b2", "0.0.2"), forced)
    assert [m.version for m in registry.models()] == ["0.0.2", "0.0.1", EMBEDDED_VERSION]
    assert newer.how == "forced" and newer.installed_at > installed.installed_at
    assert [p.name for p in registry.models_dir.iterdir()] != [] and not list(registry.models_dir.glob(".*"))


def test_a_version_is_never_overwritten(registry, tiny_bundle, tmp_path):
    first = registry.install(tiny_bundle, RECORD)
    before = files_of(first.path)
    with pytest.raises(RegistryError, match="version 0.0.1 is already installed"):
        registry.install(tiny_bundle, {"decision": "again"})
    renamed = bundle_with_version(tiny_bundle, tmp_path / "renamed", "0.0.1")
    manifest = json.loads((renamed / "model.json").read_text())
    (renamed / "model.json").write_text(json.dumps({**manifest, "name": "other-name"}))
    with pytest.raises(RegistryError, match="already installed"):
        registry.install(renamed, RECORD)  # same version under another name: `use 0.0.1` must stay unambiguous
    with pytest.raises(RegistryError, match="the embedded model"):
        registry.install(bundle_with_version(tiny_bundle, tmp_path / "as-embedded", EMBEDDED_VERSION), RECORD)
    assert files_of(first.path) == before
    assert [m.version for m in registry.models()] == ["0.0.1", EMBEDDED_VERSION]
    assert not list(registry.models_dir.glob(".*"))  # no temp folder left by the refusals


def test_an_invalid_bundle_or_record_is_refused_and_nothing_is_installed(registry, tiny_bundle, tmp_path):
    broken = shutil.copytree(tiny_bundle, tmp_path / "broken")
    (broken / "decoder.int8.onnx").unlink()  # a variant the manifest lists
    with pytest.raises(BundleError, match="decoder.int8.onnx is missing"):
        registry.install(broken, RECORD)
    with pytest.raises(RegistryError, match="not JSON"):
        registry.install(tiny_bundle, {"when": object()})
    unsafe = bundle_with_version(tiny_bundle, tmp_path / "unsafe", "../1")
    with pytest.raises(RegistryError, match="name and version must be"):
        registry.install(unsafe, RECORD)
    assert [m.embedded for m in registry.models()] == [True]


def test_use_switches_with_one_atomic_pointer_rewrite(registry, tiny_bundle):
    installed = registry.install(tiny_bundle, RECORD)
    assert registry.pointer_token() is None
    used = registry.use("0.0.1")
    assert used.current and used.path == installed.path
    pointer = registry.models_dir / POINTER_NAME
    first_inode, first_token = pointer.stat().st_ino, registry.pointer_token()
    assert json.loads(pointer.read_text())["folder"] == "tiny-test-0.0.1"
    assert registry.current().path == installed.path
    assert [m.version for m in registry.models() if m.current] == ["0.0.1"]

    back = registry.use("embedded")
    assert back.embedded and registry.current().embedded
    # A new file renamed over the old one: a reader sees the old pointer or the new, never half of one.
    assert pointer.stat().st_ino != first_inode and registry.pointer_token() != first_token
    assert not list(registry.models_dir.glob(".*partial"))
    registry.use("tiny-test@0.0.1")
    assert registry.current().version == "0.0.1"


def test_an_unknown_version_names_the_known_ones(registry, tiny_bundle):
    registry.install(tiny_bundle, RECORD)
    known = rf"0\.0\.1, {re.escape(EMBEDDED_VERSION)} \(embedded\)"
    with pytest.raises(UnknownModelError, match=rf"no model version '9\.9'; known versions: {known}") as caught:
        registry.use("9.9")
    assert caught.value.known == ["0.0.1", f"{EMBEDDED_VERSION} (embedded)"]
    assert registry.current().embedded


def test_a_broken_installed_bundle_is_listed_as_broken(registry, tiny_bundle):
    installed = registry.install(tiny_bundle, RECORD)
    registry.use("0.0.1")
    (installed.path / "tokenizer.json").unlink()
    (registry.models_dir / "copied-by-hand").mkdir()  # no install.json, no model.json
    models = {m.path.name: m for m in registry.models()}
    assert "tokenizer.json is missing" in models["tiny-test-0.0.1"].broken
    assert models["tiny-test-0.0.1"].current and models["tiny-test-0.0.1"].version == "0.0.1"
    assert "install.json is missing" in models["copied-by-hand"].broken
    assert registry.current().broken  # the pointer still names it; the front door falls back
    with pytest.raises(RegistryError, match="cannot be used"):
        registry.use("0.0.1")


def test_a_pointer_to_a_missing_version_or_garbage_is_a_typed_error(registry, tiny_bundle):
    installed = registry.install(tiny_bundle, RECORD)
    registry.use("0.0.1")
    shutil.rmtree(installed.path)
    with pytest.raises(RegistryError, match="names tiny-test-0.0.1, which is not installed"):
        registry.current()
    (registry.models_dir / POINTER_NAME).write_text("{not json")
    with pytest.raises(RegistryError, match="cannot be read"):
        registry.current()
    assert [m.embedded for m in registry.models()] == [True]  # listing still works
    registry.use("embedded")
    assert registry.current().embedded


def test_a_crashed_install_leaves_a_temp_folder_that_is_ignored_then_swept(registry, tiny_bundle, tmp_path):
    registry.models_dir.mkdir(parents=True)
    stray = shutil.copytree(tiny_bundle, registry.models_dir / ".tiny-test-0.0.9.1a2b3c4d.partial")
    assert [m.embedded for m in registry.models()] == [True]
    old = time.time() - 2 * 3600
    os.utime(stray, (old, old))
    registry.install(tiny_bundle, RECORD)
    assert not stray.exists()


def test_the_follower_switches_a_running_engine_and_keeps_it_when_the_new_model_fails(registry, tiny_bundle,
                                                                                      tmp_path):
    settings = EngineSettings(providers=("cpu",), max_new_tokens=4)
    installed = registry.install(tiny_bundle, RECORD)
    broken = registry.install(bundle_with_version(tiny_bundle, tmp_path / "b2", "0.0.2"), RECORD)
    switches, failures = [], []
    running = registry.current()
    follower = ModelFollower(registry, lambda path: load_model(path, settings),
                             lambda entry, model: switches.append((entry.version, model.model_id,
                                                                   threading.current_thread().name)),
                             lambda what, error: failures.append(f"{what}: {error}"), loaded=running,
                             token=registry.pointer_token(), interval_s=0.05)
    assert follower.check() is None  # nothing changed
    follower.start()
    try:
        registry.use("0.0.1")
        wait_for(lambda: switches)
        assert switches == [("0.0.1", "tiny-test@0.0.1", "raddraft-model-follower")]
        for graph in broken.path.glob("vision*.onnx"):
            graph.write_bytes(b"not onnx")  # loads no more, though every file is there
        registry.use("0.0.2")
        wait_for(lambda: failures)
        assert "the new current model tiny-test@0.0.2 cannot be loaded" in failures[0]
        time.sleep(0.3)
        assert len(switches) == 1 and len(failures) == 1  # reported once per change of the pointer
        registry.use("0.0.1")  # back to the one running: nothing to load
        time.sleep(0.3)
        assert len(switches) == 1
    finally:
        follower.stop()
    assert installed.path.exists()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
