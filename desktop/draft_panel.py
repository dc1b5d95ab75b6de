"""The report panel: Findings and Impression editors beside the images, with the model's text marked until
the radiologist edits or accepts it (`engine.provenance` decides; the editor only paints), and the
Draft / Impression from findings / Accept AI text / Sign / Send / Export buttons.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Signal
from PySide6.QtGui import QColor, QSyntaxHighlighter, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.provenance import Origin, SectionText

AI_BACKGROUND = QColor("#dde9ff")
AI_UNDERLINE = QColor("#2f6fdb")


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def qt_plain(text: str) -> str:
    """`text` as a QTextDocument gives it back (line and paragraph separators, CR and NBSP are changed), so
    the provenance model and the editor hold the same characters."""
    text = text.replace("\r\n", "\n")
    return text.translate({0x0D: "\n", 0xA0: " ", 0x2028: "\n", 0x2029: "\n"})


class ProvenanceHighlighter(QSyntaxHighlighter):
    """Paints the section's unreviewed AI text (layout formats: they are not part of the document)."""

    def __init__(self, editor: SectionEditor) -> None:
        super().__init__(editor.document())
        self._editor = editor
        self.format = QTextCharFormat()
        self.format.setBackground(AI_BACKGROUND)
        self.format.setUnderlineStyle(QTextCharFormat.UnderlineStyle.DotLine)
        self.format.setUnderlineColor(AI_UNDERLINE)
        self.format.setToolTip("Written by the AI model: edit it or accept it before signing")

    def highlightBlock(self, text: str) -> None:
        section = self._editor.section
        lines = section.text.split("\n")
        number = self.currentBlock().blockNumber()
        if number >= len(lines) or lines[number] != text:
            return  # the document is ahead of the model (mid-edit); the rehighlight after the sync paints it
        start = sum(len(line) + 1 for line in lines[:number])
        end = start + len(text)
        for span in section.unreviewed():
            lo, hi = max(span.start, start), min(span.end, end)
            if lo < hi:
                offset = _utf16(text[:lo - start])
                self.setFormat(offset, _utf16(text[lo - start:hi - start]), self.format)


class SectionEditor(QTextEdit):
    """One section's editor; `section` is its provenance model, kept in step with every edit."""

    edited = Signal()

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.section = SectionText()
        self.setAcceptRichText(False)
        self.setPlaceholderText(f"{name.capitalize()}…")
        self._programmatic = False
        self.highlighter = ProvenanceHighlighter(self)
        self.textChanged.connect(self._on_text_changed)

    def _set_document_text(self, text: str) -> None:
        self._programmatic = True
        try:
            self.setPlainText(text)
        finally:
            self._programmatic = False
        self.highlighter.rehighlight()

    def show_text(self, text: str, origin: Origin = Origin.HUMAN, source: str = "") -> None:
        text = qt_plain(text)
        self.section.set_text(text, origin, source)
        self._set_document_text(text)
        self._adopt_document(origin, source)

    def start_stream(self, source: str) -> None:
        self.section.start_ai(source)
        self._set_document_text("")

    def append_stream(self, piece: str) -> None:
        piece = qt_plain(piece)
        self.section.append_ai(piece)  # first: the highlighter reads it while the insertion lays out
        self._programmatic = True
        try:
            cursor = QTextCursor(self.document())
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.insertText(piece)
        finally:
            self._programmatic = False
        self._adopt_document(Origin.AI, self.section.source)

    def _adopt_document(self, origin: Origin, source: str) -> None:
        """Safety net: should the document still differ from the model, the document's text wins."""
        text = self.toPlainText()
        if text != self.section.text:
            self.section.set_text(text, origin, source)
            self.highlighter.rehighlight()

    def accept_ai(self) -> int:
        count = self.section.accept_all()
        self.highlighter.rehighlight()
        self.edited.emit()
        return count

    def _on_text_changed(self) -> None:
        if self._programmatic:
            return
        text = self.toPlainText()
        grown = len(text) - len(self.section.text)
        if self.section.sync_to(text, self.textCursor().position() - max(grown, 0)):
            self.highlighter.rehighlight()
            self.edited.emit()


class DraftPanel(QWidget):
    draft_requested = Signal(str)  # "findings" or "impression"
    impression_from_findings_requested = Signal()
    sign_requested = Signal()
    send_requested = Signal()
    export_requested = Signal(str)  # "text", "pdf" or "sr"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.critical = QLabel("")
        self.critical.setWordWrap(True)
        self.critical.setStyleSheet("background: #d0021b; color: white; font-weight: bold; padding: 4px;"
                                    " border-radius: 3px;")
        self.critical.hide()
        self.title = QLabel("No study open")
        self.title.setStyleSheet("font-weight: bold; font-size: 14px;")
        self.source = QLabel("")
        self.source.setWordWrap(True)
        self.findings, self.impression = SectionEditor("findings"), SectionEditor("impression")
        self.draft_findings = QPushButton("Draft", toolTip="Generate the findings (Ctrl+D drafts both)")
        self.draft_impression = QPushButton("Draft", toolTip="Generate the impression from the images")
        self.from_findings = QPushButton("Impression from findings",
                                         toolTip="Generate the impression from the findings as edited (Ctrl+Shift+I)")
        self.accept = QPushButton("Accept AI text", toolTip="Mark the remaining AI text as reviewed (Ctrl+Shift+A)")
        self.sign = QPushButton("Sign", toolTip="Validate, sign and store the report (Ctrl+Return)")
        self.sign.setStyleSheet("font-weight: bold;")
        self.send = QPushButton("Send", toolTip="Send the signed report to PACS as DICOM SR")
        self.export = QToolButton(text="Export", popupMode=QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export)
        for label, kind in (("Text…", "text"), ("PDF…", "pdf"), ("DICOM SR…", "sr")):
            menu.addAction(label, lambda kind=kind: self.export_requested.emit(kind))
        self.export.setMenu(menu)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.draft_findings.clicked.connect(lambda: self.draft_requested.emit("findings"))
        self.draft_impression.clicked.connect(lambda: self.draft_requested.emit("impression"))
        self.from_findings.clicked.connect(self.impression_from_findings_requested.emit)
        self.accept.clicked.connect(self.accept_ai)
        self.sign.clicked.connect(self.sign_requested.emit)
        self.send.clicked.connect(self.send_requested.emit)
        grid = QGridLayout()
        grid.addWidget(QLabel("<b>Findings</b>"), 0, 0)
        grid.addWidget(self.draft_findings, 0, 2)
        grid.addWidget(self.findings, 1, 0, 1, 3)
        grid.addWidget(QLabel("<b>Impression</b>"), 2, 0)
        grid.addWidget(self.from_findings, 2, 1)
        grid.addWidget(self.draft_impression, 2, 2)
        grid.addWidget(self.impression, 3, 0, 1, 3)
        grid.setColumnStretch(0, 1)
        grid.setRowStretch(1, 3)
        grid.setRowStretch(3, 2)
        actions = QHBoxLayout()
        for button in (self.accept, self.sign, self.send, self.export):
            actions.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.critical)
        layout.addWidget(self.title)
        layout.addWidget(self.source)
        layout.addLayout(grid, 1)
        layout.addLayout(actions)
        layout.addWidget(self.message)
        self.signed = False
        self.model_available = True
        self.set_study(None)

    # -- what is shown ---------------------------------------------------------------------------------
    def sections(self) -> dict[str, SectionText]:
        return {"findings": self.findings.section, "impression": self.impression.section}

    def editor(self, section: str) -> SectionEditor:
        return self.findings if section == "findings" else self.impression

    def set_study(self, title: str | None) -> None:
        self.title.setText(title or "No study open")
        self.show_critical(())
        self.signed = False
        for editor in (self.findings, self.impression):
            editor.show_text("")
            editor.setReadOnly(title is None)
        self.source.setText("")
        self.set_message("")
        self._update_buttons(has_study=title is not None)

    def show_critical(self, findings) -> None:
        """The banner of a study whose draft states a critical finding (empty: no banner)."""
        self.critical.setText("Critical finding in the draft: " + "; ".join(findings) +
                              ". Communicate it before signing." if findings else "")
        self.critical.setVisible(bool(findings))

    def show_draft(self, draft) -> None:
        """A stored draft (dicom_node.drafts.DraftRecord): its sections as unreviewed AI text."""
        source = f"draft {draft.id} ({draft.model})"
        self.findings.show_text(draft.findings, Origin.AI, source)
        self.impression.show_text(draft.impression, Origin.AI, source)
        when = time.strftime("%H:%M", time.localtime(draft.created_at))
        self.source.setText(f"AI draft by {draft.model} on {draft.provider} at {when}. "
                            "Blue text is the model's until you edit or accept it.")

    def show_signed(self, report, sends=()) -> None:
        self.findings.show_text(report.findings)
        self.impression.show_text(report.impression)
        for editor in (self.findings, self.impression):
            editor.setReadOnly(True)
        self.signed = True
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(report.signed_at))
        text = (f"Signed by {report.signed_by} at {when}; AI text kept {report.ai_share_kept:.0%}, "
                f"edit distance {report.edit_distance}.")
        last = sends[-1] if sends else None
        if last is not None:
            text += (f" Sent to {last.destination}." if last.status == "sent" else
                     f" Sending failed {last.attempts}x, retrying: {last.last_error}" if last.attempts else
                     " Queued for PACS.")
        self.source.setText(text)
        self._update_buttons(has_study=True)

    def start_stream(self, section: str, source: str) -> None:
        self.editor(section).start_stream(source)
        self.source.setText(f"Generating {section}…")

    def append_stream(self, section: str, piece: str) -> None:
        self.editor(section).append_stream(piece)

    def accept_ai(self) -> None:
        count = self.findings.accept_ai() + self.impression.accept_ai()
        self.set_message(f"Accepted {count} characters of AI text." if count else "No AI text left to accept.")

    def set_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet("color: #b03a2e;" if error else "color: palette(text);")

    def set_model_available(self, available: bool, reason: str = "") -> None:
        self.model_available = available
        for button in (self.draft_findings, self.draft_impression, self.from_findings):
            tip = button.property("usual_tip") or button.toolTip()
            button.setProperty("usual_tip", tip)
            button.setToolTip(tip if available else f"Drafting is off: {reason}")
        self._update_buttons(has_study=self.title.text() != "No study open")

    def _update_buttons(self, has_study: bool) -> None:
        editable = has_study and not self.signed
        for button in (self.draft_findings, self.draft_impression, self.from_findings):
            button.setEnabled(editable and self.model_available)
        self.accept.setEnabled(editable)
        self.sign.setEnabled(editable)
        self.send.setEnabled(has_study and self.signed)
        self.export.setEnabled(has_study and self.signed)
