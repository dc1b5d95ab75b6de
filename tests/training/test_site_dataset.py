"""`raddraft dataset --from-store`: a real store with phantom studies carrying distinctive identities and
signed reports that name the patient, run through the real command; then every output file is read back
for any original identifying value."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_node.index import StudyState
from dicom_node.reports import SignedReport, sign_report
from dicom_node.settings import StoreSettings
from dicom_node.store import ReceivedInstance, Store
from engine import preprocess
from engine.bundle import Preprocessing
from raddraft.cli import main
from training.data.dicom_writer import ImageEncoding, StudyIdentity
from training.data.phantoms import PhantomConfig, plan_study, write_study
from training.site.dataset import LOG_NAME, MANIFEST_NAME, SUMMARY_NAME
from training.site.deidentify import KEY_NAME, Deidentifier, load_or_create_key

SIGNER = "HAWTHORNE-BLAKE^CORNELIUS^AUGUSTIN"
PRIVATE_CREATOR = "ACME HOSPITAL PRIVATE"


@dataclasses.dataclass(frozen=True)
class Person:
    name: str
    patient_id: str
    birth_date: str
    other_id: str
    address: str


@dataclasses.dataclass(frozen=True)
class SiteStudy:
    """One study as the test writes it: who, when, what, and how the report talks about them."""

    key: str
    person: Person
    study_date: str
    accession: str
    study_id: str
    modality: str
    lateral: bool
    transfer_syntax: str
    signed_on: dt.date
    burned_in: bool = False
    date_form: str = "11/03/2025"
    uids: tuple[str, ...] = ()  # filled in when written: study, series and instance UIDs


PEOPLE = {
    "kowalski": Person("KOWALSKI^MARGARETHE^ELSBETH", "MRN-88213-X", "19580314", "OTHERID-99172",
                       "12 Quillon Lane, Fernbrook"),
    "oyelaran": Person("OYELARAN^BARNABY", "MRN-55107-Q", "19470921", "OTHERID-30551", "8 Thistledown Row"),
    "lindqvist": Person("LINDQVIST^ODALYS^PERPETUA", "MRN-71940-Z", "19631102", "OTHERID-61820",
                        "77 Marrowgate Close"),
    "achterberg": Person("ACHTERBERG^WILHELMINA", "MRN-23388-K", "19520605", "OTHERID-44093",
                         "3 Gorseway Terrace"),
    "fairweather": Person("FAIRWEATHER^EZEKIAH", "MRN-90412-B", "19701228", "OTHERID-12756",
                          "41 Saltmarsh Road"),
}
# All study dates lie in March 2025 and every shift goes back a year or more, so no shifted date can
# coincide with an original one.
STUDIES = [
    SiteStudy("k1", PEOPLE["kowalski"], "20250311", "ACC77120931", "STUDY-4471", "DX", True, "explicit",
              dt.date(2025, 3, 12), date_form="11/03/2025"),
    SiteStudy("k2", PEOPLE["kowalski"], "20250325", "ACC77120987", "STUDY-4502", "DX", False, "jpeg2000",
              dt.date(2025, 6, 2), date_form="March 25, 2025"),
    SiteStudy("o1", PEOPLE["oyelaran"], "20250304", "ACC55310042", "STUDY-5120", "CR", False, "rle",
              dt.date(2025, 3, 5), date_form="2025-03-04"),
    SiteStudy("l1", PEOPLE["lindqvist"], "20250317", "ACC61208875", "STUDY-6033", "DX", True, "rle",
              dt.date(2025, 6, 20), date_form="17 March 2025"),
    SiteStudy("a1", PEOPLE["achterberg"], "20250306", "ACC40339128", "STUDY-7008", "CR", False, "explicit",
              dt.date(2025, 7, 1), date_form="03/06/2025"),
    SiteStudy("f1", PEOPLE["fairweather"], "20250320", "ACC90215566", "STUDY-8144", "DX", False, "explicit",
              dt.date(2025, 7, 3), burned_in=True, date_form="20.03.2025"),
]
INSTITUTION = "Saint Wenceslas Infirmary"
INSTITUTION_ADDRESS = "99 Cobblewick Avenue, Grantsfield"
DEPARTMENT = "Thoracic Imaging Quarrybank"
REFERRING = "OBERHAUSER^THEODORICH"
PERFORMING = "VANDERMEULEN^ISOLDE"
OPERATOR = "RADIOGRAPHER^RUPRECHTA"
READING = "ZIMMERLING^HILDEGUNDE"
STATION = "XRAY-QUIRINUS"
SERIAL = "SN-DX-5512837"
PRIVATE_VALUE = "PRIVATE-SECRET-3318"
PATIENT_COMMENT = "Prefers Tuesday appointments, daughter Philippa"


def _written_dates(value: str) -> list[str]:
    day = dt.datetime.strptime(value, "%Y%m%d").date()
    return [value, day.isoformat(), day.strftime("%d/%m/%Y"), day.strftime("%m/%d/%Y"), day.strftime("%d.%m.%Y"),
            f"{day.day} {day.strftime('%B')} {day.year}", f"{day.strftime('%B')} {day.day}, {day.year}"]


def identifying_values(studies: list[SiteStudy]) -> list[str]:
    """Every original value that must not appear in the output (names as components, dates as written)."""
    values = {INSTITUTION, INSTITUTION_ADDRESS, DEPARTMENT, STATION, SERIAL, PRIVATE_VALUE, PRIVATE_CREATOR,
              PATIENT_COMMENT, "RADDRAFT-PHANTOM", "Philippa", "Quarrybank", "Wenceslas"}
    for name in (REFERRING, PERFORMING, OPERATOR, READING, SIGNER):
        values.update(part for part in name.replace("-", "^").split("^") if part)
    for study in studies:
        person = study.person
        values.update(part for part in person.name.split("^"))
        values.update({person.patient_id, person.other_id, person.address, study.accession, study.study_id})
        values.update(_written_dates(person.birth_date) + _written_dates(study.study_date))
        values.update(study.uids)
    return sorted(values)


def _write_store(root: Path, work: Path) -> list[SiteStudy]:
    store = Store(StoreSettings(root))
    written = []
    try:
        for index, study in enumerate(STUDIES):
            written.append(_add_study(store, work, index, study))
    finally:
        store.close()
    return written


def _add_study(store: Store, work: Path, index: int, study: SiteStudy) -> SiteStudy:
    config = PhantomConfig(image_size=96, lateral_fraction=1.0 if study.lateral else 0.0, ap_fraction=0.0,
                           workers=1)
    spec = plan_study(41, index, config)
    person = study.person
    identity = StudyIdentity(patient_name=person.name, patient_id=person.patient_id, birth_date=person.birth_date,
                             sex="F", study_uid=pydicom.uid.generate_uid(), study_date=study.study_date,
                             study_time="101500", accession=study.accession, study_id=study.study_id,
                             description=f"XR CHEST {person.name.split('^')[0]}")
    encodings = tuple(ImageEncoding(modality=study.modality, transfer_syntax=study.transfer_syntax,
                                    photometric="MONOCHROME1" if number else "MONOCHROME2")
                      for number in range(len(spec.encodings)))
    spec = dataclasses.replace(spec, identity=identity, encodings=encodings)
    record = write_study(spec, work / study.key, config)
    uids = [identity.study_uid]
    frontal_uid = None
    for relative in record["images"]:
        path = work / study.key / relative
        ds = pydicom.dcmread(path)
        _add_identity(ds, study, frontal_uid)
        frontal_uid = frontal_uid or str(ds.SOPInstanceUID)
        uids += [str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.FrameOfReferenceUID)]
        ds.save_as(path, enforce_file_format=True)
        store.put(ReceivedInstance.from_part10(path.read_bytes(), calling_ae="MODALITY1"))
    store.index.transition(identity.study_uid, StudyState.STABLE)
    sign_report(store.index, _report(identity.study_uid, study),
                now=dt.datetime.combine(study.signed_on, dt.time(9, 30)).timestamp())
    return dataclasses.replace(study, uids=tuple(uids))


def _add_identity(ds: Dataset, study: SiteStudy, frontal_uid: str | None) -> None:
    person = study.person
    ds.OtherPatientIDs = person.other_id
    ds.PatientAddress = person.address
    ds.PatientComments = PATIENT_COMMENT
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INSTITUTION_ADDRESS
    ds.InstitutionalDepartmentName = DEPARTMENT
    ds.ReferringPhysicianName = REFERRING
    ds.PerformingPhysicianName = PERFORMING
    ds.OperatorsName = OPERATOR
    ds.NameOfPhysiciansReadingStudy = READING
    ds.StationName = STATION
    ds.DeviceSerialNumber = SERIAL
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.ImageComments = f"portable CHEST {ds.ViewPosition} {person.name.split('^')[0]}"
    ds.SeriesDescription = f"{ds.SeriesDescription} by {OPERATOR.split('^')[0]}"
    ds.PatientAge = "067Y"
    ds.BurnedInAnnotation = "YES" if study.burned_in else "NO"
    ds.private_block(0x0011, PRIVATE_CREATOR, create=True).add_new(0x01, "LO", PRIVATE_VALUE)
    item = Dataset()
    item.PersonName = READING
    item.DateTime = f"{study.study_date}101500"
    ds.ContentSequence = Sequence([item])
    if frontal_uid:  # the lateral refers to its frontal: the reference must follow the new UIDs
        reference = Dataset()
        reference.ReferencedSOPClassUID = ds.SOPClassUID
        reference.ReferencedSOPInstanceUID = frontal_uid
        ds.ReferencedImageSequence = Sequence([reference])


def _report(study_uid: str, study: SiteStudy) -> SignedReport:
    family, given = study.person.name.split("^")[:2]
    findings = (f"Patient {given.title()} {family.title()} (ID {study.person.patient_id}, accession "
                f"{study.accession}) examined on {study.date_form}. Born {_written_dates(study.person.birth_date)[1]}. "
                "Lungs are clear. No pleural effusion. Heart size normal, measured 1 cm above the baseline.")
    impression = (f"No acute cardiopulmonary process. Discussed with Dr {REFERRING.split('^')[0].title()} "
                  f"by {SIGNER.split('^')[1].title()} {SIGNER.split('^')[0].title()}; study {study.study_id}.")
    return SignedReport(study_uid=study_uid, findings=findings, impression=impression, signed_by=SIGNER)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, list[SiteStudy]]:
    work = tmp_path_factory.mktemp("site")
    return work / "store", _write_store(work / "store", work / "sources")


def run_dataset(store: Path, out: Path, *extra: str) -> int:
    return main(["dataset", "--from-store", str(store), "--out", str(out), "--progress", "none", *extra])


@pytest.fixture(scope="module")
def exported(site, tmp_path_factory) -> Path:
    store, _ = site
    out = tmp_path_factory.mktemp("exported") / "dataset"
    assert run_dataset(store, out) == 0
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text(encoding="utf-8").splitlines()]


def decoded_texts(ds: Dataset) -> list[str]:
    """Every element value of a dataset and its sequences (file meta included), as text."""
    texts = []
    for elem in ds.iterall():
        if elem.VR not in ("SQ", "OB", "OW", "OF", "OD", "UN"):
            texts.append(str(elem.value))
    texts += [str(elem.value) for elem in ds.file_meta]
    return texts


def assert_nothing_identifying(out: Path, studies: list[SiteStudy]) -> None:
    values = identifying_values(studies)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert files
    for path in files:
        raw = path.read_bytes().lower()
        found = [v for v in values if v.lower().encode("utf-8") in raw]
        assert not found, f"{path.relative_to(out)} holds {found}"
        if path.suffix == ".dcm":
            text = "\n".join(decoded_texts(pydicom.dcmread(path))).lower()
            found = [v for v in values if v.lower() in text]
            assert not found, f"{path.relative_to(out)} decodes to {found}"


def output_files(out: Path) -> dict[str, list[Dataset]]:
    """The output's datasets per manifest study."""
    return {r["study_uid"]: [pydicom.dcmread(out / p) for p in r["images"]] for r in manifest(out)}


# -- the privacy properties ---------------------------------------------------------------------------------
def test_no_output_file_holds_an_original_identifying_value(site, exported):
    store, studies = site
    assert {p.name for p in exported.iterdir()} == {MANIFEST_NAME, SUMMARY_NAME, LOG_NAME, "studies"}
    assert_nothing_identifying(exported, studies)
    assert not (exported / KEY_NAME).exists()
    key_text = (store / KEY_NAME).read_text().strip()
    for path in (p for p in exported.rglob("*") if p.is_file()):
        assert key_text.encode() not in path.read_bytes()


def test_reports_keep_their_medicine_and_lose_the_identity(exported):
    records = manifest(exported)
    for record in records:
        findings, impression = record["report"]["findings"], record["report"]["impression"]
        written = re.match(r"Patient \[NAME\] \(ID \[ID\], accession \[ID\]\) examined on (\d{4}-\d\d-\d\d)\. "
                           r"Born \[DATE\]\.", findings)
        assert written, findings
        # the report's dates are shifted as the images' are: the same day as the de-identified Study Date
        image = pydicom.dcmread(exported / record["images"][0], stop_before_pixels=True)
        assert written.group(1).replace("-", "") == image.StudyDate
        assert not image.PatientBirthDate  # removed there, and [DATE] in the text
        assert "Lungs are clear. No pleural effusion." in findings and "measured 1 cm above" in findings
        assert impression == "No acute cardiopulmonary process. Discussed with Dr [NAME] by [NAME]; study [ID]."
    scrubbing = read_json(exported / LOG_NAME)["report_scrubbing"]
    # per report: name x2 (given, family), signer x2, referring x1; ID, accession, study ID; 2 dates
    assert scrubbing["names"] == 5 * len(records)
    assert scrubbing["ids"] == 3 * len(records) and scrubbing["dates"] == 2 * len(records)
    assert scrubbing["reports_changed"] == scrubbing["reports"] == len(records)


def test_images_are_marked_and_keep_what_training_needs(site, exported):
    for datasets in output_files(exported).values():
        for ds in datasets:
            assert ds.PatientIdentityRemoved == "YES"
            assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
            codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
            assert codes[:2] == ["113100", "113107"] and "113105" in codes  # descriptors were cleaned
            assert ds.PatientName == "" and ds.PatientBirthDate == "" and ds.AccessionNumber == ""
            assert str(ds.PatientID).startswith("RDP") and ds.StudyDate and ds.StudyDate < "20240400"
            for keyword in ("InstitutionName", "OperatorsName", "PerformingPhysicianName", "PatientAge",
                            "PatientAddress", "PatientComments", "StudyDescription", "OtherPatientIDs",
                            "NameOfPhysiciansReadingStudy", "DeviceSerialNumber", "IssuerOfPatientID"):
                assert not ds.get(keyword), keyword
            assert not any(elem.tag.is_private for elem in ds.iterall())
            for keyword in ("Modality", "ViewPosition", "BodyPartExamined", "PhotometricInterpretation",
                            "WindowCenter", "WindowWidth", "Rows", "Columns", "BitsStored"):
                assert ds.get(keyword) not in (None, ""), keyword
            assert ds.Modality == "CR" or ds.ImageLaterality == "U"
            assert ds.SeriesDescription in ("PA", "LAT") and ds.ImageComments in ("PA", "LL")
            assert ds.Modality == "CR" or ds.ViewCodeSequence[0].CodeValue in ("399348003", "399173006")
    log = read_json(exported / LOG_NAME)
    attributes = log["attributes"]
    assert attributes["PatientName"] == {"Z": log["instances"]} and attributes["SOPInstanceUID"] == {"U": log["instances"]}
    assert attributes["StudyDate"] == {"M": log["instances"]} and attributes["PatientID"] == {"P": log["instances"]}
    assert attributes["ContentSequence"] == {"Z": log["instances"]}  # D on a sequence: emptied
    assert log["private_attributes_removed"] == 2 * log["instances"]  # the creator and its element


def test_uids_map_consistently_within_and_across_runs(site, exported, tmp_path):
    store, studies = site
    again = tmp_path / "again"
    assert run_dataset(store, again) == 0
    first, second = output_files(exported), output_files(again)
    assert list(first) == list(second)
    assert [r["split"] for r in manifest(exported)] == [r["split"] for r in manifest(again)]
    originals = {uid for study in studies for uid in study.uids}
    for study_uid, datasets in first.items():
        assert study_uid.startswith("2.25.") and study_uid not in originals
        assert [ds.SOPInstanceUID for ds in datasets] == [ds.SOPInstanceUID for ds in second[study_uid]]
        assert [ds.StudyDate for ds in datasets] == [ds.StudyDate for ds in second[study_uid]]
        assert {ds.StudyInstanceUID for ds in datasets} == {study_uid}
        assert len({ds.SeriesInstanceUID for ds in datasets}) == len(datasets)
        for ds in datasets:
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.SOPClassUID in ("1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1")  # kept
        if len(datasets) == 2:  # the lateral's reference follows its frontal's new UID
            assert datasets[1].ReferencedImageSequence[0].ReferencedSOPInstanceUID == datasets[0].SOPInstanceUID


def test_one_patient_keeps_one_pseudonym_one_date_offset_and_one_split(site, exported):
    _, studies = site
    records = manifest(exported)
    datasets = output_files(exported)
    splits_of: dict[str, set[str]] = {}
    for record in records:
        splits_of.setdefault(record["patient_id"], set()).add(record["split"])
        assert {str(ds.PatientID) for ds in datasets[record["study_uid"]]} == {record["patient_id"]}
    assert len(splits_of) == 4  # five patients, one excluded (burned in)
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert {r["split"] for r in records} == {"train", "validation", "test"}  # >= 3 patients: every split
    twice = next(p for p in splits_of if sum(r["patient_id"] == p for r in records) == 2)
    shifted = sorted(_day(datasets[r["study_uid"]][0].StudyDate) for r in records if r["patient_id"] == twice)
    first, second = (_day(s.study_date) for s in studies if s.key in ("k1", "k2"))
    assert shifted[1] - shifted[0] == second - first  # the interval between a patient's studies is kept


def _day(value: str) -> dt.date:
    return dt.datetime.strptime(str(value), "%Y%m%d").date()


# -- exclusions and filters ------------------------------------------------------------------------------------
def test_burned_in_studies_are_excluded_unless_allowed(site, exported, tmp_path):
    store, studies = site
    summary, log = read_json(exported / SUMMARY_NAME), read_json(exported / LOG_NAME)
    assert summary["excluded"] == {"burned_in_annotation": 1, "burned_in_risk": 0, "no_images": 0, "unreadable": 0,
                                   "pixel_data_not_cleanable": 0}
    assert [e["reason"] for e in log["excluded_studies"]] == ["burned_in_annotation"]
    assert log["excluded_studies"][0]["study_uid"].startswith("2.25.")
    assert summary["total_studies"] == len(STUDIES) - 1
    allowed = tmp_path / "allowed"
    assert run_dataset(store, allowed, "--allow-burned-in") == 0
    summary = read_json(allowed / SUMMARY_NAME)
    assert summary["total_studies"] == len(STUDIES) and summary["burned_in_kept"] == 1
    assert summary["excluded"]["burned_in_annotation"] == 0
    flagged = [ds for datasets in output_files(allowed).values() for ds in datasets if ds.BurnedInAnnotation == "YES"]
    assert len(flagged) == 1
    assert_nothing_identifying(allowed, studies)


def test_since_and_modality_filters(site, tmp_path, capsys):
    store, _ = site
    assert run_dataset(store, tmp_path / "since", "--since", "2025-06-01") == 0
    summary = read_json(tmp_path / "since" / SUMMARY_NAME)
    # signed from June on: k2, l1, a1 and f1 (burned in, excluded)
    assert summary["total_studies"] == 3 and summary["filtered"] == {"signed_before_since": 2}
    assert summary["options"]["since"] == "2025-06-01"
    assert run_dataset(store, tmp_path / "cr", "--modality", "CR") == 0
    records = manifest(tmp_path / "cr")
    assert len(records) == 2 and {r["modality"] for r in records} == {"CR"}
    assert read_json(tmp_path / "cr" / SUMMARY_NAME)["filtered"] == {"other_modality": 4}
    capsys.readouterr()
    # from July 2 on only the burned-in study is left: nothing to write
    assert run_dataset(store, tmp_path / "late", "--modality", "cr", "dx", "--since", "2025-07-02") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("raddraft dataset: every study with a signed report was excluded (1 burned in annotation); "
                   "nothing to write (--allow-burned-in keeps studies with burned-in annotation)")]
    assert not (tmp_path / "late").exists()
    assert run_dataset(store, tmp_path / "none", "--modality", "MR") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"raddraft dataset: no signed reports left after the filters in the store {store} "
                   f"(6 other modality)")]
    assert not (tmp_path / "none").exists()


def test_dates_can_be_removed_instead_of_shifted(site, tmp_path):
    store, studies = site
    out = tmp_path / "removed"
    assert run_dataset(store, out, "--dates", "remove") == 0
    for datasets in output_files(out).values():
        for ds in datasets:
            assert ds.LongitudinalTemporalInformationModified == "REMOVED"
            assert "113107" not in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
            dates = [elem for elem in ds.iterall() if elem.VR in ("DA", "DT", "TM") and elem.value]
            assert dates == []
    assert read_json(out / SUMMARY_NAME)["options"]["dates"] == "remove"
    assert_nothing_identifying(out, studies)


# -- the trainer and the engine read it ------------------------------------------------------------------------
def test_the_trainer_reads_the_manifest_and_the_pixels_are_the_originals(site, exported):
    from training.train.studies import has_ground_truth, read_studies, study_pixels

    store_root, _ = site
    studies = read_studies(exported / MANIFEST_NAME, "site")
    assert len(studies) == len(STUDIES) - 1
    assert not any(has_ground_truth(s) for s in studies)
    prep = Preprocessing(image_size=64, views=("frontal", "lateral"))
    deid = Deidentifier(load_or_create_key(store_root))
    store = Store(StoreSettings(store_root))
    try:
        originals = {deid.uid(study.study_uid): [store.path_of(row) for row in store.index.instances_of(study.study_uid)]
                     for study in store.index.studies()}
    finally:
        store.close()
    for study in studies:
        original_sets, exported_sets = preprocess.load_study(originals[study.uid]), preprocess.load_study(study.paths)
        assert len(original_sets) == len(exported_sets)
        for before, after in zip(original_sets, exported_sets):
            assert np.array_equal(before.pixel_array, after.pixel_array)
            assert before.file_meta.TransferSyntaxUID == after.file_meta.TransferSyntaxUID
        expected = preprocess.prepare_study(original_sets, prep)
        actual = preprocess.prepare_study(exported_sets, prep)
        assert actual.views == expected.views
        assert np.array_equal(actual.pixel_values, expected.pixel_values)
        assert np.array_equal(study_pixels(study, prep), expected.pixel_values)


# -- the command ----------------------------------------------------------------------------------------------
def run_json_process(store: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "raddraft", "dataset", "--from-store", str(store), "--out", str(out),
               "--progress", "json"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_json_progress_lines_for_the_app(site, tmp_path):
    store, _ = site
    out = tmp_path / "json"
    # as the app's Models page runs it: a background process whose stdout is read line by line
    done = run_json_process(store, out)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    progress, result = events[:-1], events[-1]
    assert progress[0] == {"event": "progress", "task": "dataset", "done": 0, "total": len(STUDIES)}
    assert progress[-1] == {"event": "progress", "task": "dataset", "done": len(STUDIES), "total": len(STUDIES)}
    assert [e["done"] for e in progress] == list(range(len(STUDIES) + 1))
    summary = read_json(out / SUMMARY_NAME)
    assert result["event"] == "result" and result["out"] == str(out)
    assert result["studies"] == summary["studies"] and result["excluded"] == summary["excluded"]
    failed = run_json_process(store, out)
    assert failed.returncode == 2
    assert json.loads(failed.stdout) == {"event": "error", "exit": 2, "message": f"{out} is not empty; choose a new "
                                         "folder or pass --overwrite to replace it"}


def test_unreadable_studies_are_excluded_and_objects_without_pixels_skipped(tmp_path):
    store = Store(StoreSettings(tmp_path / "store"))
    try:
        kept = _add_study(store, tmp_path / "sources", 0, dataclasses.replace(STUDIES[0], lateral=False))
        broken = _add_study(store, tmp_path / "sources", 2, STUDIES[2])
        paths = {s.uids[0]: [store.path_of(r) for r in store.index.instances_of(s.uids[0])] for s in (kept, broken)}
        paths[broken.uids[0]][0].write_bytes(b"not a DICOM file any more")
        no_pixels = pydicom.dcmread(paths[kept.uids[0]][0])
        del no_pixels.PixelData
        no_pixels.SOPInstanceUID = no_pixels.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        buffer = io.BytesIO()
        no_pixels.save_as(buffer, enforce_file_format=True)
        store.put(ReceivedInstance.from_part10(buffer.getvalue()))  # arrives after signing: still signed
        assert store.index.study(kept.uids[0]).state == StudyState.SIGNED
    finally:
        store.close()
    assert run_dataset(tmp_path / "store", tmp_path / "out") == 0
    summary, log = read_json(tmp_path / "out" / SUMMARY_NAME), read_json(tmp_path / "out" / LOG_NAME)
    assert summary["excluded"] == {"burned_in_annotation": 0, "burned_in_risk": 0, "no_images": 0, "unreadable": 1,
                                   "pixel_data_not_cleanable": 0}
    assert log["objects_without_pixel_data_skipped"] == 1
    records = manifest(tmp_path / "out")
    assert len(records) == 1 and len(records[0]["images"]) == 1 and records[0]["split"] == "train"


def test_the_key_is_private_and_an_existing_output_is_not_overwritten(site, exported, tmp_path, capsys):
    store, _ = site
    if os.name == "posix":
        assert stat.S_IMODE((store / KEY_NAME).stat().st_mode) == 0o600
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert run_dataset(store, out) == 2
    assert capsys.readouterr().err.strip() == (f"raddraft dataset: {out} is not empty; choose a new folder or pass "
                                               "--overwrite to replace it")
    assert (out / "notes.txt").read_text() == "mine"
    assert run_dataset(store, out, "--overwrite") == 0
    assert not (out / "notes.txt").exists() and (out / MANIFEST_NAME).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    for forbidden in (store, store.parent, store / "data" / "dataset"):
        assert run_dataset(store, forbidden, "--overwrite") == 2
        assert "raddraft dataset: the output folder" in capsys.readouterr().err
    assert (store / "index.sqlite3").is_file()
    # where the app's Models page builds it: beside the store's own folders
    assert run_dataset(store, store / "training" / "dataset-1") == 0
    assert (store / "training" / "dataset-1" / MANIFEST_NAME).is_file()


def test_a_missing_store_and_a_store_without_reports(tmp_path, capsys):
    assert run_dataset(tmp_path / "nowhere", tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == f"raddraft dataset: store folder not found: {tmp_path / 'nowhere'}"
    Store(StoreSettings(tmp_path / "empty")).close()
    assert run_dataset(tmp_path / "empty", tmp_path / "out") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"raddraft dataset: no signed reports in the store {tmp_path / 'empty'}"]
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "empty" / KEY_NAME).exists()  # nothing to export: no key made either


def test_the_command_needs_no_training_stack(site, tmp_path):
    """Sites without the training extra build their dataset too: pydicom and numpy are enough."""
    store, _ = site
    probe = (f"import sys\nfrom raddraft.cli import main\n"
             f"assert main(['dataset', '--from-store', {str(store)!r}, '--out', {str(tmp_path / 'out')!r}, "
             f"'--progress', 'none']) == 0\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'peft', 'optimum', "
             "'PySide6', 'onnxruntime'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
