"""Images for reading: modality values, windows, MONOCHROME1, multi-frame, the frame cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from engine.display import FrameCache, load_frame, presets, render, thumbnail, view_kind
from engine.errors import PreprocessError


def write_image(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **attributes) -> Path:
    """An uncompressed 16-bit grey image (or several frames, [frames, rows, cols])."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = "Doe^Jane", "P1", "20240102", "DX"
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (8, 1))  # 8 x 40, 0..3900


def test_window_from_the_header_and_linear_rendering(tmp_path):
    frame = load_frame(write_image(tmp_path / "a.dcm", RAMP, WindowCenter=2000, WindowWidth=1000,
                                   RescaleSlope=1, RescaleIntercept=-1000))
    assert frame.default_window == (2000.0, 1000.0)
    assert frame.value_range == (-1000.0, 2900.0)
    assert not frame.monochrome1 and frame.num_frames == 1 and frame.attributes["patient"] == "Doe Jane"
    out = render(frame, *frame.default_window)
    row = out[0]
    assert row.dtype == np.uint8 and row[0] == 0 and row[-1] == 255  # -1000 below, 2900 above the window
    assert 100 < row[30] < 160  # value 2000: the middle of the window
    assert np.all(np.diff(row.astype(int)) >= 0)
    assert [p.name for p in presets(frame)][:2] == ["Header", "Automatic"]


def test_monochrome1_shows_bone_bright_and_invert_flips_it(tmp_path):
    mono1 = load_frame(write_image(tmp_path / "m1.dcm", RAMP, "MONOCHROME1"))
    mono2 = load_frame(write_image(tmp_path / "m2.dcm", RAMP, "MONOCHROME2"))
    assert mono1.monochrome1 and mono1.attributes["photometric"] == "MONOCHROME1"
    window = mono1.default_window
    shown1, shown2 = render(mono1, *window), render(mono2, *window)
    assert shown1[0, 0] > shown1[0, -1]  # low stored values are bright in MONOCHROME1
    assert np.array_equal(shown1, 255 - shown2) or np.abs(shown1.astype(int) - (255 - shown2)).max() <= 1
    assert np.array_equal(render(mono1, *window, invert=True), shown2)


def test_multiframe_frames_and_the_cache(tmp_path):
    frames = np.stack([RAMP + 10 * i for i in range(3)])
    path = write_image(tmp_path / "mf.dcm", frames)
    cache = FrameCache(capacity=2)
    second = cache.get(path, 1)
    assert second.num_frames == 3 and second.frame == 1
    assert second.values[0, 0] == 10
    assert cache.get(path, 1) is second  # cached
    cache.get(path, 0)
    cache.get(path, 2)
    assert len(cache) == 2 and cache.get(path, 1) is not second  # least recently used was dropped
    assert load_frame(path, 99).frame == 2  # clamped to the last frame
    small = thumbnail(second, 16)
    assert small.shape == (3, 16) and small.dtype == np.uint8


def test_undecodable_file_names_itself(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom")
    with pytest.raises(PreprocessError, match="bad.dcm"):
        load_frame(bad)


@pytest.mark.parametrize("texts,kind", [(("PA", ""), "frontal"), (("", "CHEST LAT"), "lateral"),
                                        (("LL",), "lateral"), (("", "Scout"), ""), (("AP", "LATERAL"), "frontal")])
def test_view_kind(texts, kind):
    assert view_kind(*texts) == kind


def test_colour_images_are_rgb():
    from tests.conftest import sample_path

    frame = load_frame(sample_path("SC_rgb_jpeg_dcmtk.dcm"))  # YBR_FULL JPEG: a red band on top
    assert frame.colour and not frame.monochrome1
    red = render(frame, *frame.default_window)[0, 0]
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
