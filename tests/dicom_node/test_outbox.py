"""The outbox worker against a real receiving node: send, fail while PACS is down, retry, succeed."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pydicom
import pytest

from dicom_node.events import NodeEvents
from dicom_node.index import StudyState
from dicom_node.outbox import OutboxWorker, retry_delay
from dicom_node.reports import SignedReport, outbox_of, sign_report
from dicom_node.server import DicomNode
from dicom_node.settings import NodeSettings, PacsSettings, ReadingSettings, StoreSettings
from dicom_node.sr import section_texts
from dicom_node.store import ReceivedInstance, Store
from tests.conftest import copy_with_fresh_uids, sample_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def signed_store(tmp_path: Path):
    store = Store(StoreSettings(tmp_path / "store"))
    path = tmp_path / "ct.dcm"
    uid = str(copy_with_fresh_uids(sample_path("CT_small.dcm"), path).StudyInstanceUID)
    store.put(ReceivedInstance.from_part10(path.read_bytes()))
    store.index.transition(uid, StudyState.STABLE)
    report = sign_report(store.index, SignedReport(uid, "Lungs clear.", "Normal.", "Smith^Anna"), queue_send=True)
    yield store, report
    store.close()


def start_pacs(root: Path, port: int) -> tuple[DicomNode, Store]:
    store = Store(StoreSettings(root))
    node = DicomNode(NodeSettings(ae_title="PACS", port=port, stable_after_s=30), store, NodeEvents())
    node.start()
    return node, store


def test_failed_send_stays_queued_then_goes_when_pacs_is_back(signed_store, tmp_path):
    store, report = signed_store
    port = free_port()
    pacs = PacsSettings(ae_title="PACS", host="127.0.0.1", port=port, retry_initial_s=0.3, retry_max_s=0.6,
                        timeout_s=5)
    worker = OutboxWorker(store, pacs, ReadingSettings(radiologist="Smith^Anna", organization="Test"))
    attempts = []
    worker.events.sent.subscribe(attempts.append)
    worker.start()
    node = pacs_store = None
    try:
        assert wait_for(lambda: len(attempts) >= 2)  # PACS down: it failed and retried
        (item,) = outbox_of(store.index, report.study_uid)
        assert item.status == "pending" and item.attempts >= 2 and "could not be established" in item.last_error
        assert store.index.study(report.study_uid).state == StudyState.SIGNED
        assert not attempts[0].ok and attempts[0].next_attempt_at > time.time() - 5
        node, pacs_store = start_pacs(tmp_path / "pacs", port)
        assert wait_for(lambda: store.index.study(report.study_uid).state == StudyState.SENT)
        assert attempts[-1].ok and attempts[-1].destination == f"PACS@127.0.0.1:{port}"
        received = pacs_store.index.instance(report.sr_sop_instance_uid)
        assert received is not None and received.study_uid == report.study_uid
        ds = pydicom.dcmread(pacs_store.path_of(received))
        assert section_texts(ds) == {"findings": "Lungs clear.", "impression": "Normal."}
        assert ds.VerifyingObserverSequence[0].VerifyingOrganization == "Test"
    finally:
        worker.stop()
        if node:
            node.stop()
            pacs_store.close()


def test_unconfigured_pacs_sends_nothing_and_backoff_doubles(signed_store):
    store, report = signed_store
    worker = OutboxWorker(store, PacsSettings())
    worker.start()
    time.sleep(0.3)
    worker.stop()
    (item,) = outbox_of(store.index, report.study_uid)
    assert item.attempts == 0 and item.status == "pending"
    pacs = PacsSettings(ae_title="P", host="h", retry_initial_s=10, retry_max_s=60)
    assert [retry_delay(pacs, n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
