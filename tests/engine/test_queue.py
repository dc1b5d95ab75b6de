"""The drafting queue on a real store and a real tiny bundle: draft, fail without blocking, resume."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node.drafts import drafts_of, latest_draft
from dicom_node.events import NodeEvents, StudyStable
from dicom_node.index import StudyState
from dicom_node.settings import StoreSettings
from dicom_node.store import ReceivedInstance, Store
from engine.events import DraftFailed, DraftFinished
from engine.queue import DraftingQueue
from engine.runtime import load_model
from engine.settings import EngineSettings


@pytest.fixture(scope="module")
def model(tiny_bundle: Path):
    return load_model(tiny_bundle, EngineSettings(providers=("cpu",), variant="fp32", max_new_tokens=8))


@pytest.fixture
def store(tmp_path: Path):
    store = Store(StoreSettings(tmp_path / "store"))
    yield store
    store.close()


def put_study(store: Store, paths: list[Path], state: StudyState = StudyState.STABLE) -> str:
    for path in paths:
        store.put(ReceivedInstance.from_part10(path.read_bytes(), calling_ae="TEST"))
    study_uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    if state != StudyState.RECEIVING:
        store.index.transition(study_uid, StudyState.STABLE)
    if state == StudyState.DRAFTING:
        store.index.transition(study_uid, StudyState.DRAFTING)
    return study_uid


def imageless_study(tmp_path: Path, source: Path) -> Path:
    """A study whose only object has no pixel data: nothing to draft from."""
    ds = pydicom.dcmread(source)
    del ds.PixelData
    ds.StudyInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "no-pixels.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_stable_study_is_drafted_and_saved_with_its_state(store, model, phantom_studies) -> None:
    events = NodeEvents()
    queue = DraftingQueue(store, model)
    finished: list[DraftFinished] = []
    queue.events.finished.subscribe(finished.append)
    queue.start(events)
    try:
        study_uid = put_study(store, phantom_studies[0]["paths"])
        events.study_stable.publish(StudyStable(study_uid, 1))
        assert queue.wait_idle(60)
    finally:
        queue.stop()
    assert store.index.study(study_uid).state == StudyState.DRAFTED
    draft = latest_draft(store.index, study_uid)
    assert draft is not None and draft.model == "tiny-test@0.0.1" and draft.provider == "cpu"
    assert draft.findings and draft.impression
    assert draft.detail["timings"]["total_s"] > 0
    assert draft.detail["images"][0] in {i["sop_instance_uid"] for i in phantom_studies[0]["image_info"]}
    assert [e.draft_id for e in finished] == [draft.id]
    states = [e.to_state for e in store.index.study_events(study_uid)]
    assert states[-3:] == ["stable", "drafting", "drafted"]


def test_failing_study_is_marked_failed_and_does_not_block_the_next(store, model, phantom_studies,
                                                                    tmp_path: Path) -> None:
    bad = put_study(store, [imageless_study(tmp_path, phantom_studies[1]["paths"][0])])
    good = put_study(store, phantom_studies[2]["paths"])
    queue = DraftingQueue(store, model)
    failed: list[DraftFailed] = []
    queue.events.failed.subscribe(failed.append)
    queue.start()  # both were stable before start: queued from the store
    try:
        assert queue.wait_idle(60)
    finally:
        queue.stop()
    bad_row = store.index.study(bad)
    assert bad_row.state == StudyState.FAILED
    assert "image" in bad_row.state_reason.lower()
    assert [f.study_uid for f in failed] == [bad]
    assert store.index.study(good).state == StudyState.DRAFTED
    assert latest_draft(store.index, bad) is None


def test_study_left_drafting_by_a_crash_is_drafted_after_restart(store, model, phantom_studies) -> None:
    study_uid = put_study(store, phantom_studies[3]["paths"], state=StudyState.DRAFTING)
    queue = DraftingQueue(store, model)
    queue.start()
    try:
        assert queue.wait_idle(60)
    finally:
        queue.stop()
    assert store.index.study(study_uid).state == StudyState.DRAFTED
    reasons = [e.reason for e in store.index.study_events(study_uid)]
    assert any("interrupted" in reason for reason in reasons)


def test_new_images_during_drafting_keep_the_draft_but_mark_it_stale(store, model, phantom_studies) -> None:
    paths = phantom_studies[0]["paths"]
    study_uid = put_study(store, paths[:1])
    queue = DraftingQueue(store, model)

    def new_image_arrives(event) -> None:  # a late instance, while the draft is being written
        if len(paths) > 1:
            store.put(ReceivedInstance.from_part10(paths[1].read_bytes(), calling_ae="TEST"))
        else:
            store.index.transition(study_uid, StudyState.RECEIVING, reason="test: new instance")

    queue.events.started.subscribe(new_image_arrives)
    queue.start()
    try:
        assert queue.wait_idle(60)
    finally:
        queue.stop()
    assert store.index.study(study_uid).state == StudyState.RECEIVING
    (draft,) = drafts_of(store.index, study_uid)
    assert draft.stale
    assert latest_draft(store.index, study_uid) is None


def test_swapped_model_drafts_the_next_study(store, model, tiny_bundle: Path, phantom_studies) -> None:
    other = load_model(tiny_bundle, EngineSettings(providers=("cpu",), variant="int8", max_new_tokens=8))
    queue = DraftingQueue(store, model)
    queue.start()
    try:
        queue.swap_model(other)
        study_uid = put_study(store, phantom_studies[1]["paths"])
        queue.enqueue(study_uid)
        assert queue.wait_idle(60)
    finally:
        queue.stop()
    assert latest_draft(store.index, study_uid).detail["variant"] == "int8"


class DictatedDrafter:
    """The real tiny model drafting, with its sections replaced by given text (what a trained model would
    write for this study): the queue's handling of critical findings does not depend on the model."""

    def __init__(self, model, findings: str, impression: str) -> None:
        self.model, self.findings, self.impression = model, findings, impression

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def draft(self, study, *, on_piece=None):
        import dataclasses

        return dataclasses.replace(self.model.draft(study, on_piece=on_piece), findings=self.findings,
                                   impression=self.impression)


def draft_once(queue: DraftingQueue, study_uid: str) -> None:
    queue.start()
    try:
        queue.enqueue(study_uid)
        assert queue.wait_idle(60)
    finally:
        queue.stop()


def test_critical_findings_are_flagged_when_the_draft_is_saved(store, model, phantom_studies) -> None:
    from dicom_node.worklist import worklist_row

    uid = put_study(store, phantom_studies[0]["paths"])
    drafter = DictatedDrafter(model, "Large right pneumothorax with mediastinal shift. No effusion.",
                              "Large right pneumothorax.")
    draft_once(DraftingQueue(store, drafter), uid)
    draft = latest_draft(store.index, uid)
    assert draft.detail["critical"] == ["pneumothorax (tension or large)"]
    row = worklist_row(store.index, uid)
    assert row.critical == ("pneumothorax (tension or large)",) and row.critical_unread

    quiet = put_study(store, phantom_studies[1]["paths"])
    draft_once(DraftingQueue(store, DictatedDrafter(model, "No pneumothorax.", "Normal chest."),
                             critical_findings=("free_air",)), quiet)
    assert latest_draft(store.index, quiet).detail["critical"] == []
    assert not worklist_row(store.index, quiet).critical_unread


def test_the_report_language_pipeline_is_loaded_when_the_queue_starts_not_in_the_first_draft(store, model) -> None:
    from engine.findings.labeler import shared_labeler

    queue = DraftingQueue(store, model)
    assert not queue.warmed.is_set()
    queue.start(NodeEvents())
    try:
        assert queue.warmed.wait(60)  # no study was queued: the worker loaded it on its own
        assert shared_labeler.cache_info().currsize == 1
    finally:
        queue.stop()
