"""Regenerating a section that holds the radiologist's text asks first, and Ctrl+Z brings the text back
(the embedded model drafts on the CPU)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QMessageBox

from raddraft.resources import embedded_model_dir
from tests.desktop.test_autosave import DRAFT_FINDINGS, drafted_study, open_and_wait, type_at_end


def answer(window, button: QMessageBox.StandardButton) -> None:
    """Press `button` in the question the window is about to ask (it runs its own event loop)."""
    def press() -> None:
        box = window.question
        if box is None or not box.isVisible():
            QTimer.singleShot(20, press)
            return
        box.button(button).click()
    QTimer.singleShot(20, press)


@pytest.mark.slow
def test_regenerating_typed_text_asks_and_can_be_undone(desktop, qtbot, tmp_path):
    window = desktop(**{"engine.model": str(embedded_model_dir()), "engine.providers": ["cpu"],
                        "engine.max_new_tokens": 24, "engine.draft_on_stable": False})
    uid = drafted_study(window.ws.store, tmp_path, "a")
    open_and_wait(window, qtbot, uid)
    findings = window.panel.findings
    type_at_end(qtbot, findings, " Mild cardiomegaly.")
    typed = findings.runs()
    answer(window, QMessageBox.StandardButton.No)
    window.draft_both()  # Ctrl+D
    assert window.question is not None and "findings" in window.question.text()
    assert findings.runs() == typed and not window.generating  # nothing replaced
    answer(window, QMessageBox.StandardButton.Yes)
    window.panel.draft_findings.click()
    qtbot.waitUntil(lambda: not window.generating and "drafted by" in window.panel.source.text(), timeout=60_000)
    assert [origin.value for origin, _, _ in findings.runs()] == ["ai"] and not findings.isReadOnly()
    findings.setFocus()
    findings.undo()  # the regeneration is one step
    assert findings.runs() == typed
    assert findings.toPlainText() == DRAFT_FINDINGS + " Mild cardiomegaly."
