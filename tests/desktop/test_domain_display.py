"""What the radiologist sees of a draft outside its model's domain: red banner, greyed text, empty editors
until asked, no critical alert from the draft, the worklist's domain column and the status bar's count;
and the per-finding confidence on hover."""

from __future__ import annotations

import time

import pytest

from desktop.draft_panel import DraftPanel
from desktop.worklist import COLUMNS, domain_text
from dicom_node.drafts import DraftRecord, latest_draft
from dicom_node.index import StudyState
from raddraft.resources import embedded_model_dir
from tests.desktop.test_desktop_widgets import add_study

OUT = {"in_domain": False, "score": 412.5, "threshold": 172.5}


def _record(domain: dict, confidence: dict | None = None) -> DraftRecord:
    return DraftRecord("1.2.3", "raddraft-phantom-cxr@1.0.0", "cpu", "Large right pneumothorax.",
                       "Right pneumothorax.", detail={"domain": domain, "confidence": confidence or {}},
                       created_at=time.time(), id=4)


def test_an_out_of_domain_draft_is_greyed_under_a_banner_and_taken_only_when_asked(qtbot) -> None:
    panel = DraftPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_study("Adams^Ann")
    panel.show_draft(_record(OUT, {"pneumothorax": 0.41}))
    assert panel.domain_banner.isVisible()
    assert "outside what model raddraft-phantom-cxr@1.0.0 was trained on" in panel.domain_banner.text()
    assert "unreliable" in panel.domain_banner.text()
    assert panel.withheld.isVisible() and "Large right pneumothorax." in panel.withheld.text()
    assert panel.findings.toPlainText() == "" and panel.impression.toPlainText() == ""  # never pre-filled
    assert "pneumothorax 41%" in panel.findings.toolTip()
    panel.use_anyway.click()
    assert panel.findings.toPlainText() == "Large right pneumothorax."
    assert panel.findings.section.ai_characters() == len("Large right pneumothorax.")
    assert panel.domain_banner.isVisible() and not panel.withheld.isVisible()  # still the unreliable draft
    panel.set_study("Brown^Bob")
    assert not panel.domain_banner.isVisible() and panel.findings.toolTip() == ""


def test_an_in_domain_or_unknown_draft_is_filled_as_usual(qtbot) -> None:
    panel = DraftPanel()
    qtbot.addWidget(panel)
    panel.show()
    for domain in ({"in_domain": True, "score": 50.0, "threshold": 172.5}, {"in_domain": None}):
        panel.set_study("Adams^Ann")
        panel.show_draft(_record(domain))
        assert not panel.domain_banner.isVisible() and not panel.withheld.isVisible()
        assert panel.findings.toPlainText() == "Large right pneumothorax."


@pytest.mark.slow
def test_a_real_ct_drafted_by_the_embedded_model_is_flagged_everywhere(desktop, qtbot, tmp_path) -> None:
    window = desktop(**{"engine.model": str(embedded_model_dir()), "engine.providers": ["cpu"],
                        "engine.max_new_tokens": 32})
    ws = window.ws
    uid = add_study(ws, tmp_path, "Adams^Ann", "P-1")
    ws.store.index.transition(uid, StudyState.STABLE)
    ws.queue.enqueue(uid)
    model = window.worklist.model
    qtbot.waitUntil(lambda: model.row_of(uid) is not None and model.row_of(uid).badge == "drafted", timeout=120_000)
    row = model.row_of(uid)
    draft = latest_draft(ws.store.index, uid)
    assert draft.detail["domain"]["in_domain"] is False
    assert draft.detail["critical"] == [] and row.critical == () and not row.critical_unread
    assert row.in_domain is False and domain_text(row) == "OUT OF DOMAIN"
    column = [header for header, _, _ in COLUMNS].index("Domain")
    assert model.index(model._rows.index(row), column).data() == "OUT OF DOMAIN"
    qtbot.waitUntil(lambda: window.status_bar.out_of_domain.text() == "1 out of domain", timeout=10_000)
    window.open_study(uid)
    panel = window.panel
    qtbot.waitUntil(lambda: panel.domain_banner.isVisible(), timeout=10_000)
    assert panel.findings.toPlainText() == "" and not panel.critical.isVisible()
    panel.use_anyway.click()
    assert panel.findings.toPlainText().strip() == draft.findings.strip()
