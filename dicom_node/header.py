"""Read the attributes the index needs from an encoded instance, without touching pixel data."""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import Tag

from dicom_node.errors import InvalidInstanceError
from dicom_node.header_fast import header_fields, scan_raw_values

# Lenient on leading zeros (common in the field), strict on everything that breaks paths or queries.
_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")

@dataclass(frozen=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    referring_physician: str = ""
    modality: str = ""
    body_part: str = ""
    series_number: int | None = None
    series_description: str = ""
    instance_number: int | None = None
    view_position: str = ""


def is_valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and bool(_UID_PATTERN.match(value))


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed value in an optional attribute must not reject the instance
        return ""
    if value is None:
        return ""
    try:
        return str(value).strip().replace("\x00", "")
    except Exception:
        return ""


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except Exception:
        return None


def _uid_text(ds: Dataset, keyword: str) -> str:
    """A UID as received, less its padding (one trailing NUL or spaces): a NUL inside stays and fails."""
    try:
        value = ds.get(keyword)
        text = "" if value is None else str(value)
    except Exception:
        return ""
    return text.strip(" ").removesuffix("\x00").strip(" ")


def _required_uid(ds: Dataset, keyword: str) -> str:
    return _checked_uid(_uid_text(ds, keyword), keyword)


def _checked_uid(value: str, keyword: str) -> str:
    if not value:
        raise InvalidInstanceError(f"{keyword} is missing")
    if not is_valid_uid(value):
        raise InvalidInstanceError(f"{keyword} is malformed: {value[:80]!r}")
    return value


IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
_DEFLATED = frozenset({DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"})
# Every attribute the header needs sorts before this tag, so parsing stops there.
_LAST_HEADER_TAG = Tag(0x0020, 0x0013)


def _past_header(tag, vr, length) -> bool:
    return tag > _LAST_HEADER_TAG


def read_header_from_dataset(dataset: bytes | bytearray | memoryview, transfer_syntax: str) -> InstanceHeader:
    """Parse an encoded dataset (no file meta) in `transfer_syntax` up to the last attribute we index.

    Raises InvalidInstanceError (undecodable=True when it cannot be parsed at all).
    """
    if transfer_syntax not in _DEFLATED:
        raw = scan_raw_values(dataset, explicit_vr=transfer_syntax != IMPLICIT_VR_LITTLE_ENDIAN,
                              little_endian=transfer_syntax != EXPLICIT_VR_BIG_ENDIAN)
        fields = header_fields(raw) if raw is not None else None
        if fields is not None:
            return header_from_fields(fields)
    try:
        if transfer_syntax in _DEFLATED:
            dataset = zlib.decompressobj(-zlib.MAX_WBITS).decompress(bytes(dataset))
        ds = read_dataset(
            io.BytesIO(dataset),
            is_implicit_VR=transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN,
            is_little_endian=transfer_syntax != EXPLICIT_VR_BIG_ENDIAN,
            stop_when=_past_header,
        )
    except Exception as exc:  # pydicom raises a wide range of errors on garbage
        raise InvalidInstanceError(f"dataset does not decode: {type(exc).__name__}: {exc}", undecodable=True) from exc
    if len(ds) == 0:
        raise InvalidInstanceError("dataset does not decode: no elements", undecodable=True)
    return header_from_dataset(ds)


def header_from_fields(fields: dict[str, object]) -> InstanceHeader:
    """The header from values already decoded (header_fast); the UIDs are checked as pydicom's path checks them."""
    uids = {}
    for name, keyword in (("sop_class_uid", "SOPClassUID"), ("sop_instance_uid", "SOPInstanceUID"),
                          ("study_uid", "StudyInstanceUID"), ("series_uid", "SeriesInstanceUID")):
        uids[name] = _checked_uid(str(fields.get(name, "")), keyword)
    return InstanceHeader(**{**fields, **uids})


def header_from_dataset(ds: Dataset) -> InstanceHeader:
    return InstanceHeader(
        sop_class_uid=_required_uid(ds, "SOPClassUID"),
        sop_instance_uid=_required_uid(ds, "SOPInstanceUID"),
        study_uid=_required_uid(ds, "StudyInstanceUID"),
        series_uid=_required_uid(ds, "SeriesInstanceUID"),
        patient_name=_text(ds, "PatientName"),
        patient_id=_text(ds, "PatientID"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex"),
        accession_number=_text(ds, "AccessionNumber"),
        study_id=_text(ds, "StudyID"),
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        study_description=_text(ds, "StudyDescription"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        instance_number=_int(ds, "InstanceNumber"),
        view_position=_text(ds, "ViewPosition"),
    )
