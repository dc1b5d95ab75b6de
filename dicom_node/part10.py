"""DICOM Part 10 framing for received datasets: preamble + file meta, encoded without pydicom's
generic writer (which costs more per instance than the rest of the store path)."""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID

IMPLEMENTATION_VERSION_NAME = "RADDRAFT_010"
PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"UN", b"SQ", b"UT", b"OW"):
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def file_meta_prefix(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str = "") -> bytes:
    """Preamble, 'DICM' and the File Meta Information group, in Explicit VR Little Endian."""
    body = b"".join((
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _uid(sop_class_uid)),
        _element(0x0003, b"UI", _uid(sop_instance_uid)),
        _element(0x0010, b"UI", _uid(transfer_syntax)),
        _element(0x0012, b"UI", _uid(str(PYNETDICOM_IMPLEMENTATION_UID))),
        _element(0x0013, b"SH", _text(IMPLEMENTATION_VERSION_NAME)),
        _element(0x0016, b"AE", _text(source_ae)) if source_ae else b"",
    ))
    return PREAMBLE + _element(0x0000, b"UL", struct.pack("<I", len(body))) + body
