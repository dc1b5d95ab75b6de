""""Draft both" in the app makes the impression as a queued draft of the model does: from the findings just
drafted for a bundle whose impression comes from its findings (model.json impression_from), else from the
image."""

from __future__ import annotations

from tests.desktop.test_autosave import drafted_study, open_and_wait
from tests.embedded_model import embedded_prompted


def test_draft_both_makes_the_impression_from_the_findings_it_drafted(desktop, qtbot, tmp_path):
    window = desktop(**{"engine.model": str(embedded_prompted(tmp_path / "from-findings", "findings")),
                        "engine.draft_on_stable": False})
    ws, panel = window.ws, window.panel
    uid = drafted_study(ws.store, tmp_path, "a")
    open_and_wait(window, qtbot, uid)
    model = ws.model
    assert model.impression_from_findings
    paths = [ws.store.path_of(row) for row in ws.store.index.instances_of(uid)]
    findings = model.draft_section(paths, "findings").text
    from_findings = model.draft_section(paths, "impression", findings=findings).text
    from_image = model.draft_section(paths, "impression").text
    assert from_findings != from_image  # else this study could not show where the impression came from

    window.draft_both()
    assert window.generating  # drafting started; it ends once the impression is in
    qtbot.waitUntil(lambda: not window.generating, timeout=60_000)
    assert panel.findings.section.text.strip() == findings.strip()
    assert panel.impression.section.text.strip() == from_findings.strip()


def test_draft_both_makes_the_impression_from_the_image_for_a_model_that_does(desktop, qtbot, tmp_path):
    window = desktop(**{"engine.model": str(embedded_prompted(tmp_path / "from-image", "image")),
                        "engine.draft_on_stable": False})
    ws, panel = window.ws, window.panel
    uid = drafted_study(ws.store, tmp_path, "a")
    open_and_wait(window, qtbot, uid)
    assert not ws.model.impression_from_findings
    paths = [ws.store.path_of(row) for row in ws.store.index.instances_of(uid)]
    from_image = ws.model.draft_section(paths, "impression").text

    window.draft_both()
    assert window.generating
    qtbot.waitUntil(lambda: not window.generating, timeout=60_000)
    assert panel.impression.section.text.strip() == from_image.strip()
