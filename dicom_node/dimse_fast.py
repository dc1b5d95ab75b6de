"""The C-STORE response encoded by hand: the one message this node sends for every instance.

pynetdicom turns a response primitive into a pydicom Dataset and encodes it with pydicom's writer,
about 1 ms of Python per instance. A C-STORE-RSP with a bare status is seven fixed elements of
an Implicit VR Little Endian command set (PS3.7 9.3.1.2), written here in a few microseconds; any
other response (with an Error Comment, an Offending Element, a dataset) goes through pynetdicom.
"""

from __future__ import annotations

import struct

from pynetdicom.dimse_primitives import C_STORE

_C_STORE_RSP = 0x8001
_NO_DATASET = 0x0101


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def encode_store_response(primitive) -> bytes | None:
    """The encoded command set of a plain C-STORE-RSP primitive; None for anything else."""
    if type(primitive) is not C_STORE or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.DataSet is not None or primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    status = primitive.Status
    if not isinstance(status, int):
        return None
    parts = []
    if primitive.AffectedSOPClassUID is not None:
        parts.append(_element(0x0002, _uid(str(primitive.AffectedSOPClassUID))))
    parts += [_element(0x0100, struct.pack("<H", _C_STORE_RSP)),
              _element(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo)),
              _element(0x0800, struct.pack("<H", _NO_DATASET)),
              _element(0x0900, struct.pack("<H", status))]
    if primitive.AffectedSOPInstanceUID is not None:
        parts.append(_element(0x1000, _uid(str(primitive.AffectedSOPInstanceUID))))
    body = b"".join(parts)
    return _element(0x0000, struct.pack("<I", len(body))) + body
