"""Small CR studies and report SRs of fixed patients and dates, for the priors tests and bench/priors.py.

Written with pydicom (64 x 64 pixels: what matters here is query/retrieve, not the image); each study is a
folder of Part 10 files. The SR is a Basic Text SR as a PACS's reporting system writes one (DCM Findings and
Impressions containers), or, with `coded_by_meaning`, sections named only by a local code's meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dicom_node.store import ReceivedInstance, Store

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


@dataclass(frozen=True)
class WrittenStudy:
    study_uid: str
    patient_id: str
    study_date: str
    paths: tuple[Path, ...]


def _patient_study(ds: Dataset, patient_id: str, study_uid: str, study_date: str, description: str) -> None:
    ds.PatientName = f"Prior^Test{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = f"A{study_date}{patient_id}"[:16]
    ds.StudyDescription = description
    ds.ReferringPhysicianName = ""


def _save(ds: Dataset, sop_class: str, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def cr_image(patient_id: str, study_uid: str, study_date: str, view: str, series_number: int,
             description: str = "CHEST PA AND LATERAL", body_part: str = "CHEST", seed: int = 0,
             modality: str = "CR") -> Dataset:
    ds = Dataset()
    _patient_study(ds, patient_id, study_uid, study_date, description)
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.SeriesDescription = f"CHEST {view}"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    pixels = np.random.default_rng(seed).integers(0, 4096, (64, 64), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    return ds


def write_cr_study(out: Path, patient_id: str, study_date: str, *, views: tuple[str, ...] = ("PA", "LL"),
                   body_part: str = "CHEST", study_uid: str | None = None, modality: str = "CR") -> WrittenStudy:
    """A CR chest study (one image per view, each its own series), the lateral first on disk."""
    study_uid = study_uid or generate_uid()
    paths = []
    for number, view in enumerate(reversed(views), start=1):
        ds = cr_image(patient_id, study_uid, study_date, view, number, body_part=body_part, seed=number,
                      modality=modality)
        paths.append(_save(ds, CR_STORAGE, out / f"{ds.SOPInstanceUID}.dcm"))
    return WrittenStudy(study_uid, patient_id, study_date, tuple(paths))


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _content(relationship: str, value_type: str, name: Dataset, text: str | None = None,
             children: list[Dataset] | None = None) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([name])
    if value_type == "CONTAINER":
        item.ContinuityOfContent = "SEPARATE"
    if text is not None:
        item.TextValue = text
    if children:
        item.ContentSequence = Sequence(children)
    return item


def report_sr(study: WrittenStudy, findings: str, impression: str, *, coded_by_meaning: bool = False) -> Dataset:
    """A Basic Text SR of the study's report, as a PACS's reporting system stores it in the study."""
    ds = Dataset()
    _patient_study(ds, study.patient_id, study.study_uid, study.study_date, "CHEST PA AND LATERAL")
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = study.study_date, "120000"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    if coded_by_meaning:
        sections = [_content("CONTAINS", "CONTAINER", _code("F1", "99LOCAL", "Findings section"), children=[
                        _content("CONTAINS", "TEXT", _code("T1", "99LOCAL", "Text"), findings)]),
                    _content("CONTAINS", "CONTAINER", _code("I1", "99LOCAL", "Conclusion"), children=[
                        _content("CONTAINS", "TEXT", _code("T1", "99LOCAL", "Text"), impression)])]
    else:
        sections = [_content("CONTAINS", "CONTAINER", _code("121070", "DCM", "Findings"), children=[
                        _content("CONTAINS", "TEXT", _code("121071", "DCM", "Finding"), findings)]),
                    _content("CONTAINS", "CONTAINER", _code("121072", "DCM", "Impressions"), children=[
                        _content("CONTAINS", "TEXT", _code("121073", "DCM", "Impression"), impression)])]
    ds.ContentSequence = Sequence(sections)
    return ds


def write_report_sr(out: Path, study: WrittenStudy, findings: str, impression: str, *,
                    sop_class: str = BASIC_TEXT_SR, **options: bool) -> Path:
    ds = report_sr(study, findings, impression, **options)
    return _save(ds, sop_class, out / f"{ds.SOPInstanceUID}.dcm")


def put_all(store: Store, paths) -> None:
    """Store files as the node stores what it receives."""
    for path in paths:
        store.put(ReceivedInstance.from_part10(Path(path).read_bytes()))


def c_store(port: int, paths, calling_ae: str = "ORTHANC") -> None:
    """Send files to the node as a PACS's C-MOVE sub-operations do: one association, a C-STORE each."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(CR_STORAGE)
    ae.add_requested_context(BASIC_TEXT_SR)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADDRAFT")
    if not assoc.is_established:
        raise ConnectionError(f"the node on port {port} did not accept the association")
    try:
        for path in paths:
            status = assoc.send_c_store(pydicom.dcmread(path))
            if status.Status != 0x0000:
                raise ConnectionError(f"C-STORE of {path} answered 0x{status.Status:04X}")
    finally:
        assoc.release()
