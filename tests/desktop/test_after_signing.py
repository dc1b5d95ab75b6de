"""Images that change after signing, and the amendment that answers them, in the real window."""

from __future__ import annotations

import numpy as np
import pydicom

from dicom_node.drafts import working_draft
from dicom_node.reports import latest_report, reports_of
from dicom_node.sender import send_files
from dicom_node.worklist import worklist_row
from engine.provenance import Origin, SectionText
from tests.desktop.test_autosave import drafted_study, open_and_wait, type_at_end


def test_a_corrected_instance_for_a_signed_study_is_shown_named_and_answered_by_an_amendment(
        desktop, qtbot, tmp_path, no_model):
    window = desktop(**no_model)
    ws = window.ws
    uid = drafted_study(ws.store, tmp_path, "a")
    first = ws.sign(uid, {"findings": SectionText("Lungs clear.", Origin.HUMAN),
                          "impression": SectionText("Normal chest.", Origin.HUMAN)}, None)
    open_and_wait(window, qtbot, uid)
    canvas = window.viewer.canvases[0]
    qtbot.waitUntil(lambda: canvas.frame is not None, timeout=10_000)
    assert not window.panel.changed.isVisible() and window.panel.amend.isEnabled()
    old_pixels = canvas.frame.values.copy()

    instance = ws.store.index.instances_of(uid)[0]
    ds = pydicom.dcmread(ws.store.path_of(instance))  # corrected: same SOP Instance UID, new pixels
    ds.PixelData = (ds.pixel_array[::-1].copy()).tobytes()
    corrected = tmp_path / "corrected.dcm"
    ds.save_as(corrected)
    send_files("127.0.0.1", ws.node.port, [corrected], called_ae="RADDRAFT")

    qtbot.waitUntil(lambda: window.panel.changed.isVisible(), timeout=10_000)
    assert f"replaced instance {instance.instance_number} ({instance.sop_instance_uid})" in window.panel.changed.text()
    qtbot.waitUntil(lambda: canvas.frame is not None and not np.array_equal(canvas.frame.values, old_pixels),
                    timeout=10_000)  # the new pixels at once, not the cached old ones
    qtbot.waitUntil(lambda: window.worklist.model.row_of(uid) is not None
                    and window.worklist.model.row_of(uid).badge == "changed after signing", timeout=10_000)

    window.panel.amend.click()
    assert not window.panel.findings.isReadOnly() and window.panel.addendum.isVisible()
    type_at_end(qtbot, window.panel.findings, " Corrected images reviewed: no change.")
    window.panel.sign.click()
    assert "Say what the amendment changes" in window.panel.message.text()
    window.panel.addendum.setText("Images corrected by the modality; reviewed.")
    window.panel.sign.click()
    qtbot.waitUntil(lambda: latest_report(ws.store.index, uid).id != first.id, timeout=10_000)
    amended = latest_report(ws.store.index, uid)
    assert amended.detail["amends"] == first.id and amended.findings.endswith("no change.")
    assert [r.id for r in reports_of(ws.store.index, uid)] == [first.id, amended.id]
    row = worklist_row(ws.store.index, uid)
    assert row.badge == "signed" and row.amendments == 1
    qtbot.waitUntil(lambda: window.panel.signed and "Amendment 1" in window.panel.source.text(), timeout=10_000)
    assert not window.panel.changed.isVisible()
    assert working_draft(ws.store.index, uid) is None


def test_an_amendment_is_checked_before_signing_as_a_first_report_is(desktop, tmp_path, no_model):
    from engine.findings.checks import SignReview
    from raddraft.workstation import SignReviewNeeded

    ws = desktop(**no_model).ws
    uid = drafted_study(ws.store, tmp_path, "b")
    first = ws.sign(uid, {"findings": SectionText("Lungs clear.", Origin.HUMAN),
                          "impression": SectionText("Normal chest.", Origin.HUMAN)}, None)
    conflicting = {"findings": SectionText("Small left pleural effusion.", Origin.HUMAN),
                   "impression": SectionText("No pleural effusion.", Origin.HUMAN)}
    try:
        ws.amend(uid, conflicting, first.id, "Effusion seen on review.")
    except SignReviewNeeded as refused:
        assert [problem.kind for problem in refused.checks.problems] == ["section_conflict"]
    else:
        raise AssertionError("an amendment that contradicts itself was signed without a reason")
    assert latest_report(ws.store.index, uid).id == first.id

    amended = ws.amend(uid, conflicting, first.id, "Effusion seen on review.",
                       SignReview(override_reason="impression to be corrected by the attending"))
    assert amended.detail["sign_checks"]["override_reason"] == "impression to be corrected by the attending"
