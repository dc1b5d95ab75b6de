"""HTJ2K, the newest syntax modalities send, end to end: received over DICOM as sent, shown by the viewer
and drafted, decoded by pylibjpeg-openjpeg, pixel for pixel the image it was made from."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import HTJ2KLossless

from dicom_node.sender import send_files
from engine.bundle import Preprocessing
from engine.display import load_frame
from engine.preprocess import load_study, prepare_study
from tests.conftest import copy_with_fresh_uids, sample_path

imagecodecs = pytest.importorskip("imagecodecs", reason="imagecodecs (the HTJ2K encoder of the test data) is absent")


def htj2k_copy(source: Path, target: Path) -> Path:
    """`source` with its pixels encoded as lossless HTJ2K (OpenJPH through imagecodecs)."""
    ds = pydicom.dcmread(source)
    encoded = copy.deepcopy(ds)
    encoded.file_meta.TransferSyntaxUID = HTJ2KLossless
    encoded.PixelData = encapsulate([imagecodecs.htj2k_encode(ds.pixel_array)])
    encoded["PixelData"].VR = "OB"
    encoded.save_as(target, enforce_file_format=True)
    return target


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    native = tmp_path / "native.dcm"
    ds = copy_with_fresh_uids(sample_path("CT_small.dcm"), native)
    ds.ViewPosition = "PA"
    ds.save_as(native)
    return native, htj2k_copy(native, tmp_path / "htj2k.dcm")


def test_received_over_dicom_as_sent_and_shown_as_the_native_image(pair, tmp_path):
    from dicom_node.events import NodeEvents
    from dicom_node.server import DicomNode
    from dicom_node.settings import NodeSettings, StoreSettings
    from dicom_node.store import Store

    native, encoded = pair
    store = Store(StoreSettings(tmp_path / "store"))
    node = DicomNode(NodeSettings(port=0, ae_title="RADDRAFT"), store, NodeEvents())
    node.start()
    try:
        summary = send_files("127.0.0.1", node.port, [encoded], called_ae="RADDRAFT")
        assert [outcome.status for outcome in summary.outcomes] == [0x0000]
        (row,) = store.index.instances_of(str(pydicom.dcmread(encoded).StudyInstanceUID))
        stored = store.path_of(row)
        assert row.transfer_syntax == HTJ2KLossless
        assert pydicom.dcmread(stored).PixelData == pydicom.dcmread(encoded).PixelData  # kept as received
        shown, reference = load_frame(stored), load_frame(native)
        assert np.array_equal(shown.values, reference.values)
        assert shown.default_window == reference.default_window
    finally:
        node.stop()
        store.close()


def test_drafted_from_the_same_pixels_as_the_native_image(pair):
    native, encoded = pair
    settings = Preprocessing(image_size=64, views=("frontal",))
    from_native = prepare_study(load_study([native]), settings)
    from_htj2k = prepare_study(load_study([encoded]), settings)
    assert from_htj2k.skipped == () and from_htj2k.views == from_native.views
    assert np.array_equal(from_htj2k.pixel_values, from_native.pixel_values)
