"""Checks before signing and critical findings in the real window: the sign dialog with each check, and a
critical draft from worklist to signed SR with its communication record."""

from __future__ import annotations

import pydicom
import pytest
from PySide6.QtCore import Qt, QTimer

from desktop.sign_dialog import SignDialog
from dicom_node.drafts import DraftRecord, save_draft
from dicom_node.index import StudyState
from dicom_node.reports import latest_report
from dicom_node.sr import section_texts
from dicom_node.store import ReceivedInstance
from engine.findings.checks import (
    COMPARISON_WITHOUT_PRIOR,
    CRITICAL_NOT_IN_IMPRESSION,
    LATERALITY_CONFLICT,
    SECTION_CONFLICT,
    check_report,
)
from engine.findings.critical import find_critical
from raddraft.workstation import SignChecks


def checks_of(findings: str, impression: str) -> SignChecks:
    return SignChecks(tuple(check_report(findings, impression, has_prior=False)),
                      tuple(find_critical({"findings": findings, "impression": impression})))


@pytest.mark.parametrize("findings,impression,kind,quoted", [
    ("Small left pleural effusion.", "No pleural effusion.", SECTION_CONFLICT, "No pleural effusion"),
    ("Moderate left pleural effusion.", "Moderate right pleural effusion.", LATERALITY_CONFLICT,
     "Moderate right pleural effusion"),
    ("Large right pneumothorax.", "Small left pleural effusion.", CRITICAL_NOT_IN_IMPRESSION,
     "Large right pneumothorax"),
    ("Small left pleural effusion.", "Unchanged small left pleural effusion.", COMPARISON_WITHOUT_PRIOR,
     "Unchanged small left pleural effusion."),
])
def test_dialog_lists_each_problem_with_its_sentences_and_needs_a_reason(qtbot, findings, impression, kind, quoted):
    checks = checks_of(findings, impression)
    assert kind in {p.kind for p in checks.problems}
    dialog = SignDialog(checks)
    qtbot.addWidget(dialog)
    text = dialog.problem_list.text()
    assert quoted in text and next(p.message for p in checks.problems if p.kind == kind) in text
    assert not dialog.sign_button.isEnabled() and "a reason to sign anyway" in dialog.missing.text()
    qtbot.keyClicks(dialog.reason, "Discussed with the referring team")
    if checks.critical:
        assert not dialog.sign_button.isEnabled()
        qtbot.keyClicks(dialog.recipient, "Dr Lee, ED")
    assert dialog.sign_button.isEnabled()
    assert dialog.review().override_reason == "Discussed with the referring team"


def test_dialog_of_a_critical_finding_asks_who_when_how(qtbot):
    checks = checks_of("Large right pneumothorax with mediastinal shift.", "Large right pneumothorax.")
    assert not checks.problems and [f.title for f in checks.critical] == ["pneumothorax (tension or large)"]
    dialog = SignDialog(checks)
    qtbot.addWidget(dialog)
    assert dialog.sign_button.text() == "Sign" and not dialog.sign_button.isEnabled()
    qtbot.keyClicks(dialog.recipient, "Dr Lee, ED")
    dialog.method.setCurrentText("in person")
    review = dialog.review()
    assert review.communication.recipient == "Dr Lee, ED" and review.communication.method == "in person"
    assert review.communication.problems() == []


def put_drafted(workstation, paths, findings: str, impression: str) -> str:
    store = workstation.store
    for path in paths:
        store.put(ReceivedInstance.from_part10(path.read_bytes(), calling_ae="TEST"))
    uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    store.index.transition(uid, StudyState.STABLE)
    store.index.transition(uid, StudyState.DRAFTING)
    critical = [f.title for f in find_critical({"findings": findings, "impression": impression})]
    save_draft(store.index, DraftRecord(uid, "dictated@1", "cpu", findings, impression, {"critical": critical}))
    return uid


@pytest.mark.slow
def test_critical_draft_goes_first_is_flagged_and_signs_with_its_communication(desktop, qtbot, phantom_studies):
    window = desktop(**{"engine.draft_on_stable": False})
    quiet = put_drafted(window.ws, phantom_studies[1]["paths"], "Heart size is normal.", "No acute abnormality.")
    uid = put_drafted(window.ws, phantom_studies[0]["paths"], "Large right pneumothorax with mediastinal shift.",
                      "Large right pneumothorax.")
    window.feed.request()
    model = window.worklist.model
    qtbot.waitUntil(lambda: model.row_of(uid) is not None and model.row_of(quiet) is not None, timeout=10_000)
    # first whatever the sort, with a red badge, and counted in the status bar
    for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
        window.worklist.view.sortByColumn(6, order)
        assert window.worklist.uids_in_view_order()[0] == uid
    assert window.worklist.proxy.index(0, 8).data() == "critical"
    assert window.status_bar.critical.text() == "⚠ 1 critical"

    window.open_study(uid)
    qtbot.waitUntil(lambda: window.opened is not None and window.opened.study.study_uid == uid, timeout=10_000)
    assert window.panel.critical.isVisible() and "pneumothorax (tension or large)" in window.panel.critical.text()
    window.panel.accept.click()

    answered = []

    def answer() -> None:
        dialog = window.sign_dialog
        if dialog is None or not dialog.isVisible() or answered:
            return
        answered.append(dialog)
        dialog.recipient.setText("Dr Lee, ED")
        dialog.method.setCurrentText("telephone")
        dialog.sign_button.click()

    timer = QTimer(window, interval=50)
    timer.timeout.connect(answer)
    timer.start()
    window.panel.sign.click()
    index = window.ws.store.index
    qtbot.waitUntil(lambda: latest_report(index, uid) is not None, timeout=15_000)
    timer.stop()
    report = latest_report(index, uid)
    assert report.detail["critical_findings"] == ["pneumothorax (tension or large)"]
    communication = report.detail["critical_communication"]
    assert communication["recipient"] == "Dr Lee, ED" and communication["method"] == "telephone"
    sr = pydicom.dcmread(window.ws.sr_file(report.id))
    assert "communicated to Dr Lee, ED by telephone" in section_texts(sr)["critical_communication"]
    window.feed.request()
    qtbot.waitUntil(lambda: not model.row_of(uid).critical_unread, timeout=10_000)
    qtbot.waitUntil(lambda: window.status_bar.critical.text() == "", timeout=10_000)


@pytest.mark.slow
def test_fix_the_text_leaves_the_report_unsigned(desktop, qtbot, phantom_studies):
    window = desktop(**{"engine.draft_on_stable": False})
    uid = put_drafted(window.ws, phantom_studies[0]["paths"], "Small left pleural effusion.", "No pleural effusion.")
    window.open_study(uid)
    qtbot.waitUntil(lambda: window.opened is not None, timeout=10_000)
    window.panel.accept.click()
    seen = []

    def refuse() -> None:
        dialog = window.sign_dialog
        if dialog is not None and dialog.isVisible() and not seen:
            seen.append(dialog.problem_list.text())
            dialog.fix_button.click()

    timer = QTimer(window, interval=50)
    timer.timeout.connect(refuse)
    timer.start()
    window.panel.sign.click()
    qtbot.waitUntil(lambda: "fix the text" in window.panel.message.text(), timeout=10_000)
    timer.stop()
    assert "present in the Findings but absent in the Impression" in seen[0]
    assert latest_report(window.ws.store.index, uid) is None and window.panel.sign.isEnabled()
