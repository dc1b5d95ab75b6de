"""The de-identification rules one by one: descriptors and codes, date ranges, pixel side data, burned-in
risk, linking patients, withheld warnings, and the report spellings the adversarial review found."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import struct
import warnings
from collections import Counter

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence

from training.site.deidentify import Deidentifier, _shift
from training.site.descriptors import clean_coded_string, descriptor_words, known_meaning
from training.site.linking import PatientRecord, link_patients, record_of
from training.site.pixels import PixelCleaningError, clean_pixel_data, strip_j2k_comments, strip_jpeg_segments
from training.site.quiet import values_withheld
from training.site.risk import BURNED_IN, BURNED_IN_RISK, burned_in_reason
from training.site.scrub import ReportScrubber, identity_of
from training.site.textfold import fold, variants

KEY = bytes(range(32))


def sample(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom's {name} sample is not bundled")
    return pydicom.dcmread(path)


def roundtrip(ds: Dataset, deid: Deidentifier | None = None) -> Dataset:
    deid = deid or Deidentifier(KEY)
    return pydicom.dcmread(io.BytesIO(deid.instance(ds, deid.patient("P"))))


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


# -- descriptors and codes ------------------------------------------------------------------------------------
def test_free_text_keeps_only_listed_words():
    assert descriptor_words("XR Chest MÜLLER JÖRG (Saint Wenceslas) PA 1.2.840.99 http://x.org") == "XR CHEST PA"
    assert descriptor_words("Dr. Mabuse 4471902") == ""
    assert clean_coded_string("ImageType", ["ORIGINAL", "PRIMARY", "MUELLER", "AXIAL"]) == \
        ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert clean_coded_string("ImageLaterality", "L") == ["L"]
    assert clean_coded_string("SpecificCharacterSet", ["ISO 2022 IR 6", "ISO 2022 IR 87", "MUELLER"]) == \
        ["ISO 2022 IR 6", "ISO 2022 IR 87"]


def test_codes_are_rebuilt_from_the_dictionary_or_reduced_to_words():
    assert known_meaning("SCT", "399348003") is not None and known_meaning("SCT", "4471902") is None
    ds = sample("CT_small.dcm")
    ds.ProcedureCodeSequence = Sequence([code("4471902", "99LOCAL", "XR Chest MÜLLER JÖRG (Saint Wenceslas)"),
                                         code("MRN4471902", "L", "MUELLER JOERG")])
    ds.RequestedProcedureCodeSequence = Sequence([code("4471902", "SCT", "Chest MUELLER")])
    ds.AnatomicRegionSequence = Sequence([code("T-D3000", "SRT", "Chest of Mr Mueller")])
    ds.RetrieveURL = "https://pacs.example.org/wado-rs/studies/1.2.3.4.5"
    out = roundtrip(ds)
    kept = out.ProcedureCodeSequence
    assert len(kept) == 1 and kept[0].CodeMeaning == "XR CHEST" and kept[0].CodingSchemeDesignator == "99RADDRAFT"
    assert kept[0].CodeValue.startswith("RD") and "4471902" not in kept[0].CodeValue
    assert out.RequestedProcedureCodeSequence[0].CodeMeaning == "CHEST"
    anatomy = out.AnatomicRegionSequence[0]
    assert (anatomy.CodeValue, anatomy.CodingSchemeDesignator) == ("51185008", "SCT")
    assert "Mueller" not in anatomy.CodeMeaning
    assert "RetrieveURL" not in out
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113101", "113104", "113105"]


def test_a_local_code_gets_the_same_stand_in_every_time():
    first, second = sample("CT_small.dcm"), sample("CT_small.dcm")
    for ds in (first, second):
        ds.ProcedureCodeSequence = Sequence([code("XRCH2V", "99LOCAL", "XR chest 2 views")])
    assert roundtrip(first).ProcedureCodeSequence[0].CodeValue == roundtrip(second).ProcedureCodeSequence[0].CodeValue


# -- dates ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "vr", "expected"), [
    ("20240302-20240309", "DA", "20240301-20240308"),
    ("-20240309", "DA", "-20240308"),
    ("20240302-", "DA", "20240301-"),
    ("20240302101500-20240309", "DT", "20240301101500-20240308"),
    ("20240302101500.000000-0500", "DT", "20240301101500.000000-0500"),  # an offset, not a range
    ("20240302101500+0100-20240303", "DT", "20240301101500+0100-20240302"),
])
def test_date_ranges_shift_in_every_part(value, vr, expected):
    assert _shift(value, -1, vr) == expected


def test_multi_valued_and_ranged_dates_in_a_dataset():
    ds = sample("CT_small.dcm")
    ds.CalibrationDate = ["20240302", "20240309"]  # X in the table: removed
    ds.add_new(0x00181202, "DA", "20240302-20240309")  # DateOfLastCalibration
    ds.add_new(0x0040A121, "DA", ["20240302", "20240309"])  # Date (D in the table): shifted
    out = roundtrip(ds)
    offset = Deidentifier(KEY).patient("P").date_offset_days
    shifted = [(dt.date(2024, 3, d) + dt.timedelta(days=offset)).strftime("%Y%m%d") for d in (2, 9)]
    assert list(out[0x0040A121].value) == shifted
    assert list(out.CalibrationDate) == shifted  # modified dates option: shifted rather than removed
    assert out.get(0x00181202) is None or out[0x00181202].value == "-".join(shifted)


# -- pixel side data ----------------------------------------------------------------------------------------------
def jpeg_with_comment(name: str, text: bytes) -> Dataset:
    ds = sample(name)
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    ds.PixelData = encapsulate([f[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + f[2:]
                                for f in frames])
    return ds


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_app14_dcmd.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_jpeg_comments_and_application_segments_go_and_the_image_stays(name):
    original = sample(name).pixel_array
    ds = jpeg_with_comment(name, b"PATIENT MUELLER JOERG MRN4471902")
    removed = clean_pixel_data(ds)
    assert "COM" in removed and b"MUELLER" not in bytes(ds.PixelData)
    assert np.array_equal(ds.pixel_array, original)


def test_jpeg_segments_are_parsed_not_searched():
    ds = sample("SC_rgb_jpeg_dcmtk.dcm")
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    same, removed = strip_jpeg_segments(b"\xff\xd8" + frame[2:])
    assert "APP0" in removed and same.startswith(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")  # JFIF rebuilt, no thumbnail
    with pytest.raises(PixelCleaningError):
        strip_jpeg_segments(b"not a jpeg")


def test_jpeg_2000_comments_go_and_tile_comments_or_wrappers_refuse():
    ds = sample("MR_small_jp2klossless.dcm")
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    siz_end = 4 + int.from_bytes(frame[4:6], "big")
    body = b"\x00\x01MUELLER"
    planted = frame[:siz_end] + b"\xff\x64" + struct.pack(">H", len(body) + 2) + body + frame[siz_end:]
    cleaned, removed = strip_j2k_comments(planted)
    assert set(removed) == {"COM"} and b"MUELLER" not in cleaned
    sot = planted.find(b"\xff\x90")
    in_tile = planted[:sot + 12] + b"\xff\x64" + struct.pack(">H", len(body) + 2) + body + planted[sot + 12:]
    with pytest.raises(PixelCleaningError, match="tile-part"):
        strip_j2k_comments(in_tile)
    with pytest.raises(PixelCleaningError, match="JP2"):
        strip_j2k_comments(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + frame)


def test_video_encodings_are_refused():
    ds = sample("CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01video"])
    with pytest.raises(PixelCleaningError):
        clean_pixel_data(ds)


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_bigendian.dcm"])
def test_bits_above_high_bit_are_zeroed(name):
    ds = sample(name)
    big = ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
    dtype = np.dtype(">u2" if big else "<u2")
    values = np.clip(np.frombuffer(ds.PixelData, dtype=dtype).astype(np.int32), 0, 4095).astype(dtype)
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
    overlay = values.copy()
    overlay[:64] |= 0x8000
    ds.PixelData = overlay.tobytes()
    assert clean_pixel_data(ds) == ["bits outside Bits Stored"]
    assert np.array_equal(np.frombuffer(ds.PixelData, dtype=dtype), values)
    assert clean_pixel_data(ds) == []  # clean already: the bytes are left alone


# -- burned-in risk ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("modality", "sop_class", "flag", "reason"), [
    ("US", "1.2.840.10008.5.1.4.1.1.6.1", None, BURNED_IN_RISK),
    ("US", "1.2.840.10008.5.1.4.1.1.6.1", "NO", None),
    ("XA", "1.2.840.10008.5.1.4.1.1.12.1", None, BURNED_IN_RISK),
    ("RF", "1.2.840.10008.5.1.4.1.1.12.2", None, BURNED_IN_RISK),
    ("ES", "1.2.840.10008.5.1.4.1.1.77.1.1", None, BURNED_IN_RISK),
    ("OT", "1.2.840.10008.5.1.4.1.1.7", None, BURNED_IN_RISK),
    ("CR", "1.2.840.10008.5.1.4.1.1.1", None, None),
    ("CR", "1.2.840.10008.5.1.4.1.1.1", "YES", BURNED_IN),
])
def test_burned_in_reasons(modality, sop_class, flag, reason):
    ds = Dataset()
    ds.Modality, ds.SOPClassUID = modality, sop_class
    if flag:
        ds.BurnedInAnnotation = flag
    assert burned_in_reason(ds) == reason


def test_a_screenshot_is_a_risk():
    ds = Dataset()
    ds.Modality, ds.SOPClassUID, ds.ImageType = "CT", "1.2.840.10008.5.1.4.1.1.2", ["DERIVED", "SECONDARY", "SCREEN SHOT"]
    assert burned_in_reason(ds) == BURNED_IN_RISK


# -- one person, one patient ---------------------------------------------------------------------------------------
def test_patients_linked_through_other_ids_and_optionally_name_and_birth_date():
    records = [PatientRecord("s1", "4471902", ()), PatientRecord("s2", "MRN-583920", ("4471902",)),
               PatientRecord("s3", "X-1", ("MRN-583920",)), PatientRecord("s4", "B-9", (), "MÜLLER^JÖRG", "19560710"),
               PatientRecord("s5", "C-7", (), "Muller^Jorg", "19560710"), PatientRecord("s6", "", ())]
    keys = link_patients(records)
    assert keys["s1"] == keys["s2"] == keys["s3"] == "4471902"
    assert keys["s4"] == "B-9" and keys["s5"] == "C-7" and keys["s6"] == "no patient id: s6"
    linked = link_patients(records, by_name_and_birth_date=True)
    assert linked["s4"] == linked["s5"] == "B-9" and linked["s1"] == "4471902"
    ds = Dataset()
    ds.OtherPatientIDs = ["ALT-1", "4471902"]
    item = Dataset()
    item.PatientID = "SEQ-2"
    ds.OtherPatientIDsSequence = Sequence([item])
    assert record_of("s", "4471902", [ds]).other_ids == ("ALT-1", "SEQ-2")


# -- warnings ------------------------------------------------------------------------------------------------------
def test_warnings_are_counted_never_shown(caplog, recwarn):
    counts: Counter = Counter()
    with caplog.at_level(logging.DEBUG), values_withheld(counts):
        warnings.warn("Invalid value for VR PN: 'MUELLER^JOERG'", UserWarning, stacklevel=1)
        logging.getLogger("pydicom").warning("value 'MUELLER' is too long")
        logging.getLogger("pydicom.pixels.utils").warning("value 'MUELLER' again")
    assert counts == {"UserWarning": 1, "pydicom log warning": 2}
    assert "MUELLER" not in caplog.text and not [w for w in recwarn if "MUELLER" in str(w.message)]


# -- report text ----------------------------------------------------------------------------------------------------
def study() -> Dataset:
    ds = Dataset()
    ds.PatientName = "MÜLLER^JÖRG"
    ds.PatientID = "583920"
    ds.AccessionNumber = "ACC-4471902"
    ds.StudyDate = "20240302"
    ds.PatientBirthDate = "19560710"
    ds.ReferringPhysicianName = "STRAUß^Ödön"
    ds.PerformingPhysicianName = "Dvořák^Antonín"
    ds.OperatorsName = "山田^太郎"
    ds.NameOfPhysiciansReadingStudy = "홍길동"
    ds.PatientAddress = "12 Quillon Lane, Fernbrook"
    item = Dataset()
    item.PatientID = "ALT-77120"
    ds.OtherPatientIDsSequence = Sequence([item])
    return ds


def other_study() -> Dataset:
    ds = Dataset()
    ds.AccessionNumber = "ACC-99887766"
    ds.StudyDate = "20230110"
    return ds


@pytest.mark.parametrize(("written", "placeholder"), [
    ("MULLER, JORG", "[NAME]"), ("Mueller's", "[NAME]'s"), ("Muller", "[NAME]"), ("Strauss", "[NAME]"),
    ("Dvořákovi", "[NAME]"), ("Dvorak", "[NAME]"), ("山田太郎様", "[NAME]様"), ("홍길동 님", "[NAME] 님"),
    ("길동 씨", "[NAME] 씨"), ("MRN583920", "MRN[ID]"), ("ID_583920", "ID_[ID]"), ("0583920", "[ID]"),
    ("ACC4471902", "[ID]"), ("ACC-99887766", "[ID]"), ("alt77120", "[ID]"),
    ("02-Mar-2024", "[DATE]"), ("13. 7. 2024", "[DATE]"), ("2024年7月10日", "[DATE]"), ("2. 3. 24", "[DATE]"),
    ("10.07.56", "[DATE]"), ("2 mars 2024", "[DATE]"), ("10. Juli 1956", "[DATE]"), ("Jan 10, 2023", "[DATE]"),
    ("2024년 3월 2일", "[DATE]"), ("+49 30 1234567", "[PHONE]"), ("(089) 123-4567", "[PHONE]"),
    ("joerg.mueller@example.org", "[EMAIL]"), ("http://pacs.hospital.local/wado?uid=1.2.3.4.5", "[URL]"),
    ("12 Quillon Lane, Fernbrook", "[ADDRESS]"), ("Hauptstraße 5", "[ADDRESS]"), ("8 Thistledown Row", "[ADDRESS]"),
    ("1.2.826.0.1.3680043.2.1125.1", "[ID]"), ("12345678", "[ID]"),
])
def test_report_spellings_are_scrubbed(written, placeholder):
    scrubber = ReportScrubber(identity_of([study(), other_study()], ["WANG^LI"]))
    text, counts = scrubber.scrub(f"Seen: {written}; stable.")
    assert text == f"Seen: {placeholder}; stable.", text
    assert sum(counts.values()) >= 1


def test_medicine_stays():
    text = ("Lungs clear. Heart normal. 1 cm nodule, 12 mm effusion on 2 views. 5 mm nodule close to the fissure. "
            "Measured 3.5 x 2.1 cm. Ribs 5-7 intact. T1 and T2 weighted. May represent atelectasis.")
    assert ReportScrubber(identity_of([study()])).scrub(text) == (text, {})


def test_folding():
    assert fold("MÜLLER") == "muller" and fold("Øster") == "oster" and fold("２０２４") == "2024"
    assert variants("STRAUß") == {"strauss"} and {"muller", "mueller"} <= variants("Müller")
    assert "mueller" in variants("MUELLER") and "muller" in variants("MUELLER")


def test_the_command_links_by_name_and_birth_date_only_when_asked(tmp_path):
    from dicom_node.index import StudyState
    from dicom_node.reports import SignedReport, sign_report
    from dicom_node.settings import StoreSettings
    from dicom_node.store import ReceivedInstance, Store
    from raddraft.cli import main

    store = Store(StoreSettings(tmp_path / "store"))
    try:
        for patient_id, name in (("A-100", "MÜLLER^JÖRG"), ("B-200", "Muller^Jorg"), ("C-300", "OTHER^PERSON")):
            ds = sample("CT_small.dcm")
            ds.PatientID, ds.PatientName, ds.PatientBirthDate = patient_id, name, "19560710"
            ds.SpecificCharacterSet = "ISO_IR 192"
            del ds.OtherPatientIDsSequence  # the sample's own other IDs would link all three
            ds.StudyInstanceUID, ds.SOPInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            store.put(ReceivedInstance.from_part10(buffer.getvalue()))
            store.index.transition(ds.StudyInstanceUID, StudyState.STABLE)
            sign_report(store.index, SignedReport(study_uid=ds.StudyInstanceUID, findings="Clear.", impression="Normal.",
                                                  signed_by="READER^ONE"))
    finally:
        store.close()

    def pseudonyms(*extra: str) -> list[str]:
        out = tmp_path / f"out{len(extra)}"
        assert main(["dataset", "--from-store", str(tmp_path / "store"), "--out", str(out), "--progress", "none",
                     *extra]) == 0
        return sorted(json.loads(line)["patient_id"] for line in (out / "manifest.jsonl").read_text().splitlines())

    assert len(set(pseudonyms())) == 3
    linked = pseudonyms("--link-by-name-and-birth-date")
    assert len(set(linked)) == 2 and max(linked.count(p) for p in linked) == 2
