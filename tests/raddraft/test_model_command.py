"""`raddraft model list|use|install|show` as a user runs it, the front door's model resolution, and a running
workstation and service that follow `raddraft model use` from another process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicom_node.drafts import latest_draft
from dicom_node.index import Index, StudyState
from dicom_node.store import ReceivedInstance
from engine.registry import ModelRegistry
from raddraft.config import load_config
from raddraft.resources import CONFIGURED, EMBEDDED, REGISTRY, embedded_model_dir, resolve_model
from tests.conftest import start_service
from tests.embedded_model import (
    EMBEDDED_FINDINGS_F1_TEXT,
    EMBEDDED_ID,
    EMBEDDED_IMPRESSION_F1_TEXT,
    EMBEDDED_NAME,
    EMBEDDED_VERSION,
)

TINY_ID = "tiny-test@0.0.1"


def model_command(store: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", "model", "--store", str(store), *args],
                          check=False, capture_output=True, text=True, timeout=120)


def config_for(tmp_path: Path, **overrides):
    path = tmp_path / "raddraft.toml"
    if not path.exists():
        path.write_text("")
    return load_config(path, {"store.root": str(tmp_path / "store"), **overrides})


def registry_of(store: Path) -> ModelRegistry:
    return ModelRegistry(store / "models", embedded=embedded_model_dir())


def test_install_use_list_and_show(tmp_path, tiny_bundle):
    store = tmp_path / "store"
    listed = model_command(store, "list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["version", "name", "installed", "findings", "F1", "impression", "F1", "how"]
    assert row.split() == ["*", EMBEDDED_VERSION, EMBEDDED_NAME, "-", EMBEDDED_FINDINGS_F1_TEXT,
                           EMBEDDED_IMPRESSION_F1_TEXT, "embedded"]

    installed = model_command(store, "install", str(tiny_bundle), "--use")
    assert installed.returncode == 0, installed.stderr
    assert f"installed {TINY_ID} in {store / 'models' / 'tiny-test-0.0.1'} (now current)" in installed.stdout
    rows = model_command(store, "list").stdout.splitlines()[1:]
    assert [r.split()[:3] for r in rows] == [["*", "0.0.1", "tiny-test"],
                                               [EMBEDDED_VERSION, EMBEDDED_NAME, "-"]]
    assert rows[0].split()[-1] == "installed"  # by hand, not through a comparison

    shown = model_command(store, "show")
    assert shown.returncode == 0 and shown.stdout.startswith(f"{TINY_ID} (current)")
    assert '"by": "raddraft model install"' in shown.stdout and "Promotion record:" in shown.stdout
    embedded_card = model_command(store, "show", "embedded").stdout
    assert "how: embedded" in embedded_card and f"# {EMBEDDED_NAME} {EMBEDDED_VERSION}" in embedded_card

    again = model_command(store, "install", str(tiny_bundle))
    assert again.returncode == 1 and "version 0.0.1 is already installed" in again.stderr

    used = model_command(store, "use", "embedded")
    assert used.returncode == 0 and f"current model: {EMBEDDED_ID} (embedded)" in used.stdout
    assert registry_of(store).current().embedded


def test_use_of_an_unknown_version_exits_1_with_the_known_ones(tmp_path):
    result = model_command(tmp_path / "store", "use", "2.0")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"raddraft model: no model version '2.0'; known versions: "
                                     f"{EMBEDDED_VERSION} (embedded)")
    assert not (tmp_path / "store" / "models" / "current.json").exists()


def test_resolution_pins_then_follows_the_registry_then_falls_back(tmp_path, tiny_bundle):
    store = tmp_path / "store"
    config = config_for(tmp_path)
    choice = resolve_model(config)
    assert (choice.source, choice.path, choice.problem) == (EMBEDDED, embedded_model_dir(), None)

    registry = registry_of(store)
    installed = registry.install(tiny_bundle, {"how": "installed"})
    registry.use("0.0.1")
    choice = resolve_model(config)
    assert (choice.source, choice.path, choice.installed.version) == (REGISTRY, installed.path, "0.0.1")

    pinned = config_for(tmp_path, **{"engine.model": str(tiny_bundle)})
    assert resolve_model(pinned).source == CONFIGURED and not resolve_model(pinned).follows_registry

    (installed.path / "tokenizer.json").unlink()
    choice = resolve_model(config)
    assert choice.source == EMBEDDED and choice.path == embedded_model_dir()
    assert "tokenizer.json is missing" in choice.problem and choice.follows_registry

    elsewhere = config_for(tmp_path, **{"engine.models_dir": str(tmp_path / "shared")})
    assert resolve_model(elsewhere).source == EMBEDDED and resolve_model(elsewhere).problem is None


def put_study(store, study: dict) -> str:
    for path in study["paths"]:
        store.put(ReceivedInstance.from_part10(Path(path).read_bytes()))
    store.index.transition(study["study_uid"], StudyState.STABLE)
    return study["study_uid"]


def wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_model_use_in_another_process_switches_the_running_workstation(tmp_path, tiny_bundle, phantom_studies):
    from raddraft.workstation import Workstation

    store = tmp_path / "store"
    registry_of(store).install(tiny_bundle, {"how": "installed"})
    config = config_for(tmp_path, **{"node.port": 0, "engine.providers": ["cpu"], "engine.max_new_tokens": 6,
                                     "engine.follow_interval_s": 0.1})
    ws = Workstation.start(config)
    try:
        assert ws.model.model_id == EMBEDDED_ID and ws.queue is not None and ws.follower is not None
        first = phantom_studies[0]["study_uid"]
        used: list[subprocess.CompletedProcess] = []

        def switch_while_drafting(event) -> None:  # on the drafting thread: the first study has started
            if event.study_uid != first:
                return
            used.append(model_command(store, "use", "0.0.1"))
            wait_for(lambda: ws.model.model_id == TINY_ID, what="the workstation to switch")

        unsubscribe = ws.draft_events.started.subscribe(switch_while_drafting)
        ws.queue.enqueue(put_study(ws.store, phantom_studies[0]))
        assert ws.queue.wait_idle(120)
        unsubscribe()
        assert used[0].returncode == 0, used[0].stderr
        assert latest_draft(ws.store.index, first).model == EMBEDDED_ID  # finished on the model it started with
        assert ws.queue.model.model_id == TINY_ID and ws.status().model.startswith(TINY_ID)

        second = put_study(ws.store, phantom_studies[1])
        ws.queue.enqueue(second)
        assert ws.queue.wait_idle(120)
        assert latest_draft(ws.store.index, second).model == TINY_ID
        assert ws.draft_section(second, "findings")  # on-demand drafting follows too
        assert ws.models_overview().running.version == "0.0.1"
    finally:
        ws.stop()


@pytest.mark.slow
def test_model_use_switches_a_running_service(tmp_path, tiny_bundle, phantom_studies):
    from dicom_node.sender import send_files

    store = tmp_path / "store"
    registry_of(store).install(tiny_bundle, {"how": "installed"})
    toml = tmp_path / "raddraft.toml"
    toml.write_text("[engine]\nproviders = [\"cpu\"]\nmax_new_tokens = 6\nfollow_interval_s = 0.2\n")
    running = start_service(store, "--stable-after", "0.5", "--config", str(toml), "--log-level", "INFO")
    index = Index(store / "index.sqlite3")

    def drafted_by(study: dict) -> str:
        summary = send_files("127.0.0.1", running.port, study["paths"], called_ae="RADDRAFT")
        assert not summary.failed
        wait_for(lambda: (row := index.study(study["study_uid"])) is not None and row.state == StudyState.DRAFTED,
                 what="the draft")
        return latest_draft(index, study["study_uid"]).model

    try:
        assert drafted_by(phantom_studies[0]) == EMBEDDED_ID
        used = model_command(store, "use", "0.0.1")
        assert used.returncode == 0, used.stderr
        wait_for(lambda: "model switched" in running.log, what="the service to switch")
        assert f"model switched: {EMBEDDED_ID} -> {TINY_ID}" in running.log
        assert drafted_by(phantom_studies[1]) == TINY_ID

        broken = registry_of(store).install(
            _renamed_copy(tiny_bundle, tmp_path / "b2", "0.0.2"), {"how": "installed"})
        for graph in broken.path.glob("*.onnx"):
            graph.write_bytes(b"garbage")
        assert model_command(store, "use", "0.0.2").returncode == 0
        wait_for(lambda: "cannot be loaded" in running.log, what="the failure to be reported")
        assert f"still drafting with {TINY_ID}" in running.log
        assert drafted_by(phantom_studies[2]) == TINY_ID
    finally:
        index.close()
        assert running.stop() == 0


def _renamed_copy(source: Path, target: Path, version: str) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / "model.json").read_text())
    (target / "model.json").write_text(json.dumps({**manifest, "version": version}))
    return target


def test_a_workstation_pinned_by_the_configuration_does_not_follow(tmp_path, tiny_bundle):
    from raddraft.workstation import Workstation

    store = tmp_path / "store"
    config = config_for(tmp_path, **{"node.port": 0, "engine.model": str(tiny_bundle),
                                     "engine.draft_on_stable": False, "engine.follow_interval_s": 0.1})
    ws = Workstation.start(config)
    try:
        assert ws.follower is None and ws.model.model_id == TINY_ID
        ws.use_model("embedded")  # recorded in the registry for the others; the pin wins here
        time.sleep(0.3)
        assert ws.model.model_id == TINY_ID and registry_of(store).current().embedded
        assert ws.models_overview().pinned == tiny_bundle
    finally:
        ws.stop()

