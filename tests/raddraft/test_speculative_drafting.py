"""The draft at the last image, with the default configuration: a chest study sent to the app's node is drafted
once its frontal image is there and no instance came for `node.speculative_after_s`, long before
`node.stable_after_s`; an image arriving later reopens it, the worklist says the draft came before it, and the
study is drafted again with every image."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom

from dicom_node.drafts import drafts_of, latest_draft
from dicom_node.index import StudyState
from dicom_node.sender import send_files
from dicom_node.settings import NodeSettings
from dicom_node.worklist import worklist_row
from raddraft.config import load_config
from raddraft.resources import resources_dir
from raddraft.runtime import has_frontal_image
from raddraft.workstation import Workstation

SAMPLE = resources_dir() / "samples" / "phantom-effusion" / "1_PA.dcm"


def lateral_of(frontal: Path, target: Path) -> Path:
    """The sample's frontal image as a second (lateral) instance of the same study."""
    ds = pydicom.dcmread(frontal)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.ViewPosition, ds.SeriesDescription, ds.SeriesNumber = "LL", "CHEST LAT", 2
    ds.save_as(target)
    return target


def completions(index, study_uid: str) -> list[tuple[float, str]]:
    """(when, why) of each time the study became complete ("stable")."""
    return [(row[0], row[1]) for row in index.reader().execute(
        "SELECT at, reason FROM study_events WHERE study_uid = ? AND to_state = 'stable' ORDER BY id", (study_uid,))]


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_chest_study_is_drafted_at_its_last_image_and_again_when_more_come(tmp_path):
    defaults = NodeSettings()
    assert defaults.speculative_after_s + 1.0 < defaults.stable_after_s
    config_file = tmp_path / "raddraft.toml"
    config_file.write_text("")
    config = load_config(config_file, {"store.root": str(tmp_path / "store"), "node.port": 0})
    ws = Workstation.start(config, config_path=config_file)
    try:
        assert ws.node is not None and ws.queue is not None, ws.problems
        study_uid = str(pydicom.dcmread(SAMPLE, stop_before_pixels=True).StudyInstanceUID)
        index = ws.store.index

        def drafted(count: int) -> bool:
            study = index.study(study_uid)
            return study is not None and study.state == StudyState.DRAFTED and len(drafts_of(index, study_uid)) >= count

        assert not send_files("127.0.0.1", ws.node.port, [SAMPLE], called_ae="RADDRAFT", timeout_s=30).failed
        sent = time.time()
        assert has_frontal_image(ws.store, study_uid)
        # Drafting itself takes what the machine gives it; the completion is what the node decides.
        assert wait_for(lambda: drafted(1), timeout=120), index.study(study_uid)
        ((at, why),) = completions(index, study_uid)
        assert why.startswith("speculative") and at - sent < defaults.stable_after_s / 2
        assert latest_draft(index, study_uid).detail["instances"] == 1

        later = lateral_of(SAMPLE, tmp_path / "lat.dcm")
        assert not send_files("127.0.0.1", ws.node.port, [later], called_ae="RADDRAFT", timeout_s=30).failed
        row = worklist_row(index, study_uid)  # reopened with the instance, for the short quiet at least
        assert row.state == StudyState.RECEIVING and row.badge == "receiving" and row.has_draft
        assert "draft was made before the latest images arrived" in row.badge_detail
        assert wait_for(lambda: drafted(2), timeout=120), index.study(study_uid)
        assert [why.split(":")[0] for _, why in completions(index, study_uid)] == ["speculative", "speculative"]
        draft = latest_draft(index, study_uid)
        assert draft.detail["instances"] == 2 and index.study(study_uid).num_instances == 2
    finally:
        ws.stop()
