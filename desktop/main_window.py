"""The main window: worklist above, images and report side by side below, status bar and problem banner.

It binds the views to the workstation (raddraft.workstation.Workstation, passed in): every call that
touches disk, network or the model goes through `Background`, and events from the node, the drafting
queue and the outbox arrive as Qt signals (`EventBridge`). No business rule lives here.
"""

from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox, QSplitter, QVBoxLayout, QWidget

from desktop.data_source import reading_data_of
from desktop.draft_panel import DraftPanel
from desktop.hanging import PriorsOfStudy, load_priors
from desktop.models_page import ModelsDialog, ModelsPage
from desktop.pdf import write_report_pdf
from desktop.prior_panel import PriorPanel
from desktop.section_editor import origin_format
from desktop.settings_dialog import SettingsDialog
from desktop.sign_dialog import SignDialog
from desktop.signals import EventBridge
from desktop.status import MessageBanner, StatusBar
from desktop.tasks import Background
from desktop.viewer import Viewer
from desktop.worklist import WorklistFeed, WorklistPanel
from dicom_node.drafts import WorkingDraft
from dicom_node.reports import NO_PRIOR, ComparisonStudy, format_date, person_name
from engine.provenance import Origin, validate_for_signing

log = logging.getLogger(__name__)
SHORTCUTS = {
    "Next study": "Ctrl+Down", "Previous study": "Ctrl+Up", "Draft findings and impression": "Ctrl+D",
    "Impression from findings": "Ctrl+Shift+I", "Accept AI text": "Ctrl+Shift+A", "Sign": "Ctrl+Return",
    "Sign and open the next study": "Ctrl+Shift+Return", "Insert the measurement into the findings": "Ctrl+Shift+M",
    "Search worklist": "Ctrl+F", "Models…": "Ctrl+M", "Settings…": "Ctrl+,", "Quit": "Ctrl+Q",
}


class DraftCancelled(Exception):
    """Raised in an on-demand draft's text callback once the radiologist cancelled it: the model stops there."""


AUTOSAVE_AFTER_MS = 300  # after the last keystroke: the text is in the store well within a second


def has_typed_text(saved: WorkingDraft) -> bool:
    return any(origin == "human" and text.strip() for section in saved.sections.values()
               for origin, _, text in section.get("runs", ()))


class MainWindow(QMainWindow):
    section_piece = Signal(str, str, str, object)  # study uid, section, text, the draft's stop event: from
    # on-demand generation threads (pieces of a cancelled draft still queued are told apart by the event)

    def __init__(self, workstation, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RadDraft")
        self.ws = workstation
        self.background = Background(self)
        self.data = reading_data_of(workstation)  # the store's, or the site server's (desktop/remote.py)
        self.bridge = EventBridge(workstation, self)
        self.worklist, self.viewer, self.panel = WorklistPanel(), Viewer(self.background), DraftPanel()
        self.banner, self.status_bar = MessageBanner(), StatusBar()
        self.setStatusBar(self.status_bar)
        reading = QSplitter(Qt.Orientation.Horizontal)
        self.prior_panel = PriorPanel()  # the prior's report beside the draft
        report_side = QSplitter(Qt.Orientation.Vertical)
        report_side.addWidget(self.prior_panel)
        report_side.addWidget(self.panel)
        report_side.setSizes([180, 620])
        reading.addWidget(self.viewer)
        reading.addWidget(report_side)
        reading.setSizes([900, 500])
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.worklist)
        split.addWidget(reading)
        split.setSizes([260, 640])
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)
        self.setCentralWidget(central)
        self.feed = WorklistFeed(self.background, workstation.worklist, self._show_rows, parent=self)
        self.sign_dialog: SignDialog | None = None  # the last one shown (tests answer it)
        self.opened = None  # raddraft.workstation.OpenedStudy on screen
        self._opening: str | None = None
        self.generating: set[str] = set()  # sections being drafted on demand
        self._cancels: dict[str, threading.Event] = {}  # section -> set to stop its on-demand draft
        self._queue_section: str | None = None  # section the drafting queue streams into the open study
        self._status_busy = False
        self.models_dialog: ModelsDialog | None = None  # made on first use
        self.question: QMessageBox | None = None  # the last question asked (tests answer it)
        self.settings_dialog: SettingsDialog | None = None  # the last one shown (tests answer it)
        self.measurement = ""  # the last distance drawn on an image
        self._autosave = QTimer(self, singleShot=True, interval=AUTOSAVE_AFTER_MS)
        self._autosave.timeout.connect(self.save_working_text)
        self._unsaved: tuple[str, dict] | None = None  # study uid, panel state not yet in the store
        self._saving = False
        self.autosaves = 0  # saves that reached the store (tests wait on it)
        self._problems_shown = set(workstation.problems)
        self._timers = [QTimer(self, interval=1000), QTimer(self, interval=3000)]
        self._timers[0].timeout.connect(self.refresh_status)
        self._timers[1].timeout.connect(self.feed.request)  # changes by another process (attached mode)
        self._connect()
        for problem in workstation.problems:
            self.banner.add(problem)
        self._show_model_state()
        for timer in self._timers:
            timer.start()
        self.feed.request()
        self.refresh_status()

    def _connect(self) -> None:
        b = self.bridge
        for signal in (b.instance_stored, b.study_stable, b.draft_started, b.draft_finished, b.draft_failed):
            signal.connect(self.feed.request)
        b.draft_started.connect(self._queue_started)
        b.draft_piece.connect(self._queue_piece)
        b.draft_finished.connect(self._queue_finished)
        b.report_sent.connect(self._report_sent)
        self.section_piece.connect(self._section_piece)
        self.worklist.study_opened.connect(self.open_study)
        self.worklist.release_requested.connect(self.release_claim)
        b.draft_failed.connect(self._queue_failed)
        b.instance_stored.connect(self._instance_stored)
        self.viewer.measured.connect(self._measured)
        self.viewer.prior_changed.connect(self._prior_changed)
        self.viewer.priors_wanted.connect(self.look_for_priors)
        p = self.panel
        for editor in (p.findings, p.impression):
            editor.edited.connect(self._text_edited)
        self.setTabOrder(self.viewer, p.findings)
        self.setTabOrder(p.findings, p.impression)
        p.draft_requested.connect(self.draft_section)
        p.impression_from_findings_requested.connect(self.impression_from_findings)
        p.sign_requested.connect(lambda: self.sign())
        p.send_requested.connect(self.send)
        p.export_requested.connect(self.export)
        p.amend_requested.connect(self.amend)
        p.cancel_requested.connect(self.cancel_drafting)
        menu = self.menuBar().addMenu("&RadDraft")
        for name, slot in (("Next study", lambda: self.worklist.open_relative(1)),
                           ("Previous study", lambda: self.worklist.open_relative(-1)),
                           ("Draft findings and impression", self.draft_both),
                           ("Impression from findings", self.impression_from_findings),
                           ("Accept AI text", self.panel.accept_ai), ("Sign", lambda: self.sign()),
                           ("Sign and open the next study", self.sign_and_next),
                           ("Insert the measurement into the findings", self.insert_measurement),
                           ("Search worklist", lambda: self.worklist.search.setFocus()),
                           ("Models…", self.open_models), ("Settings…", self.open_settings), ("Quit", self.close)):
            action = QAction(name, self, shortcut=QKeySequence(SHORTCUTS[name]))
            action.triggered.connect(slot)
            menu.addAction(action)

    def _failed(self, what: str):
        def show(error: Exception) -> None:
            self.banner.add(f"{what}: {error}")
            self.status_bar.notify(f"{what}: {error}", error=True)
        return show

    # -- status and worklist ---------------------------------------------------------------------------
    def refresh_status(self) -> None:
        if self._status_busy:
            return
        self._status_busy = True

        def done(status) -> None:
            self._status_busy = False
            self.status_bar.show_status(status)
            self._show_new_problems()
            if (self.ws.model is not None) != self.panel.model_available:  # the current model changed
                self._show_model_state()

        self.background.run(self.ws.status, done, lambda error: setattr(self, "_status_busy", False))

    def _show_rows(self, rows) -> None:
        self.worklist.set_reader(self.ws.config.reading.radiologist)
        self.worklist.may_release = self.data.may_release_claims()
        self.worklist.set_rows(rows)
        self.status_bar.show_critical(self.worklist.critical_count())
        self.status_bar.show_out_of_domain(self.worklist.out_of_domain_count())

    def _show_new_problems(self) -> None:
        """Problems that arose while running (a model that would not load when the current one changed);
        those the workstation no longer has (fixed in the settings, say) leave the banner."""
        gone = self._problems_shown - set(self.ws.problems)
        if gone:
            self.banner.clear_where(gone.__contains__)
            self._problems_shown -= gone
        for problem in self.ws.problems:
            if problem not in self._problems_shown:
                self._problems_shown.add(problem)
                self.banner.add(problem)

    @Slot(str)
    def release_claim(self, study_uid: str) -> None:
        """An admin of the site server lets another reader's claim of the study go."""
        self.background.run(lambda: self.data.release_claim(study_uid),
                            lambda _: (self.status_bar.notify("The study is free to open."), self.feed.request()),
                            self._failed("The study was not released"))

    # -- models ----------------------------------------------------------------------------------------
    def open_models(self) -> ModelsPage:
        """Show the Models page (current model, versions, fine-tuning) in its own window."""
        if self.models_dialog is None:
            page = ModelsPage(self.ws, self.background, unavailable=self.data.training_unavailable)
            page.model_changed.connect(self._model_changed)
            self.models_dialog = ModelsDialog(page, self)
        self.models_dialog.show()
        self.models_dialog.raise_()
        return self.models_dialog.page

    @Slot(str)
    def _model_changed(self, model_id: str) -> None:
        self.status_bar.notify(f"Drafting with {model_id} from the next study on.")
        self.refresh_status()

    # -- opening a study -------------------------------------------------------------------------------
    @Slot(str)
    def open_study(self, study_uid: str) -> None:
        self.save_working_text()  # the study being left: its text is saved before the panel changes
        self._opening = study_uid
        self.background.run(lambda: self._load_study(study_uid, True), self._show_study,
                            self._failed("Cannot open the study"))

    def _load_study(self, study_uid: str, mark: bool):
        """On a worker thread: the study, the unsigned text autosaved for it, its images changed after signing."""
        return (self.ws.open_study(study_uid, mark=mark), self.data.working_draft(study_uid),
                self.data.changed_after_signing(study_uid))

    def _show_study(self, loaded) -> None:
        opened, saved, changes = loaded
        if opened.study.study_uid != self._opening:
            return  # another study was asked for meanwhile
        self._stop_drafting()  # drafts asked for in the study left: the model is free for this one
        self.opened, self.generating, self._queue_section = opened, set(), None
        study = opened.study
        self.panel.set_study(f"{person_name(study.patient_name)} · {study.patient_id} · "
                             f"{format_date(study.study_date)} · {study.study_description}")
        self.viewer.open_study(opened)
        self._load_priors(study.study_uid)
        critical = tuple(opened.draft.detail.get("critical", ())) if opened.draft is not None else ()
        self.panel.show_critical(critical if opened.report is None else ())
        self.panel.show_changed(changes if opened.report is not None else ())
        if opened.report is not None:
            self.panel.show_signed(opened.report, opened.sends)
        elif saved is not None and (opened.draft is None or saved.saved_at >= opened.draft.created_at
                                    or has_typed_text(saved)):
            self.panel.restore(saved.sections, saved.saved_at)
        elif opened.draft is not None:
            self.panel.show_draft(opened.draft)
        else:
            self.panel.source.setText(f"No draft yet ({study.state.value}).")
        if opened.report is None:
            self.panel.findings.setFocus()  # at the end of its text (the editor puts the cursor there)
        self.feed.request()

    def _reload(self, then=None) -> None:
        if self.opened is not None:
            uid = self.opened.study.study_uid
            self.background.run(lambda: self._load_study(uid, False), then or self._show_study)

    # -- priors: loaded off the GUI thread, hung beside the study, their report beside the draft ------------
    def _load_priors(self, study_uid: str) -> None:
        def failed(error: Exception) -> None:
            self.viewer.set_priors(PriorsOfStudy(study_uid, (), "failed", f"priors could not be read: {error}"))

        self.background.run(lambda: load_priors(self.ws, study_uid), self.viewer.set_priors, failed)

    def look_for_priors(self) -> None:
        """Ask the PACS again for the open study's priors (within the [pacs] timeouts), then show them."""
        if self.opened is None or not hasattr(self.ws, "look_for_priors"):
            return
        uid = self.opened.study.study_uid
        self.viewer.look_again.setEnabled(False)
        self.status_bar.notify("Looking for priors…")

        def looked(outcome) -> None:
            self.viewer.look_again.setEnabled(True)
            self.status_bar.notify(f"Priors: {outcome.reason}.")
            if self._is_open(uid):
                self._load_priors(uid)

        def failed(error: Exception) -> None:
            self.viewer.look_again.setEnabled(True)
            self._failed("Looking for priors failed")(error)

        self.background.run(lambda: self.ws.look_for_priors(uid), looked, failed)

    @Slot(int)
    def _prior_changed(self, index: int) -> None:
        self.prior_panel.show_prior(self.viewer.prior, self.viewer.priors.reason)

    def comparison(self) -> ComparisonStudy:
        """What the report is compared with: the prior on screen beside the open study, else NO_PRIOR."""
        prior = self.viewer.prior
        if prior is None or self.opened is None or self.viewer.priors.study_uid != self.opened.study.study_uid:
            return NO_PRIOR
        return ComparisonStudy.of_prior(prior.prior)

    @Slot(str)
    def _measured(self, text: str) -> None:
        self.measurement = text
        self.status_bar.notify(f"Measured {text}: {SHORTCUTS['Insert the measurement into the findings']} "
                               "puts it into the findings.")

    def insert_measurement(self) -> None:
        """The last distance into the Findings at its cursor, as the radiologist's text."""
        editor = self.panel.findings
        if not self.measurement or editor.isReadOnly():
            return
        cursor = editor.textCursor()
        before = editor.toPlainText()[:cursor.position()]
        cursor.insertText(("" if not before or before.endswith((" ", "\n")) else " ") + f"Measures {self.measurement}.",
                          origin_format(Origin.HUMAN))
        editor.setTextCursor(cursor)
        editor.setFocus()

    @Slot(str)
    def _instance_stored(self, study_uid: str) -> None:
        """An image arrived for the open, signed study: show it (and what changed) at once."""
        if self._is_open(study_uid) and self.opened.report is not None and self.panel.amending is None:
            self._reload()

    # -- autosave: the unsigned text of the open study, in the store within a second of typing -----------
    def _text_edited(self) -> None:
        if self.opened is None or self.panel.signed or self.opened.report is not None:
            return
        self._unsaved = (self.opened.study.study_uid, self.panel.state())
        self._autosave.start()

    def save_working_text(self) -> None:
        """Write the pending text now (one save in flight at a time: the store never goes back in time)."""
        self._autosave.stop()
        if self._unsaved is None or self._saving:
            return
        (uid, state), self._unsaved = self._unsaved, None
        self._saving = True

        def saved(_) -> None:
            self._saving = False
            self.autosaves += 1
            self.banner.clear_where(lambda message: message.startswith("Your text could not be saved"))
            if self._unsaved is not None:
                self.save_working_text()

        def failed(error: Exception) -> None:
            self._saving = False
            if self._unsaved is None:
                self._unsaved = (uid, state)  # kept for the next try
            self._failed("Your text could not be saved")(error)

        self.background.run(lambda: self.data.save_working_draft(uid, state),
                            saved, failed)

    def ask(self, question: str) -> bool:
        """Ask before the model replaces the radiologist's text."""
        box = self.question = QMessageBox(QMessageBox.Icon.Question, "RadDraft", question,
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setInformativeText("Your text is replaced by the model's; Ctrl+Z in the section brings it back.")
        return box.exec() == QMessageBox.StandardButton.Yes

    def _untouched(self) -> bool:
        """Nothing typed by the radiologist: the editors may be replaced by the model's text."""
        return not self.panel.signed and all(
            s.ai_characters() == len(s.text) for s in self.panel.sections().values())

    # -- the drafting queue streaming into the open study ----------------------------------------------
    def _is_open(self, study_uid: str) -> bool:
        return self.opened is not None and self.opened.study.study_uid == study_uid

    @Slot(str, str)
    def _queue_started(self, study_uid: str, model: str) -> None:
        if self._is_open(study_uid) and self._untouched() and not self.generating:
            self._queue_section = ""

    @Slot(str, str, str)
    def _queue_piece(self, study_uid: str, section: str, text: str) -> None:
        if self._queue_section is None or not self._is_open(study_uid):
            return
        if section != self._queue_section:
            self._queue_section = section
            self.panel.start_stream(section, "drafting queue")
        self.panel.append_stream(section, text)

    @Slot(str, str)
    def _queue_failed(self, study_uid: str, reason: str) -> None:
        if self._is_open(study_uid) and self._queue_section is not None:
            section, self._queue_section = self._queue_section, None
            if section:
                self.panel.end_stream(section, f"Drafting failed: {reason}")

    @Slot(str, int)
    def _queue_finished(self, study_uid: str, draft_id: int) -> None:
        if self._is_open(study_uid) and self._untouched() and not self.generating:
            self._queue_section = None
            self._reload()

    # -- drafting on demand ----------------------------------------------------------------------------
    def draft_both(self) -> None:
        if self._may_replace(("findings", "impression")):
            self.draft_section("findings", then=self._impression_after_findings, asked=True)

    def _impression_after_findings(self) -> None:
        """The impression of "Draft both", made as the model makes it in a queued draft: from the findings
        just drafted when it drafts its impression from its findings, else from the image."""
        model = self.ws.model
        findings = self.panel.findings.section.text.strip()
        from_findings = model is not None and model.impression_from_findings and bool(findings)
        self.draft_section("impression", findings=findings if from_findings else None, asked=True)

    def impression_from_findings(self) -> None:
        findings = self.panel.findings.section.text.strip()
        if not findings:
            self.panel.set_message("Write or draft the findings first.", error=True)
            return
        self.draft_section("impression", findings=findings)

    def _may_replace(self, sections) -> bool:
        typed = [name for name in sections if self.panel.editor(name).has_human_text()]
        if not typed or self.opened is None or self.panel.signed:
            return True
        return self.ask(f"Replace the text you wrote in {' and '.join(typed)} with a new draft?")

    def _show_model_state(self) -> None:
        model = self.ws.model
        self.panel.set_model_available(model is not None, "no model loaded (Settings)",
                                       takes_indication=model is not None and model.takes_indication)

    @Slot(str)
    def draft_section(self, section: str, findings: str | None = None, then=None, asked: bool = False) -> None:
        if self.opened is None or section in self.generating or self.panel.signed or self.ws.model is None:
            return
        if not asked and not self._may_replace((section,)):
            return
        uid, model = self.opened.study.study_uid, self.ws.model.model_id
        self.generating.add(section)
        self._queue_section = None
        self.panel.start_stream(section, f"{model}, on demand" + (" from the findings" if findings else ""))
        cancelled = self._cancels[section] = threading.Event()
        self.panel.show_cancel(True)

        def piece(text: str) -> None:  # on the worker thread
            if cancelled.is_set():
                raise DraftCancelled(section)
            self.section_piece.emit(uid, section, text, cancelled)

        def over() -> bool:
            """The job ended; True when it had been cancelled (the section is back as it was already)."""
            if self._cancels.get(section) is cancelled:
                del self._cancels[section]
            self.panel.show_cancel(bool(self._cancels))
            return cancelled.is_set()

        def done(text: str) -> None:
            if over():
                return
            self.generating.discard(section)
            if self._is_open(uid):
                self.panel.end_stream(section, f"{section.capitalize()} drafted by {model}: blue text is the "
                                      "model's until you edit or accept it.")
                if then:
                    then()

        def failed(error: Exception) -> None:
            if over():
                return
            self.generating.discard(section)
            if self._is_open(uid):
                self.panel.end_stream(section, f"Drafting the {section} failed: {error}. Ctrl+Z brings back "
                                      "the text it replaced.")
            self._failed(f"Drafting the {section} failed")(error)

        indication = self.panel.typed_indication()
        self.background.run(lambda: self.ws.draft_section(uid, section, findings, piece, indication), done, failed)

    def cancel_drafting(self) -> None:
        """Cancel (Esc): the drafts asked for stop, and their sections get back the text they had, each
        character with its origin; nothing of the partial output stays."""
        for section in self._stop_drafting():
            self.generating.discard(section)
            self.panel.cancel_stream(section, f"Drafting the {section} cancelled: the text is as it was before.")
        self.status_bar.notify("Drafting cancelled.")

    def _stop_drafting(self) -> list[str]:
        """Tell the running on-demand drafts to stop (at their next piece of text); the sections they were for."""
        sections = list(self._cancels)
        for event in self._cancels.values():
            event.set()
        self._cancels.clear()
        self.panel.show_cancel(False)
        return sections

    @Slot(str, str, str, object)
    def _section_piece(self, study_uid: str, section: str, text: str, draft: threading.Event) -> None:
        if self._is_open(study_uid) and section in self.generating and self._cancels.get(section) is draft:
            self.panel.append_stream(section, text)

    # -- signing, sending, exporting -------------------------------------------------------------------
    def sign_and_next(self) -> None:
        self.sign(then=lambda: self.worklist.open_relative(1))

    def amend(self) -> None:
        if self.opened is not None and self.opened.report is not None and self.panel.signed:
            self.panel.start_amendment(self.opened.report)

    def sign(self, then=None) -> None:
        """Sign the open study, or the amendment being written: the same checks before signing for both."""
        if self.opened is None or self.panel.signed or self.generating:
            return
        sections, amending = self.panel.sections(), self.panel.amending
        addendum = self.panel.addendum.text().strip() if amending is not None else ""
        problems = validate_for_signing(sections)
        if amending is not None and not addendum:
            problems.append("Say what the amendment changes.")
        if not self.ws.config.reading.radiologist.strip():
            problems.append("Set your name (Settings > Reading) before signing.")
        if problems:
            self.panel.set_message(" ".join(problems), error=True)
            return
        snapshot = {name: copy.deepcopy(section) for name, section in sections.items()}
        uid, draft = self.opened.study.study_uid, self.opened.draft
        # priors come from a store of our own or the site server's (desktop.hanging.load_priors)
        has_priors = getattr(self.ws, "store", None) is not None or hasattr(self.ws, "loaded_priors")
        comparison = {"comparison": self.comparison()} if has_priors else {}
        self.panel.sign.setEnabled(False)

        def save(review):
            if amending is not None:
                return self.ws.amend(uid, snapshot, amending.id, addendum, review, **comparison)
            return self.ws.sign(uid, snapshot, draft.id if draft else None, review, **comparison)

        def checked(checks) -> None:
            review = None
            if checks.problems or checks.critical:
                dialog = self.sign_dialog = SignDialog(checks, self)
                if dialog.exec() != SignDialog.DialogCode.Accepted:
                    self.panel.sign.setEnabled(True)
                    self.panel.set_message("Not signed: fix the text, then sign again.")
                    return
                review = dialog.review()
            self.background.run(lambda: save(review), signed, failed)

        def signed(report) -> None:
            self._unsaved = None if self._unsaved and self._unsaved[0] == uid else self._unsaved
            self.status_bar.notify(f"Amendment signed; it replaces report {amending.id}." if amending is not None
                                   else f"Report signed ({report.ai_share_kept:.0%} of the AI text kept).")
            self.feed.request()
            self._reload()
            if then is not None:
                then()

        def failed(error: Exception) -> None:
            self.panel.sign.setEnabled(True)
            self.panel.set_message(f"Not signed: {error}", error=True)

        findings, impression = snapshot["findings"].text, snapshot["impression"].text
        self.background.run(lambda: self.ws.sign_checks(uid, findings, impression), checked, failed)

    def send(self) -> None:
        report = self.opened.report if self.opened else None
        if report is None:
            return
        self.background.run(lambda: self.ws.send(report.id),
                            lambda item: (self.status_bar.notify("Report queued for PACS."), self.feed.request()),
                            self._failed("Cannot send"))

    @Slot(str, bool, str)
    def _report_sent(self, study_uid: str, ok: bool, detail: str) -> None:
        self.feed.request()
        if ok:
            self.status_bar.notify(f"Report sent to {detail}.")
            # PACS takes reports again: the failure banner goes (a send that fails again brings it back)
            self.banner.clear_where(lambda message: message.startswith("Sending a report failed"))
        else:
            self.banner.add(f"Sending a report failed: {detail}. It stays queued and is retried.")
        if self._is_open(study_uid):
            self._reload()

    def export(self, kind: str) -> None:
        report = self.opened.report if self.opened else None
        if report is None:
            return
        suffix = {"text": "txt", "pdf": "pdf", "sr": "dcm"}[kind]
        name = f"report-{self.opened.study.accession_number or report.id}.{suffix}"
        path, _ = QFileDialog.getSaveFileName(self, "Export the report", name)
        if not path:
            return
        jobs = {"text": lambda: self.ws.export_text(report.id, Path(path)),
                "pdf": lambda: write_report_pdf(self.ws.report_text(report.id), Path(path)),
                "sr": lambda: self.ws.export_sr(report.id, Path(path))}
        self.background.run(jobs[kind], lambda out: self.status_bar.notify(f"Exported to {out}."),
                            self._failed("Export failed"))

    # -- settings and closing --------------------------------------------------------------------------
    def open_settings(self) -> None:
        dialog = self.settings_dialog = SettingsDialog(self.ws.config, self.ws.check_settings, self,
                                                       verify=self.ws.verify_settings, background=self.background)
        if dialog.exec() == SettingsDialog.DialogCode.Accepted and dialog.changes():
            self.apply_settings(dialog.changes())

    def apply_settings(self, changes: dict) -> None:
        """Save and apply validated settings on a worker thread (a node restart or model load takes time)."""
        def applied(done: list[str]) -> None:
            self.status_bar.notify("Settings saved. " + "; ".join(done))
            self._show_new_problems()
            self._show_model_state()
            self.refresh_status()

        self.background.run(lambda: self.ws.apply_settings(changes), applied, self._failed("Settings not applied"))

    def shutdown(self) -> None:
        self.save_working_text()
        for timer in self._timers:
            timer.stop()
        if self.models_dialog is not None:
            self.models_dialog.page.shutdown()
        self.bridge.close()
        self.background.wait(15000)
        if self._unsaved is not None:  # typed while the last save was in flight: nothing runs after us
            (uid, state), self._unsaved = self._unsaved, None
            self.data.save_working_draft(uid, state)
        self.data.close_readings()

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

