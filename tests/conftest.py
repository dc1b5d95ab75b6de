"""Shared fixtures: real peers (dcmtk, orthanc), real sample files, a running `raddraft service`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from peers.orthanc import find_orthanc

pytest_plugins = ["tests.model_fixtures", "tests.postgres_fixtures", "tests.window_fixtures"]

REQUIRE_PEERS = os.environ.get("RADDRAFT_REQUIRE_PEERS") == "1"

# Files pydicom ships (the others would try to download): one per transfer syntax we accept.
SAMPLE_FILES = {
    "CT_small.dcm": "1.2.840.10008.1.2.1",
    "MR_small_implicit.dcm": "1.2.840.10008.1.2",
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",
    "JPEG-lossy.dcm": "1.2.840.10008.1.2.4.51",
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",
    "JPEGLSNearLossless_16.dcm": "1.2.840.10008.1.2.4.81",
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",
}


def missing_peer(message: str) -> NoReturn:
    """Skip the test for a peer that is not installed; fail it when RADDRAFT_REQUIRE_PEERS=1 (CI)."""
    if REQUIRE_PEERS:
        pytest.fail(f"required peer missing: {message}")
    pytest.skip(message)


def require_tool(name: str) -> str:
    """Path of an external peer; skip when absent, fail when RADDRAFT_REQUIRE_PEERS=1."""
    path = shutil.which(name)
    if path:
        return path
    missing_peer(f"{name} is not installed (apt-get install dcmtk orthanc dicom3tools)")


def require_orthanc() -> Path:
    """Debian's Orthanc binary; skip when absent, fail when RADDRAFT_REQUIRE_PEERS=1."""
    binary = find_orthanc()
    if binary is not None:
        return binary
    missing_peer("Orthanc is not installed (/usr/sbin/Orthanc; apt-get install orthanc)")


def wait_until(check: Callable[[], Any], timeout: float, what: str, poll_s: float = 0.1) -> Any:
    """The first true result of `check`, polled until `timeout`; an AssertionError naming `what` after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def peer_env() -> dict[str, str]:
    # dcmtk tools crawl on loopback without it (Nagle against delayed ACKs): see shared/PEERS.md.
    return {**os.environ, "TCP_NODELAY": "1"}


def sample_path(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom sample {name} is not bundled with this pydicom")
    return Path(path)


def copy_with_fresh_uids(source: Path, target: Path, study_uid: str | None = None,
                         series_uid: str | None = None) -> pydicom.Dataset:
    """A copy of a real file as a distinct instance (several pydicom samples share UIDs)."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)
    return ds


@pytest.fixture
def sample_study(tmp_path: Path) -> tuple[str, list[Path]]:
    """One study made of every bundled sample (each transfer syntax), with fresh UIDs."""
    study_uid = generate_uid()
    paths = []
    for name in SAMPLE_FILES:
        target = tmp_path / "study" / name
        copy_with_fresh_uids(sample_path(name), target, study_uid=study_uid)
        paths.append(target)
    return study_uid, paths


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset of a Part 10 file (everything after the file meta)."""
    with path.open("rb") as f:
        pydicom.filereader.read_preamble(f, False)
        pydicom.filereader._read_file_meta_info(f)
        return f.read()


@dataclass
class RunningService:
    process: subprocess.Popen
    port: int
    store: Path
    ae_title: str

    @property
    def log(self) -> str:
        return (self.store.parent / f"{self.store.name}-service.log").read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


_LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


def start_service(store: Path, *extra: str, ae_title: str = "RADDRAFT", timeout: float = 30) -> RunningService:
    """`raddraft service` as a user starts it, on an OS-assigned port read from its first line."""
    cmd = [sys.executable, "-m", "raddraft", "service", "--store", str(store), "--port", "0",
           "--ae-title", ae_title, *extra]
    log = store.parent / f"{store.name}-service.log"
    # stderr goes to a file: an unread pipe would fill up and stall the service.
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log.open("a"), text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = _LISTENING.search(line)
        if match:
            return RunningService(process, int(match.group(1)), store, ae_title)
    process.kill()
    raise RuntimeError(f"service did not start: {log.read_text()}")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningService]:
    running = start_service(tmp_path / "store", "--stable-after", "1", "--log-level", "INFO", "--no-draft")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(timeout=30)
