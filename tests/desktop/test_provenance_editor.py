"""Provenance is a property of the text: the real editor under undo, redo, paste, drag, partial edits and
regeneration, and the metrics signing computes from its origins."""

from __future__ import annotations

from PySide6.QtCore import QMimeData, Qt
from PySide6.QtGui import QGuiApplication, QTextCursor

from desktop.section_editor import SectionEditor
from engine.provenance import Origin, signing_metrics
from tests.desktop.test_desktop_reading import highlighted_ranges

DRAFT = "No effusion. Heart is normal."


def drafted(qtbot, text: str = DRAFT) -> SectionEditor:
    editor = SectionEditor("findings")
    qtbot.addWidget(editor)
    editor.show()
    editor.show_text(text, Origin.AI, "draft 1 (tiny@1)")
    editor.setFocus()
    return editor


def put_cursor(editor: SectionEditor, position: int, anchor: int | None = None) -> None:
    cursor = editor.textCursor()
    cursor.setPosition(position if anchor is None else anchor)
    if anchor is not None:
        cursor.setPosition(position, QTextCursor.MoveMode.KeepAnchor)
    editor.setTextCursor(cursor)


def origins(editor: SectionEditor) -> list[tuple[str, str]]:
    return [(origin.value, text) for origin, _, text in editor.runs()]


def undo(qtbot, editor) -> None:
    qtbot.keyClick(editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)


def redo(qtbot, editor) -> None:
    qtbot.keyClick(editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)


def test_undo_and_redo_never_launder_model_text(qtbot):
    editor = drafted(qtbot)
    undo(qtbot, editor)  # nothing to undo: the history starts with the study
    redo(qtbot, editor)
    assert origins(editor) == [("ai", DRAFT)] and highlighted_ranges(editor) == [(0, len(DRAFT))]
    put_cursor(editor, DRAFT.index(" is"))
    qtbot.keyClicks(editor, "x")
    assert origins(editor) == [("ai", "No effusion. Heart"), ("human", "x"), ("ai", " is normal.")]
    undo(qtbot, editor)  # one character typed and undone reviews nothing
    assert editor.toPlainText() == DRAFT and origins(editor) == [("ai", DRAFT)]
    redo(qtbot, editor)
    assert origins(editor) == [("ai", "No effusion. Heart"), ("human", "x"), ("ai", " is normal.")]
    undo(qtbot, editor)
    metrics = signing_metrics({"findings": editor.section})
    assert metrics.ai_characters_kept == len(DRAFT) and metrics.ai_characters_accepted == 0
    assert metrics.edit_distance == 0


def test_partial_edit_then_accept_counts_the_accepted_text_unchanged(qtbot):
    editor = drafted(qtbot)
    put_cursor(editor, DRAFT.index(" is"))
    qtbot.keyClicks(editor, " size")
    assert highlighted_ranges(editor) == [(0, len("No effusion. Heart")),
                                          (len("No effusion. Heart size"), len(DRAFT) + 5)]
    assert editor.section.unreviewed()  # the rest of the sentence is still the model's, unaccepted
    assert editor.accept_ai() == len(DRAFT)
    assert highlighted_ranges(editor) == [] and not editor.section.unreviewed()
    metrics = signing_metrics({"findings": editor.section})
    assert (metrics.ai_characters_kept, metrics.ai_characters_accepted, metrics.edit_distance) == (
        len(DRAFT), len(DRAFT), len(" size"))
    assert metrics.ai_share_kept == 1.0 and metrics.sections["findings"]["human_characters"] == 5
    undo(qtbot, editor)  # the acceptance is undone as one step: the text is unaccepted model text again
    assert editor.section.unreviewed() and editor.section.accepted_characters() == 0


def test_deleting_with_backspace_keeps_the_rest_marked(qtbot):
    editor = drafted(qtbot)
    put_cursor(editor, len("No effusion"))
    for _ in range(len("effusion")):
        qtbot.keyClick(editor, Qt.Key.Key_Backspace)
    assert editor.toPlainText() == "No . Heart is normal." and origins(editor) == [("ai", "No . Heart is normal.")]
    assert signing_metrics({"findings": editor.section}).edit_distance == len("effusion")


def test_model_text_pasted_back_is_still_model_text_other_text_is_the_radiologists(qtbot):
    editor = drafted(qtbot)
    put_cursor(editor, len("No effusion."), anchor=0)
    qtbot.keyClick(editor, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClick(editor, Qt.Key.Key_Space)
    qtbot.keyClick(editor, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert editor.toPlainText() == DRAFT + " No effusion."
    assert origins(editor) == [("ai", DRAFT), ("human", " "), ("ai", "No effusion.")]
    QGuiApplication.clipboard().setText(" Mild cardiomegaly.")  # from another program: no origins travel
    qtbot.keyClick(editor, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert origins(editor)[-1] == ("human", " Mild cardiomegaly.")
    undo(qtbot, editor)
    undo(qtbot, editor)
    assert origins(editor)[-1] == ("human", " ")


def test_text_dragged_elsewhere_keeps_its_origin(qtbot):
    """A drag is the selection's mime data dropped somewhere else (what QTextEdit's drop calls)."""
    editor = drafted(qtbot)
    editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClicks(editor, " Typed.")
    put_cursor(editor, len(DRAFT) + len(" Typed."), anchor=len(DRAFT))
    mime = editor.createMimeDataFromSelection()
    editor.textCursor().removeSelectedText()
    put_cursor(editor, 0)
    editor.insertFromMimeData(mime)
    assert editor.toPlainText() == " Typed." + DRAFT
    assert origins(editor) == [("human", " Typed."), ("ai", DRAFT)]
    other = SectionEditor("impression")  # to the other section: still the model's, measured against it
    qtbot.addWidget(other)
    put_cursor(editor, len(" Typed.") + len("No effusion."), anchor=len(" Typed."))
    other.insertFromMimeData(editor.createMimeDataFromSelection())
    assert origins(other) == [("ai", "No effusion.")] and other.section.model_text == DRAFT


def test_forged_origins_in_mime_data_that_do_not_match_the_text_count_as_typed(qtbot):
    editor = drafted(qtbot, "")
    mime = QMimeData()
    mime.setText("Heart normal.")
    mime.setData("application/x-raddraft-provenance", b'{"runs": [["ai", "x", "Other text."]], "models": {}}')
    editor.insertFromMimeData(mime)
    assert origins(editor) == [("human", "Heart normal.")]


def test_regenerate_after_an_edit_replaces_the_text_and_can_be_undone(qtbot):
    editor = drafted(qtbot)
    editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClicks(editor, " Mild cardiomegaly.")
    before = origins(editor)
    editor.start_stream("tiny@1, on demand")
    assert editor.isReadOnly()
    for piece in ("Small ", "left ", "effusion."):
        editor.append_stream(piece)
    editor.end_stream()
    assert not editor.isReadOnly()
    assert origins(editor) == [("ai", "Small left effusion.")]
    assert editor.section.model_text == "Small left effusion." and editor.section.source == "tiny@1, on demand"
    undo(qtbot, editor)  # the whole regeneration is one step
    assert origins(editor) == before
    assert editor.section.model_text == DRAFT  # measured against the model output its characters came from
    redo(qtbot, editor)
    assert editor.toPlainText() == "Small left effusion."
    editor.start_stream("tiny@1, on demand")  # the same label twice: two outputs, told apart
    editor.append_stream("Normal.")
    editor.end_stream()
    assert editor.section.source == "tiny@1, on demand #2"


def test_state_round_trip_keeps_origins_and_references(qtbot):
    editor = drafted(qtbot)
    editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.keyClicks(editor, "Typed.")
    state = editor.state()
    again = SectionEditor("findings")
    qtbot.addWidget(again)
    again.restore(state)
    assert origins(again) == origins(editor) == [("ai", DRAFT), ("human", "\nTyped.")]
    assert again.section.model_text == DRAFT and again.toPlainText() == DRAFT + "\nTyped."
    assert not again.document().isUndoAvailable()
