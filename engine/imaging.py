"""Pixel transforms shared by the engine and the training code: DICOM pixels -> a display-ready [0, 1]
image -> a square model input. numpy only (no Pillow, no torch), deterministic, vectorised.

- `decode_first_frame(ds)`: the stored values of the first frame (compressed syntaxes via pylibjpeg).
- `image_to_unit(ds, window)`: Modality LUT, VOI LUT / window (or min-max / percentile), MONOCHROME1
  inverted (bone is bright), colour to luminance -> float32 [rows, cols] in [0, 1].
- `resize(image, rows, cols)`: area averaging when shrinking, bilinear (half-pixel centres) when growing.
- `to_square(image, size)`, `pad_to_square(image)`, `stitch(images)`.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from engine.errors import PreprocessError

log = logging.getLogger(__name__)

WINDOW_POLICIES = ("dicom", "minmax", "percentile")
PERCENTILES = (0.5, 99.5)
# Percentiles are taken on a regular subsample of at most about this many pixels (fast and deterministic).
STATS_SAMPLE = 1 << 18
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def sop_uid(ds: Dataset) -> str:
    return str(ds.get("SOPInstanceUID", "") or "(no SOP Instance UID)")


def has_pixels(ds: Dataset) -> bool:
    return any(keyword in ds for keyword in PIXEL_KEYWORDS)


class UndecodablePixels(PreprocessError):
    """The image is fine, but nothing installed decodes its transfer syntax (no decoder, or its plugin is
    missing): the study keeps it as received; the viewer says so and drafting goes on without it."""


def missing_decoder(transfer_syntax: str) -> str | None:
    """Why no installed decoder handles `transfer_syntax`, or None when one does."""
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import UID

    uid = UID(transfer_syntax)
    if not uid:
        return None
    if not uid.is_transfer_syntax:  # newer than this pydicom (JPEG XL in pydicom 3.0)
        return f"no decoder exists for transfer syntax {uid}"
    if not uid.is_compressed:
        return None
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"no decoder exists for {uid.name}"
    if decoder.is_available:
        return None
    missing = "; ".join(decoder.missing_dependencies) or "its plugins are not installed"
    return f"no decoder for {uid.name} is installed ({missing})"


def transfer_syntax_of(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""


def decode_first_frame(ds: Dataset) -> np.ndarray:
    """Stored values of frame 0: [rows, cols] or [rows, cols, samples]; `PreprocessError` names the image."""
    uid = sop_uid(ds)
    if not has_pixels(ds):
        raise PreprocessError(f"image {uid}: it has no pixel data")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        arr = pixel_array(ds, index=0 if frames > 1 else None)
    except Exception as error:  # noqa: BLE001 - pydicom and the pylibjpeg plugins raise many kinds on bad data
        why = missing_decoder(transfer_syntax_of(ds))
        if why:
            raise UndecodablePixels(f"image {uid}: its pixels cannot be decoded here: {why}") from None
        raise PreprocessError(f"image {uid}: its pixel data cannot be decoded "
                              f"({type(error).__name__}: {error})") from None
    if arr.ndim == 3 and frames > 1 and int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        arr = arr[0]  # a decoder that ignored `index`
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise PreprocessError(f"image {uid}: decoded pixel data has an unusable shape {arr.shape}")
    return arr


def image_to_unit(ds: Dataset, window: str = "dicom") -> np.ndarray:
    """The first frame as a display-ready float32 [rows, cols] image in [0, 1], bone bright.

    window: "dicom" applies the header's VOI LUT Sequence or first window (LINEAR, LINEAR_EXACT or SIGMOID),
        min-max when it has none; "minmax" and "percentile" (0.5-99.5 %) ignore the header's window.
    Pixels equal to Pixel Padding Value are left out of the min-max / percentile statistics.
    A constant image gives zeros.
    """
    if window not in WINDOW_POLICIES:
        raise PreprocessError(f"unknown window policy {window!r} (expected one of {WINDOW_POLICIES})")
    arr = decode_first_frame(ds)
    try:
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
        if photometric == "PALETTE COLOR" and arr.ndim == 2:
            arr = apply_color_lut(arr, ds)
        if arr.ndim == 3:
            bits = 0 if photometric == "PALETTE COLOR" else int(ds.get("BitsStored", 0) or 0)
            unit = _colour_to_unit(arr, window, bits)
        else:
            unit = _gray_to_unit(arr, ds, window, invert=photometric == "MONOCHROME1")
    except PreprocessError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, ArithmeticError) as error:
        raise PreprocessError(f"image {sop_uid(ds)}: its display transforms (LUTs, window) cannot be applied "
                              f"({type(error).__name__}: {error})") from None
    return np.ascontiguousarray(unit, dtype=np.float32)


def _colour_to_unit(arr: np.ndarray, window: str, bits: int) -> np.ndarray:
    """Luminance; "dicom" scales by the largest storable value (Bits Stored, or the palette's depth)."""
    if arr.shape[2] >= 3:
        luma = arr[..., 0].astype(np.float32) * LUMA[0]
        luma += arr[..., 1].astype(np.float32) * LUMA[1]
        luma += arr[..., 2].astype(np.float32) * LUMA[2]
    else:
        luma = arr[..., 0].astype(np.float32)
    if window == "dicom" and np.issubdtype(arr.dtype, np.integer):
        top = float((1 << bits) - 1) if 0 < bits <= 8 * arr.dtype.itemsize else float(np.iinfo(arr.dtype).max)
        return _affine_clip(luma, 1.0 / top, 0.0)
    lo, hi = _stats(luma, window, None)
    return _stretch(luma, lo, hi, invert=False)


def _gray_to_unit(arr: np.ndarray, ds: Dataset, window: str, invert: bool) -> np.ndarray:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    if window == "dicom":
        voi_lut = ds.get("VOILUTSequence")
        if voi_lut:
            return _apply_lut_sequence(arr, ds, invert)
    if "ModalityLUTSequence" in ds and ds.ModalityLUTSequence:
        values = apply_modality_lut(arr, ds).astype(np.float32, copy=False)
        slope, intercept = 1.0, 0.0
    else:
        values = arr
        slope = _float(ds.get("RescaleSlope"), 1.0) or 1.0
        intercept = _float(ds.get("RescaleIntercept"), 0.0)
    if window == "dicom":
        win = _first_window(ds)
        if win is not None:
            return _window(values, slope, intercept, *win, invert=invert)
        window = "minmax"
    padding = _float(ds.get("PixelPaddingValue"), None) if values is arr else None
    lo, hi = _stats(values, window, padding)
    lo, hi = sorted((slope * lo + intercept, slope * hi + intercept))
    # unit = (slope * x + intercept - lo) / (hi - lo), folded into one affine map of the stored values
    if hi <= lo:
        return np.zeros(values.shape, np.float32)
    gain, offset = slope / (hi - lo), (intercept - lo) / (hi - lo)
    if invert:
        gain, offset = -gain, 1.0 - offset
    return _affine_clip(values, gain, offset)


def header_window(ds: Dataset) -> tuple[float, float, str] | None:
    """(center, width, VOI LUT Function) of the header's first valid window; None when it has none. The
    one rule for which window an image comes with: the model's "dicom" policy and the viewer's default."""
    return _first_window(ds)


def window_gain_offset(center: float, width: float, function: str) -> tuple[float, float] | None:
    """The affine map to [0, 1] of the LINEAR / LINEAR_EXACT window (PS3.3 C.11.2.1.2/3), unknown
    functions read as LINEAR; None for SIGMOID, which is not affine (`window_values`)."""
    if function == "SIGMOID":
        return None
    if function == "LINEAR_EXACT":
        return 1.0 / width, -center / width + 0.5
    denominator = max(width - 1.0, 1e-6)
    return 1.0 / denominator, (-center + 0.5) / denominator + 0.5


def window_values(values: np.ndarray, center: float, width: float, function: str = "LINEAR",
                  invert: bool = False) -> np.ndarray:
    """`values` (modality values) through the window, float32 in [0, 1]; `invert` for MONOCHROME1."""
    return _window(values, 1.0, 0.0, center, width, function, invert)


def _first_window(ds: Dataset) -> tuple[float, float, str] | None:
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None:
        return None
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        log.info("image %s: ignoring invalid window center %r / width %r", sop_uid(ds), center, width)
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    return center, width, function


def _window(values: np.ndarray, slope: float, intercept: float, center: float, width: float,
            function: str, invert: bool) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2/3 windowing of `slope * values + intercept`, scaled to [0, 1]."""
    if function == "SIGMOID":
        # y = 1 / (1 + exp(-4 (v - c) / w))
        t = values.astype(np.float32)
        k = -4.0 / width
        t *= k * slope
        t += k * (intercept - center)
        with np.errstate(over="ignore"):
            np.exp(t, out=t)
        t += 1.0
        np.reciprocal(t, out=t)
        if invert:
            np.subtract(1.0, t, out=t)
        return t
    # On the modality values v = slope * x + intercept: gain * v + offset = gain * slope * x + (gain * intercept + offset)
    unit_gain, unit_offset = window_gain_offset(center, width, function)  # type: ignore[misc]
    gain, offset = unit_gain * slope, unit_gain * intercept + unit_offset
    if invert:
        gain, offset = -gain, 1.0 - offset
    return _affine_clip(values, gain, offset)


def _apply_lut_sequence(arr: np.ndarray, ds: Dataset, invert: bool) -> np.ndarray:
    """VOI LUT Sequence (first LUT) after the Modality LUT; scaled by the LUT's own output range."""
    values = apply_modality_lut(arr, ds)
    if values.dtype.kind == "f":  # LUT inputs are integers
        values = np.rint(values).astype(np.int64)
    out = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float32, copy=False)
    item = ds.VOILUTSequence[0]
    entries, first, _ = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    ramp = np.arange(first, first + entries, dtype=np.int64)
    table = apply_voi_lut(ramp, ds, index=0, prefer_lut=True)
    lo, hi = float(table.min()), float(table.max())
    if hi <= lo:
        return np.zeros(out.shape, np.float32)
    gain, offset = 1.0 / (hi - lo), -lo / (hi - lo)
    if invert:
        gain, offset = -gain, 1.0 - offset
    return _affine_clip(out, gain, offset)


def _stats(values: np.ndarray, window: str, padding: float | None) -> tuple[float, float]:
    """(low, high) of the values: min-max, or the 0.5 / 99.5 percentiles of a regular subsample."""
    if window == "percentile":
        step = max(1, math.ceil(math.sqrt(values.size / STATS_SAMPLE)))
        sample = values[::step, ::step]
        if padding is not None:
            sample = sample[sample != padding]
        if sample.size == 0:
            return 0.0, 0.0
        lo, hi = np.percentile(sample, PERCENTILES)
        return float(lo), float(hi)
    if padding is not None:
        kept = values[values != padding]
        if kept.size:
            return float(kept.min()), float(kept.max())
    return float(values.min()), float(values.max())


def _stretch(values: np.ndarray, lo: float, hi: float, invert: bool) -> np.ndarray:
    if hi <= lo:
        return np.zeros(values.shape, np.float32)
    gain, offset = 1.0 / (hi - lo), -lo / (hi - lo)
    if invert:
        gain, offset = -gain, 1.0 - offset
    return _affine_clip(values, gain, offset)


def _affine_clip(values: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """clip(gain * values + offset, 0, 1) as float32, in three passes over a fresh array."""
    out = values.astype(np.float32)  # always a copy: never modifies the decoded array in place
    out *= np.float32(gain)
    out += np.float32(offset)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None  # type: ignore[index]
    return _float(value, None)


def _float(value: object, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


# --- geometry ------------------------------------------------------------------------------------------

def resize(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float32 [rows, cols]: exact area averaging along an axis that shrinks, bilinear along one that grows."""
    if rows < 1 or cols < 1:
        raise ValueError(f"target size must be positive, got {rows}x{cols}")
    out = np.asarray(image, dtype=np.float32)
    if out.ndim != 2:
        raise ValueError(f"resize expects a 2-D image, got shape {out.shape}")
    # columns first: reduceat along the contiguous axis is ~5x faster, and the row pass then has less data
    out = _resize_axis(out, cols, 1)
    out = _resize_axis(out, rows, 0)
    return np.ascontiguousarray(out)


def _resize_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    m = a.shape[axis]
    if n == m:
        return a
    if n < m:
        return _area_axis(a, n, axis)
    return _linear_axis(a, n, axis)


def _area_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Mean over [k m/n, (k+1) m/n) for each output k, fractional edge pixels weighted (m > n)."""
    m = a.shape[axis]
    edges = np.arange(n + 1, dtype=np.float64) * (m / n)
    edges[-1] = m
    floors = np.floor(edges).astype(np.intp)
    floors[-1] = m
    frac = (edges - floors).astype(np.float32)
    sums = np.add.reduceat(a, floors[:-1], axis=axis)  # whole pixels of [floor(e_k), floor(e_k+1))
    # + the part of pixel floor(e_k+1) inside the bin - the part of pixel floor(e_k) before it
    edge_px = np.take(a, np.minimum(floors, m - 1), axis=axis)
    shape = [1, 1]
    shape[axis] = n + 1
    weighted = edge_px * frac.reshape(shape)
    if axis == 0:
        sums += weighted[1:] - weighted[:-1]
    else:
        sums += weighted[:, 1:] - weighted[:, :-1]
    sums *= np.float32(n / m)
    return sums


def _linear_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Bilinear interpolation with half-pixel centres, edges clamped (m < n)."""
    m = a.shape[axis]
    x = (np.arange(n, dtype=np.float64) + 0.5) * (m / n) - 0.5
    x = np.clip(x, 0.0, m - 1)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, m - 1)
    shape = [1, 1]
    shape[axis] = n
    w = (x - i0).astype(np.float32).reshape(shape)
    lo, hi = np.take(a, i0, axis=axis), np.take(a, i1, axis=axis)
    return lo + (hi - lo) * w


def to_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the longer side is `size`, pad the shorter side symmetrically
    with 0 (black); float32 [size, size]."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    rows, cols = image.shape
    scale = size / max(rows, cols)
    new_rows = min(size, max(1, math.floor(rows * scale + 0.5)))
    new_cols = min(size, max(1, math.floor(cols * scale + 0.5)))
    resized = resize(image, new_rows, new_cols)
    out = np.zeros((size, size), np.float32)
    top, left = (size - new_rows) // 2, (size - new_cols) // 2
    out[top:top + new_rows, left:left + new_cols] = resized
    return out


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad the shorter side symmetrically with 0 to a square of the longer side (no resampling)."""
    rows, cols = image.shape
    side = max(rows, cols)
    out = np.zeros((side, side), np.float32)
    top, left = (side - rows) // 2, (side - cols) // 2
    out[top:top + rows, left:left + cols] = image
    return out


def stitch(images: list[np.ndarray], side: int | None = None) -> np.ndarray:
    """Images side by side, left to right: each padded to a square and resized to `side` (default: the
    largest of those squares); float32 [side, side * len(images)]."""
    if not images:
        raise ValueError("stitch needs at least one image")
    squares = [pad_to_square(np.asarray(image, dtype=np.float32)) for image in images]
    side = side or max(square.shape[0] for square in squares)
    return np.concatenate([resize(square, side, side) for square in squares], axis=1)
