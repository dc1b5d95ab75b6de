"""The desktop app under pytest-qt, offscreen, on a real store with real services."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from dicom_node.events import NodeEvents
from dicom_node.server import DicomNode
from dicom_node.settings import NodeSettings, StoreSettings
from dicom_node.store import Store


@pytest.fixture
def desktop(tmp_path: Path, open_window) -> Callable[..., Any]:
    """`desktop(toml_text, **overrides)` -> a shown MainWindow over a started Workstation (hosting)."""
    from raddraft.config import load_config
    from raddraft.workstation import Workstation

    def make(text: str = "", **overrides):
        path = tmp_path / "raddraft.toml"
        path.write_text(text)
        values = {"store.root": str(tmp_path / "store"), "node.port": 0, "node.stable_after_s": 0.5,
                  "reading.radiologist": "Smith^Anna", **overrides}
        return open_window(Workstation.start(load_config(path, values), config_path=path, overrides=values))

    return make


@pytest.fixture
def no_model(tmp_path: Path) -> dict:
    """Overrides for a window without a model (a folder that is no bundle) and without drafting."""
    (tmp_path / "no-model").mkdir()
    return {"engine.draft_on_stable": False, "engine.model": str(tmp_path / "no-model")}


class Pacs:
    """A test SCP that receives the SRs: a second, real RadDraft node with its own store."""

    def __init__(self, root: Path) -> None:
        self.store = Store(StoreSettings(root))
        self.node = DicomNode(NodeSettings(ae_title="PACS", port=0, stable_after_s=60), self.store, NodeEvents())
        self.node.start()
        self.port = self.node.port

    def stop(self) -> None:
        self.node.stop()
        self.store.close()


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Pacs]:
    running = Pacs(tmp_path / "pacs")
    yield running
    running.stop()
