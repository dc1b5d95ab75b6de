"""One reading of views and windows: the viewer (engine.display, from the index's text) and the model
(engine.preprocess / engine.imaging, from the dataset) classify views and window images by the same rule,
checked on the real samples that ship with pydicom and on the project's sample study."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from dicom_node.settings import StoreSettings
from dicom_node.store import ReceivedInstance, Store
from engine.display import load_frame, render, view_kind
from engine.errors import PreprocessError
from engine.imaging import header_window, image_to_unit
from engine.preprocess import classify_view
from raddraft.resources import resources_dir


def real_samples() -> list[Path]:
    """pydicom's test files (its own folder: get_testdata_files would try to download more) and the
    bundled sample study: every file that reads as DICOM, DICOMDIRs left out."""
    pydicom_files = sorted(p for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*")
                           if p.is_file() and p.suffix in ("", ".dcm") and p.name != "DICOMDIR")
    found = pydicom_files + sorted((resources_dir() / "samples").rglob("*.dcm"))
    readable = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in found:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001, S112 - broken samples (truncated, no preamble) are not readable views
                continue
            if "SOPInstanceUID" in ds and "StudyInstanceUID" in ds:
                readable.append(path)
    return readable


SAMPLES = real_samples()


def viewer_kind(store: Store, path: Path) -> str:
    """The kind the viewer gives the instance: from the index's View Position and Series Description."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    store.put(ReceivedInstance.from_part10(path.read_bytes()))
    study_uid, sop_uid = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
    row = next(r for r in store.index.instances_of(study_uid) if r.sop_instance_uid == sop_uid)
    series = next(s for s in store.index.series_of(study_uid) if s.series_uid == row.series_uid)
    return view_kind(row.view_position, series.series_description)


def model_kind_from_indexed_attributes(path: Path) -> str:
    """The model's kind from what the index also keeps (no code sequence, no image comments)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    for keyword in ("ViewCodeSequence", "ImageComments", "AcquisitionDeviceProcessingDescription"):
        ds.pop(keyword, None)
    return classify_view(ds) or ""


def test_the_viewer_and_the_model_classify_the_real_samples_alike(tmp_path):
    assert len(SAMPLES) > 20
    store = Store(StoreSettings(root=tmp_path / "store"))
    try:
        compared, decided = 0, 0
        for path in SAMPLES:
            try:
                kind = viewer_kind(store, path)
            except Exception:  # noqa: BLE001, S112 - a sample the store refuses (no UIDs) has no row to show
                continue
            assert kind == model_kind_from_indexed_attributes(path), path.name
            compared, decided = compared + 1, decided + bool(kind)
        assert compared > 20 and decided >= 3, (compared, decided)
    finally:
        store.close()


@pytest.mark.parametrize("view_position,description", [
    ("PA LAT", ""), ("PA", "CHEST LAT"), ("LAT", "PA"), ("AP", ""), ("LL", "Cervical LAT"), ("LLD", "CHEST PA"),
    ("", "Cervical OBLI 2"), ("", "Thorax p.a. + seitlich"), ("RAO", ""), ("", "")])
def test_views_from_a_real_radiograph_agree(tmp_path, view_position, description):
    """A real radiograph's header with each View Position / Series Description: the viewer's kind (from
    the index) is the model's."""
    source = next((p for p in SAMPLES if pydicom.dcmread(p, stop_before_pixels=True).get("ViewPosition")), None)
    if source is None:
        pytest.skip("no real sample with a View Position")
    ds = pydicom.dcmread(source)
    ds.ViewPosition, ds.SeriesDescription = view_position, description
    ds.pop("ImageComments", None)
    ds.pop("ViewCodeSequence", None)
    path = tmp_path / "view.dcm"
    ds.save_as(path)
    store = Store(StoreSettings(root=tmp_path / "store"))
    try:
        assert viewer_kind(store, path) == (classify_view(ds) or "")
    finally:
        store.close()
    if view_position == "PA LAT":  # the case the two used to read differently
        assert classify_view(ds) is None and view_kind(view_position, description) == ""


def grey_samples_with_a_window() -> list[Path]:
    out = []
    for path in SAMPLES:
        ds = pydicom.dcmread(path, defer_size="1 KB")  # the pixels read only if used
        if (header_window(ds) and "VOILUTSequence" not in ds and int(ds.get("SamplesPerPixel", 1) or 1) == 1
                and "PixelData" in ds):
            out.append(path)
    return out


def test_the_viewer_default_window_is_the_model_window_on_real_samples():
    compared = 0
    for path in grey_samples_with_a_window():
        try:
            frame = load_frame(path)
            unit = image_to_unit(pydicom.dcmread(path), "dicom")
        except PreprocessError:
            continue  # no decoder for its transfer syntax here (see the decoding tests)
        shown = render(frame, *frame.default_window).astype(np.float32) / 255.0
        assert shown.shape == unit.shape, path.name
        assert np.abs(shown - unit).max() <= 1.5 / 255.0, path.name
        compared += 1
    assert compared >= 3, "no real grey sample with a header window decoded"


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_the_voi_lut_function_is_applied_alike(tmp_path, function):
    source = next(iter(grey_samples_with_a_window()), None)
    if source is None:
        pytest.skip("no real grey sample with a header window")
    ds = pydicom.dcmread(source)
    ds.VOILUTFunction = function
    path = tmp_path / "function.dcm"
    ds.save_as(path)
    frame = load_frame(path)
    assert frame.voi_function == function
    shown = render(frame, *frame.default_window).astype(np.float32) / 255.0
    assert np.abs(shown - image_to_unit(pydicom.dcmread(path), "dicom")).max() <= 1.5 / 255.0
