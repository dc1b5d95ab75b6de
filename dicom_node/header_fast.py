"""The index's attributes read straight from the encoded bytes, for the common case.

pydicom's reader costs about 2 ms per instance for the ~100 elements before (0020,0013), most of
it building objects for values the index never looks at. Here the top-level elements are stepped
over by their lengths and only the ~20 values the index needs are decoded. Anything unusual (an
undefined length, an unknown VR, a multi-valued or non-ASCII value outside UTF-8 and Latin-1, a
cut element) returns None, and the caller uses pydicom's reader, so the result is always the one
pydicom would give.
"""

from __future__ import annotations

import struct

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
                        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
_UNDEFINED = 0xFFFFFFFF
_LAST_HEADER_TAG = 0x00200013
_SPECIFIC_CHARACTER_SET = 0x00080005
# Character sets whose values Python decodes exactly as pydicom does (others go through pydicom).
_CODECS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}

# tag -> (InstanceHeader field, kind): "uid", "text" or "int".
WANTED = {
    0x00080016: ("sop_class_uid", "uid"), 0x00080018: ("sop_instance_uid", "uid"),
    0x0020000D: ("study_uid", "uid"), 0x0020000E: ("series_uid", "uid"),
    0x00100010: ("patient_name", "text"), 0x00100020: ("patient_id", "text"),
    0x00100030: ("patient_birth_date", "text"), 0x00100040: ("patient_sex", "text"),
    0x00080050: ("accession_number", "text"), 0x00200010: ("study_id", "text"),
    0x00080020: ("study_date", "text"), 0x00080030: ("study_time", "text"),
    0x00081030: ("study_description", "text"), 0x00080090: ("referring_physician", "text"),
    0x00080060: ("modality", "text"), 0x00180015: ("body_part", "text"),
    0x00200011: ("series_number", "int"), 0x0008103E: ("series_description", "text"),
    0x00200013: ("instance_number", "int"), 0x00185101: ("view_position", "text"),
}


def scan_raw_values(data: bytes | bytearray | memoryview, *, explicit_vr: bool, little_endian: bool = True
                    ) -> dict[int, bytes] | None:
    """Raw values of the wanted tags (and the character set) at the top level, up to (0020,0013);
    None when the data needs pydicom's reader."""
    view = memoryview(data).cast("B")
    end = len(view)
    order = "<" if little_endian else ">"
    explicit_header = struct.Struct(order + "HH2sH")
    implicit_header = struct.Struct(order + "HHI")
    long_length = struct.Struct(order + "I")
    found: dict[int, bytes] = {}
    pos = elements = 0
    while pos + 8 <= end:
        if explicit_vr:
            group, element, vr, length = explicit_header.unpack_from(view, pos)
            if vr in _SHORT_VRS:
                pos += 8
            elif vr in _LONG_VRS:
                if pos + 12 > end:
                    return None
                length = long_length.unpack_from(view, pos + 8)[0]
                pos += 12
            else:
                return None
        else:
            group, element, length = implicit_header.unpack_from(view, pos)
            pos += 8
        tag = group << 16 | element
        if tag > _LAST_HEADER_TAG:
            return found if elements else None
        if length == _UNDEFINED or pos + length > end:
            return None
        elements += 1
        if tag in WANTED or tag == _SPECIFIC_CHARACTER_SET:
            found[tag] = bytes(view[pos:pos + length])
        pos += length
    return found if pos == end and elements else None


def _int(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def header_fields(raw: dict[int, bytes]) -> dict[str, object] | None:
    """InstanceHeader's keyword arguments from `scan_raw_values`' result; None to defer to pydicom."""
    charset = raw.get(_SPECIFIC_CHARACTER_SET, b"").decode("latin_1").strip(" \0")
    codec = _CODECS.get(charset)
    if codec is None:
        return None
    fields: dict[str, object] = {}
    for tag, value in raw.items():
        if tag == _SPECIFIC_CHARACTER_SET:
            continue
        name, kind = WANTED[tag]
        if b"\\" in value:
            return None  # multi-valued: pydicom's reading of it is the reference
        if value.isascii():
            text = value.decode("ascii")
        elif kind == "text":
            try:
                text = value.decode(codec)
            except UnicodeDecodeError:
                return None
        else:
            return None
        text = text.rstrip("\0 ")
        if kind == "uid":
            fields[name] = text.strip(" ")
        elif kind == "int":
            fields[name] = _int(text)
        else:
            fields[name] = text.strip().replace("\x00", "")
    return fields
