"""The report panel: Findings and Impression editors beside the images, with the model's text marked until
the radiologist edits or accepts it (the origin is a property of the text: `desktop.section_editor`), and the
Draft / Impression from findings / Accept AI text / Sign / Send / Export buttons.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QSizePolicy,
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
    amend_requested = Signal()
    cancel_requested = Signal()  # stop the on-demand draft being generated

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.critical = QLabel("")
        self.critical.setWordWrap(True)
        self.critical.setStyleSheet("background: #d0021b; color: white; font-weight: bold; padding: 4px;"
                                    " border-radius: 3px;")
        self.critical.hide()
        self._build_domain_widgets()
        self.changed = QLabel("")  # images received after signing
        self.changed.setWordWrap(True)
        self.changed.setStyleSheet("background: #8e44ad; color: white; font-weight: bold; padding: 4px;"
                                   " border-radius: 3px;")
        self.changed.hide()
        self.title = QLabel("No study open")
        self.title.setStyleSheet("font-weight: bold; font-size: 14px;")
        self.title.setWordWrap(True)  # a long patient name wraps; it never widens the panel over the images
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.source = QLabel("")
        self.source.setWordWrap(True)
        self.indication = QLineEdit(
            placeholderText="Indication: the reason for the exam (empty: the study's own)",
            toolTip="Reaches the prompt of the next draft you ask for, for models that take an indication")
        self.indication.hide()
        self.findings, self.impression = SectionEditor("findings"), SectionEditor("impression")
        self.draft_findings = QPushButton("Draft", toolTip="Generate the findings (Ctrl+D drafts both)")
        self.draft_impression = QPushButton("Draft", toolTip="Generate the impression from the images")
        self.from_findings = QPushButton("Impression from findings",
                                         toolTip="Generate the impression from the findings as edited (Ctrl+Shift+I)")
        self.cancel = QPushButton("Cancel drafting", toolTip="Stop the draft being generated: the section gets "
                                  "its text back as it was (Esc)")
        self.cancel.clicked.connect(self.cancel_requested.emit)
        self.cancel.hide()  # only while a draft asked for is being generated
        # Esc stops the model at once: a button's own shortcut clicks it only after a 100 ms animation, long
        # enough for a fast model to finish the section and start the next one. Enabled only while drafting,
        # so that Esc is the viewer's (a measurement) otherwise.
        self.cancel_shortcut = QAction("Cancel drafting", self, shortcut=QKeySequence("Esc"), enabled=False,
                                       shortcutContext=Qt.ShortcutContext.WindowShortcut)
        self.cancel_shortcut.triggered.connect(self.cancel_requested.emit)
        self.addAction(self.cancel_shortcut)
        self.accept = QPushButton("Accept AI text", toolTip="Mark the remaining AI text as reviewed (Ctrl+Shift+A)")
        self.sign = QPushButton("Sign", toolTip="Validate, sign and store the report (Ctrl+Return)")
        self.sign.setStyleSheet("font-weight: bold;")
        self.send = QPushButton("Send", toolTip="Send the signed report to PACS as DICOM SR")
        self.amend = QPushButton("Amend…", toolTip="Add an addendum or correct the signed report: a new SR that "
                                                   "replaces it and refers to it")
        self.amend.clicked.connect(self.amend_requested.emit)
        self.addendum = QLineEdit(placeholderText="Addendum: what changed and why (required to sign the amendment)")
        self.addendum.hide()
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
        for button in (self.cancel, self.accept, self.sign, self.send, self.amend, self.export):
            actions.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.critical)
        layout.addWidget(self.domain_banner)
        layout.addWidget(self.withheld)
        layout.addWidget(self.use_anyway)
        layout.addWidget(self.changed)
        layout.addWidget(self.title)
        layout.addWidget(self.source)
        layout.addWidget(self.indication)
        layout.addLayout(grid, 1)
        layout.addWidget(self.addendum)
        layout.addLayout(actions)
        layout.addWidget(self.message)
        self.signed = False
        self.amending = None  # the signed report (dicom_node.reports.SignedReport) being amended
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
        self.use_withheld()
        self.show_confidence(None)
        self.show_changed(())
        self.signed, self.amending = False, None
        self.addendum.clear()
        self.addendum.hide()
        self.indication.clear()
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

    def show_changed(self, changes) -> None:
        """The banner of a signed study whose images changed after signing (dicom_node.reports.ChangedInstance)."""
        if not changes:
            self.changed.hide()
            return
        names = ", ".join(f"{c.kind} instance {c.instance_number if c.instance_number is not None else '?'} "
                          f"({c.sop_instance_uid}) at {time.strftime('%H:%M', time.localtime(c.received_at))}"
                          for c in changes)
        self.changed.setText(f"Images changed after signing: {names}. Review them; Amend… adds an addendum.")
        self.changed.show()

    def start_amendment(self, report) -> None:
        """Edit the signed text of `report` into an amendment (the text is the radiologist's)."""
        self.amending, self.signed = report, False
        self.findings.show_text(report.findings)
        self.impression.show_text(report.impression)
        for editor in (self.findings, self.impression):
            editor.setReadOnly(False)
        self.addendum.show()
        self.addendum.setFocus()
        self.source.setText("Amending the signed report: correct the text, say what changed, then Sign. The "
                            "amendment is sent as a new SR that refers to the one it replaces.")
        self._update_buttons(has_study=True)

    def show_draft(self, draft) -> None:
        """A stored draft (dicom_node.drafts.DraftRecord): its sections as unreviewed AI text; a draft of a
        study outside the model's domain is shown greyed under a red banner instead (`show_withheld`)."""
        self.show_confidence(draft.detail.get("confidence"))
        if (draft.detail.get("domain") or {}).get("in_domain") is False:
            self.show_withheld(draft)
            return
        self.use_withheld()
        self.fill_draft(draft)

    def fill_draft(self, draft) -> None:
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
        self.signed, self.amending = True, None
        self.addendum.hide()
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(report.signed_at))
        text = (f"Signed by {report.signed_by} at {when}; AI text kept {report.ai_share_kept:.0%}, "
                f"edit distance {report.edit_distance}.")
        if report.detail.get("amends"):
            text = (f"Amendment {report.detail.get('revision', 1)} (“{report.detail.get('addendum', '')}”) "
                    f"signed by {report.signed_by} at {when}, replacing report {report.detail['amends']}.")
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

    def cancel_stream(self, section: str, status: str) -> None:
        """The draft asked for was cancelled: the section as it was before, and say so."""
        self.editor(section).cancel_stream(editable=not self.signed)
        self.source.setText(status)

    def show_cancel(self, shown: bool) -> None:
        self.cancel.setVisible(shown)
        self.cancel_shortcut.setEnabled(shown)

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

    def typed_indication(self) -> str | None:
        """The indication the radiologist typed, or None to let the study's own be used."""
        text = " ".join(self.indication.text().split())
        return text if self.indication.isVisible() and text else None

    def set_model_available(self, available: bool, reason: str = "", takes_indication: bool = False) -> None:
        self.model_available = available
        self.indication.setVisible(available and takes_indication)
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
        self.amend.setEnabled(has_study and self.signed)

    # -- a draft outside the model's training domain, and per-finding confidence ---------------------------
    def _build_domain_widgets(self) -> None:
        self.domain_banner = QLabel("")
        self.domain_banner.setWordWrap(True)
        self.domain_banner.setStyleSheet("background: #d0021b; color: white; font-weight: bold; padding: 4px;"
                                         " border-radius: 3px;")
        self.domain_banner.hide()
        self.withheld = QLabel("")  # the unreliable draft, greyed: read, never pre-filled as if it were good
        self.withheld.setWordWrap(True)
        self.withheld.setStyleSheet("color: #9a9a9a; font-style: italic; border: 1px dashed #bbbbbb; padding: 4px;")
        self.withheld.hide()
        self.use_anyway = QPushButton("Use this draft anyway", toolTip="Put the unreliable draft into the "
                                      "editors as AI text to edit or accept")
        self.use_anyway.clicked.connect(self._use_withheld_draft)
        self.use_anyway.hide()
        self._withheld_draft = None

    def show_withheld(self, draft) -> None:
        domain = draft.detail.get("domain") or {}
        self._withheld_draft = draft
        self.domain_banner.setText(f"This study is outside what model {draft.model} was trained on; its draft is "
                                   f"unreliable (domain score {domain.get('score')} > {domain.get('threshold')}).")
        self.withheld.setText(f"Findings: {draft.findings}\nImpression: {draft.impression}")
        for widget in (self.domain_banner, self.withheld, self.use_anyway):
            widget.show()
        self.source.setText(f"Draft {draft.id} by {draft.model} withheld: the editors stay empty. "
                            "Use this draft anyway to start from it.")

    def use_withheld(self) -> None:
        """Hide the out-of-domain banner and greyed draft (another study, or the draft was taken)."""
        self._withheld_draft = None
        for widget in (self.domain_banner, self.withheld, self.use_anyway):
            widget.hide()

    def _use_withheld_draft(self) -> None:
        draft = self._withheld_draft
        if draft is None:
            return
        self.withheld.hide()
        self.use_anyway.hide()
        self._withheld_draft = None
        self.fill_draft(draft)  # the banner stays: the text is still the unreliable draft

    def show_confidence(self, confidence) -> None:
        """The model's confidence per finding, on hover over either section."""
        if isinstance(confidence, dict) and confidence:
            tip = "Model confidence per finding: " + ", ".join(
                f"{key.replace('_', ' ')} {float(value):.0%}" for key, value in confidence.items())
        else:
            tip = ""
        for editor in (self.findings, self.impression):
            editor.setToolTip(tip)
