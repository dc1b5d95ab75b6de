"""One assembly of the runtime (raddraft/runtime.py): the service, the app's workstation and the self-test
choose the same model, and fall back the same way, when the registry's model or a pinned one cannot load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.registry import ModelRegistry
from raddraft.config import load_config
from raddraft.resources import CONFIGURED, EMBEDDED, embedded_model_dir
from raddraft.runtime import DRAFTING_OFF, EMBEDDED_FALLBACK, load_drafting_model
from raddraft.self_test import run_self_test
from raddraft.workstation import Workstation
from tests.conftest import start_service
from tests.embedded_model import EMBEDDED_ID


def config_for(tmp_path: Path, **overrides):
    path = tmp_path / "raddraft.toml"
    path.write_text("")
    return load_config(path, {"store.root": str(tmp_path / "store"), "node.port": 0, **overrides})


def install_unloadable_current(store: Path, tmp_path: Path) -> None:
    """The registry's current model: a copy of the embedded bundle whose graphs are garbage."""
    copy = tmp_path / "unloadable"
    shutil.copytree(embedded_model_dir(), copy, ignore=shutil.ignore_patterns("checkpoint", "*.png"))
    manifest = json.loads((copy / "model.json").read_text())
    (copy / "model.json").write_text(json.dumps({**manifest, "version": "9.9.9"}))
    registry = ModelRegistry(store / "models", embedded=embedded_model_dir())
    installed = registry.install(copy, {"how": "installed"})
    registry.use("9.9.9")
    for graph in installed.path.glob("*.onnx"):
        graph.write_bytes(b"garbage")


def service_model_line(store: Path, *extra: str) -> str:
    running = start_service(store, *extra)
    try:
        return running.process.stdout.readline().strip()
    finally:
        assert running.stop() == 0


@pytest.mark.slow
def test_an_unloadable_registry_model_falls_back_to_the_embedded_one_everywhere(tmp_path):
    store = tmp_path / "store"
    install_unloadable_current(store, tmp_path)
    config = config_for(tmp_path, **{"engine.draft_on_stable": False})

    loaded = load_drafting_model(config)
    assert loaded.model is not None and loaded.model.model_id == EMBEDDED_ID
    assert loaded.choice.source == EMBEDDED and not loaded.refused
    assert len(loaded.problems) == 1 and loaded.problems[0].startswith(EMBEDDED_FALLBACK)
    assert "9.9.9" in loaded.problems[0]

    ws = Workstation.start(config)
    try:
        assert ws.model.model_id == EMBEDDED_ID and ws.model_choice.source == EMBEDDED
        assert tuple(ws.problems) == loaded.problems
    finally:
        ws.stop()

    report = run_self_test(config, timeout_s=60)
    assert report.model == EMBEDDED_ID and report.model_source == EMBEDDED, report.error
    assert set(loaded.problems) <= set(report.notes)

    assert service_model_line(store).startswith(f"drafting with {EMBEDDED_ID}")


def test_a_pinned_model_that_cannot_load_is_refused_everywhere(tmp_path):
    (tmp_path / "empty-bundle").mkdir()
    config = config_for(tmp_path, **{"engine.model": str(tmp_path / "empty-bundle")})

    loaded = load_drafting_model(config)
    assert loaded.model is None and loaded.refused and loaded.choice.source == CONFIGURED
    (problem,) = loaded.problems
    assert problem.startswith(DRAFTING_OFF) and "model.json is missing" in problem

    # The app cannot refuse to open: it runs with drafting off and shows the same sentence.
    ws = Workstation.start(config)
    try:
        assert ws.model is None and ws.queue is None and ws.node is not None
        assert ws.problems == [problem]
    finally:
        ws.stop()

    report = run_self_test(config, timeout_s=30)
    assert not report.ok and report.failed_step == "load model" and report.error == problem

    with pytest.raises(RuntimeError, match="model.json is missing"):
        start_service(tmp_path / "store", "--model", str(tmp_path / "empty-bundle"), timeout=20)
