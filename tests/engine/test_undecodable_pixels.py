"""An image whose pixels nothing installed decodes (MPEG-2 video and JPEG XL have no decoder in pydicom 3.0):
the store keeps it as received, the viewer says so for that image, and drafting goes on with the study's other images."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicom_node.settings import StoreSettings
from dicom_node.store import ReceivedInstance, Store
from engine.bundle import Preprocessing
from engine.display import load_frame
from engine.imaging import UndecodablePixels, missing_decoder
from engine.preprocess import load_study, prepare_study
from tests.conftest import copy_with_fresh_uids, sample_path

JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"  # unknown to pydicom 3.0: it cannot even write a file of it
MPEG2 = "1.2.840.10008.1.2.4.100"  # MPEG-2 Main Profile / Main Level: known, no decoder


def relabelled(source: Path, target: Path, syntax: str, study_uid: str, view: str) -> Path:
    """A real compressed image whose transfer syntax says `syntax` (what a sender of that syntax stores)."""
    ds = copy_with_fresh_uids(source, target, study_uid)
    ds.ViewPosition = view
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(target)
    return target


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, Path]:
    """A frontal image no decoder reads, and a lateral one that decodes, in one study."""
    decodable = tmp_path / "lat.dcm"
    ds = copy_with_fresh_uids(sample_path("CT_small.dcm"), decodable)
    ds.ViewPosition = "LL"
    ds.save_as(decodable)
    undecodable = relabelled(sample_path("JPEG2000.dcm"), tmp_path / "pa.dcm", MPEG2, str(ds.StudyInstanceUID), "PA")
    return undecodable, decodable


def test_no_installed_decoder_is_named():
    assert "no decoder exists" in missing_decoder(JPEG_XL_LOSSLESS)
    assert missing_decoder(MPEG2) == "no decoder exists for MPEG2 Main Profile / Main Level"
    assert missing_decoder("1.2.840.10008.1.2.1") is None  # uncompressed
    assert missing_decoder("1.2.840.10008.1.2.4.50") is None  # baseline JPEG: pylibjpeg / Pillow


def test_the_store_keeps_it_and_the_viewer_says_why_for_that_image(study, tmp_path):
    undecodable, _ = study
    store = Store(StoreSettings(tmp_path / "store"))
    try:
        for path in study:
            store.put(ReceivedInstance.from_part10(path.read_bytes()))
        rows = store.index.instances_of(str(pydicom.dcmread(undecodable).StudyInstanceUID))
        assert len(rows) == 2
        stored = next(store.path_of(r) for r in rows if r.transfer_syntax == MPEG2)
        assert stored.read_bytes()[-1000:] == undecodable.read_bytes()[-1000:]
        with pytest.raises(UndecodablePixels, match="stored as received, but its pixels cannot be shown here"):
            load_frame(stored)
        assert load_frame(next(store.path_of(r) for r in rows if r.transfer_syntax != MPEG2)).shape
    finally:
        store.close()


def test_drafting_goes_on_without_it_and_notes_it(study):
    undecodable, decodable = study
    prepared = prepare_study(load_study(list(study)), Preprocessing(image_size=32, views=("frontal", "lateral")))
    good_uid = str(pydicom.dcmread(decodable).SOPInstanceUID)
    bad_uid = str(pydicom.dcmread(undecodable).SOPInstanceUID)
    assert prepared.sop_instance_uids == (good_uid,)
    assert [uid for uid, _ in prepared.skipped] == [bad_uid]
    assert "cannot be decoded here" in prepared.skipped[0][1]


def test_a_study_of_undecodable_images_only_says_so(study):
    undecodable, _ = study
    from engine.errors import PreprocessError

    with pytest.raises(PreprocessError, match="no image can be decoded here"):
        prepare_study(load_study([undecodable]), Preprocessing(image_size=32, views=("frontal",)))


def test_the_drafting_queue_drafts_the_study_and_records_the_image_it_passed_over(study, tmp_path):
    from dicom_node.drafts import latest_draft
    from dicom_node.index import StudyState
    from engine.queue import DraftingQueue
    from engine.runtime import load_model
    from engine.settings import EngineSettings
    from raddraft.resources import embedded_model_dir

    undecodable, _ = study
    store = Store(StoreSettings(tmp_path / "store"))
    queue = DraftingQueue(store, load_model(embedded_model_dir(), EngineSettings(providers=("cpu",))))
    try:
        for path in study:
            store.put(ReceivedInstance.from_part10(path.read_bytes()))
        study_uid = str(pydicom.dcmread(undecodable).StudyInstanceUID)
        store.index.transition(study_uid, StudyState.STABLE)
        queue.start()
        assert queue.wait_idle(120)
        assert store.index.study(study_uid).state == StudyState.DRAFTED
        skipped = latest_draft(store.index, study_uid).detail["skipped"]
        assert [item["sop_instance_uid"] for item in skipped] == [str(pydicom.dcmread(undecodable).SOPInstanceUID)]
        assert "no decoder exists for MPEG2" in skipped[0]["why"]
    finally:
        queue.stop()
        store.close()
