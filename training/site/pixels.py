"""Clean Pixel Data for what the encoding itself carries (DICOM PS3.15 E.3.1), without re-encoding:

- Encapsulated JPEG, JPEG-LS and JPEG 2000 frames: application (APPn) and comment (COM) segments go; an
  encoder writes text there (a comment naming the patient, EXIF, a thumbnail). The JFIF and Adobe segments
  that tell a decoder the colour transform are rebuilt from their fixed fields only. The frames are then
  decoded before and after and must be equal, else the instance is refused.
- Native pixel data: bits above High Bit (and below the stored bits) are zeroed; an overlay drawn there
  survives the removal of the 60xx group otherwise.
- Encodings whose side data cannot be cleaned here (MPEG, HEVC, JPEG 2000 in a JP2 wrapper, comments inside
  JPEG 2000 tile-part headers) refuse the instance.

What is burned into the pixel values themselves is not read here: `risk.py` keeps such images out.
"""

from __future__ import annotations

import struct

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import UID

JPEG_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                           "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
                          "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                          "1.2.840.10008.1.2.4.203"})
RLE_SYNTAX = "1.2.840.10008.1.2.5"
_SOI, _EOI, _SOS, _COM = 0xD8, 0xD9, 0xDA, 0xFE
_APP0, _APP14 = 0xE0, 0xEE
_COLOUR_SEGMENTS = frozenset({"APP0", "APP14"})  # rebuilt, and read by decoders
_J2K_SOC, _J2K_SOT, _J2K_COM = 0xFF4F, 0xFF90, 0xFF64


class PixelCleaningError(Exception):
    """The pixel data carries side data that cannot be removed without re-encoding."""


def clean_pixel_data(ds: Dataset) -> list[str]:
    """Clean `ds`'s pixel data in place; the names of what was removed (for the log)."""
    if "PixelData" not in ds:
        return []
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if not syntax.is_compressed:
        return _zero_unused_bits(ds)
    if syntax == RLE_SYNTAX:
        return []  # RLE segments hold pixel values only
    if syntax in JPEG_SYNTAXES:
        return _clean_frames(ds, strip_jpeg_segments)
    if syntax in J2K_SYNTAXES:
        return _clean_frames(ds, strip_j2k_comments)
    raise PixelCleaningError(f"transfer syntax {syntax.name} may carry side data that is not cleaned here")


def _clean_frames(ds: Dataset, strip) -> list[str]:
    frames_count = int(ds.get("NumberOfFrames", 1) or 1)
    frames = list(generate_frames(ds.PixelData, number_of_frames=frames_count))
    cleaned, removed = [], []
    for frame in frames:
        new, names = strip(frame)
        cleaned.append(new)
        removed += names
    if cleaned == frames:
        return []
    before = _decoded(ds)
    ds.PixelData = encapsulate(cleaned, has_bot=True)
    ds["PixelData"].is_undefined_length = True
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]
    after = _decoded(ds)
    if before is None and after is None and not set(removed) & _COLOUR_SEGMENTS:
        return sorted(set(removed))  # no decoder here; comments and other APPn never change decoding
    if before is None or after is None or not np.array_equal(before, after):
        raise PixelCleaningError("removing the JPEG side data would change the decoded image")
    return sorted(set(removed))


def _decoded(ds: Dataset) -> np.ndarray | None:
    try:
        from pydicom.pixels import pixel_array

        return pixel_array(ds, raw=True)
    except Exception:  # noqa: BLE001 - no decoder for this encoding, or a broken stream: cannot verify
        return None


# -- JPEG (ISO 10918, ISO 14495) -------------------------------------------------------------------------
def strip_jpeg_segments(stream: bytes) -> tuple[bytes, list[str]]:
    """`stream` without APPn and COM segments (JFIF and Adobe rebuilt from their fixed fields), and the
    names of the segments removed. Entropy-coded data is copied byte for byte."""
    data = bytes(stream)
    if len(data) < 4 or data[0] != 0xFF or data[1] != _SOI:
        raise PixelCleaningError("a JPEG frame does not start with SOI")
    out, removed, pos = bytearray(data[:2]), [], 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise PixelCleaningError("a JPEG frame has data outside a segment")
        marker = data[pos + 1] if pos + 1 < len(data) else _EOI
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == _EOI or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out += data[pos:pos + 2]
            pos += 2
            if marker == _EOI:
                if data[pos:].strip(b"\x00"):
                    removed.append("data after EOI")
                break
            continue
        if pos + 4 > len(data):
            raise PixelCleaningError("a JPEG frame ends inside a segment header")
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        segment = data[pos:pos + 2 + length]
        pos += 2 + length
        if 0xE0 <= marker <= 0xEF or marker == _COM:
            removed.append("COM" if marker == _COM else f"APP{marker - 0xE0}")
            out += _rebuilt_app(marker, segment[4:])
            continue
        out += segment
        if marker == _SOS:
            end = _entropy_end(data, pos)
            out += data[pos:end]
            pos = end
    if not removed:
        return data, []
    if len(out) % 2:
        out += b"\x00"  # fragments are of even length
    return bytes(out), removed


def _entropy_end(data: bytes, pos: int) -> int:
    """The index of the first marker after entropy-coded data: 0xFF followed by a byte from 0x80 on that is
    not RSTn (JPEG stuffs 0x00 after 0xFF, JPEG-LS a byte below 0x80)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following < 0x80 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1
            continue
        return pos


def _rebuilt_app(marker: int, payload: bytes) -> bytes:
    """JFIF (APP0) and Adobe (APP14) segments tell the decoder about colour; only their fixed fields stay
    (no thumbnail). Every other application segment goes."""
    if marker == _APP0 and payload.startswith(b"JFIF\x00") and len(payload) >= 14:
        body = payload[:12] + b"\x00\x00"  # identifier, version, units, densities; no thumbnail
    elif marker == _APP14 and payload.startswith(b"Adobe") and len(payload) >= 12:
        body = payload[:12]  # identifier, version, flags0, flags1, transform
    else:
        return b""
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


# -- JPEG 2000 (ISO 15444) -------------------------------------------------------------------------------
def strip_j2k_comments(stream: bytes) -> tuple[bytes, list[str]]:
    """A JPEG 2000 codestream without the comment segments of its main header. Comments in tile-part
    headers would change tile lengths that other markers record: refused."""
    data = bytes(stream)
    if len(data) < 4 or struct.unpack(">H", data[:2])[0] != _J2K_SOC:
        raise PixelCleaningError("a JPEG 2000 frame is not a bare codestream (a JP2 wrapper carries boxes)")
    out, removed, pos = bytearray(data[:2]), [], 2
    while pos + 4 <= len(data):
        marker, length = struct.unpack(">HH", data[pos:pos + 4])
        if marker == _J2K_SOT:
            rest = data[pos:]
            if _J2K_COM.to_bytes(2, "big") in _tile_headers(rest):
                raise PixelCleaningError("a JPEG 2000 tile-part header holds a comment")
            out += rest
            break
        segment = data[pos:pos + 2 + length]
        pos += 2 + length
        if marker == _J2K_COM:
            removed.append("COM")
            continue
        out += segment
    else:
        out += data[pos:]
    return (data if not removed else bytes(out) + (b"\x00" if len(out) % 2 else b"")), removed


def _tile_headers(data: bytes) -> bytes:
    """The tile-part headers (SOT up to SOD) of a codestream's tile parts, concatenated."""
    headers, pos = bytearray(), 0
    while pos + 10 <= len(data) and struct.unpack(">H", data[pos:pos + 2])[0] == _J2K_SOT:
        psot = struct.unpack(">I", data[pos + 6:pos + 10])[0]
        sod = data.find(b"\xff\x93", pos)
        headers += data[pos + 12:sod if sod > 0 else len(data)]
        if psot == 0 or sod < 0:
            break
        pos += psot
    return bytes(headers)


# -- native pixel data -------------------------------------------------------------------------------------
def _zero_unused_bits(ds: Dataset) -> list[str]:
    allocated, stored = int(ds.get("BitsAllocated", 0) or 0), int(ds.get("BitsStored", 0) or 0)
    high = int(ds.get("HighBit", stored - 1) if ds.get("HighBit") is not None else stored - 1)
    if allocated not in (8, 16, 32) or not 0 < stored < allocated:
        return []
    low = high - stored + 1
    if low < 0 or high >= allocated:
        raise PixelCleaningError("High Bit and Bits Stored do not fit Bits Allocated")
    mask = ((1 << stored) - 1) << low
    big_endian = ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
    dtype = np.dtype(f"{'>' if big_endian else '<'}u{allocated // 8}")
    raw = bytes(ds.PixelData)
    usable = len(raw) - len(raw) % dtype.itemsize
    values = np.frombuffer(raw[:usable], dtype=dtype)
    if not np.any(values & ~np.array(mask, dtype=dtype)):
        return []
    cleaned = (values & np.array(mask, dtype=dtype)).astype(dtype).tobytes() + raw[usable:]
    ds.PixelData = cleaned
    return ["bits outside Bits Stored"]
