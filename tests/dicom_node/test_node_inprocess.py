"""The node in-process, driven by a real pynetdicom SCU over loopback."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom.sop_class import CTImageStorage, Verification

from dicom_node.handlers import CANNOT_UNDERSTAND, MISSING_OR_BAD_UID
from dicom_node.index import StudyState
from dicom_node.store import relative_path_for
from tests.conftest import SAMPLE_FILES, copy_with_fresh_uids, dataset_bytes, sample_path
from tests.dicom_node.conftest import associate


def _ct(tmp_path: Path, name: str = "ct.dcm", **uids) -> tuple[Path, pydicom.Dataset]:
    path = tmp_path / name
    return path, copy_with_fresh_uids(sample_path("CT_small.dcm"), path, **uids)


def test_echo(make_node):
    node = make_node()
    assoc = associate(node.port, [Verification])
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_store_keeps_the_dataset_byte_identical_and_indexes_it(make_node, tmp_path):
    node = make_node()
    path, ds = _ct(tmp_path)
    assoc = associate(node.port, [CTImageStorage])
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    row = node.store.index.instance(ds.SOPInstanceUID)
    assert row is not None and row.calling_ae == "TESTSCU"
    stored = node.store.path_of(row)
    assert stored == node.store.root / relative_path_for(ds.StudyInstanceUID, ds.SOPInstanceUID)
    # What pynetdicom put on the wire is what the SCU encoded; compare with the file as sent by path.
    assert pydicom.dcmread(stored).PixelData == ds.PixelData
    study = node.store.index.study(ds.StudyInstanceUID)
    assert (study.patient_id, study.num_instances, study.modalities, study.state) == (
        ds.PatientID, 1, "CT", StudyState.RECEIVING)
    assert pydicom.dcmread(stored).file_meta.SourceApplicationEntityTitle == "TESTSCU"


def test_every_accepted_transfer_syntax_is_stored_as_received(make_node, sample_study):
    node = make_node()
    study_uid, paths = sample_study
    from dicom_node.sender import send_files

    summary = send_files("127.0.0.1", node.port, paths, called_ae="RADDRAFT")
    assert summary.failed == [] and summary.succeeded == len(SAMPLE_FILES)
    for path in paths:
        sent = pydicom.dcmread(path, stop_before_pixels=True)
        row = node.store.index.instance(sent.SOPInstanceUID)
        assert row.transfer_syntax == SAMPLE_FILES[path.name]
        assert dataset_bytes(node.store.path_of(row)) == dataset_bytes(path), path.name
    assert node.store.index.study(study_uid).num_instances == len(SAMPLE_FILES)


def test_duplicate_with_identical_bytes_is_stored_once(make_node, tmp_path):
    node = make_node()
    path, ds = _ct(tmp_path)
    assoc = associate(node.port, [CTImageStorage])
    assert assoc.send_c_store(path).Status == 0
    assert assoc.send_c_store(path).Status == 0
    assoc.release()
    assert len(node.store.index.instances_of(ds.StudyInstanceUID)) == 1
    assert node.store.index.study(ds.StudyInstanceUID).num_instances == 1
    assert node.store.index.store_events("replaced") == []


def test_duplicate_with_different_bytes_keeps_the_newer_and_records_it(make_node, tmp_path):
    node = make_node()
    path, ds = _ct(tmp_path)
    assoc = associate(node.port, [CTImageStorage])
    assert assoc.send_c_store(ds).Status == 0
    ds.StudyDescription = "corrected by the modality"
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    row = node.store.index.instance(ds.SOPInstanceUID)
    assert pydicom.dcmread(node.store.path_of(row)).StudyDescription == "corrected by the modality"
    assert node.store.index.study(ds.StudyInstanceUID).num_instances == 1
    events = node.store.index.store_events("replaced")
    assert [e["sop_instance_uid"] for e in events] == [ds.SOPInstanceUID]


def test_calling_ae_not_on_the_allow_list_is_rejected(make_node, tmp_path):
    node = make_node(allowed_calling_aes=("PACS1",))
    rejected = associate(node.port, [Verification], calling_ae="INTRUDER")
    assert rejected.is_rejected
    allowed = associate(node.port, [Verification], calling_ae="PACS1")
    assert allowed.is_established
    allowed.release()


_SOP_CLASS_ELEMENT = b"\x08\x00\x16\x00UI\x1a\x001.2.840.10008.5.1.4.1.1.2\x00"
GARBAGE = {
    "not DICOM at all": b"this is a text file that a misconfigured router forwarded".ljust(64, b"."),
    "all 0xFF": b"\xff" * 64,
    "sequence item without a tag": _SOP_CLASS_ELEMENT + b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\x01\x02\x03\x04",
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_undecodable_dataset_is_refused_and_nothing_is_stored(make_node, garbage):
    node = make_node()
    assoc = associate(node.port, [CTImageStorage, Verification])
    status = _send_raw(assoc, garbage, "1.2.840.10008.5.1.4.1.1.2", generate_uid())
    assert status == CANNOT_UNDERSTAND
    assert assoc.send_c_echo().Status == 0  # the association (and the node) keep serving
    assoc.release()
    assert node.store.index.studies() == []
    assert not any((node.store.root / "data").rglob("*.dcm"))


@pytest.mark.parametrize("bad_uid", ["", "1.2.abc.4", "1." + "2" * 70])
def test_missing_or_malformed_study_uid_gets_a_failure(make_node, tmp_path, bad_uid):
    node = make_node()
    _path, ds = _ct(tmp_path)
    if bad_uid:
        ds.StudyInstanceUID = bad_uid
    else:
        del ds.StudyInstanceUID
    assoc = associate(node.port, [CTImageStorage])
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == MISSING_OR_BAD_UID
    assert node.store.index.instance(ds.SOPInstanceUID) is None


def test_study_becomes_stable_after_the_quiet_period_and_reopens_on_new_instance(make_node, tmp_path):
    node = make_node(stable_after_s=0.5)
    study_uid = generate_uid()
    _p1, first = _ct(tmp_path, "a.dcm", study_uid=study_uid)
    _p2, second = _ct(tmp_path, "b.dcm", study_uid=study_uid)
    assoc = associate(node.port, [CTImageStorage])
    assert assoc.send_c_store(first).Status == 0
    assert node.stable_seen.wait(5)
    assert node.stable[0].study_uid == study_uid and node.stable[0].num_instances == 1
    assert node.store.index.study(study_uid).state == StudyState.STABLE
    node.stable_seen.clear()
    assert assoc.send_c_store(second).Status == 0
    assoc.release()
    assert node.store.index.study(study_uid).state == StudyState.RECEIVING
    assert node.stable_seen.wait(5)
    assert node.stable[-1].num_instances == 2
    transitions = [(e.from_state, e.to_state) for e in node.store.index.study_events(study_uid)]
    assert transitions == [(None, "receiving"), ("receiving", "stable"), ("stable", "receiving"),
                           ("receiving", "stable")]


def test_stability_survives_a_restart(make_node, tmp_path):
    node = make_node(stable_after_s=60)
    _p, ds = _ct(tmp_path)
    assoc = associate(node.port, [CTImageStorage])
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    node.stop()
    # Restarted with a shorter quiet period, the receiving study is picked up again.
    again = make_node(root=node.store.root, stable_after_s=0.2)
    assert again.stable_seen.wait(5)
    assert again.store.index.study(ds.StudyInstanceUID).state == StudyState.STABLE


def test_stop_lets_an_inflight_association_finish(make_node, tmp_path):
    node = make_node()
    _p, ds = _ct(tmp_path)
    assoc = associate(node.port, [CTImageStorage])
    assert assoc.is_established
    import threading

    stopper = threading.Thread(target=node.node.stop)
    stopper.start()
    time.sleep(0.3)
    assert assoc.send_c_store(ds).Status == 0  # still served while the node drains
    assoc.release()
    stopper.join(10)
    assert not stopper.is_alive()
    assert node.store.index.instance(ds.SOPInstanceUID) is not None


def _send_raw(assoc, dataset: bytes, sop_class: str, sop_instance: str) -> int:
    """Send an arbitrary encoded dataset (pynetdicom would refuse to encode garbage)."""
    import io

    from pynetdicom.dimse_primitives import C_STORE

    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_instance
    request.Priority = 2
    request.DataSet = io.BytesIO(dataset)
    context = assoc._get_valid_context(sop_class, "", "scu")
    # Pause the SCU's own reactor (as pynetdicom's send_c_* do) so the response comes to us.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(request, context.context_id)
        _context_id, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    return int(response.Status)
