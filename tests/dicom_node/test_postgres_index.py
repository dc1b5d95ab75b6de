"""The index on PostgreSQL (a site server's): the same rules as on SQLite, through the same code.

The report, outbox, working-draft and worklist tests of test_reports.py run here again on a store whose
index is a fresh PostgreSQL database (their `store` fixture is replaced below); the durability rules (file
durable, then committed, then acknowledged; a failed commit leaves no file; reconcile) are checked here.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
from pynetdicom.sop_class import CTImageStorage

from dicom_node.drafts import DraftRecord, save_draft
from dicom_node.errors import StoreIndexError
from dicom_node.events import NodeEvents
from dicom_node.index import StudyState
from dicom_node.server import DicomNode
from dicom_node.settings import NodeSettings, StoreSettings
from dicom_node.store import Store
from tests.dicom_node.conftest import associate
from tests.dicom_node.test_durability import _ct_files, _received
from tests.dicom_node.test_reports import (  # noqa: F401 (collected here again, on PostgreSQL)
    test_images_changed_after_signing_are_named_until_an_amendment_covers_them,
    test_outbox_failure_retry_and_success,
    test_sign_is_refused_while_receiving_when_signed_or_when_incomplete,
    test_sign_saves_the_report_and_moves_the_study_in_one_step,
    test_signing_while_drafting_keeps_the_late_draft_as_stale,
    test_working_draft_is_replaced_on_each_save_and_removed_by_signing,
    test_worklist_rows_show_drafts_readers_and_today,
)


@pytest.fixture
def store(tmp_path: Path, postgres_url: str):
    store = Store(StoreSettings(tmp_path / "store", database=postgres_url))
    yield store
    store.close()


def test_the_index_is_in_postgresql_not_in_the_store_folder(store, tmp_path):
    (path,) = _ct_files(tmp_path / "corpus", 1)
    store.put(_received(path))
    assert store.index.dialect.name == "postgresql"
    assert not (store.root / "index.sqlite3").exists()
    (study,) = store.index.studies()
    assert study.num_instances == 1 and study.modalities == "CT" and isinstance(study.first_received, float)


def test_failed_index_insert_removes_the_file_and_reports_it(store, tmp_path):
    (path,) = _ct_files(tmp_path / "corpus", 1)
    with store.index.transaction() as conn:
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk I/O'; END $$ "
                     "LANGUAGE plpgsql")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON instances FOR EACH ROW EXECUTE FUNCTION refuse()")
    with pytest.raises(StoreIndexError, match="disk I/O"):
        store.put(_received(path))
    assert list((store.root / "data").rglob("*.dcm")) == []
    assert store.index.studies() == []  # the study row went with the rolled back transaction


def test_reconcile_indexes_an_orphan_and_drops_a_row_without_file(store, tmp_path):
    kept, lost, orphan = _ct_files(tmp_path / "corpus", 3)
    for path in (kept, lost, orphan):
        store.put(_received(path))
    lost_row = store.index.instance(pydicom.dcmread(lost).SOPInstanceUID)
    orphan_row = store.index.instance(pydicom.dcmread(orphan).SOPInstanceUID)
    (store.root / lost_row.path).unlink()
    with store.index.transaction() as conn:
        store.index.remove_instance(conn, orphan_row)
    report = store.reconcile()
    assert (report.rows_without_file, report.files_indexed) == (1, 1)
    assert store.index.instance(lost_row.sop_instance_uid) is None
    assert store.index.study(orphan_row.study_uid).num_instances == 2


def test_a_study_emptied_by_a_moved_instance_is_failed_when_a_draft_refers_to_it(store, tmp_path):
    from pydicom.uid import generate_uid

    kept, moved_to = generate_uid(), generate_uid()
    (path,) = _ct_files(tmp_path / "corpus", 1)
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = kept
    ds.save_as(tmp_path / "a.dcm")
    store.put(_received(tmp_path / "a.dcm"))
    save_draft(store.index, DraftRecord(kept, "m", "cpu", "findings", "impression"))
    ds.StudyInstanceUID = moved_to
    ds.save_as(tmp_path / "a2.dcm")
    store.put(_received(tmp_path / "a2.dcm"))
    emptied = store.index.study(kept)
    assert (emptied.num_instances, emptied.state) == (0, StudyState.FAILED)


def test_the_node_acknowledges_only_what_postgresql_committed(tmp_path, postgres_url):
    files = _ct_files(tmp_path / "corpus", 24)
    store = Store(StoreSettings(tmp_path / "store", database=postgres_url))
    node = DicomNode(NodeSettings(port=0), store, NodeEvents())
    node.start()
    statuses: list[int] = []

    def send(part: list[Path]) -> None:
        assoc = associate(node.port, [CTImageStorage])
        statuses.extend(int(assoc.send_c_store(path).Status) for path in part)
        assoc.release()

    threads = [threading.Thread(target=send, args=(files[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert statuses == [0] * len(files)
        (study,) = store.index.studies()
        assert study.num_instances == len(files)
        for path in files:
            row = store.index.instance(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert row is not None and (store.root / row.path).is_file()
    finally:
        node.stop()
        store.close()
