"""Never lose a study: crash mid-stream, full disk, failing index, recovery at start."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom.sop_class import CTImageStorage, Verification

from dicom_node.durable import TEMP_SUFFIX
from dicom_node.errors import StoreIndexError
from dicom_node.index import Index
from dicom_node.sender import SendOutcome, send_files
from dicom_node.settings import StoreSettings
from dicom_node.store import QUARANTINE_DIR, ReceivedInstance, Store
from tests.conftest import copy_with_fresh_uids, dataset_bytes, sample_path, start_service
from tests.dicom_node.conftest import associate


def _ct_files(folder: Path, count: int) -> list[Path]:
    study = generate_uid()
    return [copy_with_fresh_uids(sample_path("CT_small.dcm"), folder / f"ct{i:04d}.dcm", study_uid=study)
            and folder / f"ct{i:04d}.dcm" for i in range(count)]


def _assert_all_present(store_root: Path, files: list[Path]) -> None:
    index = Index(store_root / "index.sqlite3")
    try:
        for path in files:
            uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            row = index.instance(uid)
            assert row is not None, f"{path.name} acknowledged but not indexed"
            assert dataset_bytes(store_root / row.path) == dataset_bytes(path), f"{path.name} corrupt"
    finally:
        index.close()


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"*{TEMP_SUFFIX}")]


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_acknowledged_instance(tmp_path):
    files = _ct_files(tmp_path / "corpus", 300)
    store = tmp_path / "store"
    service = start_service(store, "--no-draft")
    acknowledged: list[Path] = []
    killed = threading.Event()

    def on_outcome(outcome: SendOutcome) -> None:
        if outcome.ok:
            acknowledged.append(outcome.path)
        if len(acknowledged) == 120 and not killed.is_set():
            killed.set()
            service.process.send_signal(signal.SIGKILL)

    summary = send_files("127.0.0.1", service.port, files, called_ae="RADDRAFT", progress=on_outcome, timeout_s=10)
    service.process.wait(timeout=30)
    assert killed.is_set() and 120 <= len(acknowledged) < len(files)
    assert summary.succeeded == len(acknowledged)

    restarted = start_service(store, "--no-draft")  # reconciles the store at start
    assert restarted.stop() == 0
    _assert_all_present(store, acknowledged)
    assert _temp_files(store) == []


def _mount_tiny_tmpfs(path: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny filesystem needs root")
    path.mkdir(parents=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {result.stderr.strip()}")


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    _mount_tiny_tmpfs(mount, "2m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_answers_out_of_resources_and_keeps_serving(make_node, tiny_disk, tmp_path):
    node = make_node(root=tiny_disk / "store")
    files = _ct_files(tmp_path / "corpus", 80)  # ~3 MB: more than the disk holds
    assoc = associate(node.port, [CTImageStorage, Verification])
    statuses = {path: assoc.send_c_store(path).Status for path in files}
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    stored = [p for p, s in statuses.items() if s == 0x0000]
    refused = [s for s in statuses.values() if s != 0x0000]
    assert stored and refused, statuses
    assert all(0xA700 <= s <= 0xA7FF for s in refused), [hex(s) for s in refused]
    assert _temp_files(tiny_disk) == []
    node.node.stop()
    _assert_all_present(tiny_disk / "store", stored)
    refused_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p, s in statuses.items() if s}
    assert not any(node.store.index.instance(uid) for uid in refused_uids)


def _received(path: Path) -> ReceivedInstance:
    return ReceivedInstance.from_part10(path.read_bytes(), calling_ae="TEST")


def test_failed_index_insert_removes_the_file_and_reports_it(tmp_path):
    store = Store(StoreSettings(tmp_path / "store"))
    (path,) = _ct_files(tmp_path / "corpus", 1)
    with sqlite3.connect(store.root / "index.sqlite3") as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON instances BEGIN SELECT RAISE(ABORT, 'disk I/O'); END")
    with pytest.raises(StoreIndexError):
        store.put(_received(path))
    assert list((store.root / "data").rglob("*.dcm")) == []
    assert store.index.studies() == []  # the study row went with the rolled back transaction
    store.close()


def test_reconcile_sweeps_temps_drops_missing_and_indexes_orphans(tmp_path):
    store = Store(StoreSettings(tmp_path / "store"))
    kept, lost, orphan = _ct_files(tmp_path / "corpus", 3)
    for path in (kept, lost, orphan):
        store.put(_received(path))
    lost_row = store.index.instance(pydicom.dcmread(lost).SOPInstanceUID)
    orphan_row = store.index.instance(pydicom.dcmread(orphan).SOPInstanceUID)
    (store.root / lost_row.path).unlink()
    # An orphan: its file is complete but the index never heard of it (a crash before commit).
    with store.index.transaction() as conn:
        store.index.remove_instance(conn, orphan_row)
    stray = store.root / "data" / f".x.dcm.1234{TEMP_SUFFIX}"
    stray.write_bytes(b"half an instance")
    junk = store.root / "data" / "ab" / "not-ours.dcm"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(b"garbage")

    report = store.reconcile()

    assert (report.temp_files_removed, report.rows_without_file, report.files_indexed, report.files_quarantined) == (
        1, 1, 1, 1)
    assert not stray.exists() and not junk.exists()
    assert (store.root / QUARANTINE_DIR / "not-ours.dcm").exists()
    assert store.index.instance(lost_row.sop_instance_uid) is None
    assert store.index.instance(orphan_row.sop_instance_uid) is not None
    assert store.index.study(orphan_row.study_uid).num_instances == 2
    store.close()


def test_a_study_emptied_by_a_moved_instance_is_removed_or_failed_never_stable(tmp_path):
    from pydicom.uid import generate_uid

    from dicom_node.drafts import DraftRecord, save_draft
    from dicom_node.index import StudyState

    store = Store(StoreSettings(tmp_path / "store"))
    try:
        kept, dropped, moved_to = generate_uid(), generate_uid(), generate_uid()
        first = copy_with_fresh_uids(sample_path("CT_small.dcm"), tmp_path / "a.dcm", study_uid=kept)
        second = copy_with_fresh_uids(sample_path("CT_small.dcm"), tmp_path / "b.dcm", study_uid=dropped)
        store.put(_received(tmp_path / "a.dcm"))
        store.put(_received(tmp_path / "b.dcm"))
        save_draft(store.index, DraftRecord(kept, "m", "cpu", "findings", "impression"))
        for ds, name in ((first, "a2.dcm"), (second, "b2.dcm")):
            ds.StudyInstanceUID = moved_to
            ds.save_as(tmp_path / name)
            store.put(_received(tmp_path / name))
        assert store.index.study(dropped) is None  # nothing refers to it: gone
        emptied = store.index.study(kept)  # a draft refers to it: kept, failed, with the reason
        assert (emptied.num_instances, emptied.state, emptied.state_reason) == (0, StudyState.FAILED,
                                                                                 "no instances left")
        assert store.index.study(moved_to).num_instances == 2
        assert [e["detail"] for e in store.index.store_events("study_removed")] == [f"{dropped}: no instances left"]
    finally:
        store.close()


def test_a_folder_written_aside_replaces_the_old_one_only_when_whole(tmp_path):
    from dicom_node.durable import folder_written_aside

    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), folder_written_aside(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("the export failed")
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"] and (target / "old.txt").read_text() == "old"
    with folder_written_aside(target) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["sub", "sub/new.txt"]
