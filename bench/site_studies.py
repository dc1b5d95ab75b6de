"""Studies put on a site's store as the DICOM node stores what it receives: one helper for the site benchmarks
(bench/site_server.py, bench/site_priors.py) and the site tests (tests/server), so that each stores the same way."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from dicom_node.store import ReceivedInstance


def store_as_new_study(store, paths: list[Path], folder: Path, *, patient_id: str | None = None,
                       study_date: str | None = None) -> str:
    """The files as one new study under fresh UIDs (still receiving), of `patient_id` on `study_date` where given;
    `folder` holds each rewritten file only until the store has taken its bytes. Its Study Instance UID."""
    study_uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        ds = dcmread(path)
        if patient_id is not None:
            ds.PatientID = patient_id
        if study_date is not None:
            ds.StudyDate = study_date
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        target = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(target, enforce_file_format=True)
        store.put(ReceivedInstance.from_part10(target.read_bytes()))
        target.unlink()
    return study_uid
