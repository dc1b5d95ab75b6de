"""The report panel: Findings and Impression editors beside the images, with the model's text marked until
the radiologist edits or accepts it (the origin is a property of the text: `desktop.section_editor`), and the
Draft / Impression from findings / Accept AI text / Sign / Send / Export buttons.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.section_editor import SectionEditor, qt_plain
from engine.provenance import Origin, SectionText

__all__ = ["DraftPanel", "SectionEditor", "qt_plain"]

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

    def end_stream(self, section: str, status: str) -> None:
        """An on-demand or queued draft ended (done, failed with its reason, cancelled): say so."""
        editor = self.editor(section)
        if editor.streaming:
            editor.end_stream(editable=not self.signed)
        self.source.setText(status)

    def state(self) -> dict:
        """The unsigned text of both sections with its origins, as autosave keeps it."""
        return {"findings": self.findings.state(), "impression": self.impression.state()}

    def restore(self, state: dict, saved_at: float) -> None:
        for name in ("findings", "impression"):
            self.editor(name).restore(state.get(name, {}))
        when = time.strftime("%H:%M:%S", time.localtime(saved_at))
        self.source.setText(f"Your unsigned text, restored as saved at {when}. Blue text is the model's until "
                            "you edit or accept it.")

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
