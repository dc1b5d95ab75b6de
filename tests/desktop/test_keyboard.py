"""The reading keyboard: focus lands in Findings at the end of its text, Tab and Shift+Tab move between the
image, Findings and Impression (Tab never types a tab), sign and next (Ctrl+Shift+Return)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtTest import QTest

from dicom_node.reports import latest_report
from tests.desktop.test_autosave import DRAFT_FINDINGS, drafted_study, open_and_wait


def test_tab_moves_between_image_findings_and_impression(desktop, qtbot, tmp_path, no_model):
    window = desktop(**no_model)
    uid = drafted_study(window.ws.store, tmp_path, "a")
    open_and_wait(window, qtbot, uid)
    panel = window.panel
    qtbot.waitUntil(lambda: panel.findings.hasFocus(), timeout=5_000)
    assert panel.findings.textCursor().position() == len(DRAFT_FINDINGS)
    qtbot.keyClick(panel.findings, Qt.Key.Key_Tab)
    assert panel.impression.hasFocus() and "\t" not in panel.findings.toPlainText()
    qtbot.keyClick(panel.impression, Qt.Key.Key_Backtab, Qt.KeyboardModifier.ShiftModifier)
    assert panel.findings.hasFocus()
    qtbot.keyClick(panel.findings, Qt.Key.Key_Backtab, Qt.KeyboardModifier.ShiftModifier)
    assert window.viewer.hasFocus() or window.viewer.isAncestorOf(window.focusWidget())
    assert "\t" not in panel.impression.toPlainText() + panel.findings.toPlainText()


def test_sign_and_next(desktop, qtbot, tmp_path, no_model):
    window = desktop(**no_model)
    ws = window.ws
    first, second = drafted_study(ws.store, tmp_path, "a"), drafted_study(ws.store, tmp_path, "b")
    window.feed.request()
    qtbot.waitUntil(lambda: window.worklist.model.rowCount() == 2, timeout=5_000)
    order = window.worklist.uids_in_view_order()
    assert window.worklist.select(order[0])
    open_and_wait(window, qtbot, order[0])
    window.panel.accept.click()
    keys = {a.text(): a.shortcut() for a in window.menuBar().actions()[0].menu().actions()}
    assert keys["Sign and open the next study"] == QKeySequence("Ctrl+Shift+Return")
    QTest.keySequence(window.panel.findings, QKeySequence("Ctrl+Shift+Return"))
    qtbot.waitUntil(lambda: latest_report(ws.store.index, order[0]) is not None, timeout=10_000)
    qtbot.waitUntil(lambda: window.opened.study.study_uid == order[1], timeout=10_000)
    assert {first, second} == set(order) and latest_report(ws.store.index, order[1]) is None
