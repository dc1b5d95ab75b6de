"""Benchmark corpora: CT-like instances with fresh UIDs, built from a pydicom sample header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def write_ct_corpus(out: Path, count: int, size: int = 512, seed: int = 0, studies: int = 1) -> list[Path]:
    """`count` uncompressed 16-bit CT instances of size x size (~0.5 MB at 512), spread over `studies`."""
    out.mkdir(parents=True, exist_ok=True)
    template = dcmread(get_testdata_file("CT_small.dcm", download=False))
    rng = np.random.default_rng(seed)
    study_uids = [generate_uid() for _ in range(studies)]
    series_uids = [generate_uid() for _ in range(studies)]
    paths = []
    for i in range(count):
        ds = template.copy()
        ds.file_meta = template.file_meta.copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        k = i % studies
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uids[k], series_uids[k]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, size=(size, size), dtype=np.uint16).tobytes()
        path = out / f"ct{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
