"""A study complete before its quiet period (dicom_node/stability.py): at the sender's announced count, or
speculatively once it is ready; a later instance reopens it, and the quiet period stays the upper bound."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest

from dicom_node.events import NodeEvents
from dicom_node.index import StudyState
from dicom_node.sender import send_files
from dicom_node.server import DicomNode
from dicom_node.settings import NodeSettings, StoreSettings
from dicom_node.store import Store
from tests.conftest import copy_with_fresh_uids, sample_path


@pytest.fixture
def node_with(tmp_path: Path):
    started: list[tuple[DicomNode, Store]] = []

    def start(ready, after_s: float, quiet_s: float = 30.0) -> DicomNode:
        store = Store(StoreSettings(tmp_path / "store"))
        node = DicomNode(NodeSettings(port=0, stable_after_s=quiet_s), store, NodeEvents())
        node.tracker.complete_early(after_s, ready)
        node.start()
        started.append((node, store))
        return node

    yield start
    for node, store in started:
        node.stop()
        store.close()


def study_files(folder: Path, count: int, announced: int | None = None) -> tuple[str, list[Path]]:
    files, study_uid = [], None
    for i in range(count):
        path = folder / f"{i}.dcm"
        ds = copy_with_fresh_uids(sample_path("CT_small.dcm"), path, study_uid)
        study_uid = str(ds.StudyInstanceUID)
        if announced is not None:
            ds.NumberOfStudyRelatedInstances = announced
            ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return study_uid, files


def send(node: DicomNode, files: list[Path]) -> float:
    summary = send_files("127.0.0.1", node.port, files, called_ae=node.settings.ae_title, timeout_s=30)
    assert not summary.failed
    return time.monotonic()


def wait_state(node: DicomNode, study_uid: str, state: StudyState, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = node.store.index.study(study_uid)
        if study is not None and study.state == state:
            return time.monotonic()
        time.sleep(0.01)
    return None


def test_a_ready_study_is_complete_after_the_short_quiet_and_reopens(node_with, tmp_path):
    node = node_with(lambda _uid: True, after_s=0.3)
    study_uid, files = study_files(tmp_path / "a", 3)
    sent = send(node, files[:2])
    stable = wait_state(node, study_uid, StudyState.STABLE, 5)
    assert stable is not None and stable - sent < 2.0
    assert node.store.index.study(study_uid).state_reason.startswith("speculative")
    send(node, files[2:])  # more images: receiving again, then complete again with all three
    assert node.store.index.study(study_uid).state == StudyState.RECEIVING
    assert wait_state(node, study_uid, StudyState.STABLE, 5) is not None
    assert node.store.index.study(study_uid).num_instances == 3


def test_a_study_not_ready_waits_for_the_quiet_period(node_with, tmp_path):
    node = node_with(lambda _uid: False, after_s=0.2, quiet_s=1.5)
    study_uid, files = study_files(tmp_path / "b", 2)
    send(node, files)
    assert wait_state(node, study_uid, StudyState.STABLE, 1.0) is None
    assert wait_state(node, study_uid, StudyState.STABLE, 5) is not None
    assert node.store.index.study(study_uid).state_reason == "no new instance for 1.5 s"


def test_the_senders_count_completes_the_study_at_its_last_instance(node_with, tmp_path):
    node = node_with(lambda _uid: False, after_s=0)  # no speculation: only the count
    study_uid, files = study_files(tmp_path / "c", 3, announced=3)
    assert pydicom.dcmread(files[0]).NumberOfStudyRelatedInstances == 3
    send(node, files[:2])
    assert wait_state(node, study_uid, StudyState.STABLE, 0.5) is None  # 2 of 3
    sent = send(node, files[2:])
    stable = wait_state(node, study_uid, StudyState.STABLE, 5)
    assert stable is not None and stable - sent < 1.0
    assert "all 3 instances" in node.store.index.study(study_uid).state_reason
