"""The sign dialog: the problems the checks before signing found, each with its sentences, and, when the
report states a critical finding, the record of its communication (who was told, when, how).

"Fix the text" goes back to the editors; "Sign" needs a reason when there are problems and a complete
communication record when there are critical findings.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QDateTime
from PySide6.QtWidgets import (
    QComboBox,
    QDateTimeEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from engine.findings.checks import COMMUNICATION_METHODS, CriticalCommunication, SignReview, review_problems


class SignDialog(QDialog):
    def __init__(self, checks, parent: QWidget | None = None) -> None:
        """`checks`: raddraft.workstation.SignChecks (problems and critical findings)."""
        super().__init__(parent)
        self.setWindowTitle("Before signing")
        self.checks = checks
        layout = QVBoxLayout(self)
        self.problem_list = QLabel(self._problems_html())
        self.problem_list.setWordWrap(True)
        self.reason = QLineEdit(placeholderText="Why the report is right as it is (recorded with the report)")
        self.recipient = QLineEdit(placeholderText="Dr Name, ward or service")
        self.when = QDateTimeEdit(QDateTime.currentDateTime(), displayFormat="yyyy-MM-dd HH:mm", calendarPopup=True)
        self.method = QComboBox()
        self.method.addItems(list(COMMUNICATION_METHODS))
        if checks.problems:
            box = QGroupBox(f"{len(checks.problems)} problem{'s' if len(checks.problems) > 1 else ''} in the report")
            inner = QVBoxLayout(box)
            inner.addWidget(self.problem_list)
            inner.addWidget(QLabel("To sign anyway, give a reason:"))
            inner.addWidget(self.reason)
            layout.addWidget(box)
        if checks.critical:
            box = QGroupBox("Critical finding: record its communication")
            box.setStyleSheet("QGroupBox { color: #d0021b; font-weight: bold; }")
            form = QFormLayout(box)
            form.addRow(QLabel("<br>".join(html.escape(f.title.capitalize()) for f in checks.critical)))
            form.addRow("Told to", self.recipient)
            form.addRow("When", self.when)
            form.addRow("How", self.method)
            layout.addWidget(box)
        self.buttons = QDialogButtonBox()
        self.sign_button = self.buttons.addButton("Sign anyway" if checks.problems else "Sign",
                                                  QDialogButtonBox.ButtonRole.AcceptRole)
        self.fix_button = self.buttons.addButton("Fix the text", QDialogButtonBox.ButtonRole.RejectRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.missing = QLabel("")
        self.missing.setStyleSheet("color: #b03a2e;")
        layout.addWidget(self.missing)
        layout.addWidget(self.buttons)
        for field in (self.reason, self.recipient):
            field.textChanged.connect(self._update)
        self._update()

    def _problems_html(self) -> str:
        items = []
        for problem in self.checks.problems:
            quotes = "".join(f"<li><i>“{html.escape(s)}”</i></li>" for s in problem.sentences)
            items.append(f"<li>{html.escape(problem.message)}<ul>{quotes}</ul></li>")
        return f"<ul>{''.join(items)}</ul>"

    def review(self) -> SignReview:
        communication = None
        if self.checks.critical:
            communication = CriticalCommunication(self.recipient.text(), self.when.dateTime().toString("yyyy-MM-dd HH:mm"),
                                                  self.method.currentText())
        return SignReview(override_reason=self.reason.text() if self.checks.problems else "",
                          communication=communication)

    def missing_answers(self) -> list[str]:
        """What signing would still refuse (the same rule as the workstation's)."""
        return review_problems(list(self.checks.problems), list(self.checks.critical), self.review())

    def _update(self) -> None:
        missing = self.missing_answers()
        self.sign_button.setEnabled(not missing)
        self.missing.setText("Needed to sign: " + "; ".join(missing) + "." if missing else "")
