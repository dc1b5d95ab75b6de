"""Signed reports, the outbox and the worklist rows, on a real store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dicom_node.drafts import DraftRecord, save_draft
from dicom_node.index import StudyState
from dicom_node.reports import (
    SignedReport,
    SigningError,
    due_sends,
    latest_report,
    mark_opened,
    next_send_at,
    outbox_of,
    queue_send,
    record_send_failure,
    record_send_success,
    report_as_text,
    sign_report,
)
from dicom_node.settings import StoreSettings
from dicom_node.store import ReceivedInstance, Store
from dicom_node.worklist import start_of_today, studies_received_since, worklist_row, worklist_rows
from tests.conftest import copy_with_fresh_uids, sample_path


@pytest.fixture
def store(tmp_path: Path):
    store = Store(StoreSettings(tmp_path / "store"))
    yield store
    store.close()


def add_study(store: Store, tmp_path: Path, state: StudyState = StudyState.STABLE) -> str:
    path = tmp_path / f"study-{len(store.index.studies())}.dcm"
    uid = str(copy_with_fresh_uids(sample_path("CT_small.dcm"), path).StudyInstanceUID)
    store.put(ReceivedInstance.from_part10(path.read_bytes()))
    path_to = {StudyState.RECEIVING: [], StudyState.STABLE: [StudyState.STABLE],
               StudyState.DRAFTING: [StudyState.STABLE, StudyState.DRAFTING]}[state]
    for step in path_to:
        store.index.transition(uid, step)
    return uid


def report(study_uid: str, **changes) -> SignedReport:
    values = {"study_uid": study_uid, "findings": "Lungs clear.", "impression": "Normal.", "signed_by": "Smith^Anna"}
    values.update(changes)
    return SignedReport(**values)


@pytest.mark.parametrize("state", [StudyState.STABLE, StudyState.DRAFTED, StudyState.FAILED])
def test_sign_saves_the_report_and_moves_the_study_in_one_step(store, tmp_path, state):
    uid = add_study(store, tmp_path)
    draft_id = None
    if state == StudyState.DRAFTED:
        store.index.transition(uid, StudyState.DRAFTING)
        draft_id = save_draft(store.index, DraftRecord(uid, "m@1", "cpu", "F.", "I.")).id
    elif state == StudyState.FAILED:
        store.index.transition(uid, StudyState.FAILED)
    signed = sign_report(store.index, report(uid, draft_id=draft_id, ai_share_kept=0.5, edit_distance=7,
                                             detail={"x": 1}), now=1000.0)
    assert signed.id and signed.signed_at == 1000.0 and signed.sr_sop_instance_uid and signed.sr_series_uid
    assert latest_report(store.index, uid) == signed
    assert store.index.study(uid).state == StudyState.SIGNED
    assert store.index.study_events(uid)[-1].reason == "signed by Smith^Anna"
    assert outbox_of(store.index, uid) == []  # not queued unless asked


def test_sign_is_refused_while_receiving_when_signed_or_when_incomplete(store, tmp_path):
    receiving = add_study(store, tmp_path, StudyState.RECEIVING)
    with pytest.raises(SigningError, match="still arriving"):
        sign_report(store.index, report(receiving))
    uid = add_study(store, tmp_path)
    with pytest.raises(SigningError, match="impression is empty"):
        sign_report(store.index, report(uid, impression="  "))
    with pytest.raises(SigningError, match="nobody is signing"):
        sign_report(store.index, report(uid, signed_by=""))
    assert latest_report(store.index, uid) is None and store.index.study(uid).state == StudyState.STABLE
    sign_report(store.index, report(uid))
    with pytest.raises(SigningError, match="already signed"):
        sign_report(store.index, report(uid))


def test_signing_while_drafting_keeps_the_late_draft_as_stale(store, tmp_path):
    uid = add_study(store, tmp_path, StudyState.DRAFTING)
    sign_report(store.index, report(uid))
    late = save_draft(store.index, DraftRecord(uid, "m@1", "cpu", "F.", "I."))
    assert late.stale and store.index.study(uid).state == StudyState.SIGNED


def test_outbox_failure_retry_and_success(store, tmp_path):
    uid = add_study(store, tmp_path)
    signed = sign_report(store.index, report(uid), queue_send=True, now=100.0)
    (item,) = due_sends(store.index, now=100.0)
    assert item.report_id == signed.id and item.status == "pending" and not item.failing
    record_send_failure(store.index, item.id, "connection refused", next_attempt_at=160.0, destination="PACS@h:104")
    assert due_sends(store.index, now=150.0) == [] and next_send_at(store.index) == 160.0
    row = worklist_row(store.index, uid)
    assert row.badge == "send failed" and "connection refused" in row.badge_detail
    again = queue_send(store.index, signed.id, now=155.0)  # "send now": the same item, due at once
    assert again.id == item.id and again.attempts == 1 and again.failing
    record_send_success(store.index, item.id, "PACS@h:104")
    (done,) = outbox_of(store.index, uid)
    assert done.status == "sent" and done.attempts == 2 and done.last_error == ""
    assert store.index.study(uid).state == StudyState.SENT
    assert worklist_row(store.index, uid).badge == "sent"
    resend = queue_send(store.index, signed.id)  # a sent report may go again: a new item
    assert resend.id != item.id and resend.status == "pending"


def test_worklist_rows_show_drafts_readers_and_today(store, tmp_path):
    first, second = add_study(store, tmp_path), add_study(store, tmp_path, StudyState.DRAFTING)
    save_draft(store.index, DraftRecord(second, "m@1", "cpu", "F.", "I."))
    mark_opened(store.index, first, "Smith^Anna")
    rows = {r.study_uid: r for r in worklist_rows(store.index)}
    assert rows[first].in_progress and rows[first].opened_by == "Smith^Anna" and not rows[first].has_draft
    assert rows[second].badge == "drafted" and rows[second].has_draft and not rows[second].in_progress
    assert rows[first].modalities == "CT" and rows[first].num_instances == 1
    assert studies_received_since(store.index, start_of_today()) == 2
    sign_report(store.index, report(first))
    assert not worklist_row(store.index, first).in_progress  # signed: no longer being read


def test_report_text_export(store, tmp_path):
    uid = add_study(store, tmp_path)
    signed = sign_report(store.index, report(uid, findings="No effusion.", impression="Normal chest."))
    text = report_as_text(signed, store.index.study(uid))
    assert "FINDINGS\nNo effusion." in text and "IMPRESSION\nNormal chest." in text
    assert "Signed by Smith, Anna" in text


def test_an_old_store_gains_the_new_tables(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    conn = sqlite3.connect(root / "index.sqlite3")
    conn.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                       "INSERT INTO meta VALUES ('schema_version', '1');")
    conn.close()
    store = Store(StoreSettings(root))
    try:
        tables = {r[0] for r in store.index.reader().execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"reports", "outbox", "readings", "studies"} <= tables
        version = store.index.reader().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert version == "2"
    finally:
        store.close()


def test_working_draft_is_replaced_on_each_save_and_removed_by_signing(store, tmp_path):
    from dicom_node.drafts import save_working_draft, working_draft

    uid = add_study(store, tmp_path)
    assert working_draft(store.index, uid) is None
    first = {"findings": {"runs": [["ai", "draft 1", "No effusion."]]}, "impression": {"runs": []}}
    save_working_draft(store.index, uid, first, saved_by="Smith^Anna", now=10.0)
    second = {"findings": {"runs": [["ai", "draft 1", "No effusion."], ["human", "", " Typed."]]}}
    save_working_draft(store.index, uid, second, now=11.0)
    kept = working_draft(store.index, uid)
    assert (kept.sections, kept.saved_at) == (second, 11.0)
    with pytest.raises(KeyError):
        save_working_draft(store.index, "1.2.3.unknown", first)
    sign_report(store.index, report(uid))
    assert working_draft(store.index, uid) is None  # the signed report is the text now
    assert save_working_draft(store.index, uid, second) is None  # a save landing after the signing
    assert working_draft(store.index, uid) is None


def test_images_changed_after_signing_are_named_until_an_amendment_covers_them(store, tmp_path):
    import pydicom

    from dicom_node.reports import changed_after_signing, sign_amendment

    uid = add_study(store, tmp_path)
    original = store.index.instances_of(uid)[0]
    signed = sign_report(store.index, report(uid))
    assert changed_after_signing(store.index, uid) == [] and worklist_row(store.index, uid).badge == "signed"
    ds = pydicom.dcmread(store.path_of(original))  # a corrected instance: same SOP Instance UID, new pixels
    ds.PixelData = bytes(len(ds.PixelData))
    corrected = tmp_path / "corrected.dcm"
    ds.save_as(corrected)
    store.put(ReceivedInstance.from_part10(corrected.read_bytes()))
    extra = tmp_path / "extra.dcm"
    copy_with_fresh_uids(sample_path("CT_small.dcm"), extra, study_uid=uid)
    store.put(ReceivedInstance.from_part10(extra.read_bytes()))
    changes = changed_after_signing(store.index, uid)
    assert sorted(c.kind for c in changes) == ["new", "replaced"]
    assert original.sop_instance_uid in {c.sop_instance_uid for c in changes}
    row = worklist_row(store.index, uid)
    assert row.state == StudyState.SIGNED and row.badge == "changed after signing" and row.changed_after_signing == 2
    sign_amendment(store.index, report(uid, findings="Lungs clear on the corrected images."), signed, "Images corrected.")
    row = worklist_row(store.index, uid)
    assert changed_after_signing(store.index, uid) == [] and row.badge == "signed" and row.amendments == 1
    assert "amended 1x" in row.badge_detail


def test_report_text_leaves_out_empty_fields_and_names_an_amendment(store, tmp_path):
    from dataclasses import replace as copy_with

    from dicom_node.reports import sign_amendment

    uid = add_study(store, tmp_path)
    study = copy_with(store.index.study(uid), accession_number="", study_description="")
    signed = sign_report(store.index, report(uid))
    text = report_as_text(signed, study)
    assert "Accession:" not in text and "Study:" not in text and "Study date: " in text
    amended = sign_amendment(store.index, report(uid, findings="Lungs clear. Old rib fracture."), signed,
                             "Rib fracture added.")
    assert "AMENDED REPORT (revision 1): Rib fracture added." in report_as_text(amended, study)
