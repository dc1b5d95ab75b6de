"""PNG encoding of an 8-bit grey or RGB image with the standard library (zlib): the runtime carries no
imaging library, and the rendered frames of WADO-RS need nothing more."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(image: np.ndarray, level: int = 6) -> bytes:
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 grey or RGB image, got {image.dtype} {image.shape}")
    rows, cols = image.shape[:2]
    colour_type = 0 if image.ndim == 2 else 2
    filtered = np.zeros((rows, 1 + cols * (1 if image.ndim == 2 else 3)), np.uint8)  # filter 0 per row
    filtered[:, 1:] = image.reshape(rows, -1)
    header = struct.pack(">IIBBBBB", cols, rows, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(filtered.tobytes(), level)) + _chunk(b"IEND", b""))
