"""One report section's editor, whose document carries the origin of every character.

The origin (model, radiologist, model text accepted by "Accept AI text") and the model output it came from
are QTextCharFormat user properties of the characters themselves. Qt's undo stack stores formats with the
text, so undo, redo, drag and paste (through `createMimeDataFromSelection` / `insertFromMimeData`) keep
the origin truthfully; nothing is inferred from a diff. `section` builds the `engine.provenance.SectionText`
that signing and autosave read, from the document as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QKeyEvent,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
)
from PySide6.QtWidgets import QTextEdit, QWidget

from engine.provenance import Origin, SectionText

AI_BACKGROUND = QColor("#dde9ff")
AI_UNDERLINE = QColor("#2f6fdb")
ORIGIN = int(QTextFormat.Property.UserProperty.value) + 1  # an Origin value; absent: typed (HUMAN)
SOURCE = ORIGIN + 1  # which model output the character came from (a key of SectionEditor.models)
MIME_RUNS = "application/x-raddraft-provenance"

Run = tuple[Origin, str, str]  # origin, source, text


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def qt_plain(text: str) -> str:
    """`text` as a QTextDocument gives it back (line and paragraph separators, CR and NBSP are changed), so
    the provenance model and the editor hold the same characters."""
    text = text.replace("\r\n", "\n")
    return text.translate({0x0D: "\n", 0xA0: " ", 0x2028: "\n", 0x2029: "\n"})


def origin_format(origin: Origin, source: str = "") -> QTextCharFormat:
    fmt = QTextCharFormat()
    fmt.setProperty(ORIGIN, origin.value)
    if origin != Origin.HUMAN and source:
        fmt.setProperty(SOURCE, source)
    return fmt


def origin_of(fmt: QTextCharFormat) -> Origin:
    value = fmt.property(ORIGIN)
    return Origin(value) if value in {o.value for o in Origin} else Origin.HUMAN


def source_of(fmt: QTextCharFormat) -> str:
    value = fmt.property(SOURCE)
    return value if isinstance(value, str) else ""


def _merged(runs: list[Run]) -> list[Run]:
    out: list[Run] = []
    for origin, source, text in runs:
        if not text:
            continue
        if out and out[-1][:2] == (origin, source):
            out[-1] = (origin, source, out[-1][2] + text)
        else:
            out.append((origin, source, text))
    return out


def _slice_utf16(text: str, start: int, end: int) -> str:
    units = text.encode("utf-16-le")
    return units[2 * start:2 * end].decode("utf-16-le", errors="ignore")


class ProvenanceHighlighter(QSyntaxHighlighter):
    """Paints the characters whose origin is AI (layout formats: painting is not part of the document)."""

    def __init__(self, editor: SectionEditor) -> None:
        super().__init__(editor.document())
        self.format = QTextCharFormat()
        self.format.setBackground(AI_BACKGROUND)
        self.format.setUnderlineStyle(QTextCharFormat.UnderlineStyle.DotLine)
        self.format.setUnderlineColor(AI_UNDERLINE)
        self.format.setToolTip("Written by the AI model: edit it or accept it before signing")

    def highlightBlock(self, text: str) -> None:
        block = self.currentBlock()
        fragments = block.begin()
        while not fragments.atEnd():
            fragment = fragments.fragment()
            if fragment.isValid() and origin_of(fragment.charFormat()) == Origin.AI:
                self.setFormat(fragment.position() - block.position(), fragment.length(), self.format)
            fragments += 1


class SectionEditor(QTextEdit):
    """One section's editor. `models` maps each model output shown here to its text (the reference for the
    edit distance); `section` is the provenance model built from the document."""

    edited = Signal()

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.models: dict[str, str] = {}
        self.latest_source = ""
        self.setAcceptRichText(False)
        self.setTabChangesFocus(True)
        self.setPlaceholderText(f"{name.capitalize()}…")
        self._programmatic = False
        self._stream: QTextCursor | None = None
        self._before_stream: tuple[list[Run], dict[str, str], str] | None = None  # what Cancel gives back
        self.highlighter = ProvenanceHighlighter(self)
        self.textChanged.connect(self._on_text_changed)

    # -- what the document holds -------------------------------------------------------------------------
    def runs(self, start: int = 0, end: int | None = None) -> list[Run]:
        """(origin, source, text) runs of the document between two positions (UTF-16, as Qt counts)."""
        document = self.document()
        end = document.characterCount() - 1 if end is None else end
        runs: list[Run] = []
        for position, fmt, text in self._pieces():
            lo, hi = max(start, position), min(end, position + _utf16(text))
            if lo < hi:
                runs.append((origin_of(fmt), source_of(fmt), qt_plain(_slice_utf16(text, lo - position, hi - position))))
        return _merged(runs)

    def _pieces(self) -> Iterator[tuple[int, QTextCharFormat, str]]:
        """Fragments in order, with each block's separator as a newline carrying its own format."""
        block = self.document().begin()
        while block.isValid():
            fragments = block.begin()
            while not fragments.atEnd():
                fragment = fragments.fragment()
                if fragment.isValid():
                    yield fragment.position(), fragment.charFormat(), fragment.text()
                fragments += 1
            following = block.next()
            if following.isValid():  # a block's char format is that of the separator before it
                yield following.position() - 1, following.charFormat(), "\n"
            block = following

    @property
    def section(self) -> SectionText:
        runs = self.runs()
        sources = list(dict.fromkeys(source for origin, source, _ in runs if origin != Origin.HUMAN and source))
        if sources:
            reference, label = "".join(self.models.get(s, "") for s in sources), ", ".join(sources)
        else:
            reference, label = self.models.get(self.latest_source, ""), self.latest_source
        return SectionText.from_runs([(text, origin) for origin, _, text in runs], reference, label)

    def has_human_text(self) -> bool:
        return any(origin == Origin.HUMAN and text.strip() for origin, _, text in self.runs())

    def state(self) -> dict:
        """What autosave keeps: the runs with their origins, and the model outputs they refer to."""
        return {"runs": [[origin.value, source, text] for origin, source, text in self.runs()],
                "models": dict(self.models), "latest_source": self.latest_source}

    # -- replacing the text (a study opened, a draft restored): not undoable ------------------------------
    def _load(self, runs: list[Run], models: dict[str, str], latest: str) -> None:
        document = self.document()
        self._stream = self._before_stream = None  # new text replaces whatever the model was writing
        self._programmatic = True
        try:
            document.setUndoRedoEnabled(False)  # the history starts with the study
            cursor = QTextCursor(document)
            cursor.select(QTextCursor.SelectionType.Document)
            cursor.removeSelectedText()
            for origin, source, text in runs:
                cursor.insertText(qt_plain(text), origin_format(origin, source))
            document.setUndoRedoEnabled(True)
        finally:
            self._programmatic = False
        self.models, self.latest_source = dict(models), latest
        self.moveCursor(QTextCursor.MoveOperation.End)

    def show_text(self, text: str, origin: Origin = Origin.HUMAN, source: str = "") -> None:
        models = {source: qt_plain(text)} if origin != Origin.HUMAN and source else {}
        self._load([(origin, source, text)], models, source if models else "")

    def restore(self, state: dict) -> None:
        runs = [(Origin(origin), str(source), str(text)) for origin, source, text in state.get("runs", ())]
        self._load(runs, {str(k): str(v) for k, v in state.get("models", {}).items()},
                   str(state.get("latest_source", "")))

    # -- the model writing (undoable as one step: regenerate, then Ctrl+Z brings the old text back) -------
    def start_stream(self, source: str) -> None:
        self._before_stream = (self.runs(), dict(self.models), self.latest_source)
        key, n = source, 2
        while key in self.models:
            key, n = f"{source} #{n}", n + 1
        self.models[key], self.latest_source = "", key
        cursor = QTextCursor(self.document())
        self._programmatic = True
        try:
            cursor.beginEditBlock()
            cursor.select(QTextCursor.SelectionType.Document)
            cursor.removeSelectedText()
            cursor.endEditBlock()
        finally:
            self._programmatic = False
        self._stream = cursor
        self.setReadOnly(True)  # no typing into the middle of the model's output

    def append_stream(self, piece: str) -> None:
        if self._stream is None:
            self.start_stream("model")
        piece = qt_plain(piece)
        self.models[self.latest_source] += piece
        cursor = self._stream
        self._programmatic = True
        try:
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.joinPreviousEditBlock()
            cursor.insertText(piece, origin_format(Origin.AI, self.latest_source))
            cursor.endEditBlock()
        finally:
            self._programmatic = False

    def end_stream(self, editable: bool = True) -> None:
        self._stream = self._before_stream = None
        self.setReadOnly(not editable)
        self.edited.emit()

    def cancel_stream(self, editable: bool = True) -> None:
        """Stop the model writing: the section gets back its text as it was, each character with its origin,
        and the model's partial output is forgotten (no reference for the edit distance, nothing to redo)."""
        if self._stream is None or self._before_stream is None:
            return
        runs, models, latest = self._before_stream
        self._stream = self._before_stream = None
        self._programmatic = True
        try:
            self.document().undo()  # the stream was one undoable step: the radiologist's history stays
        finally:
            self._programmatic = False
        if self.runs() != runs:  # the step joined another one: put the text back as it was
            self._load(runs, models, latest)
        self.document().clearUndoRedoStacks(QTextDocument.Stacks.RedoStack)
        self.models, self.latest_source = models, latest
        self.setReadOnly(not editable)
        self.moveCursor(QTextCursor.MoveOperation.End)
        self.edited.emit()

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    # -- the radiologist's actions --------------------------------------------------------------------
    def accept_ai(self) -> int:
        """Mark the AI text accepted (one undoable step); return how many characters that was."""
        cursor, count, position = QTextCursor(self.document()), 0, 0
        accepted = QTextCharFormat()
        accepted.setProperty(ORIGIN, Origin.ACCEPTED.value)
        ranges = []
        for origin, _, text in self.runs():
            if origin == Origin.AI:
                ranges.append((position, position + _utf16(text)))
                count += len(text)
            position += _utf16(text)
        if ranges:
            cursor.beginEditBlock()
            for start, end in ranges:
                cursor.setPosition(start)
                cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
                cursor.mergeCharFormat(accepted)
            cursor.endEditBlock()
            self.edited.emit()
        return count

    def keyPressEvent(self, event: QKeyEvent) -> None:
        typed = self._typed_text(event)
        if typed is None:
            super().keyPressEvent(event)
            return
        cursor = self.textCursor()
        cursor.insertText(typed, origin_format(Origin.HUMAN))  # never the format of the text beside it
        self.setTextCursor(cursor)
        self.ensureCursorVisible()
        event.accept()

    def _typed_text(self, event: QKeyEvent) -> str | None:
        if self.isReadOnly():
            return None
        modifiers = event.modifiers()
        if modifiers & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
                        | Qt.KeyboardModifier.MetaModifier):
            return None
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            return "\n"
        text = event.text()
        return text if text and text.isprintable() else None

    def insertPlainText(self, text: str) -> None:
        """Text put in by a caller (a script, a measurement) is the radiologist's, never the neighbour's."""
        cursor = self.textCursor()
        cursor.insertText(qt_plain(text), origin_format(Origin.HUMAN))
        self.setTextCursor(cursor)

    def createMimeDataFromSelection(self) -> QMimeData:
        mime = super().createMimeDataFromSelection()
        cursor = self.textCursor()
        runs = self.runs(cursor.selectionStart(), cursor.selectionEnd())
        sources = {source for _, source, _ in runs if source}
        mime.setData(MIME_RUNS, json.dumps({
            "runs": [[origin.value, source, text] for origin, source, text in runs],
            "models": {s: self.models[s] for s in sources if s in self.models}}).encode())
        return mime

    def insertFromMimeData(self, source: QMimeData) -> None:
        runs = self._runs_from_mime(source)
        cursor = self.textCursor()
        cursor.beginEditBlock()
        cursor.removeSelectedText()
        for origin, model, text in runs:
            cursor.insertText(text, origin_format(origin, model))
        cursor.endEditBlock()
        self.setTextCursor(cursor)
        self.ensureCursorVisible()

    def _runs_from_mime(self, mime: QMimeData) -> list[Run]:
        """Text copied or dragged from an editor keeps its origins (model text pasted back is still the
        model's); any other text is the radiologist's."""
        text = qt_plain(mime.text())
        if mime.hasFormat(MIME_RUNS):
            try:
                carried = json.loads(bytes(mime.data(MIME_RUNS).data()).decode())
                runs = [(Origin(o), str(s), str(t)) for o, s, t in carried["runs"]]
            except (ValueError, KeyError, TypeError):
                runs = []
            if runs and "".join(t for _, _, t in runs) == text:
                for key, value in carried.get("models", {}).items():
                    self.models.setdefault(str(key), str(value))
                return runs
        return [(Origin.HUMAN, "", text)]

    def _on_text_changed(self) -> None:
        if not self._programmatic:
            self.edited.emit()
