"""DICOM study -> `pixel_values`: loading, view selection, display transforms, geometry, model input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from engine.bundle import Preprocessing
from engine.errors import PreprocessError
from engine.imaging import decode_first_frame, image_to_unit, pad_to_square, resize, stitch, to_square
from engine.preprocess import (
    classify_view,
    load_study,
    prepare_study,
    select_images,
    study_pixel_values,
    unit_images_to_pixel_values,
)
from tests.conftest import SAMPLE_FILES, copy_with_fresh_uids, sample_path
from training.data.dicom_writer import ImageEncoding, ImageIdentity, StudyIdentity, build_dataset
from training.data.phantoms import PhantomConfig, generate_dataset

STUDY = StudyIdentity(patient_name="PHANTOM^TEST", patient_id="PT1", birth_date="19600101", sex="F",
                      study_uid="1.2.826.0.1.3680043.8.498.1", study_date="20240101", study_time="120000",
                      accession="A1", study_id="1", description="XR CHEST")


def anatomy(rows: int = 96, cols: int = 80) -> np.ndarray:
    """A 0..1 image (white = dense): a bright 'spine' stripe, darker 'lungs', a gradient background."""
    y, x = np.mgrid[0:rows, 0:cols] / np.array([rows, cols]).reshape(2, 1, 1)
    image = 0.3 + 0.4 * y
    image[(np.abs(x - 0.3) < 0.12) & (y > 0.2) & (y < 0.8)] = 0.1
    image[(np.abs(x - 0.7) < 0.12) & (y > 0.2) & (y < 0.8)] = 0.15
    image[:, (np.abs(x[0] - 0.5) < 0.05)] = 0.95
    return image


def phantom_ds(image: np.ndarray | None = None, view: str = "PA", photometric: str = "MONOCHROME2",
               bits: int = 12, modality: str = "DX", number: int = 1, study_uid: str | None = None) -> Dataset:
    study = STUDY if study_uid is None else StudyIdentity(**{**STUDY.__dict__, "study_uid": study_uid})
    ident = ImageIdentity(series_uid=generate_uid(), series_number=number, sop_instance_uid=generate_uid(),
                          view=view)
    encoding = ImageEncoding(modality=modality, photometric=photometric, bits_stored=bits)
    return build_dataset(anatomy() if image is None else image, study, ident, encoding, 0.5)


def plain_ds(pixels: np.ndarray, **attrs: object) -> Dataset:
    """A minimal secondary-capture-like dataset holding `pixels` (uint16 gray unless told otherwise)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = STUDY.study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[-1]
    ds.PhotometricInterpretation = "MONOCHROME2" if pixels.ndim == 2 else "RGB"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
RAMPF = RAMP.astype(np.float64)


# --- display transforms --------------------------------------------------------------------------------

@pytest.mark.parametrize("window", ["dicom", "minmax", "percentile"])
def test_monochrome1_and_monochrome2_of_the_same_anatomy_look_the_same(window):
    image = anatomy()
    mono2 = image_to_unit(phantom_ds(image, photometric="MONOCHROME2"), window)
    mono1 = image_to_unit(phantom_ds(image, photometric="MONOCHROME1"), window)
    assert mono1.dtype == mono2.dtype == np.float32 and mono1.shape == image.shape
    assert 0.0 <= mono2.min() and mono2.max() <= 1.0
    assert np.abs(mono1 - mono2).max() < 2e-3
    # bone (the dense stripe) is bright, the lungs dark
    assert mono2[48, 40] > 0.9 and mono2[48, 24] < 0.2


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_lossless_compressed_equals_uncompressed(tmp_path, syntax):
    plain = phantom_ds(bits=14)
    expected = image_to_unit(plain, "dicom")
    compressed = phantom_ds(bits=14)
    compressed.PixelData = plain.PixelData
    compressed.compress(syntax, generate_instance_uid=False)
    assert compressed.file_meta.TransferSyntaxUID == syntax
    [loaded] = load_study([save(compressed, tmp_path / "c.dcm")])
    np.testing.assert_array_equal(image_to_unit(loaded, "dicom"), expected)


def test_header_window_is_applied_and_a_narrow_window_saturates():
    ds = plain_ds(RAMP, WindowCenter=2048, WindowWidth=401)
    unit = image_to_unit(ds, "dicom")
    values = RAMP.astype(float)
    expected = np.clip((values - (2048 - 0.5)) / 400 + 0.5, 0, 1)  # DICOM LINEAR
    np.testing.assert_allclose(unit, expected, atol=1e-5)
    assert (unit == 0).mean() > 0.4 and (unit == 1).mean() > 0.4
    # the policies that ignore the header window see the full range
    np.testing.assert_allclose(image_to_unit(ds, "minmax"), values / values.max(), atol=1e-6)


def test_first_of_several_windows_and_linear_exact_and_sigmoid():
    several = plain_ds(RAMP, WindowCenter=[1000, 3000], WindowWidth=[500, 100])
    np.testing.assert_allclose(image_to_unit(several, "dicom"),
                               np.clip((RAMPF - 999.5) / 499 + 0.5, 0, 1), atol=1e-5)
    exact = plain_ds(RAMP, WindowCenter=2000, WindowWidth=1000, VOILUTFunction="LINEAR_EXACT")
    np.testing.assert_allclose(image_to_unit(exact, "dicom"), np.clip((RAMPF - 2000) / 1000 + 0.5, 0, 1),
                               atol=1e-5)
    sigmoid = plain_ds(RAMP, WindowCenter=2000, WindowWidth=1000, VOILUTFunction="SIGMOID")
    np.testing.assert_allclose(image_to_unit(sigmoid, "dicom"),
                               1 / (1 + np.exp(-4 * (RAMPF - 2000.0) / 1000)), atol=1e-5)


def test_rescale_slope_and_intercept_come_before_the_window():
    ds = plain_ds(RAMP, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=3000, WindowWidth=2001)
    expected = np.clip((2.0 * RAMPF - 1000 - 2999.5) / 2000 + 0.5, 0, 1)
    np.testing.assert_allclose(image_to_unit(ds, "dicom"), expected, atol=1e-5)
    # a negative slope turns the image over (min-max in output units)
    flipped = plain_ds(RAMP, RescaleSlope=-1, RescaleIntercept=0)
    np.testing.assert_allclose(image_to_unit(flipped, "minmax"), 1 - RAMPF / RAMPF.max(), atol=1e-6)


def test_voi_lut_sequence_is_used_when_present():
    ds = plain_ds(RAMP)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = [min(4095, 2 * v) for v in range(4096)]  # doubles, saturating at half range
    ds.VOILUTSequence = Sequence([item])
    ds["VOILUTSequence"][0]["LUTData"].VR = "US"
    unit = image_to_unit(ds, "dicom")
    np.testing.assert_allclose(unit, np.minimum(1.0, 2.0 * RAMPF / 4095), atol=1e-5)


def test_percentile_ignores_outliers_and_padding_is_left_out_of_the_range():
    pixels = RAMP.copy()
    pixels[0, 0] = 65535
    unit = image_to_unit(plain_ds(pixels), "percentile")
    assert unit[0, 0] == 1.0 and unit[8, 8] > 0.45  # min-max would have squashed everything near 0
    padded = RAMP.copy()
    padded[:, :2] = 0xFFFF
    unit = image_to_unit(plain_ds(padded, PixelPaddingValue=0xFFFF), "minmax")
    assert unit[:, 2:].max() == pytest.approx(1.0) and unit[:, 2:].min() == pytest.approx(0.0)


def test_constant_rgb_and_float_images():
    for window in ("dicom", "minmax", "percentile"):
        unit = image_to_unit(plain_ds(np.full((8, 8), 700, np.uint16)), window)
        assert np.isfinite(unit).all() and (unit == 0).all()
    gray = (RAMP // 16).astype(np.uint8)
    rgb = plain_ds(np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_allclose(image_to_unit(rgb, "dicom"), gray / 255.0, atol=1e-5)
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200
    assert image_to_unit(plain_ds(red), "dicom")[0, 0] == pytest.approx(200 * 0.299 / 255, abs=1e-5)


def test_multiframe_uses_the_first_frame():
    frames = np.stack([RAMP, RAMP[::-1], np.full_like(RAMP, 7)])
    ds = plain_ds(frames[0], NumberOfFrames=3)
    ds.PixelData = frames.tobytes()
    unit = image_to_unit(ds, "minmax")
    np.testing.assert_allclose(unit, RAMPF / RAMPF.max(), atol=1e-6)


def test_undecodable_pixel_data_names_the_instance(tmp_path):
    ds = phantom_ds()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    [loaded] = load_study([save(ds, tmp_path / "cut.dcm")])
    with pytest.raises(PreprocessError, match=ds.SOPInstanceUID):
        image_to_unit(loaded, "dicom")
    with pytest.raises(PreprocessError, match=ds.SOPInstanceUID):
        study_pixel_values([loaded], Preprocessing(image_size=32))
    broken = phantom_ds()
    broken.compress(RLELossless, generate_instance_uid=False)
    broken.PixelData = broken.PixelData[:200]
    with pytest.raises(PreprocessError, match=broken.SOPInstanceUID):
        decode_first_frame(broken)


# 12-bit "JPEG Extended" that neither pylibjpeg-libjpeg nor Pillow decodes: it must fail cleanly.
MAY_NOT_DECODE = {"JPEG-lossy.dcm"}


@pytest.mark.parametrize("name", sorted(SAMPLE_FILES))
def test_pydicom_samples_of_every_transfer_syntax_decode(tmp_path, name):
    copy_with_fresh_uids(sample_path(name), tmp_path / name)
    [ds] = load_study([tmp_path / name])
    if name in MAY_NOT_DECODE:
        try:
            decode_first_frame(ds)
        except PreprocessError as error:
            assert ds.SOPInstanceUID in str(error) and "cannot be decoded" in str(error)
            return
    for window in ("dicom", "minmax", "percentile"):
        unit = image_to_unit(ds, window)
        assert unit.ndim == 2 and unit.dtype == np.float32 and np.isfinite(unit).all()
        assert 0.0 <= unit.min() <= unit.max() <= 1.0 and unit.std() > 0


# --- geometry ------------------------------------------------------------------------------------------

def test_area_resize_is_exact_block_mean_and_keeps_constants():
    rng = np.random.default_rng(0)
    image = rng.random((60, 90)).astype(np.float32)
    blocks = image.reshape(20, 3, 30, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(resize(image, 20, 30), blocks, atol=1e-6)
    ones = np.ones((97, 61), np.float32)
    for shape in ((13, 7), (200, 150), (97, 20), (40, 61)):
        np.testing.assert_allclose(resize(ones, *shape), 1.0, atol=1e-5)
    shrunk = resize(image, 17, 23)  # fractional factors keep the mean
    assert shrunk.mean() == pytest.approx(image.mean(), abs=1e-3)


def test_to_square_keeps_aspect_ratio_and_pads_with_black():
    tall = np.ones((100, 50), np.float32)
    square = to_square(tall, 224)
    assert square.shape == (224, 224) and square.dtype == np.float32
    filled = np.flatnonzero(square[112] > 0.5)
    assert filled[0] == 56 and filled[-1] == 56 + 112 - 1  # 112 wide, centred
    assert (square[:, :56] == 0).all() and (square[:, 168:] == 0).all() and (square[:, 56:168] == 1).all()
    wide = to_square(np.ones((30, 90), np.float32), 45)
    assert np.flatnonzero(wide[:, 20] > 0.5).tolist() == list(range(15, 30))
    small = to_square(np.ones((8, 8), np.float32), 32)  # grows
    assert (small == 1).all()


def test_stitch_places_squares_side_by_side():
    a, b = np.ones((40, 20), np.float32), np.full((10, 30), 0.5, np.float32)
    out = stitch([a, b])
    assert out.shape == (40, 80)
    np.testing.assert_array_equal(out[:, :40], pad_to_square(a))
    assert out[:, 40:].max() == pytest.approx(0.5) and out[:, 40:][:, 0].max() == pytest.approx(0.5)
    assert stitch([a, b], side=16).shape == (16, 32)


# --- views ---------------------------------------------------------------------------------------------

def view_ds(view_position=None, code=None, description=None, number=1, pixels=True) -> Dataset:
    ds = plain_ds(RAMP, SeriesNumber=number, InstanceNumber=1, Modality="DX")
    if view_position is not None:
        ds.ViewPosition = view_position
    if code is not None:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
        ds.ViewCodeSequence = Sequence([item])
    if description is not None:
        ds.SeriesDescription = description
    if not pixels:
        del ds.PixelData
    return ds


@pytest.mark.parametrize("attrs, expected", [
    ({"view_position": "PA"}, "frontal"),
    ({"view_position": "AP"}, "frontal"),
    ({"view_position": "LL"}, "lateral"),
    ({"view_position": "RL"}, "lateral"),
    ({"view_position": "LATERAL"}, "lateral"),
    ({"view_position": "LAT"}, "lateral"),
    ({"view_position": "AP LLD"}, None),
    ({"code": ("399348003", "SCT", "postero-anterior")}, "frontal"),
    ({"code": ("399182000", "SCT", "antero-posterior")}, "frontal"),
    ({"code": ("399173006", "SCT", "left lateral")}, "lateral"),
    ({"code": ("399198007", "SCT", "right lateral")}, "lateral"),
    ({"code": ("R-10206", "SRT", "postero-anterior")}, "frontal"),
    ({"description": "CHEST PA"}, "frontal"),
    ({"description": "Thorax AP liegend"}, "frontal"),
    ({"description": "CHEST LAT"}, "lateral"),
    ({"description": "CHEST PA + LAT"}, None),
    ({"description": "LAPAROSCOPY"}, None),
    ({"view_position": "", "description": "chest"}, None),
    ({"view_position": "PA", "code": ("399173006", "SCT", "left lateral")}, "frontal"),  # View Position wins
])
def test_classify_view(attrs, expected):
    assert classify_view(view_ds(**attrs)) == expected


def test_select_frontal_first_lateral_when_asked_and_ignore_non_images():
    lateral = view_ds("LL", number=1)
    frontal_2 = view_ds("PA", number=3)
    frontal_1 = view_ds("AP", number=2)
    report = view_ds("PA", number=0, pixels=False)  # e.g. an SR or a presentation state
    study = [lateral, frontal_2, report, frontal_1]
    assert select_images(study, ("frontal", "lateral")) == [frontal_1, lateral]
    assert select_images(study, ("lateral", "frontal")) == [lateral, frontal_1]
    assert select_images(study, ("frontal",)) == [frontal_1]
    assert select_images([frontal_2, frontal_1], ("frontal", "lateral")) == [frontal_1]
    assert select_images([report], ("frontal",)) == []
    # selecting again among the chosen images changes nothing
    chosen = select_images(study, ("frontal", "lateral"))
    assert select_images(chosen, ("frontal", "lateral")) == chosen


def test_select_falls_back_when_no_image_says_frontal():
    lateral, unknown_b, unknown_a = view_ds("LL", number=1), view_ds(number=5), view_ds(number=4)
    assert select_images([lateral, unknown_b, unknown_a], ("frontal", "lateral")) == [unknown_a, lateral]
    assert select_images([lateral], ("frontal", "lateral")) == [lateral]  # any image, used once
    assert select_images([unknown_b], ("frontal", "lateral")) == [unknown_b]


def test_select_prefers_radiographs_for_presentation():
    processing = view_ds("PA", number=1)
    processing.PresentationIntentType = "FOR PROCESSING"
    capture = view_ds("PA", number=2)
    capture.Modality = "OT"
    presentation = view_ds("PA", number=3)
    assert select_images([processing, capture, presentation], ("frontal",)) == [presentation]
    assert select_images([processing, capture], ("frontal",)) == [capture]


# --- loading -------------------------------------------------------------------------------------------

def test_load_recurses_skips_non_dicom_and_orders(tmp_path, caplog):
    b = save(phantom_ds(view="LL", number=2), tmp_path / "study" / "sub" / "b.dcm")
    a = save(phantom_ds(view="PA", number=1), tmp_path / "study" / "a.dcm")
    (tmp_path / "study" / "notes.txt").write_text("not dicom")
    (tmp_path / "study" / "x.dcm.partial").write_bytes(a.read_bytes()[:300])
    dicomdir = Dataset()
    dicomdir.file_meta = FileMetaDataset()
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dicomdir.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicomdir.FileSetID = "TEST"
    dicomdir.DirectoryRecordSequence = Sequence()
    save(dicomdir, tmp_path / "study" / "DICOMDIR")
    with caplog.at_level(logging.INFO, logger="engine.preprocess"):
        loaded = load_study([tmp_path / "study", a])  # a twice: read once
    assert [ds.SeriesNumber for ds in loaded] == [1, 2]
    assert [classify_view(ds) for ds in loaded] == ["frontal", "lateral"]
    assert "notes.txt" in caplog.text and "DICOMDIR" in caplog.text and "partial" in caplog.text
    assert b.exists()


def test_load_refuses_mixed_studies_and_empty_or_missing_input(tmp_path):
    save(phantom_ds(study_uid="1.2.3.100"), tmp_path / "mixed" / "a.dcm")
    save(phantom_ds(study_uid="1.2.3.200"), tmp_path / "mixed" / "b.dcm")
    with pytest.raises(PreprocessError, match=r"1\.2\.3\.100.*1\.2\.3\.200"):
        load_study([tmp_path / "mixed"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PreprocessError, match="no readable DICOM"):
        load_study([tmp_path / "empty"])
    (tmp_path / "text" / "a.txt").parent.mkdir()
    (tmp_path / "text" / "a.txt").write_text("hello")
    with pytest.raises(PreprocessError, match="no readable DICOM"):
        load_study([tmp_path / "text"])
    with pytest.raises(PreprocessError, match="does not exist"):
        load_study([tmp_path / "nowhere"])


def test_study_without_images_is_refused(tmp_path):
    ds = view_ds("PA", pixels=False)
    with pytest.raises(PreprocessError, match=f"study {STUDY.study_uid}: no usable image"):
        study_pixel_values([ds], Preprocessing(image_size=32))


# --- model input ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    config = PhantomConfig(image_size=64, lateral_fraction=0.6, monochrome1_fraction=0.5, workers=1,
                           transfer_syntax_weights={"explicit": 1, "jpeg2000": 1, "rle": 1})
    generate_dataset(out, 8, seed=5, config=config)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return out, records


def test_phantom_studies_become_pixel_values(phantoms):
    out, records = phantoms
    prep = Preprocessing(image_size=48, views=("frontal", "lateral"))
    for record in records:
        datasets = load_study([out / "studies" / Path(record["images"][0]).parent.name])
        study = prepare_study(datasets, prep)
        n = len(record["images"])
        assert study.pixel_values.shape == (n, 3, 48, 48) and study.pixel_values.dtype == np.float32
        assert study.sop_instance_uids == tuple(info["sop_instance_uid"] for info in record["image_info"])
        assert study.views == ("frontal", "lateral")[:n]
        assert study.study_instance_uid == record["study_uid"]
        assert -1.0 <= study.pixel_values.min() and study.pixel_values.max() <= 1.0
        again = study_pixel_values(select_images(datasets, prep.views), prep)  # what the runtime does
        np.testing.assert_array_equal(again, study.pixel_values)
    kinds = {(i["photometric"], i["transfer_syntax"]) for r in records for i in r["image_info"]}
    assert len({p for p, _ in kinds}) == 2 and len({s for _, s in kinds}) == 3


def test_normalisation_channels_and_stitch(phantoms):
    out, records = phantoms
    record = next(r for r in records if len(r["images"]) == 2)
    datasets = load_study([out / image for image in record["images"]])
    prep = Preprocessing(image_size=32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.5), views=("frontal", "lateral"))
    values = study_pixel_values(datasets, prep)
    unit = to_square(image_to_unit(datasets[0], "dicom"), 32)
    for channel in range(3):
        np.testing.assert_allclose(values[0, channel], (unit - prep.mean[channel]) / prep.std[channel], atol=1e-5)
    stitched = study_pixel_values(datasets, Preprocessing(image_size=32, views=("frontal", "lateral"),
                                                          combine="stitch"))
    assert stitched.shape == (1, 3, 32, 32)
    gray = stitched[0, 0] * 0.5 + 0.5
    assert (gray[:8] == 0).all() and (gray[24:] == 0).all() and gray[8:24].std() > 0.05  # two squares in a strip
    assert study_pixel_values(datasets[:1], Preprocessing(image_size=32, combine="stitch")).shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(study_pixel_values(datasets, prep), values)  # deterministic


def test_unit_images_to_pixel_values_matches_the_study_path(phantoms):
    out, records = phantoms
    datasets = load_study([out / image for image in records[0]["images"]])
    prep = Preprocessing(image_size=40, window="percentile")
    units = [image_to_unit(ds, prep.window) for ds in select_images(datasets, prep.views)]
    np.testing.assert_array_equal(unit_images_to_pixel_values(units, prep), study_pixel_values(datasets, prep))
    with pytest.raises(PreprocessError):
        study_pixel_values(datasets, Preprocessing(image_size=40, window="auto"))


def test_dataset_built_in_memory_works_too():
    ds = phantom_ds()
    values = study_pixel_values([ds], Preprocessing(image_size=24))
    assert values.shape == (1, 3, 24, 24)
    assert isinstance(ds, pydicom.Dataset) and not hasattr(ds, "filename")
