"""A study's DICOM files -> the vision encoder's `pixel_values` (float32 [images, 3, S, S]).

The training code builds its tensors with these same functions, so preprocessing is identical at
training and at run time.

- `load_study(paths)`: read the files of one study (folders recursed; non-DICOM files skipped and logged).
  Values over `DEFER_SIZE` (pixel data) are read lazily, from the file, only for the images used.
- `classify_view(ds)`: "frontal", "lateral" or None.
- `select_images(datasets, views)`: one image per requested view kind, in the order of `views`.
- `prepare_study(datasets, prep)` -> `PreparedStudy` (pixel values + which instances were used);
  `study_pixel_values(datasets, prep)` -> the array only.
- `unit_images_to_pixel_values(images, prep)`: the last step, from [0, 1] images (for cached training data).

Pixel transforms (`image_to_unit`, `to_square`, `stitch`, `resize`) live in `engine.imaging`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node.durable import TEMP_SUFFIX
from engine.bundle import COMBINE_MODES, RESIZE_MODES, VIEW_KINDS, WINDOW_POLICIES, Preprocessing
from engine.errors import PreprocessError
from engine.imaging import (
    UndecodablePixels,
    has_pixels,
    image_to_unit,
    pad_to_square,
    resize,
    sop_uid,
    stitch,
    to_square,
)

__all__ = [
    "PreparedStudy", "classify_view", "classify_view_texts", "image_to_unit", "load_study", "pad_to_square", "prepare_study", "resize",
    "select_images", "stitch", "study_pixel_values", "to_square", "unit_images_to_pixel_values",
]

log = logging.getLogger(__name__)

DEFER_SIZE = "256 KB"
MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # DICOMDIR

# SNOMED CT projections (DICOM CID 4010 "DX View"), as written in View Code Sequence.
FRONTAL_CODES = frozenset({
    "399348003",  # postero-anterior (PA)
    "399182000",  # antero-posterior (AP)
    "399033003",  # frontal projection
})
LATERAL_CODES = frozenset({
    "399173006",  # left lateral
    "399198007",  # right lateral
    "399067008",  # lateral projection
})
# Words of View Position / Series Description / Image Comments (split on anything not a letter or digit).
FRONTAL_WORDS = frozenset({"PA", "AP", "FRONTAL", "POSTEROANTERIOR", "ANTEROPOSTERIOR"})
LATERAL_WORDS = frozenset({"LL", "RL", "LAT", "LATERAL", "LATERALE", "SEITLICH"})
UNDECIDED_WORDS = frozenset({"LLD", "RLD", "DECUBITUS", "DECUB", "OBLIQUE", "OBL", "LAO", "RAO", "LPO", "RPO"})
TEXT_KEYWORDS = ("SeriesDescription", "ImageComments", "AcquisitionDeviceProcessingDescription")
RADIOGRAPH_MODALITIES = frozenset({"DX", "CR", "DR", "RG"})


@dataclass(frozen=True)
class PreparedStudy:
    """Model input of one study and where it came from (provenance)."""

    pixel_values: np.ndarray          # float32 [n, 3, S, S]
    sop_instance_uids: tuple[str, ...]  # the images used, in order
    views: tuple[str, ...]            # the view kind each image fills ("frontal" / "lateral")
    study_instance_uid: str
    skipped: tuple[tuple[str, str], ...] = ()  # (SOP Instance UID, why) of images nothing here decodes


# --- loading -------------------------------------------------------------------------------------------

def load_study(paths: Sequence[Path | str] | Path | str) -> list[Dataset]:
    """The DICOM objects of one study from files and/or folders (recursed), in a deterministic order.

    Non-DICOM files (and DICOMDIR, store temp files) are skipped with a log line. `PreprocessError` when a
    path does not exist, when nothing readable remains, or when the objects belong to several studies.
    Pixel data is not read here: it is read from the file when first needed (see `DEFER_SIZE`).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = _expand(Path(p) for p in paths)
    datasets: list[Dataset] = []
    seen: set[str] = set()
    for file in files:
        ds = _read(file)
        if ds is None:
            continue
        uid = sop_uid(ds)
        if uid in seen:
            log.info("skipping %s: SOP Instance %s was already read from another file", file, uid)
            continue
        seen.add(uid)
        datasets.append(ds)
    where = ", ".join(str(p) for p in paths) or "(no paths)"
    if not datasets:
        raise PreprocessError(f"no readable DICOM object in {where} ({len(files)} files looked at)")
    studies: dict[str, int] = {}
    for ds in datasets:
        key = str(ds.StudyInstanceUID)
        studies[key] = studies.get(key, 0) + 1
    if len(studies) > 1:
        listed = ", ".join(f"{uid} ({count} objects)" for uid, count in sorted(studies.items()))
        raise PreprocessError(f"the files in {where} belong to {len(studies)} studies, expected one: {listed}")
    return sorted(datasets, key=_instance_key)


def _expand(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            found = [path]
        else:
            raise PreprocessError(f"{path} does not exist")
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                files.append(file)
    return files


def _read(file: Path) -> Dataset | None:
    if file.name.endswith(TEMP_SUFFIX):
        log.info("skipping %s: an unfinished store temp file", file)
        return None
    try:
        ds = pydicom.dcmread(file, defer_size=DEFER_SIZE)
    except InvalidDicomError:
        log.info("skipping %s: not a DICOM file", file)
        return None
    except Exception as error:  # noqa: BLE001 - a truncated or corrupt header: pydicom raises many kinds
        log.warning("skipping %s: unreadable DICOM (%s: %s)", file, type(error).__name__, error)
        return None
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop_class == MEDIA_DIRECTORY_STORAGE or "DirectoryRecordSequence" in ds:
        log.info("skipping %s: a DICOMDIR", file)
        return None
    if len(ds) == 0:
        log.warning("skipping %s: no data elements could be read (truncated file?)", file)
        return None
    if not ds.get("StudyInstanceUID") or not ds.get("SOPInstanceUID"):
        log.info("skipping %s: no Study or SOP Instance UID", file)
        return None
    return ds


# --- views ---------------------------------------------------------------------------------------------

def classify_view(ds: Dataset) -> str | None:
    """"frontal", "lateral" or None (unknown), from View Position, then View Code Sequence, then the
    words of Series Description / Image Comments / Acquisition Device Processing Description.

    The one reading of views: the viewer classifies the index's View Position and Series Description
    with `classify_view_texts`, the same rule without the code sequence."""
    kind = _classify_words(ds.get("ViewPosition"))
    if kind:
        return kind
    for item in ds.get("ViewCodeSequence") or ():
        kind = _classify_code(item)
        if kind:
            return kind
    return classify_view_texts(*(ds.get(keyword) for keyword in TEXT_KEYWORDS))


def classify_view_texts(*texts: object) -> str | None:
    """The first of `texts` that names one view kind decides; a text naming both ("PA LAT") or an
    oblique / decubitus view decides nothing, and the next text is read."""
    for text in texts:
        kind = _classify_words(text)
        if kind:
            return kind
    return None


def _classify_words(value: object) -> str | None:
    if value is None:
        return None
    text = "\\".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    words = set(re.split(r"[^A-Z0-9]+", text.upper())) - {""}
    if not words or words & UNDECIDED_WORDS:
        return None
    frontal, lateral = bool(words & FRONTAL_WORDS), bool(words & LATERAL_WORDS)
    if frontal == lateral:  # neither, or both ("PA + LAT"): undecided
        return None
    return "frontal" if frontal else "lateral"


def _classify_code(item: Dataset) -> str | None:
    code = str(item.get("CodeValue", "") or item.get("LongCodeValue", "") or "").strip()
    if code in FRONTAL_CODES:
        return "frontal"
    if code in LATERAL_CODES:
        return "lateral"
    meaning = str(item.get("CodeMeaning", "") or "").lower()
    if not meaning or any(word in meaning for word in ("oblique", "decubitus", "medial")):
        return None
    if "lateral" in meaning:
        return "lateral"
    if "frontal" in meaning or ("poster" in meaning and "anter" in meaning):  # postero-anterior, ...
        return "frontal"
    return None


def select_images(datasets: Sequence[Dataset], views: Sequence[str]) -> list[Dataset]:
    """One image per requested view kind, in the order of `views` (see `_select`)."""
    return [ds for _, ds in _select(datasets, views)]


def _select(datasets: Sequence[Dataset], views: Sequence[str]) -> list[tuple[str, Dataset]]:
    """"frontal": the first image classified frontal, else the first not classified lateral, else any image;
    "lateral": the first lateral not already chosen, only if there is one. Objects without pixel data
    (SR, presentation states) are ignored. Candidates are ordered: radiographs (DX/CR) for presentation
    first, then other images, then DX "FOR PROCESSING"; within each, by Series Number, Instance Number,
    SOP Instance UID. Selecting again among the chosen images gives the same images."""
    candidates = sorted((ds for ds in datasets if has_pixels(ds)), key=_candidate_key)
    kinds = [classify_view(ds) for ds in candidates]
    chosen: list[tuple[str, Dataset]] = []
    used: set[int] = set()

    def first(accept) -> int | None:
        return next((i for i, kind in enumerate(kinds) if i not in used and accept(kind)), None)

    for view in views:
        if view == "frontal":
            pick = first(lambda k: k == "frontal")
            if pick is None:
                pick = first(lambda k: k != "lateral")
            if pick is None:
                pick = first(lambda k: True)
        elif view == "lateral":
            pick = first(lambda k: k == "lateral")
        else:
            raise PreprocessError(f"unknown view kind {view!r} (expected one of {VIEW_KINDS})")
        if pick is not None:
            used.add(pick)
            chosen.append((view, candidates[pick]))
    return chosen


def _number(value: object) -> tuple[int, int]:
    try:
        return (0, int(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, 0)  # missing or invalid: after the numbered ones


def _instance_key(ds: Dataset) -> tuple:
    return (_number(ds.get("SeriesNumber")), _number(ds.get("InstanceNumber")), sop_uid(ds))


def _candidate_key(ds: Dataset) -> tuple:
    intent = str(ds.get("PresentationIntentType", "") or "").upper()
    if intent == "FOR PROCESSING":
        rank = 2
    elif str(ds.get("Modality", "") or "").upper() in RADIOGRAPH_MODALITIES:
        rank = 0
    else:
        rank = 1
    return (rank, *_instance_key(ds))


# --- model input ---------------------------------------------------------------------------------------

def prepare_study(datasets: Sequence[Dataset], prep: Preprocessing) -> PreparedStudy:
    """Select the images of `prep.views`, turn them into `pixel_values`, and say which were used."""
    _check(prep)
    chosen = _select(datasets, prep.views)
    study = str(datasets[0].get("StudyInstanceUID", "")) if datasets else ""
    if not chosen:
        raise PreprocessError(f"study {study or '(unknown)'}: no usable image among its {len(datasets)} "
                              f"objects (none has pixel data)")
    units, skipped = _decodable_units(datasets, chosen, prep)
    if not units:
        raise PreprocessError(f"study {study or '(unknown)'}: no image can be decoded here ({skipped[0][1]})")
    chosen = _select([ds for ds in datasets if sop_uid(ds) in units], prep.views)
    return PreparedStudy(
        pixel_values=unit_images_to_pixel_values([units[sop_uid(ds)] for _, ds in chosen], prep),
        sop_instance_uids=tuple(sop_uid(ds) for _, ds in chosen),
        views=tuple(view for view, _ in chosen),
        study_instance_uid=study,
        skipped=tuple(skipped),
    )


def prepare_prior_frontal(datasets: Sequence[Dataset], prep: Preprocessing) -> PreparedStudy:
    """The prior study's one image for the model: its frontal view (else its first usable image), prepared
    as a study's images are, whatever views or stitching the bundle uses for the current study."""
    import dataclasses

    return prepare_study(datasets, dataclasses.replace(prep, views=("frontal",), combine="tokens"))


def _decodable_units(datasets: Sequence[Dataset], chosen: list[tuple[str, Dataset]],
                     prep: Preprocessing) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """The [0, 1] images of the chosen datasets by SOP Instance UID; an image no installed decoder reads
    is passed over for the next candidate of its view (noted in `skipped`), never failing the study."""
    units: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    left_out: set[str] = set()
    while chosen:
        for _, ds in chosen:
            uid = sop_uid(ds)
            if uid in units:
                continue
            try:
                units[uid] = image_to_unit(ds, prep.window)
            except UndecodablePixels as error:
                log.warning("drafting without %s", error)
                skipped.append((uid, str(error)))
                left_out.add(uid)
        if not any(sop_uid(ds) in left_out for _, ds in chosen):
            return units, skipped
        chosen = _select([ds for ds in datasets if sop_uid(ds) not in left_out], prep.views)
    return units, skipped


def study_pixel_values(datasets: Sequence[Dataset], prep: Preprocessing) -> np.ndarray:
    """float32 [n, 3, S, S]: n = images selected ("tokens") or 1 ("stitch")."""
    return prepare_study(datasets, prep).pixel_values


def unit_images_to_pixel_values(images: Sequence[np.ndarray], prep: Preprocessing) -> np.ndarray:
    """[0, 1] images (any shape) -> float32 [n, 3, S, S]: stitched side by side when `prep.combine ==
    "stitch"`, fitted to S x S by `prep.resize` (pad: aspect kept, padded with `pad_value`; crop: shortest
    side to `shortest_edge`, centre crop; stretch), gray replicated to 3 channels, (x * scale - mean) / std."""
    _check(prep)
    if not images:
        raise PreprocessError("no image to turn into model input")
    size = prep.image_size
    images = [np.asarray(image, dtype=np.float32) for image in images]
    if prep.combine == "stitch" and len(images) > 1:
        images = [stitch([to_square(image, size) for image in images], side=size)]
    fitted = [fit_image(image, prep) for image in images]
    stack = np.stack([square for square, _ in fitted])
    out = np.empty((stack.shape[0], 3, size, size), np.float32)
    for channel in range(3):
        np.multiply(stack, np.float32(prep.scale), out=out[:, channel])
        out[:, channel] -= np.float32(prep.mean[channel])
        out[:, channel] *= np.float32(1.0 / prep.std[channel])
        fill = (prep.pad_value[channel] * prep.scale - prep.mean[channel]) / prep.std[channel]
        for index, (_, content) in enumerate(fitted):
            if content is not None:
                out[index, channel][~content] = np.float32(fill)
    return out


def fit_image(image: np.ndarray, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray | None]:
    """[rows, cols] -> ([S, S], mask of the image's own pixels or None when it fills the square)."""
    size = prep.image_size
    rows, cols = image.shape
    if prep.resize == "stretch":
        return resize(image, size, size), None
    if prep.resize == "crop":
        # as transformers' shortest-edge resize (long side truncated) then its centre crop
        edge = prep.shortest_edge or size
        short, long = (rows, cols) if rows <= cols else (cols, rows)
        long_new = max(1, int(edge * long / short))
        new_rows, new_cols = (edge, long_new) if rows <= cols else (long_new, edge)
        resized = resize(image, new_rows, new_cols)
        return _centre(resized, size)
    square = to_square(image, size)
    scale = size / max(rows, cols)
    new_rows = min(size, max(1, int(rows * scale + 0.5)))
    new_cols = min(size, max(1, int(cols * scale + 0.5)))
    if new_rows == size and new_cols == size:
        return square, None
    content = np.zeros((size, size), bool)
    top, left = (size - new_rows) // 2, (size - new_cols) // 2
    content[top:top + new_rows, left:left + new_cols] = True
    return square, content


def _centre(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The centre size x size of `image`, zero-padded where it is smaller (as transformers' center_crop)."""
    rows, cols = image.shape
    out = np.zeros((size, size), np.float32)
    content = np.zeros((size, size), bool)
    top, left = (rows - size) // 2, (cols - size) // 2
    src_top, src_left = max(top, 0), max(left, 0)
    dst_top, dst_left = max(-top, 0), max(-left, 0)
    height, width = min(rows, size), min(cols, size)
    out[dst_top:dst_top + height, dst_left:dst_left + width] = image[src_top:src_top + height,
                                                                     src_left:src_left + width]
    if height == size and width == size:
        return out, None
    content[dst_top:dst_top + height, dst_left:dst_left + width] = True
    return out, content


def _check(prep: Preprocessing) -> None:
    if prep.window not in WINDOW_POLICIES or prep.combine not in COMBINE_MODES or prep.image_size < 1 \
            or any(view not in VIEW_KINDS for view in prep.views) or not prep.views \
            or len(prep.mean) != 3 or len(prep.std) != 3 or 0 in prep.std or prep.resize not in RESIZE_MODES \
            or len(prep.pad_value) != 3 or prep.scale <= 0:
        raise PreprocessError(f"invalid preprocessing settings: {prep}")
