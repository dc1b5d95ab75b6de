"""The image viewer on its own, over DICOM files written by the test (no store, no window)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom

from desktop.tasks import Background
from desktop.viewer import Viewer
from dicom_node.index import InstanceRow


def instance_row(path: Path, view: str) -> InstanceRow:
    """The index row the store would hold for this file, seen as `view`."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return InstanceRow(ds.SOPInstanceUID, ds.SOPClassUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, 1, view,
                       str(ds.file_meta.TransferSyntaxUID), path.name, 0, 0.0, "")


def shown_viewer(qtbot, images: Sequence[tuple[Path, str]], size: tuple[int, int] = (900, 600),
                 background: Background | None = None, study: Any = None) -> Viewer:
    """A shown Viewer with a study of these (file, view) images open and its first canvas drawn."""
    viewer = Viewer(background or Background())
    qtbot.addWidget(viewer)
    viewer.resize(*size)
    viewer.show()
    opened = SimpleNamespace(instances=[instance_row(path, view) for path, view in images],
                             paths=[path for path, _ in images], series=())
    if study is not None:
        opened.study = study
    viewer.open_study(opened)
    qtbot.waitUntil(lambda: viewer.canvases[0].image is not None, timeout=10_000)
    return viewer
