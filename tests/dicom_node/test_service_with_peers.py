"""`raddraft service` started as a user would, fed by dcmtk's storescu/echoscu and `raddraft send`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pydicom

from dicom_node.index import Index
from tests.conftest import SAMPLE_FILES, dataset_bytes, peer_env, require_tool

# storescu proposes only uncompressed syntaxes unless told which one a file uses (shared/PEERS.md).
STORESCU_SYNTAX_OPTION = {
    "1.2.840.10008.1.2.1": [],
    "1.2.840.10008.1.2": ["-xi"],
    "1.2.840.10008.1.2.1.99": ["-xd"],
    "1.2.840.10008.1.2.4.50": ["-xy"],
    "1.2.840.10008.1.2.4.51": ["-xx"],
    "1.2.840.10008.1.2.4.80": ["-xt"],
    "1.2.840.10008.1.2.4.81": ["-xu"],
    "1.2.840.10008.1.2.4.91": ["-xw"],
    "1.2.840.10008.1.2.5": ["-xr"],
}


def _same_content(a: pydicom.Dataset, b: pydicom.Dataset) -> bool:
    """Equal elements and pixel bytes, ignoring what dcmtk drops when it re-encodes for the wire
    (trailing padding, group lengths)."""
    def kept(ds):
        return {e.tag: e.value for e in ds if e.tag != 0xFFFCFFFC and e.tag.element != 0}
    return kept(a) == kept(b)


def _check_store_has(store: Path, files: list[Path], byte_identical: bool = True) -> None:
    """Every file is indexed, inside the store, in its transfer syntax, with its content.

    `byte_identical`: the sender puts the file's dataset bytes on the wire unchanged (pynetdicom
    does; dcmtk's storescu re-encodes, so for it the decoded content is compared)."""
    index = Index(store / "index.sqlite3")
    try:
        for path in files:
            sent = pydicom.dcmread(path, stop_before_pixels=True)
            row = index.instance(sent.SOPInstanceUID)
            assert row is not None, f"{path.name} not indexed"
            stored = store / row.path
            assert stored.resolve().is_relative_to(store.resolve())
            if byte_identical:
                assert dataset_bytes(stored) == dataset_bytes(path), f"{path.name} differs from what was sent"
            else:
                assert _same_content(pydicom.dcmread(stored), pydicom.dcmread(path)), path.name
            assert row.transfer_syntax == str(sent.file_meta.TransferSyntaxUID)
    finally:
        index.close()


def test_echoscu(service):
    echoscu = require_tool("echoscu")
    result = subprocess.run([echoscu, "-aec", service.ae_title, "127.0.0.1", str(service.port)],
                            env=peer_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_storescu_every_transfer_syntax_then_clean_shutdown(service, sample_study):
    storescu = require_tool("storescu")
    _study_uid, paths = sample_study
    for path in paths:
        option = STORESCU_SYNTAX_OPTION[SAMPLE_FILES[path.name]]
        result = subprocess.run([storescu, *option, "-aec", service.ae_title, "127.0.0.1", str(service.port),
                                 str(path)], env=peer_env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
    deadline = time.monotonic() + 15
    while "stable with" not in service.log and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.stop() == 0
    _check_store_has(service.store, paths, byte_identical=False)
    # The study was logged at INFO (it became stable) without who the patient is.
    log = service.log
    assert f"stable with {len(paths)} instances" in log
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for identifier in (str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))):
            if identifier:
                assert identifier not in log, f"patient identifier {identifier!r} in the INFO log"


def test_img2dcm_output_is_stored(service, tmp_path):
    img2dcm, storescu = require_tool("img2dcm"), require_tool("storescu")
    jpeg = tmp_path / "photo.jpg"
    _write_tiny_jpeg(jpeg)
    dcm = tmp_path / "photo.dcm"
    made = subprocess.run([img2dcm, str(jpeg), str(dcm)], capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    sent = subprocess.run([storescu, "-xy", "-aec", service.ae_title, "127.0.0.1", str(service.port), str(dcm)],
                          env=peer_env(), capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert service.stop() == 0
    _check_store_has(service.store, [dcm], byte_identical=False)


def test_raddraft_send_reports_and_exits_by_outcome(service, sample_study, tmp_path):
    _study_uid, paths = sample_study
    folder = paths[0].parent
    (folder / "notes.txt").write_text("not DICOM")
    result = subprocess.run([sys.executable, "-m", "raddraft", "send", "127.0.0.1", str(service.port), str(folder),
                             "--called-ae", service.ae_title], capture_output=True, text=True, timeout=120)
    # Every DICOM file went through; the text file is reported as a failure, so the exit is non-zero.
    assert result.returncode == 1, result.stderr
    assert f"{len(paths)} sent, 1 failed" in result.stdout
    assert "notes.txt" in result.stdout
    assert service.stop() == 0
    _check_store_has(service.store, paths)


def test_raddraft_send_to_nobody_fails_cleanly(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from tests.conftest import copy_with_fresh_uids, sample_path

    copy_with_fresh_uids(sample_path("CT_small.dcm"), tmp_path / "a.dcm")
    result = subprocess.run([sys.executable, "-m", "raddraft", "send", "127.0.0.1", str(port), str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "could not be established" in result.stderr
    assert "Traceback" not in result.stderr


def _write_tiny_jpeg(path: Path) -> None:
    import numpy as np
    from PIL import Image  # installed with matplotlib (dev extra)

    gradient = (np.arange(64 * 64).reshape(64, 64) % 256).astype("uint8")
    Image.fromarray(gradient).save(path, quality=90)
