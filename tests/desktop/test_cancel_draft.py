"""Cancelling an on-demand draft (the embedded model drafts on the CPU): the model stops, the section gets
back the text it had with each character's origin, the partial output leaves no trace (nothing to redo, no
reference for the edit distance), and the model is free for the next draft."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from desktop.main_window import DraftCancelled
from raddraft.resources import embedded_model_dir
from tests.desktop.test_autosave import drafted_study, open_and_wait, type_at_end
from tests.desktop.test_regenerate import answer


def held_after_the_first_piece(window, monkeypatch) -> tuple[threading.Event, threading.Event, dict]:
    """The workstation's real draft_section, held after its first piece of text until `release` is set
    (so that Cancel is pressed while the model is writing); `outcome` gets its text or its exception."""
    first_piece, release, outcome = threading.Event(), threading.Event(), {}
    real = window.ws.draft_section

    def observed(study_uid, section, findings, on_piece, indication):
        def piece(text: str) -> None:
            on_piece(text)
            if not first_piece.is_set():
                first_piece.set()
                release.wait(30)
        try:
            outcome["text"] = real(study_uid, section, findings, piece, indication)
        except Exception as error:
            outcome["error"] = error
            raise
        return outcome["text"]

    monkeypatch.setattr(window.ws, "draft_section", observed)
    return first_piece, release, outcome


@pytest.mark.slow
def test_cancel_stops_the_model_and_gives_the_text_back(desktop, qtbot, tmp_path, monkeypatch):
    window = desktop(**{"engine.model": str(embedded_model_dir()), "engine.providers": ["cpu"],
                        "engine.max_new_tokens": 24, "engine.draft_on_stable": False})
    open_and_wait(window, qtbot, drafted_study(window.ws.store, tmp_path, "a"))
    panel, findings = window.panel, window.panel.findings
    type_at_end(qtbot, findings, " Mild cardiomegaly.")
    before_text, before_runs, before_models = findings.toPlainText(), findings.runs(), dict(findings.models)
    before_share = findings.section.ai_characters()
    assert not panel.cancel.isVisible()
    first_piece, release, outcome = held_after_the_first_piece(window, monkeypatch)
    answer(window, QMessageBox.StandardButton.Yes)  # the findings hold typed text: replace them? yes
    panel.draft_findings.click()
    qtbot.waitUntil(lambda: first_piece.is_set() and findings.toPlainText() != before_text, timeout=60_000)
    assert panel.cancel.isVisible() and findings.isReadOnly() and "Generating findings" in panel.source.text()

    panel.cancel.click()
    release.set()
    assert findings.toPlainText() == before_text and findings.runs() == before_runs
    assert findings.models == before_models and findings.section.ai_characters() == before_share
    assert "cancelled" in panel.source.text() and not panel.cancel.isVisible()
    assert not findings.isReadOnly() and not window.generating
    qtbot.waitUntil(lambda: bool(outcome), timeout=60_000)
    assert isinstance(outcome.get("error"), DraftCancelled)  # the model stopped at its next piece
    qtbot.wait(200)  # pieces of the cancelled draft still queued reach nothing
    assert findings.runs() == before_runs
    findings.redo()  # the partial output cannot come back
    assert findings.runs() == before_runs
    findings.undo()  # the radiologist's own history is still there
    assert findings.toPlainText() != before_text

    monkeypatch.undo()  # the model is free: the next draft runs to its end, and Esc leaves it alone then
    findings.redo()
    answer(window, QMessageBox.StandardButton.Yes)
    panel.draft_findings.click()
    qtbot.waitUntil(lambda: not window.generating and "drafted by" in panel.source.text(), timeout=60_000)
    assert [origin.value for origin, _, _ in findings.runs()] == ["ai"] and not panel.cancel.isVisible()


@pytest.mark.slow
def test_escape_cancels_drafting_both_sections(desktop, qtbot, tmp_path, monkeypatch):
    window = desktop(**{"engine.model": str(embedded_model_dir()), "engine.providers": ["cpu"],
                        "engine.max_new_tokens": 24, "engine.draft_on_stable": False})
    open_and_wait(window, qtbot, drafted_study(window.ws.store, tmp_path, "a"))
    panel = window.panel
    before = {name: panel.editor(name).runs() for name in ("findings", "impression")}
    first_piece, release, outcome = held_after_the_first_piece(window, monkeypatch)
    window.draft_both()  # Ctrl+D: findings, then impression
    qtbot.waitUntil(first_piece.is_set, timeout=60_000)
    qtbot.waitUntil(lambda: panel.findings.runs() != before["findings"], timeout=10_000)
    QTest.keyClick(window, Qt.Key.Key_Escape)
    # at once, while the model is still held: the section is back, before the model could write on
    assert panel.findings.runs() == before["findings"] and not panel.cancel.isVisible()
    release.set()
    qtbot.waitUntil(lambda: bool(outcome), timeout=60_000)
    qtbot.wait(300)
    assert isinstance(outcome.get("error"), DraftCancelled)
    assert {name: panel.editor(name).runs() for name in before} == before  # the impression was never started
    assert not window.generating and "cancelled" in panel.source.text()
