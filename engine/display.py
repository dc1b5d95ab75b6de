"""DICOM images for reading: one frame's modality values, its default window, and 8-bit renderings at any
window/level. numpy + pydicom only; the desktop viewer calls these from worker threads.

- `load_frame(path, frame)` -> `DisplayFrame` (Modality LUT applied; MONOCHROME1 remembered, not baked in)
- `render(frame, center, width, invert)` -> uint8 [rows, cols] (or [rows, cols, 3] for colour): the DICOM
  LINEAR window (PS3.3 C.11.2.1.2), then MONOCHROME1 shown with bone bright (inverted) unless `invert`
- `presets(frame)`: the header's windows, automatic (0.5-99.5 %), full range, and HU presets for CT
- `FrameCache`: a small thread-safe LRU of decoded frames, so that scrolling back and forth decodes once
- `view_kind(view_position, series_description)`: "frontal", "lateral" or "" from the index's text
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, pixel_array

from engine.errors import PreprocessError
from engine.imaging import (
    UndecodablePixels,
    header_window,
    missing_decoder,
    window_gain_offset,
    window_values,
)
from engine.preprocess import classify_view_texts

_STATS_SAMPLE = 1 << 16
CT_PRESETS = (("Lung", -600.0, 1500.0), ("Mediastinum", 50.0, 350.0), ("Bone", 400.0, 1800.0),
              ("Brain", 40.0, 80.0))


@dataclass(frozen=True)
class WindowPreset:
    name: str
    center: float
    width: float


@dataclass(frozen=True)
class DisplayFrame:
    values: np.ndarray  # float32 [rows, cols] modality values; uint8 [rows, cols, 3] for colour
    default_window: tuple[float, float]  # (center, width)
    value_range: tuple[float, float]
    auto_window: tuple[float, float]  # 0.5-99.5 percentiles as (center, width)
    monochrome1: bool
    colour: bool
    frame: int
    num_frames: int
    header_windows: tuple[WindowPreset, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)  # for the overlay: patient, date, view, ...
    voi_function: str = "LINEAR"  # the header's VOI LUT Function, applied to every window as the engine does

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.values.shape[0]), int(self.values.shape[1])


def _multi(ds: pydicom.Dataset, keyword: str) -> str:
    """A multi-valued attribute as DICOM writes it ("L\\F"), or ""."""
    try:
        value = ds.get(keyword)
        if value is None:
            return ""
        values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        return "\\".join(str(v).strip() for v in values)
    except Exception:  # noqa: BLE001 - a malformed optional attribute must not stop the display
        return ""


def _spacing(ds: pydicom.Dataset) -> dict[str, str]:
    """The calibration for distances: Pixel Spacing (in the patient), else Imager Pixel Spacing (at the
    detector), as "row\\column" mm with which one it is; nothing when neither is valid."""
    for keyword, source in (("PixelSpacing", "Pixel Spacing"), ("ImagerPixelSpacing", "Imager Pixel Spacing")):
        try:
            row, col = (float(v) for v in ds.get(keyword) or ())
        except (TypeError, ValueError):
            continue
        if row > 0 and col > 0:
            return {"spacing": f"{row}\\{col}", "spacing_source": source}
    return {}


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
        return "" if value is None else str(value).strip()
    except Exception:  # noqa: BLE001 - a malformed optional attribute must not stop the display
        return ""


def _floats(value: object) -> list[float]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    out = []
    for item in items:  # type: ignore[union-attr]
        try:
            number = float(item)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out.append(number)
    return out


def _header_windows(ds: pydicom.Dataset) -> tuple[WindowPreset, ...]:
    centers, widths = _floats(ds.get("WindowCenter")), _floats(ds.get("WindowWidth"))
    explanations = ds.get("WindowCenterWidthExplanation") or []
    if isinstance(explanations, str):
        explanations = [explanations]
    presets = []
    for i, (center, width) in enumerate(zip(centers, widths)):
        if width > 0:
            name = str(explanations[i]).strip() if i < len(explanations) and str(explanations[i]).strip() else (
                "Header" if i == 0 else f"Header {i + 1}")
            presets.append(WindowPreset(name, center, width))
    return tuple(presets)


def _percentile_window(values: np.ndarray) -> tuple[float, float]:
    step = max(1, math.ceil(math.sqrt(values.size / _STATS_SAMPLE)))
    lo, hi = np.percentile(values[::step, ::step], (0.5, 99.5))
    return (float(lo) + float(hi)) / 2.0, max(float(hi) - float(lo), 1.0)


def load_frame(path: Path | str, frame: int = 0) -> DisplayFrame:
    """Decode frame `frame` of the file at `path` for display; `PreprocessError` says why it cannot be."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
        frame = min(max(frame, 0), frames - 1)
        arr = pixel_array(str(path), index=frame if frames > 1 else None)
    except Exception as error:  # noqa: BLE001 - pydicom and the decoders raise many kinds on bad data
        why = missing_decoder(_transfer_syntax(path))
        if why:
            raise UndecodablePixels(f"{Path(path).name}: stored as received, but its pixels cannot be shown "
                                    f"here: {why}") from None
        raise PreprocessError(f"{Path(path).name}: cannot be displayed ({type(error).__name__}: {error})") from None
    photometric = _text(ds, "PhotometricInterpretation").upper() or "MONOCHROME2"
    colour = arr.ndim == 3
    if colour:  # pydicom already converted YBR to RGB (as_rgb)
        values = np.ascontiguousarray(arr[..., :3]).astype(np.float32)
    else:
        values = np.ascontiguousarray(apply_modality_lut(arr, ds), dtype=np.float32)
    lo, hi = float(values.min()), float(values.max())
    auto = _percentile_window(values) if not colour else (127.5, 256.0)
    header = () if colour else _header_windows(ds)
    # The engine's rule (engine.imaging.header_window) picks the header window; without one the reader
    # gets the automatic window (the model's fallback is its bundle's window policy).
    chosen = None if colour else header_window(ds)
    default = (chosen[0], chosen[1]) if chosen else auto
    function = chosen[2] if chosen else "LINEAR"
    view = _text(ds, "ViewPosition") or _text(ds, "SeriesDescription")
    attributes = {
        "patient": _text(ds, "PatientName").replace("^", " ").strip(), "patient_id": _text(ds, "PatientID"),
        "study_date": _text(ds, "StudyDate"), "modality": _text(ds, "Modality"), "view": view,
        "series": _text(ds, "SeriesDescription"), "instance": _text(ds, "InstanceNumber"),
        "sop_instance_uid": _text(ds, "SOPInstanceUID"), "photometric": photometric,
        "orientation": _multi(ds, "PatientOrientation"), **_spacing(ds),
    }
    return DisplayFrame(values, default, (lo, hi), auto, photometric == "MONOCHROME1", colour, frame, frames,
                        header, attributes, function)


def _transfer_syntax(path: Path | str) -> str:
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.get("TransferSyntaxUID", "") or "")
    except Exception:  # noqa: BLE001 - not DICOM at all: the caller's own message says so
        return ""


def render(frame: DisplayFrame, center: float, width: float, invert: bool = False) -> np.ndarray:
    """uint8 image of `frame` at the window (center, width), by the engine's window functions
    (engine.imaging: LINEAR, LINEAR_EXACT, SIGMOID as the header says); MONOCHROME1 is inverted so bone
    is bright, and `invert` flips the result once more."""
    width = max(float(width), 1.0)
    flip = frame.monochrome1 != invert
    affine = window_gain_offset(float(center), width, frame.voi_function)
    if affine is None:
        out = window_values(frame.values, float(center), width, frame.voi_function, flip)
        out *= np.float32(255.0)
    else:
        gain, offset = affine[0] * 255.0, affine[1] * 255.0
        if flip:
            gain, offset = -gain, 255.0 - offset
        out = frame.values * np.float32(gain)
        out += np.float32(offset)
    np.clip(out, 0.0, 255.0, out=out)
    return np.ascontiguousarray(out.astype(np.uint8))


def presets(frame: DisplayFrame) -> list[WindowPreset]:
    lo, hi = frame.value_range
    out = list(frame.header_windows)
    out.append(WindowPreset("Automatic", *frame.auto_window))
    out.append(WindowPreset("Full range", (lo + hi) / 2.0, max(hi - lo, 1.0)))
    if frame.attributes.get("modality") == "CT":
        out.extend(WindowPreset(*preset) for preset in CT_PRESETS)
    return out


class FrameCache:
    """Decoded frames by (path, frame), least recently used dropped beyond `capacity`. Thread-safe; two
    threads asking for the same frame at once may both decode it (harmless, and rare)."""

    def __init__(self, capacity: int = 24) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int, int, int], DisplayFrame] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path | str, frame: int = 0) -> DisplayFrame:
        try:  # a file replaced in place (a corrected instance resent) is another key: never the old pixels
            stat = os.stat(path)
            version: tuple[int, int] = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            version = (0, 0)
        key = (str(path), frame, *version)
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                return cached
        loaded = load_frame(path, frame)
        with self._lock:
            self._items[key] = loaded
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return loaded

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def view_kind(*texts: str) -> str:
    """"frontal", "lateral" or "" from View Position / series description, by the engine's rule
    (`engine.preprocess.classify_view_texts`): the viewer and the model read views alike."""
    return classify_view_texts(*texts) or ""


def thumbnail(frame: DisplayFrame, size: int) -> np.ndarray:
    """A uint8 rendering at the default window, the longer side `size` pixels (nearest neighbour)."""
    rows, cols = frame.shape
    scale = size / max(rows, cols)
    r_idx = np.minimum((np.arange(max(1, round(rows * scale))) / scale).astype(np.intp), rows - 1)
    c_idx = np.minimum((np.arange(max(1, round(cols * scale))) / scale).astype(np.intp), cols - 1)
    small = replace(frame, values=frame.values[r_idx][:, c_idx], header_windows=(), attributes={})
    return render(small, *frame.default_window)
