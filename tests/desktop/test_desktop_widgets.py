"""The real widgets one by one: viewer, report editors, worklist, settings, export."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pydicom
from PySide6.QtCore import QPoint, Qt

from desktop.draft_panel import SectionEditor
from desktop.settings_dialog import SettingsDialog
from dicom_node.index import StudyState
from dicom_node.reports import SignedReport, sign_report
from dicom_node.store import ReceivedInstance
from engine.provenance import Origin
from tests.conftest import copy_with_fresh_uids, sample_path
from tests.desktop.test_desktop_reading import highlighted_ranges
from tests.desktop.viewers import shown_viewer
from tests.engine.test_display import RAMP, write_image


def grey(image, x: int, y: int) -> int:
    return image.pixelColor(x, y).value()


def test_viewer_monochrome1_window_level_invert_frames_side_by_side(qtbot, tmp_path):
    frontal = write_image(tmp_path / "pa.dcm", RAMP, "MONOCHROME1", ViewPosition="PA")
    lateral = write_image(tmp_path / "ll.dcm", np.stack([RAMP + 100 * i for i in range(3)]), ViewPosition="LL")
    viewer = shown_viewer(qtbot, [(frontal, "PA"), (lateral, "LL")], size=(900, 500))
    pa, ll = viewer.canvases
    qtbot.waitUntil(lambda: pa.image is not None and ll.image is not None, timeout=10_000)
    assert ll.isVisible() and (pa.label, ll.label) == ("frontal", "lateral")
    assert viewer.thumbs.count() == 2
    # MONOCHROME1: the lowest stored values are shown bright.
    assert grey(pa.image, 0, 0) > grey(pa.image, 39, 0)
    assert "MONOCHROME1" in pa.frame.attributes["photometric"]
    # Window/level by dragging with the left button.
    before, first = (pa.center, pa.width_), pa.image
    qtbot.mousePress(pa, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
    qtbot.mouseMove(pa, QPoint(180, 140))
    qtbot.mouseRelease(pa, Qt.MouseButton.LeftButton, pos=QPoint(180, 140))
    assert (pa.center, pa.width_) != before and pa.width_ > before[1]
    qtbot.waitUntil(lambda: pa.image is not first, timeout=5_000)
    # Invert, presets, zoom, fit, reset.
    pa.toggle_invert()
    qtbot.waitUntil(lambda: grey(pa.image, 0, 0) < grey(pa.image, 39, 0), timeout=5_000)
    assert viewer.presets.count() >= 2
    pa.zoom_by(2.0)
    assert pa.zoom == 2.0
    pa.reset()
    assert pa.zoom == 1.0 and not pa.invert and (pa.center, pa.width_) == pa.frame.default_window
    # Scroll through the frames of the multi-frame lateral.
    viewer.set_active(1)
    assert ll.position_text == "image 1/1, frame 1/3"
    viewer.scroll(1)
    qtbot.waitUntil(lambda: ll.position_text == "image 1/1, frame 2/3", timeout=5_000)
    assert ll.frame.values[0, 0] == 100
    viewer.scroll(-1)
    qtbot.waitUntil(lambda: ll.frame.frame == 0, timeout=5_000)


def test_editor_marks_model_text_until_edited_or_accepted(qtbot):
    editor = SectionEditor("findings")
    qtbot.addWidget(editor)
    editor.show()
    text = "No effusion. Heart is normal."
    editor.show_text(text, Origin.AI, "draft 1")
    assert highlighted_ranges(editor) == [(0, len(text))]
    cursor = editor.textCursor()
    cursor.setPosition(text.index(" is"))
    editor.setTextCursor(cursor)
    qtbot.keyClicks(editor, " size")
    assert editor.toPlainText() == "No effusion. Heart size is normal."
    # only the typed characters are the radiologist's; the rest stays marked until accepted
    assert highlighted_ranges(editor) == [(0, len("No effusion. Heart")), (len("No effusion. Heart size"), 34)]
    editor.accept_ai()
    assert highlighted_ranges(editor) == []
    editor.start_stream("on demand")
    for piece in ("Small ", "left ", "effusion."):
        editor.append_stream(piece)
    editor.end_stream()
    assert editor.toPlainText() == "Small left effusion." == editor.section.text
    assert highlighted_ranges(editor) == [(0, len("Small left effusion."))]


def add_study(ws, tmp_path: Path, name: str, patient_id: str) -> str:
    path = tmp_path / f"{patient_id}.dcm"
    ds = pydicom.dcmread(sample_path("CT_small.dcm"))
    ds.PatientName, ds.PatientID = name, patient_id
    ds.save_as(path)
    uid = str(copy_with_fresh_uids(path, path).StudyInstanceUID)
    ws.store.put(ReceivedInstance.from_part10(path.read_bytes()))
    return uid


def test_worklist_search_filter_sort_and_next_previous(desktop, qtbot, tmp_path):
    window = desktop()
    ws, panel = window.ws, window.worklist
    uids = [add_study(ws, tmp_path, name, pid) for name, pid in
            (("Adams^Ann", "P-1"), ("Brown^Bob", "P-2"), ("Clark^Cy", "P-3"))]
    ws.store.index.transition(uids[2], StudyState.STABLE)
    window.feed.request()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 3, timeout=5_000)
    panel.search.setText("p-2")
    assert panel.uids_in_view_order() == [uids[1]]
    panel.search.clear()
    panel.state_filter.setCurrentText("Signed / sent")
    assert panel.uids_in_view_order() == []
    panel.state_filter.setCurrentText("All studies")
    panel.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    assert panel.uids_in_view_order() == uids
    panel.view.sortByColumn(8, Qt.SortOrder.DescendingOrder)  # by state: stable after receiving
    assert panel.uids_in_view_order()[0] == uids[2]
    panel.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    panel.open_relative(1)
    qtbot.waitUntil(lambda: window.opened is not None and window.opened.study.study_uid == uids[0], timeout=5_000)
    panel.open_relative(1)
    qtbot.waitUntil(lambda: window.opened.study.study_uid == uids[1], timeout=5_000)
    panel.open_relative(-1)
    qtbot.waitUntil(lambda: window.opened.study.study_uid == uids[0], timeout=5_000)
    qtbot.waitUntil(lambda: panel.model.row_of(uids[0]).in_progress, timeout=5_000)
    assert "in progress" in panel.model.index(panel.model._rows.index(panel.model.row_of(uids[0])), 8).data()
    keys = {a.text(): a.shortcut().toString() for a in window.menuBar().actions()[0].menu().actions()}
    assert keys["Next study"] == "Ctrl+Down" and keys["Previous study"] == "Ctrl+Up"
    assert keys["Draft findings and impression"] == "Ctrl+D" and keys["Sign"] == "Ctrl+Return"


def test_settings_dialog_validates_then_saves_and_applies(desktop, qtbot, tmp_path):
    window = desktop()
    dialog = SettingsDialog(window.ws.config, window.ws.check_settings, window)
    qtbot.addWidget(dialog)
    dialog.fields["pacs.ae_title"].setText("ARCHIVE")
    dialog.accept()
    assert dialog.result() != SettingsDialog.DialogCode.Accepted
    assert "pacs.host" in dialog.error.text()
    dialog.fields["pacs.host"].setText("127.0.0.1")
    dialog.fields["reading.radiologist"].setText("Doe^John")
    dialog.accept()
    assert dialog.result() == SettingsDialog.DialogCode.Accepted
    changes = dialog.changes()
    assert changes == {"pacs.ae_title": "ARCHIVE", "pacs.host": "127.0.0.1", "reading.radiologist": "Doe^John"}
    window.apply_settings(changes)
    qtbot.waitUntil(lambda: window.ws.config.pacs.ae_title == "ARCHIVE", timeout=5_000)
    qtbot.waitUntil(lambda: "ARCHIVE@127.0.0.1:104" in window.status_bar.pacs.text(), timeout=5_000)
    saved = (tmp_path / "raddraft.toml").read_text()
    assert 'ae_title = "ARCHIVE"' in saved and 'radiologist = "Doe^John"' in saved


def test_export_text_pdf_and_sr(desktop, qtbot, tmp_path, monkeypatch):
    window = desktop()
    uid = add_study(window.ws, tmp_path, "Adams^Ann", "P-9")
    window.ws.store.index.transition(uid, StudyState.STABLE)
    report = sign_report(window.ws.store.index, SignedReport(uid, "Lungs clear.", "Normal.", "Smith^Anna"))
    window.open_study(uid)
    qtbot.waitUntil(lambda: window.panel.signed, timeout=5_000)
    assert window.panel.findings.isReadOnly() and window.panel.export.isEnabled()
    for kind, name in (("text", "r.txt"), ("pdf", "r.pdf"), ("sr", "r.dcm")):
        target = tmp_path / name
        monkeypatch.setattr("desktop.main_window.QFileDialog.getSaveFileName", lambda *a, t=target: (str(t), ""))
        window.export(kind)
        qtbot.waitUntil(target.exists, timeout=10_000)
    assert "FINDINGS\nLungs clear." in (tmp_path / "r.txt").read_text()
    deadline = time.monotonic() + 5
    while (tmp_path / "r.pdf").stat().st_size < 500 and time.monotonic() < deadline:
        qtbot.wait(50)
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    assert pydicom.dcmread(tmp_path / "r.dcm").SOPInstanceUID == report.sr_sop_instance_uid
