"""An adversarial store: pydicom's real test files (CT, MR big endian, NM JPEG 2000, US JPEG, MR JPEG-LS,
RLE, deflated, secondary capture, SEG), re-identified with planted identities in every place the review
found a leak: code sequences' text, RetrieveURL, free-text and coded-string descriptors, date ranges,
JPEG/JPEG 2000 comment segments, bits above High Bit, names in wrong or non-Latin character sets, a name
stored with VR LO, a patient under two IDs, and reports that write all of it in the ways people do.

Then `raddraft dataset` runs and a scanner reads every output byte (in every likely character set) and every
decoded element for every planted value and its folded, transliterated and reformatted variants.
The scanner is independent of the scrubber's own folding on purpose.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import re
import unicodedata
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from dicom_node.index import StudyState
from dicom_node.reports import SignedReport, sign_report
from dicom_node.settings import StoreSettings
from dicom_node.store import ReceivedInstance, Store
from raddraft.cli import main
from training.site.dataset import LOG_NAME, MANIFEST_NAME, SUMMARY_NAME
from training.site.deidentify import PROFILE_ACTIONS, SHIFT_DAYS

SIGNER = "ŘEZNÍČKOVÁ^Bohumila"
INSTITUTION = "Saint Wenceslas Infirmary"
HOST = "pacs-wenceslas.hospital.local"
STATION = "XRAYQUIRINUS"


@dataclasses.dataclass(frozen=True)
class Person:
    key: str
    name: str  # as stored (PN, "=" groups for other scripts)
    ids: tuple[str, ...]  # the first is the Patient ID of the first study; a second is an other ID
    birth_date: str
    charset: str
    phone: str
    email: str
    address: str
    written_names: tuple[str, ...]  # how the reports write the name


PEOPLE = {
    "mueller": Person("mueller", "MÜLLER^JÖRG", ("4471902", "MRN-583920"), "19560710", "ISO_IR 192",
                      "+49 30 8812 4471", "joerg.mueller@example.org", "12 Quillon Lane, Fernbrook",
                      ("MULLER, JORG", "Mueller", "Muller's", "Jörg Müller")),
    "strauss": Person("strauss", "STRAUß^Ødegard", ("PID-77120931",), "19630215", "ISO_IR 100",
                      "(089) 552-9083", "o.strauss@klinik-example.de", "Hauptstraße 17, Grantsfield",
                      ("Strauss", "Odegard Strauß", "STRAUSS")),
    "dvorak": Person("dvorak", "Dvořák^Antonín", ("CZ99102387",), "19470908", "ISO_IR 101",
                     "0171 2345678", "antonin@dvorak-example.cz", "8 Thistledown Row, Marrowgate",
                     ("Dvořákovi", "Dvorak", "Antonín Dvořák")),
    "yamada": Person("yamada", "Yamada^Tarou=山田^太郎=やまだ^たろう", ("JP-3388120",), "19700101",
                     "ISO 2022 IR 6\\ISO 2022 IR 87", "03-5550-1234", "tarou.yamada@example.jp",
                     "7 Sakura Close, Minato", ("山田太郎様", "山田様", "Yamada Tarou")),
    "hong": Person("hong", "홍^길동", ("KR-5512837",), "19810320", "ISO_IR 192", "010-5550-8812",
                   "gildong@example.kr", "3 Gorseway Terrace, Jongno", ("홍길동 님", "길동 씨", "홍 선생님")),
}


@dataclasses.dataclass(frozen=True)
class Source:
    """One study made from one of pydicom's test files."""

    key: str
    person: str
    file: str
    study_date: str
    patient_id: str  # the ID this study was stored under
    burned_in: str | None = "NO"  # BurnedInAnnotation written (None: none)
    comment_in_frames: bool = False
    high_bits: bool = False
    name_as_lo: bool = False
    wrong_charset: bool = False


SOURCES = [
    Source("ct", "mueller", "CT_small.dcm", "20240302", "4471902", name_as_lo=True),
    Source("mr-be", "mueller", "MR_small_bigendian.dcm", "20240710", "MRN-583920", high_bits=True,
           wrong_charset=True),
    Source("nm-j2k", "strauss", "JPEG2000.dcm", "20240115", "PID-77120931", comment_in_frames=True),
    Source("mr-jls", "dvorak", "MR_small_jpeg_ls_lossless.dcm", "20231105", "CZ99102387", comment_in_frames=True),
    Source("us-jpeg", "yamada", "examples_ybr_color.dcm", "20240618", "JP-3388120", comment_in_frames=True),
    Source("mr-rle", "hong", "MR_small_RLE.dcm", "20240229", "KR-5512837"),
    Source("mr-native", "hong", "MR_small.dcm", "20240301", "KR-5512837", high_bits=True),
    Source("us-risk", "strauss", "examples_rgb_color.dcm", "20240120", "PID-77120931", burned_in=None),
    Source("sc-risk", "dvorak", "SC_rgb_jpeg_dcmtk.dcm", "20231201", "CZ99102387", burned_in=None),
    Source("ot-deflated", "yamada", "image_dfl.dcm", "20240620", "JP-3388120"),
]
RISKY = {"us-risk", "sc-risk"}


# -- planting ------------------------------------------------------------------------------------------------
def _source(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom's {name} sample is not bundled")
    return pydicom.dcmread(path)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _free_text_keyword() -> str:
    return next(k for k in ("ManufacturerModelName", "ProtocolName", "SoftwareVersions")
                if k not in PROFILE_ACTIONS)


def _range_date_keyword() -> str:
    """A DA attribute the profile table does not name: only the value-representation rules protect it."""
    return next(k for k in ("DateOfLastCalibration", "ExpiryDate", "InterventionDrugStartDate", "ContributionDate")
                if k not in PROFILE_ACTIONS or PROFILE_ACTIONS[k] == "X")


def plant(ds: Dataset, source: Source, person: Person, uids: dict[str, str]) -> None:
    family = person.name.split("^")[0]
    ds.SpecificCharacterSet = person.charset
    if source.name_as_lo:
        ds.add_new(0x00100010, "LO", person.name.replace("^", " "))
    elif source.wrong_charset:  # UTF-8 bytes under a Latin-1 declaration
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = PersonName(person.name.encode("utf-8"))
    else:
        ds.PatientName = person.name
    ds.PatientID = source.patient_id
    others = [i for i in person.ids if i != source.patient_id]
    ds.OtherPatientIDsSequence = Sequence([_other_id(i) for i in others])  # the sample's own would link people
    ds.PatientBirthDate = person.birth_date
    ds.PatientAddress = person.address
    ds.PatientTelephoneNumbers = person.phone
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = uids["study"], uids["series"], uids["instance"]
    ds.file_meta.MediaStorageSOPInstanceUID = uids["instance"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = source.study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{source.patient_id[-6:]}{source.key[:2].upper()}"
    ds.StudyID = f"ST{source.patient_id[-5:]}"
    ds.InstitutionName = INSTITUTION
    ds.StationName = STATION
    ds.StudyDescription = f"XR Chest {family} ({INSTITUTION})"
    ds.SeriesDescription = f"PA chest {family} {source.patient_id}"
    ds.ImageComments = f"LAT {person.ids[0]} {person.phone}"
    coded = re.sub(r"[^A-Z0-9 ]", "", fold(family).upper())[:16]  # coded strings are ASCII
    if coded:
        ds.BodyPartExamined = coded
        ds.ImageType = list(ds.get("ImageType") or ["ORIGINAL", "PRIMARY"]) + [coded]
    setattr(ds, _free_text_keyword(), f"{STATION} {family} {person.email}")
    setattr(ds, _range_date_keyword(), f"{source.study_date}-{person.birth_date}")
    ds.RetrieveURL = f"https://{HOST}/wado-rs/studies/{uids['study']}"
    ds.ProcedureCodeSequence = Sequence([_code(person.ids[0], "99LOCAL", f"XR Chest {family} ({INSTITUTION})")])
    ds.PerformedProtocolCodeSequence = Sequence([_code(STATION, "L", f"Chest PA {STATION} {person.ids[0]}")])
    ds.RequestedProcedureCodeSequence = Sequence([_code(re.sub(r"\D", "", person.ids[0])[:8] or "1", "SCT",
                                                        f"Chest {family}")])
    ds.AnatomicRegionSequence = Sequence([_code("51185008", "SCT", f"Chest of {family}")])
    ds.BurnedInAnnotation = source.burned_in
    if source.burned_in is None:
        del ds.BurnedInAnnotation
    ds.private_block(0x0029, "ACME PRIVATE", create=True).add_new(0x10, "LO", person.ids[0])
    if source.comment_in_frames:
        _plant_frame_comments(ds, f"PATIENT {family} MRN{person.ids[0]} {person.birth_date}")
    if source.high_bits:
        _plant_high_bits(ds)


def _other_id(patient_id: str) -> Dataset:
    item = Dataset()
    item.PatientID = patient_id
    item.TypeOfPatientID = "TEXT"
    return item


def _plant_frame_comments(ds: Dataset, text: str) -> None:
    """A COM segment after SOI (JPEG) or after SIZ (JPEG 2000) in every frame."""
    payload = text.encode("utf-8")
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    planted = []
    for frame in frames:
        if frame[:2] == b"\xff\xd8":
            planted.append(frame[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + frame[2:])
        else:
            end_of_siz = 4 + int.from_bytes(frame[4:6], "big")
            body = b"\x00\x01" + payload
            planted.append(frame[:end_of_siz] + b"\xff\x64" + (len(body) + 2).to_bytes(2, "big") + body
                           + frame[end_of_siz:])
    ds.PixelData = encapsulate(planted, has_bot=True)
    ds["PixelData"].is_undefined_length = True


def _plant_high_bits(ds: Dataset) -> None:
    """12 bits stored in 16, and a rectangle drawn in bit 15 (an overlay the 60xx removal misses)."""
    big = ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
    dtype = np.dtype(">u2" if big else "<u2")
    values = np.frombuffer(ds.PixelData, dtype=dtype).copy().reshape(ds.Rows, ds.Columns)
    values = np.clip(values.astype(np.int32), 0, 4095).astype(dtype)
    values[4:12, 4:40] |= 0x8000
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
    ds.PixelData = values.tobytes()


def report_of(source: Source, person: Person, other_accessions: list[str]) -> SignedReport:
    day = dt.datetime.strptime(source.study_date, "%Y%m%d").date()
    birth = dt.datetime.strptime(person.birth_date, "%Y%m%d").date()
    names = ", ".join(person.written_names)
    digits = re.sub(r"\D", "", person.ids[0])
    findings = (f"Patient {names} (MRN{digits}, ID_{digits}, 0{digits}; also {', '.join(person.ids)}) examined "
                f"{day.strftime('%d-%b-%Y')}, {day.day}. {day.month}. {day.year}, {day.year}年{day.month}月{day.day}日, "
                f"{day.strftime('%d/%m/%y')} and {day.strftime('%B')} {day.day}, {day.year}. Born "
                f"{birth.day}.{birth.month}.{birth.strftime('%y')}. Prior {', '.join(other_accessions)}. "
                f"Lungs are clear. No pleural effusion. 5 mm nodule close to the fissure, stable.")
    impression = (f"No acute process. Call {person.phone} or {person.email}; lives at {person.address}. "
                  f"Images at https://{HOST}/viewer?study=1.2.826.0.1.3680043.2.1125.{digits}. "
                  f"Ref 12345678901. Signed Řezníčková, Bohumila at {INSTITUTION}.")
    return SignedReport(study_uid="", findings=findings, impression=impression, signed_by=SIGNER)


@dataclasses.dataclass
class Planted:
    store: Path
    values: list[str]
    cjk_values: list[str]
    studies: dict[str, str]  # source key -> original study UID


def build_store(root: Path) -> Planted:
    store = Store(StoreSettings(root))
    values: set[str] = {INSTITUTION, HOST, STATION, SIGNER, "Wenceslas", "Řezníčková", "Bohumila"}
    cjk: set[str] = set()
    studies: dict[str, str] = {}
    accessions = {s.key: f"ACC{s.patient_id[-6:]}{s.key[:2].upper()}" for s in SOURCES}
    try:
        for source in SOURCES:
            person = PEOPLE[source.person]
            ds = _source(source.file)
            uids = {kind: pydicom.uid.generate_uid() for kind in ("study", "series", "instance")}
            plant(ds, source, person, uids)
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            store.put(ReceivedInstance.from_part10(buffer.getvalue(), calling_ae="MODALITY1"))
            store.index.transition(uids["study"], StudyState.STABLE)
            others = [accessions[s.key] for s in SOURCES if s.person == source.person and s.key != source.key]
            report = dataclasses.replace(report_of(source, person, others), study_uid=uids["study"])
            sign_report(store.index, report, now=dt.datetime(2025, 3, 1, 9, 30).timestamp())
            studies[source.key] = uids["study"]
            values.update(uids.values())
            values.update({accessions[source.key], f"ST{source.patient_id[-5:]}", source.study_date,
                           dt.datetime.strptime(source.study_date, "%Y%m%d").date().isoformat()})
            values.update(written_dates(source.study_date) + written_dates(person.birth_date))
            values.update(identity_values(person))
            cjk.update(v for v in identity_values(person) | set(person.written_names) if is_cjk(v))
    finally:
        store.close()
    values.add(str(root))
    values.add(root.parent.name)
    return Planted(root, sorted(v for v in values if len(v) >= 4 and not is_cjk(v)), sorted(cjk), studies)


def identity_values(person: Person) -> set[str]:
    values = {person.phone, person.email, person.address, *person.ids}
    values.update(re.sub(r"\D", "", i) for i in person.ids if len(re.sub(r"\D", "", i)) >= 5)
    for group in person.name.split("="):
        values.update(part for part in group.split("^") if part)
    values.update(word for word in re.split(r"[\s,]+", person.address)
                  if len(word) >= 4 and word.lower() not in ("close", "lane", "terrace", "street", "road"))
    values.update(re.sub(r"[\s()+-]", "", person.phone)[-7:] for _ in (0,))
    values.update(person.written_names)
    return values


def written_dates(value: str) -> list[str]:
    day = dt.datetime.strptime(value, "%Y%m%d").date()
    return [value, day.isoformat(), day.strftime("%d/%m/%Y"), day.strftime("%m/%d/%Y"), day.strftime("%d.%m.%Y"),
            day.strftime("%d-%b-%Y"), f"{day.day}. {day.month}. {day.year}", f"{day.year}年{day.month}月{day.day}日",
            f"{day.strftime('%B')} {day.day}, {day.year}", f"{day.day} {day.strftime('%B')} {day.year}",
            day.strftime("%d/%m/%y"), f"{day.day}.{day.month}.{day.strftime('%y')}"]


# -- the scanner (independent of the scrubber's folding) -------------------------------------------------------
_TRANSLIT = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ø": "oe", "å": "aa", "æ": "ae"}
_PLAIN = {"ß": "ss", "ø": "o", "æ": "ae", "ł": "l", "đ": "d"}
_CODECS = ("utf-8", "latin-1", "iso8859_2", "utf-16-le", "utf-16-be")
_CJK_CODECS = ("utf-8", "shift_jis", "euc_jp", "iso2022_jp", "euc_kr", "gb18030")


def is_cjk(text: str) -> bool:
    return any(0x2E80 <= ord(c) < 0xA000 or 0xAC00 <= ord(c) < 0xD7B0 for c in text)


def fold(text: str) -> str:
    lowered = "".join(_PLAIN.get(c, c) for c in text.lower())
    return "".join(c for c in unicodedata.normalize("NFKD", lowered) if not unicodedata.combining(c))


def scanner_variants(value: str) -> set[str]:
    """The forms a planted value may take in the output: as written, folded, transliterated, and without
    the separators of IDs and phone numbers."""
    forms = {value.lower(), fold(value), fold("".join(_TRANSLIT.get(c, c) for c in value.lower()))}
    if re.search(r"\d", value) and not re.search(r"[a-z]{4,}", fold(value)):
        forms.add(re.sub(r"[\s()./+-]", "", fold(value)))
    return {f for f in forms if len(f) >= 4}


def leaks_in_text(text: str, values: list[str], cjk: list[str]) -> list[str]:
    folded = fold(text)
    squeezed = re.sub(r"[\s()./+-]", "", folded)
    found = [v for v in values for form in scanner_variants(v) if _contains(folded, form)
             or (form.isalnum() and any(c.isdigit() for c in form) and _contains(squeezed, form))]
    found += [v for v in cjk if v in text]
    return sorted(set(found))


def _contains(text: str, form: str) -> bool:
    """Numbers count only where they stand alone (a date "1.1.70" is no leak inside a UID "2.25.1.1.70")."""
    if not re.fullmatch(r"[\d./\s-]+", form):
        return form in text
    return re.search(rf"(?<![\d.]){re.escape(form)}(?![\d]|\.\d)", text) is not None


def decoded_texts(ds: Dataset) -> list[str]:
    texts = [str(elem.value) for elem in ds.file_meta]
    for elem in ds.iterall():
        if elem.VR not in ("SQ", "OB", "OW", "OF", "OD", "UN"):
            texts.append(str(elem.value))
    return texts


def _encoded(value: str, codec: str) -> bytes:
    try:
        return value.encode(codec)
    except UnicodeEncodeError:
        return b"\x00never\x00"


def scan(out: Path, planted: Planted) -> dict[str, list[str]]:
    leaks: dict[str, list[str]] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        texts = [raw.decode(codec, errors="ignore") for codec in _CODECS]
        found = set()
        for text in texts:
            found.update(leaks_in_text(text, planted.values, []))
        for codec in _CJK_CODECS:
            found.update(v for v in planted.cjk_values if len(v) >= 2 and _encoded(v, codec) in raw)
        if path.suffix == ".dcm":
            found.update(leaks_in_text("\n".join(decoded_texts(pydicom.dcmread(path))), planted.values,
                                       planted.cjk_values))
        if found:
            leaks[str(path.relative_to(out))] = sorted(found)
    return leaks


# -- the run ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Planted:
    return build_store(tmp_path_factory.mktemp("adversarial-site") / "store")


@pytest.fixture(scope="module")
def exported(planted, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("adversarial-out") / "dataset"
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        status = main(["dataset", "--from-store", str(planted.store), "--out", str(out), "--progress", "none"])
    finally:
        logging.getLogger().removeHandler(handler)
    assert status == 0
    return out, "\n".join(record.getMessage() for record in records)


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text(encoding="utf-8").splitlines()]


def test_the_planted_values_are_really_in_the_store(planted):
    """The scanner finds what it looks for: every study file of the store holds planted values."""
    files = [p for p in (planted.store).rglob("*.dcm")] or [p for p in planted.store.rglob("*") if p.is_file()
                                                             and p.stat().st_size > 1000]
    assert files
    hits = [leaks_in_text(p.read_bytes().decode("utf-8", errors="ignore"), planted.values, planted.cjk_values)
            for p in files if p.stat().st_size > 1000]
    assert sum(1 for h in hits if h) >= len(SOURCES) - 1


def test_no_output_byte_or_element_holds_a_planted_value(planted, exported, capsys):
    out, logged = exported
    assert scan(out, planted) == {}
    assert leaks_in_text(logged + capsys.readouterr().err, planted.values, planted.cjk_values) == []


def test_reports_keep_their_medicine(exported):
    out, _ = exported
    for record in manifest(out):
        findings, impression = record["report"]["findings"], record["report"]["impression"]
        assert "Lungs are clear. No pleural effusion. 5 mm nodule close to the fissure, stable." in findings
        assert impression.startswith("No acute process. Call [PHONE] or [EMAIL]; lives at [ADDRESS]")
        assert "[URL]" in impression and "[NAME]" in findings
        assert re.search(r"\b(?:19|20)\d\d-\d\d-\d\d\b", findings)  # dates are shifted, not dropped


def test_burned_in_risk_is_excluded_and_counted(exported):
    out, _ = exported
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["excluded"]["burned_in_risk"] == len(RISKY)
    assert summary["total_studies"] == len(SOURCES) - len(RISKY)
    assert summary["excluded"]["pixel_data_not_cleanable"] == 0
    assert {record["modality"] for record in manifest(out)} >= {"US", "CT", "MR", "NM", "OT"}


def test_one_person_under_two_ids_is_one_patient_in_one_split(exported):
    out, _ = exported
    records = manifest(out)
    studies_of: dict[str, list[dict]] = {}
    for record in records:
        studies_of.setdefault(record["patient_id"], []).append(record)
    people = {s.person for s in SOURCES if s.key not in RISKY}
    assert len(studies_of) == len(people)
    for studies in studies_of.values():
        assert len({r["split"] for r in studies}) == 1


def test_pixels_hold_no_side_data_and_keep_their_values(planted, exported):
    out, _ = exported
    log = json.loads((out / LOG_NAME).read_text())
    assert log["pixel_side_data_removed"]["COM"] >= 3
    assert log["pixel_side_data_removed"]["bits outside Bits Stored"] == 2
    for record in manifest(out):
        for image in record["images"]:
            ds = pydicom.dcmread(out / image)
            syntax = ds.file_meta.TransferSyntaxUID
            if not syntax.is_compressed and ds.BitsStored < ds.BitsAllocated:
                big = syntax == pydicom.uid.ExplicitVRBigEndian
                values = np.frombuffer(ds.PixelData, dtype=">u2" if big else "<u2")
                assert not np.any(values >> (ds.HighBit + 1))
            if syntax.is_compressed and syntax != pydicom.uid.RLELossless:
                frames = generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1))
                for frame in frames:
                    assert b"\xff\xfe" not in frame[:64] and b"\xff\x64" not in frame[:256]
            assert ds.pixel_array.size > 0


def test_descriptors_codes_dates_and_markers(exported):
    out, _ = exported
    for record in manifest(out):
        for image in record["images"]:
            ds = pydicom.dcmread(out / image)
            assert "RetrieveURL" not in ds
            assert ds.Modality == record["modality"]  # a coded string the allow-list must keep
            for keyword in ("PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "SOPClassUID"):
                assert ds.get(keyword) not in (None, ""), keyword
            codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
            assert codes == ["113100", "113107", "113101", "113104", "113105"]
            anatomy = ds.AnatomicRegionSequence[0]
            assert (anatomy.CodeValue, anatomy.CodingSchemeDesignator) == ("51185008", "SCT")
            for keyword in ("ProcedureCodeSequence", "PerformedProtocolCodeSequence",
                            "RequestedProcedureCodeSequence"):
                for item in ds.get(keyword) or ():
                    assert item.CodingSchemeDesignator in ("99RADDRAFT", "SCT", "DCM", "LN")
            families = {re.sub(r"[^A-Z0-9 ]", "", fold(p.name.split("^")[0]).upper()) for p in PEOPLE.values()} - {""}
            assert ds.SeriesDescription == "PA" and not set(ds.ImageType) & families
            assert ds.get("BodyPartExamined") not in families and len(ds.ImageType) >= 2  # the listed values stay
            start, end = (_day(part) for part in str(ds.get(_range_date_keyword())).split("-"))
            originals = [(_day(s.study_date), _day(PEOPLE[s.person].birth_date)) for s in SOURCES]
            low, high = SHIFT_DAYS  # shifted back by the patient's keyed offset (the key differs each run)
            assert any(low <= (first - start).days <= high for first, _ in originals)
            assert all(start != first for first, _ in originals)
            assert any(end - start == last - first for first, last in originals)  # both ends, one offset


def _day(value: str) -> dt.date:
    return dt.datetime.strptime(value, "%Y%m%d").date()


def test_dataset_json_holds_no_path(planted, exported):
    out, _ = exported
    summary = (out / SUMMARY_NAME).read_text()
    assert str(planted.store) not in summary and "/" not in json.loads(summary).get("source_store", "")
    assert str(out) not in summary
