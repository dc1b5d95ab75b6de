"""`raddraft app --server URL` reads against a prior as the standalone app does (pytest-qt, offscreen, the real
site server over HTTPS and PostgreSQL): the server's prior hangs beside the study with its date, its report
beside the draft, the checks before signing know the study has one, and the prior on screen is the signed
report's comparison (text and SR); without one the viewer says why, and "Look for priors" asks the server."""

from __future__ import annotations

import pydicom
import pytest

from dicom_node.drafts import DraftRecord, save_draft
from dicom_node.index import StudyState
from dicom_node.priors import PriorRetriever
from dicom_node.reports import SignedReport, latest_report, sign_report
from dicom_node.settings import PacsSettings
from dicom_node.sr import comparison_reference
from tests.dicom_node.priors_fixtures import put_all, write_cr_study

site_app = pytest.importorskip("tests.desktop.test_remote_app", reason="the site server is not in this tree")
certificate, running_site, reader = site_app.certificate, site_app.running_site, site_app.reader
open_and_wait, wait_signed = site_app.open_and_wait, site_app.wait_signed
pytestmark = pytest.mark.slow

PATIENT = "PRI-THIN-18"
FINDINGS = "Right pleural effusion."
COMPARING = "Right pleural effusion, increased since the prior study."


def _current_drafted(site, tmp_path, patient: str = PATIENT) -> str:
    current = write_cr_study(tmp_path / f"current-{patient}", patient, "20250110")
    put_all(site.store, current.paths)
    for state in (StudyState.STABLE, StudyState.DRAFTING):
        site.index.transition(current.study_uid, state)
    save_draft(site.index, DraftRecord(current.study_uid, "tiny@1", "cpu", FINDINGS, COMPARING))
    return current.study_uid


def _earlier_signed(site, tmp_path, patient: str = PATIENT) -> str:
    earlier = write_cr_study(tmp_path / f"earlier-{patient}", patient, "20231105")
    put_all(site.store, earlier.paths)
    site.index.transition(earlier.study_uid, StudyState.DRAFTED)
    sign_report(site.index, SignedReport(earlier.study_uid, "Small right effusion.", "Small right pleural effusion.",
                                         "Reader^A"))
    return earlier.study_uid


def _retriever(site) -> PriorRetriever:
    return PriorRetriever(PacsSettings(), site.index, site.store, move_destination="RADDRAFT")


def _prior_shown(qtbot, viewer, date: str) -> None:
    canvas = viewer.canvases[1]
    qtbot.waitUntil(lambda: canvas.frame is not None and canvas.image is not None
                    and canvas.frame.attributes["study_date"] == date, timeout=20_000)


def test_the_thin_app_hangs_the_servers_prior_and_signs_it_as_the_comparison(running_site, reader, qtbot,
                                                                              tmp_path):
    site = running_site.site
    earlier = _earlier_signed(site, tmp_path)
    current = _current_drafted(site, tmp_path)
    _retriever(site).retrieve_for(current)
    window = reader("anna")
    open_and_wait(window, qtbot, current)
    viewer = window.viewer
    qtbot.waitUntil(lambda: viewer.prior is not None, timeout=20_000)
    _prior_shown(qtbot, viewer, "20231105")
    assert viewer.prior.study_uid == earlier and viewer.hanging == "frontals"
    assert viewer.canvases[0].caption == "CURRENT 2025-01-10" and viewer.canvases[1].caption == "PRIOR 2023-11-05"
    assert window.prior_panel.heading.text() == "Prior report · 2023-11-05 · CR CHEST PA AND LATERAL · signed here"
    assert "Small right pleural effusion." in window.prior_panel.text.toPlainText()
    # the prior's images came by WADO-RS into this workstation's cache
    assert all(str(path).startswith(str(window.ws.cache.root)) for path in viewer.prior.paths)

    window.panel.accept.click()
    window.sign()
    wait_signed(window, qtbot)
    assert window.sign_dialog is None  # a comparison stated with a prior on screen is no claim to review
    report = latest_report(site.index, current)
    assert report.signed_by == "anna" and report.detail["comparison"]["study_uid"] == earlier
    assert "Comparison: CR CHEST PA AND LATERAL 2023-11-05." in window.ws.report_text(report.id)
    from dicom_node.outbox import ensure_report_sr

    reference = comparison_reference(pydicom.dcmread(ensure_report_sr(site.store, report.id, "")))
    assert (reference["study_uid"], reference["date"]) == (earlier, "20231105")


def test_without_a_prior_the_thin_app_says_why_and_looks_again_on_the_server(running_site, reader, qtbot,
                                                                             tmp_path):
    site = running_site.site
    current = _current_drafted(site, tmp_path, "PRI-THIN-NONE")
    retriever = _retriever(site)
    retriever.retrieve_for(current)
    site.look_for_priors = lambda uid: retriever.retrieve_for(uid, again=True)
    window = reader("ben")
    open_and_wait(window, qtbot, current)
    viewer, panel = window.viewer, window.prior_panel
    qtbot.waitUntil(lambda: viewer.priors.study_uid == current, timeout=20_000)
    assert viewer.prior is None and viewer.prior_note.text() == "No prior"
    assert panel.heading.text().startswith("No prior: drafted without a prior")
    checks = window.ws.sign_checks(current, FINDINGS, COMPARING)
    assert [problem.kind for problem in checks.problems] == ["comparison_without_prior"]

    earlier = _earlier_signed(site, tmp_path, "PRI-THIN-NONE")  # the prior reaches the server's store: ask again
    viewer.look_again.trigger()
    qtbot.waitUntil(lambda: viewer.prior is not None, timeout=20_000)
    assert viewer.prior.study_uid == earlier
    _prior_shown(qtbot, viewer, "20231105")
    assert panel.heading.text().startswith("Prior report · 2023-11-05")
    assert window.ws.sign_checks(current, FINDINGS, COMPARING).problems == ()
