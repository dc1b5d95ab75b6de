"""The pieces of the site dataset on their own: the PS3.15 attribute rules on a real image dataset, the site
key, report scrubbing and the split by patient."""

from __future__ import annotations

import datetime as dt
import io
import os
import stat
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from training.site.deidentify import (
    KEY_NAME,
    PROFILE_ACTIONS,
    PROFILE_TABLE,
    DeidentificationError,
    Deidentifier,
    key_id,
    load_or_create_key,
)
from training.site.scrub import ReportScrubber, identity_of
from training.site.split import SPLITS, SplitError, SplitShares, assign_splits, split_of

KEY = bytes(range(32))


def ct_image() -> Dataset:
    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's CT_small.dcm sample is not bundled")
    return pydicom.dcmread(path)


def deidentified(ds: Dataset, deid: Deidentifier, patient_key: str = "PID-1") -> Dataset:
    return pydicom.dcmread(io.BytesIO(deid.instance(ds, deid.patient(patient_key))))


# -- the profile table -----------------------------------------------------------------------------------
def test_every_table_keyword_is_a_dicom_attribute_and_the_core_ones_are_there():
    assert not [k for k in PROFILE_ACTIONS if tag_for_keyword(k) is None]
    expected = {"PatientName": "Z", "PatientBirthDate": "Z", "AccessionNumber": "Z", "StudyInstanceUID": "U",
                "SOPInstanceUID": "U", "InstitutionName": "X/Z/D", "OperatorsName": "X/Z/D",
                "PerformingPhysicianName": "X", "DeviceSerialNumber": "X/Z/D", "PatientAddress": "X",
                "OtherPatientIDs": "X", "ImageComments": "X", "PatientID": "Z/D", "ContentDate": "Z/D"}
    assert {k: PROFILE_ACTIONS[k] for k in expected} == expected
    assert sum(len(keywords.split()) for keywords in PROFILE_TABLE.values()) > 600


def test_nested_names_uids_dates_private_and_overlay_data_are_handled():
    ds = ct_image()
    original_study = str(ds.StudyInstanceUID)
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-D3000", "SRT", "Chest"
    item.EvaluatorName = "NESTED^PERSON"  # a name the table does not list: the net by value representation takes it
    item.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7"
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ObservationDateTime = "20240229101500.000000+0100"
    ds.ProcedureCodeSequence = Sequence([item])
    ds.add_new(0x60000010, "US", 512)  # an overlay plane
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)
    ds.private_block(0x0043, "SECRET VENDOR", create=True).add_new(0x10, "LO", "HIDDEN")
    ds.AcquisitionDateTime = "2024"  # a partial date cannot be shifted: it goes
    private = sum(1 for elem in ds if elem.tag.is_private)
    deid = Deidentifier(KEY)
    out = deidentified(ds, deid)
    nested = out.ProcedureCodeSequence[0]
    assert "EvaluatorName" not in nested
    # a known code takes its dictionary form (SNOMED RT to CT, the dictionary's meaning, not the stored text)
    assert (nested.CodeValue, nested.CodingSchemeDesignator, nested.CodeMeaning) == \
        ("51185008", "SCT", "Thoracic structure (body structure)")
    assert nested.ReferencedSOPInstanceUID == deid.uid("1.2.3.4.5.6.7")
    assert nested.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    offset = deid.patient("PID-1").date_offset_days
    assert nested.ObservationDateTime == (dt.date(2024, 2, 29) + dt.timedelta(days=offset)).strftime("%Y%m%d") \
        + "101500.000000+0100"
    assert -3650 <= offset <= -365
    assert not [e for e in out.iterall() if e.tag.is_private or 0x6000 <= e.tag.group <= 0x60FF]
    assert "AcquisitionDateTime" not in out
    assert out.StudyInstanceUID == deid.uid(original_study) and out.SOPClassUID == ds.SOPClassUID
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert out.pixel_array.tolist() == ct_image().pixel_array.tolist()
    actions = deid.log.as_dict()["attributes"]
    assert actions["EvaluatorName"] == {"X": 1} and actions["AcquisitionDateTime"] == {"X": 1}
    assert actions["(6000,xxxx) overlay/curve"] == {"X": 2}
    assert deid.log.private_attributes == private > 2


def test_uids_are_keyed_deterministic_uuids():
    one, same, other = Deidentifier(KEY), Deidentifier(KEY), Deidentifier(bytes(32))
    uid = "1.2.826.0.1.3680043.8.498.12345"
    assert one.uid(uid) == same.uid(uid) != other.uid(uid)
    assert one.uid(uid) != one.uid(uid + "1")
    new = one.uid(uid)
    number = int(new.removeprefix("2.25."))
    assert new.startswith("2.25.") and len(new) <= 64 and (number >> 76) & 0xF == 8 and (number >> 62) & 0x3 == 2
    assert one.patient("A") == same.patient("A") != one.patient("B")


def test_dates_removed_on_request_and_birth_dates_never_shifted():
    ds = ct_image()
    ds.PatientBirthDate = "19600101"
    ds.StudyDate, ds.StudyTime, ds.InstanceCreationDate = "20240301", "101500", "20240301"
    removed = deidentified(ds, Deidentifier(KEY, dates="remove"))
    assert removed.StudyDate == "" and removed.StudyTime == "" and "InstanceCreationDate" not in removed
    assert removed.LongitudinalTemporalInformationModified == "REMOVED"
    shifted = deidentified(ct_image(), Deidentifier(KEY))
    assert shifted.PatientBirthDate == "" and shifted.StudyTime == ct_image().StudyTime
    with pytest.raises(DeidentificationError, match="dates must be one of shift, remove"):
        Deidentifier(KEY, dates="blur")


def test_descriptors_keep_only_view_words():
    ds = ct_image()
    ds.SeriesDescription = "Thorax PA stehend Dr. Mabuse"
    ds.ImageComments = "called mrs jones back"
    out = deidentified(ds, Deidentifier(KEY))
    assert out.SeriesDescription == "PA" and "ImageComments" not in out


def test_the_key_is_made_once_private_and_checked(tmp_path: Path):
    key = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path) == key and len(key) == 32
    if os.name == "posix":
        assert stat.S_IMODE((tmp_path / KEY_NAME).stat().st_mode) == 0o600
    assert key_id(key) != key.hex()[:16] and len(key_id(key)) == 16
    (tmp_path / KEY_NAME).write_text("not hex")
    with pytest.raises(DeidentificationError, match="unreadable"):
        load_or_create_key(tmp_path)


# -- report scrubbing ------------------------------------------------------------------------------------
def study_dataset() -> Dataset:
    ds = Dataset()
    ds.PatientName = "O'Brien-Smith^Mary Ann^J^Mrs^"
    ds.PatientID = "HOSP123456"
    ds.OtherPatientIDs = ["ALT-99881", "12"]
    ds.AccessionNumber = "99120"
    ds.StudyID = "7"
    ds.PatientBirthDate = "19510909"
    ds.StudyDate = "20260311"
    ds.ReferringPhysicianName = "Watson^John"
    ds.InstitutionName = "General Hospital North"
    return ds


@pytest.mark.parametrize("written", ["20260311", "2026-03-11", "11/03/2026", "03/11/2026", "11.03.2026",
                                     "11 March 2026", "March 11, 2026", "11th of Mar. 2026", "3/11/26", "march 11",
                                     "2026/3/11", "09.09.1951", "September 9, 1951", "Sept 9 1951"])
def test_the_study_dates_in_their_written_forms(written):
    text, counts = ReportScrubber(identity_of([study_dataset()])).scrub(f"Compared with {written}: stable.")
    assert text == "Compared with [DATE]: stable." and counts == {"dates": 1}


def test_names_ids_and_other_dates_are_replaced_as_whole_words():
    scrubber = ReportScrubber(identity_of([study_dataset()], extra_names=["Dr. Reed Halloway"]))
    text, counts = scrubber.scrub(
        "mary ann o'brien-smith (HOSP123456, alt-99881, acc 99120) seen at General Hospital North. "
        "Smithson and Watsonia are other people; Dr Watson informed. Prior 02/05/2019 compared. "
        "Nodule 12 mm, series 7, image 1. Signed Reed Halloway.")
    assert text == ("[NAME] ([ID], [ID], acc [ID]) seen at [INSTITUTION]. Smithson and Watsonia are other "
                    "people; Dr [NAME] informed. Prior [DATE] compared. Nodule 12 mm, series 7, image 1. "
                    "Signed [NAME].")
    assert counts == {"names": 5, "ids": 3, "institutions": 1, "other_dates": 1}


def test_collecting_the_identity_leaves_deferred_pixel_data_in_the_file():
    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's CT_small.dcm sample is not bundled")
    ds = pydicom.dcmread(path, defer_size=1024)
    identity = identity_of([ds])
    assert "CompressedSamples^CT1" not in identity.names and "CompressedSamples" in identity.names
    assert ds.get_item(0x7FE00010, keep_deferred=True).value is None  # still deferred: never read


def test_a_report_without_identity_is_unchanged():
    text = "Lungs clear. Heart normal. 1 cm nodule, 12 mm effusion on 2 views."
    assert ReportScrubber(identity_of([study_dataset()])).scrub(text) == (text, {})


# -- the split -------------------------------------------------------------------------------------------
def test_split_shares_and_the_small_set_rules():
    shares = SplitShares(validation=0.1, test=0.1)
    assert [split_of(u, shares) for u in (0.05, 0.15, 0.5)] == ["test", "validation", "train"]
    assert assign_splits({"a": 0.05}, shares) == {"a": "train"}  # one patient trains
    assert set(assign_splits({"a": 0.5, "b": 0.6}, shares).values()) == {"train"}
    three = assign_splits({"a": 0.5, "b": 0.6, "c": 0.7}, shares)
    assert sorted(three.values()) == ["test", "train", "validation"] and three["c"] == "train"
    assert set(assign_splits({"a": 0.01, "b": 0.02, "c": 0.03}, shares).values()) == set(SPLITS)
    no_validation = assign_splits({"a": 0.5, "b": 0.6, "c": 0.7}, SplitShares(validation=0.0, test=0.2))
    assert sorted(no_validation.values()) == ["test", "train", "train"]
    for bad in ({"validation": 0.6, "test": 0.4}, {"validation": -0.1}, {"test": 1.0}):
        with pytest.raises(SplitError):
            SplitShares(**bad)


def test_a_patient_keeps_their_split_when_the_set_grows():
    deid = Deidentifier(KEY)
    shares = SplitShares(validation=0.15, test=0.15)
    draws = {f"P{i:04d}": deid.patient(f"P{i:04d}").split_draw for i in range(400)}
    small = assign_splits(dict(list(draws.items())[:200]), shares)
    large = assign_splits(draws, shares)
    assert all(large[p] == s for p, s in small.items())
    counts = {name: sum(1 for s in large.values() if s == name) for name in SPLITS}
    assert 40 <= counts["test"] <= 80 and 40 <= counts["validation"] <= 80


@pytest.mark.parametrize("written", ["20260311", "2026-03-11", "11 March 2026", "March 11, 2026", "11.03.2026",
                                     "2026/3/11", "11th of Mar. 2026", "3/11/26"])
def test_with_the_patient_offset_the_study_dates_are_shifted(written):
    """A study's own date, in any written form, becomes the same shifted ISO date (intervals are kept)."""
    text, counts = ReportScrubber(identity_of([study_dataset()]), date_offset_days=-400).scrub(
        f"Compared with {written}: stable.")
    assert text == "Compared with 2025-02-04: stable." and counts == {"dates": 1}


@pytest.mark.parametrize("written,shifted", [
    ("2024-03-02", "2023-01-27"), ("02 Mar 2024", "2023-01-27"), ("13/04/2024", "2023-03-10"),
    ("2024年7月10日", "2023-06-06"), ("03/04/2024", "[DATE]"), ("Jan 2024", "[DATE]"), ("2/3/24", "[DATE]"),
])
def test_other_dates_are_shifted_when_they_read_without_doubt(written, shifted):
    text, _ = ReportScrubber(identity_of([study_dataset()]), date_offset_days=-400).scrub(f"Seen {written}.")
    assert text == f"Seen {shifted}."


def test_the_birth_date_is_never_shifted_into_the_text():
    text, _ = ReportScrubber(identity_of([study_dataset()]), date_offset_days=-400).scrub("Born 09.09.1951.")
    assert text == "Born [DATE]."
