"""The Models page: the model drafting now and its card, the installed versions (switch back to any), and
fine-tuning on the site's signed reports in a background process, up to promoting the candidate.

The run's state, its protocol and the comparison live in `desktop.finetune_run` (no Qt); this module binds
them to a QProcess and widgets. Everything that touches the registry or the store goes through the
workstation on a worker thread (`Background`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QProcess, QProcessEnvironment, Qt, Signal, Slot
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from desktop.finetune_run import (
    CANCELLED,
    FAILED,
    FINISHED,
    RUNNING,
    Comparison,
    LineBuffer,
    RunState,
    load_comparison,
    parse_line,
    plan_run,
    promotion_record,
    raddraft_command,
    training_unavailable,
)
from desktop.tasks import Background

MODEL_COLUMNS = ("", "Version", "Name", "Installed", "Findings F1", "Impression F1", "How")
ERROR_STYLE, OK_STYLE = "color: #b03a2e;", ""


def _f1(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _table(headers: Sequence[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().hide()
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


class ModelsPage(QWidget):
    model_changed = Signal(str)  # the model id drafting now, after "Use this version" or a promotion

    def __init__(self, workstation, background: Background, parent: QWidget | None = None,
                 command: Sequence[str] | None = None,
                 unavailable: Callable[[], str | None] = training_unavailable) -> None:
        super().__init__(parent)
        self.ws, self.background = workstation, background
        self.command = tuple(command or raddraft_command())  # how the steps start `raddraft`
        self.unavailable_reason = unavailable()
        self.confirm: Callable[[str], bool] = self._ask  # replaced in tests: no modal dialog offscreen
        self.overview = None
        self.run: RunState | None = None
        self.comparison: Comparison | None = None
        self.process: QProcess | None = None
        self._out, self._err = LineBuffer(), LineBuffer()
        self._busy = False
        self._build()

    # -- layout -----------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.running_label, self.note = QLabel("…"), QLabel("")
        self.note.setWordWrap(True)
        self.card = QTextBrowser()
        self.card.setOpenExternalLinks(False)
        self.table = _table(MODEL_COLUMNS)
        self.details = QLabel("Select a version to see how it got here.")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.use_button = QPushButton("Use this version")
        self.use_button.setEnabled(False)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.use_button.clicked.connect(self.use_selected)
        left = QWidget()
        column = QVBoxLayout(left)
        column.addWidget(self.running_label)
        column.addWidget(self.note)
        column.addWidget(self.card, 2)
        column.addWidget(QLabel("Installed versions"))
        column.addWidget(self.table, 1)
        column.addWidget(self.details)
        column.addWidget(self.use_button, 0, Qt.AlignmentFlag.AlignLeft)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self._training_box())
        split.setSizes([560, 640])
        layout = QVBoxLayout(self)
        layout.addWidget(split)

    def _training_box(self) -> QGroupBox:
        box = QGroupBox("Fine-tune on signed reports")
        self.signed_label = QLabel("…")
        self.finetune_button, self.cancel_button = QPushButton("Fine-tune on signed reports"), QPushButton("Cancel")
        self.finetune_button.clicked.connect(self.start_finetune)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.unavailable_label = QLabel(f"Fine-tuning is not available: {self.unavailable_reason}."
                                        if self.unavailable_reason else "")
        self.unavailable_label.setWordWrap(True)
        self.unavailable_label.setVisible(bool(self.unavailable_reason))
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("The commands' log appears here.")
        self.comparison_table = _table(("Metric", "Current", "Candidate", "Change"))
        self.decision_label = QLabel("")
        self.decision_label.setWordWrap(True)
        self.plot = QLabel()
        self.plot.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.promote_button, self.promote_anyway_button = QPushButton("Promote"), QPushButton("Promote anyway…")
        self.promote_button.clicked.connect(lambda: self.promote(forced=False))
        self.promote_anyway_button.clicked.connect(lambda: self.promote(forced=True))
        for button in (self.promote_button, self.promote_anyway_button):
            button.setEnabled(False)

        buttons, promote = QHBoxLayout(), QHBoxLayout()
        buttons.addWidget(self.finetune_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        promote.addWidget(self.promote_button)
        promote.addWidget(self.promote_anyway_button)
        promote.addStretch(1)
        layout = QVBoxLayout(box)
        for widget in (self.signed_label, self.unavailable_label):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        for widget, stretch in ((self.progress, 0), (self.status, 0), (self.log, 1), (self.comparison_table, 1),
                                (self.decision_label, 0), (self.plot, 0)):
            layout.addWidget(widget, stretch)
        layout.addLayout(promote)
        return box

    # -- the models -------------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.background.run(self.ws.models_overview, self._show_overview,
                            lambda error: self._say(f"Cannot read the models: {error}", error=True))

    def _show_overview(self, overview) -> None:
        self.overview = overview
        running = overview.running
        how = f", {running.how}" if running is not None else ""
        self.running_label.setText(f"<b>Drafting with {overview.running_id}</b>{how}")
        notes = []
        if overview.pinned is not None:
            notes.append(f"Pinned by the configuration ([engine] model = {overview.pinned}): choosing a version "
                         "here takes effect once the pin is removed in Settings.")
        if overview.problem:
            notes.append(overview.problem)
        self.note.setText("\n".join(notes))
        self.note.setStyleSheet(ERROR_STYLE if overview.problem else OK_STYLE)
        self.card.setMarkdown(overview.card or "*This model has no model card.*")
        self._fill_models(overview.models)
        self.signed_label.setText(f"Signed reports available for training: {overview.signed_total} "
                                  f"({overview.signed_new} new since the current model was installed).")
        self._update_buttons()

    def _fill_models(self, models) -> None:
        self.table.setRowCount(len(models))
        for row, model in enumerate(models):
            installed = model.installed_at.astimezone().strftime("%Y-%m-%d %H:%M") if model.installed_at else "–"
            how = f"broken: {model.broken}" if model.broken else model.how
            cells = ("●" if model.current else "", model.version, model.name, installed,
                     _f1(model.section_f1("findings")), _f1(model.section_f1("impression")), how)
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, model)
                item.setToolTip(describe_record(model))
                self.table.setItem(row, column, item)

    def selected_model(self):
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole) if rows else None

    def select_version(self, version: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole).version == version:
                self.table.selectRow(row)
                return
        raise KeyError(version)

    def _selection_changed(self) -> None:
        model = self.selected_model()
        if model is not None:
            self.details.setText(describe_record(model))
        self._update_buttons()

    @Slot()
    def use_selected(self) -> None:
        model = self.selected_model()
        if model is None or self._busy:
            return
        self._set_busy(True)
        self._say(f"Switching to {model.model_id}…")
        self.background.run(lambda: self.ws.use_model(model.key), self._switched, self._not_switched)

    def _switched(self, model) -> None:
        self._set_busy(False)
        self._say(f"{model.model_id} is the current model: the next study is drafted with it.")
        self.model_changed.emit(model.model_id)
        self.refresh()

    def _not_switched(self, error: Exception) -> None:
        self._set_busy(False)
        self._say(f"Not switched: {error}", error=True)
        self.refresh()

    # -- fine-tuning ------------------------------------------------------------------------------------
    @Slot()
    def start_finetune(self) -> None:
        overview = self.overview
        if self.unavailable_reason or overview is None or overview.running_path is None or self.running():
            return
        overview.work_dir.mkdir(parents=True, exist_ok=True)
        self.run = RunState(plan_run(self.command, overview.store_root, overview.work_dir, overview.running_path))
        self.comparison = None
        self.log.clear()
        self.comparison_table.setRowCount(0)
        self.decision_label.clear()
        self.plot.clear()
        self._start_step()

    def running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def _start_step(self) -> None:
        step = self.run.step
        self._out, self._err = LineBuffer(), LineBuffer()
        process = QProcess(self)
        environment = QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONUNBUFFERED", "1")  # the JSON lines arrive as they are printed
        process.setProcessEnvironment(environment)
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._step_finished)
        process.errorOccurred.connect(self._process_error)
        self.process = process
        self.log.appendPlainText("$ " + " ".join(step.argv))
        process.start(step.argv[0], list(step.argv[1:]))
        self._show_progress()
        self._update_buttons()

    @Slot()
    def _read_stdout(self) -> None:
        chunk = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        self._take_stdout(self._out.feed(chunk))

    def _take_stdout(self, lines: list[str]) -> None:
        for line in lines:
            event = parse_line(line)
            if event is None:
                if line.strip():
                    self.log.appendPlainText(line)
                continue
            self.run.apply(event)
            said = event.data.get("name") or event.data.get("text") or event.data.get("message")
            if event.kind in ("stage", "message", "error"):
                self.log.appendPlainText(f"[{event.kind}] {said}")
        self._show_progress()

    @Slot()
    def _read_stderr(self) -> None:
        chunk = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        self._take_stderr(self._err.feed(chunk))

    def _take_stderr(self, lines: list[str]) -> None:
        for line in lines:
            self.log.appendPlainText(line)
        self.run.add_stderr(lines)

    @Slot(int, QProcess.ExitStatus)
    def _step_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        self._read_stdout()
        self._read_stderr()
        self._take_stdout(self._out.flush())
        self._take_stderr(self._err.flush())
        crashed = status == QProcess.ExitStatus.CrashExit
        following = self.run.step_exited(exit_code, crashed)
        if following is not None:
            self._start_step()
            return
        self._finish_run(exit_code)

    @Slot(QProcess.ProcessError)
    def _process_error(self, error: QProcess.ProcessError) -> None:
        if error != QProcess.ProcessError.FailedToStart or self.run is None:
            return  # a crash also ends in `finished`
        self.run.errors.append(f"cannot start {self.run.step.argv[0]} ({self.process.errorString()})")
        self.run.step_exited(-1, crashed=True)
        self._finish_run(None)

    def _finish_run(self, exit_code: int | None) -> None:
        run = self.run
        self._show_progress()
        if run.outcome == FAILED:
            text = run.failure_text(exit_code)
            self._say(text, error=True)
            self.log.appendPlainText(text)
        elif run.outcome == FINISHED:
            path = run.output("comparison", "comparison.json")
            self.background.run(lambda: load_comparison(path), self.show_comparison,
                                lambda error: self._say(str(error), error=True))
        self._update_buttons()
        self.refresh()  # the signed-report counts and anything promoted meanwhile

    @Slot()
    def cancel(self) -> None:
        if self.run is None or not self.running():
            return
        self.run.cancel()
        self.process.kill()
        self._say("Cancelled: the process was stopped.")

    def _show_progress(self) -> None:
        run = self.run
        if run is None:
            return
        if run.total:
            self.progress.setRange(0, run.total)
            self.progress.setValue(min(run.done, run.total))
        elif run.outcome == RUNNING:
            self.progress.setRange(0, 0)  # busy, amount unknown
        else:
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if run.outcome == FINISHED else 0)
        if run.outcome in (RUNNING, FINISHED):
            self._say(run.status_line())
        elif run.outcome == CANCELLED:
            self._say("Cancelled: the process was stopped.")

    # -- the comparison and promotion -------------------------------------------------------------------
    def show_comparison(self, comparison: Comparison) -> None:
        self.comparison = comparison
        rows = comparison.rows()
        self.comparison_table.setRowCount(len(rows))
        for row, (label, old, new) in enumerate(rows):
            change = "–" if old is None or new is None else f"{new - old:+.3f}"
            for column, text in enumerate((label, _f1(old), _f1(new), change)):
                self.comparison_table.setItem(row, column, QTableWidgetItem(text))
        decision = comparison.decision
        verdict = "Promote the candidate" if decision.promote else "Keep the current model"
        self.decision_label.setText(
            f"<b>{verdict}</b> ({comparison.current.get('version')} → {comparison.candidate.get('version')}, "
            f"{comparison.test_studies} held-out studies): " + "; ".join(decision.reasons))
        pixmap = QPixmap(str(self.run.output("plot", "comparison.png")))
        if not pixmap.isNull():
            self.plot.setPixmap(pixmap.scaledToWidth(min(560, pixmap.width()),
                                                     Qt.TransformationMode.SmoothTransformation))
        self._update_buttons()

    def promote(self, forced: bool) -> None:
        comparison = self.comparison
        if comparison is None or self.run is None or self._busy:
            return
        if forced and not self.confirm(
                f"The comparison says keep the current model:\n\n{'; '.join(comparison.decision.reasons)}\n\n"
                f"Promote {comparison.candidate.get('version')} anyway? This is recorded as forced."):
            return
        candidate = self.run.output("candidate", "candidate")
        record = promotion_record(comparison, forced)
        self._set_busy(True)
        self._say(f"Installing {comparison.candidate.get('version')}…")
        self.background.run(lambda: self.ws.install_model(Path(candidate), record, use=True), self._promoted,
                            self._not_switched)

    def _promoted(self, model) -> None:
        self.comparison = None  # installed: promoting it again would be refused
        self._switched(model)

    def _ask(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Promote anyway?", text)
        return answer == QMessageBox.StandardButton.Yes

    # -- state of the buttons ---------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self._update_buttons()

    def _update_buttons(self) -> None:
        running, idle = self.running(), not self._busy
        selected = self.selected_model()
        self.use_button.setEnabled(idle and selected is not None and not selected.current and not selected.broken)
        self.finetune_button.setEnabled(idle and not running and self.unavailable_reason is None
                                        and self.overview is not None and self.overview.running_path is not None)
        self.finetune_button.setToolTip(self.unavailable_reason or "")
        self.cancel_button.setEnabled(running)
        decision = self.comparison.decision if self.comparison else None
        can_promote = idle and not running and decision is not None
        self.promote_button.setEnabled(can_promote and decision.promote)
        self.promote_anyway_button.setEnabled(can_promote and not decision.promote)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(ERROR_STYLE if error else OK_STYLE)

    def shutdown(self) -> None:
        """Stop a run in progress (the app is closing)."""
        if self.running():
            self.run.cancel()
            self.process.kill()
            self.process.waitForFinished(5000)


class ModelsDialog(QDialog):
    """The page in its own window, not modal: a run goes on while the radiologist reads."""

    def __init__(self, page: ModelsPage, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RadDraft models")
        self.page = page
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(page)
        self.resize(1200, 800)

    def showEvent(self, event) -> None:
        self.page.refresh()
        super().showEvent(event)


def describe_record(model) -> str:
    """How a version got here, from its promotion record: the decision and the numbers it rested on."""
    if model.broken:
        return f"{model.model_id} cannot be used: {model.broken}"
    if model.embedded:
        return f"{model.model_id} ships with RadDraft (the embedded model)."
    record = model.record or {}
    lines = [f"{model.model_id}: {model.how}" + (f" by {record['by']}" if record.get("by") else "") + "."]
    decision = record.get("decision")
    if isinstance(decision, dict):
        compared = record.get("compared_with") or {}
        lines.append(f"Compared with {compared.get('version', 'the model then current')} on "
                     f"{record.get('test_studies', '?')} held-out studies: " + "; ".join(
                         str(reason) for reason in decision.get("reasons", ())))
    return "\n".join(lines)
