"""What a chest reader reaches for: orientation markers, a calibrated distance that goes into the
findings, a magnifier, zoom at the cursor, thumbnails apart, a preset box that stays, a title that wraps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtTest import QTest

from desktop.image_canvas import distance_text, orientation_markers
from desktop.viewer import Viewer
from tests.desktop.test_autosave import drafted_study, open_and_wait
from tests.desktop.viewers import shown_viewer
from tests.engine.test_display import write_image

IMAGE = np.tile(np.arange(0, 4000, 10, dtype=np.uint16), (300, 1))  # 300 x 400


def viewer_with(qtbot, tmp_path, **attributes) -> Viewer:
    path = write_image(tmp_path / "pa.dcm", IMAGE, ViewPosition="PA", **attributes)
    return shown_viewer(qtbot, [(path, "PA")])


def drag_with_shift(qtbot, canvas, start: QPoint, end: QPoint) -> None:
    shift = Qt.KeyboardModifier.ShiftModifier
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, shift, start)
    qtbot.mouseMove(canvas, end)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, shift, end)


def test_orientation_markers_from_patient_orientation():
    assert orientation_markers("L\\F") == {"right": "L", "left": "R", "bottom": "F", "top": "H"}
    assert orientation_markers("P\\FL") == {"right": "P", "left": "A", "bottom": "FL", "top": "HR"}
    assert orientation_markers("") == {}


@pytest.mark.parametrize("attributes,unit", [
    ({"PixelSpacing": [0.2, 0.1]}, "mm (Pixel Spacing)"),
    ({"ImagerPixelSpacing": [0.15, 0.15]}, "mm (Imager Pixel Spacing)"),
    ({}, "px (uncalibrated)")])
def test_distance_is_calibrated_by_the_header_or_says_uncalibrated(qtbot, tmp_path, attributes, unit):
    viewer = viewer_with(qtbot, tmp_path, PatientOrientation=["L", "F"], **attributes)
    canvas = viewer.canvases[0]
    measured = []
    viewer.measured.connect(measured.append)
    start, end = QPoint(300, 200), QPoint(500, 320)
    drag_with_shift(qtbot, canvas, start, end)
    a, b = canvas.to_image(QPointF(start)), canvas.to_image(QPointF(end))
    row, col = attributes.get("PixelSpacing") or attributes.get("ImagerPixelSpacing") or (None, None)
    expected = (f"{math.hypot((b.x() - a.x()) * col, (b.y() - a.y()) * row):.1f}" if row
                else f"{math.hypot(b.x() - a.x(), b.y() - a.y()):.0f}")
    assert measured == [f"{expected} {unit}"] == [canvas.measurement]
    assert canvas.frame.attributes["orientation"] == "L\\F"
    assert (canvas.center, canvas.width_) == canvas.frame.default_window  # the drag measured, it did not window


def test_zoom_keeps_the_point_under_the_cursor_and_the_magnifier_shows(qtbot, tmp_path):
    canvas = viewer_with(qtbot, tmp_path).canvases[0]
    cursor = QPointF(250, 180)
    before = canvas.to_image(cursor)
    canvas.zoom_by(2.0, at=cursor)
    after = canvas.to_image(cursor)
    assert canvas.zoom == 2.0 and abs(after.x() - before.x()) < 0.01 and abs(after.y() - before.y()) < 0.01
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_M)
    qtbot.mouseMove(canvas, cursor.toPoint())
    assert canvas.magnifier
    ring = canvas.grab().toImage().pixelColor(int(cursor.x()) + 89, int(cursor.y()))
    assert ring.red() > 200 and ring.green() > 180 and ring.blue() < 120  # the lens' yellow rim
    QTest.keyClick(canvas, Qt.Key.Key_M)
    assert not canvas.magnifier


def test_thumbnails_apart_and_the_preset_box_stays(qtbot, tmp_path):
    first = write_image(tmp_path / "pa.dcm", IMAGE, ViewPosition="PA", WindowCenter=2000, WindowWidth=4000)
    second = write_image(tmp_path / "ll.dcm", IMAGE, ViewPosition="LL")
    viewer = shown_viewer(qtbot, [(first, "PA"), (second, "LL")])

    def apart() -> bool:
        rects = [viewer.thumbs.visualItemRect(viewer.thumbs.item(i)) for i in range(viewer.thumbs.count())]
        return len(rects) == 2 and not rects[0].intersects(rects[1])

    # once laid out: QListView lays its items out on a timer, and a loaded thumbnail lays them out again (under
    # load, one check mid-layout saw them 102 px apart instead of the grid's 140, overlapping by a pixel)
    qtbot.waitUntil(apart, timeout=5_000)
    assert viewer.presets.count() >= 2
    viewer.presets.setCurrentIndex(1)
    viewer.presets.activated.emit(1)
    qtbot.mouseClick(viewer.canvases[0], Qt.MouseButton.LeftButton, pos=QPoint(50, 50))  # refills the box
    assert viewer.presets.currentIndex() == 1


def test_measurement_goes_into_the_findings_and_a_long_name_wraps(desktop, qtbot, tmp_path, no_model):
    window = desktop(**no_model)
    uid = drafted_study(window.ws.store, tmp_path, "a")  # CT_small: Pixel Spacing 0.661468
    open_and_wait(window, qtbot, uid)
    canvas = window.viewer.canvases[0]
    qtbot.waitUntil(lambda: canvas.image is not None, timeout=10_000)
    drag_with_shift(qtbot, canvas, QPoint(100, 100), QPoint(200, 180))
    assert window.measurement.endswith("mm (Pixel Spacing)")
    window.panel.findings.setFocus()
    QTest.keySequence(window.panel.findings, QKeySequence("Ctrl+Shift+M"))
    runs = window.panel.findings.runs()
    assert runs[-1][0].value == "human" and runs[-1][2] == f" Measures {window.measurement}."
    assert distance_text(QPointF(0, 0), QPointF(3, 4), "", "") == "5 px (uncalibrated)"
    width = window.panel.minimumSizeHint().width()
    window.panel.title.setText("Wolfeschlegelsteinhausenbergerdorff^Hubert Blaine Maximilian " * 4)
    assert window.panel.minimumSizeHint().width() <= max(width, 600)


def test_pdf_keeps_the_spacing_of_the_report_text(qtbot, tmp_path):
    from desktop.pdf import report_document, write_report_pdf

    text = "RADIOLOGY REPORT\n\nPatient: Doe, Jane    ID: P1\n\nFINDINGS\nLine one.\n  Indented line.\n"
    plain = report_document(text).toPlainText()
    assert "Patient: Doe, Jane    ID: P1" in plain and "  Indented line." in plain
    assert write_report_pdf(text, tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
