from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from dicom_node.events import NodeEvents, StudyStable
from dicom_node.server import ACCEPTED_TRANSFER_SYNTAXES, DicomNode
from dicom_node.settings import NodeSettings, StoreSettings
from dicom_node.store import Store


class RunningNode:
    def __init__(self, root: Path, **settings) -> None:
        self.store = Store(StoreSettings(root))
        self.events = NodeEvents()
        self.stable: list[StudyStable] = []
        self.stable_seen = threading.Event()
        self.events.study_stable.subscribe(self._on_stable)
        self.node = DicomNode(NodeSettings(port=0, **settings), self.store, self.events)
        self.node.start()

    def _on_stable(self, event: StudyStable) -> None:
        self.stable.append(event)
        self.stable_seen.set()

    @property
    def port(self) -> int:
        return self.node.port

    def stop(self) -> None:
        self.node.stop()
        self.store.close()


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator:
    nodes: list[RunningNode] = []

    def make(root: Path | None = None, **settings) -> RunningNode:
        running = RunningNode(root or tmp_path / "store", **settings)
        nodes.append(running)
        return running

    yield make
    for running in nodes:
        running.stop()


def associate(port: int, sop_classes, calling_ae: str = "TESTSCU", syntaxes=None):
    ae = AE(ae_title=calling_ae)
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, syntaxes or list(ACCEPTED_TRANSFER_SYNTAXES[:2]))
    return ae.associate("127.0.0.1", port, ae_title="RADDRAFT")
