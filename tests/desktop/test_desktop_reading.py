"""The whole reading flow in the real window: storescu -> worklist -> images and draft -> edit -> sign -> SR at PACS."""

from __future__ import annotations

import subprocess
import time

import pydicom
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from dicom_node.drafts import latest_draft
from dicom_node.reports import latest_report
from dicom_node.sr import clean_text, section_texts
from tests.conftest import peer_env, require_tool


def highlighted_ranges(editor) -> list[tuple[int, int]]:
    """Character ranges the provenance highlighter paints, over the whole document."""
    ranges = []
    block = editor.document().begin()
    while block.isValid():
        for fmt in block.layout().formats():
            ranges.append((block.position() + fmt.start, block.position() + fmt.start + fmt.length))
        block = block.next()
    return ranges


@pytest.mark.peers
@pytest.mark.slow
def test_study_from_storescu_is_read_signed_and_sent_as_sr(desktop, pacs, qtbot, tiny_bundle, phantom_studies):
    storescu = require_tool("storescu")
    study = max(phantom_studies, key=lambda s: len(s["paths"]))  # frontal + lateral when one has both
    uid = study["study_uid"]
    window = desktop(**{"engine.model": str(tiny_bundle), "engine.providers": ["cpu"], "engine.max_new_tokens": 24,
                        "pacs.ae_title": "PACS", "pacs.host": "127.0.0.1", "pacs.port": pacs.port,
                        "pacs.retry_initial_s": 0.5})
    index = window.ws.store.index
    subprocess.run([storescu, "-aec", "RADDRAFT", "127.0.0.1", str(window.ws.node.port),
                    *(str(p) for p in study["paths"])], check=True, capture_output=True, env=peer_env(), timeout=60)
    model = window.worklist.model
    qtbot.waitUntil(lambda: model.row_of(uid) is not None, timeout=10_000)
    assert model.row_of(uid).patient_id == study["patient_id"]
    qtbot.waitUntil(lambda: model.row_of(uid).badge == "drafted", timeout=30_000)

    # Open it from the keyboard.
    assert window.worklist.select(uid)
    qtbot.keyClick(window.worklist.view, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.opened is not None and window.viewer.canvases[0].image is not None, timeout=10_000)
    draft = latest_draft(index, uid)
    panel = window.panel
    assert panel.findings.toPlainText() == clean_draft(draft.findings)
    assert panel.impression.toPlainText() == clean_draft(draft.impression)
    assert highlighted_ranges(panel.findings) and "AI draft by tiny-test@0.0.1" in panel.source.text()
    if len(study["paths"]) > 1:
        qtbot.waitUntil(lambda: window.viewer.canvases[1].image is not None, timeout=10_000)
        assert window.viewer.canvases[1].isVisible()
    qtbot.waitUntil(lambda: model.row_of(uid).in_progress, timeout=5_000)

    # Edit, try to sign with unreviewed AI text, accept it, sign.
    editor = panel.findings
    editor.setFocus()
    editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClick(editor, Qt.Key.Key_Return)  # (keyClicks cannot type a newline)
    qtbot.keyClicks(editor, "Mild cardiomegaly.")
    assert editor.section.text.endswith("\nMild cardiomegaly.")
    panel.sign.click()
    assert "AI-marked" in panel.message.text()
    assert latest_report(index, uid) is None
    panel.accept.click()
    assert highlighted_ranges(panel.findings) == []
    panel.sign.click()
    qtbot.waitUntil(lambda: latest_report(index, uid) is not None, timeout=10_000)
    report = latest_report(index, uid)
    assert report.findings == editor.toPlainText().strip() and report.signed_by == "Smith^Anna"
    assert report.draft_id == draft.id
    assert report.edit_distance == len("\nMild cardiomegaly.")
    assert 0.9 < report.ai_share_kept <= 1.0

    # The SR reaches the PACS, reads back, matches and references the study.
    qtbot.waitUntil(lambda: pacs.store.index.instance(report.sr_sop_instance_uid) is not None, timeout=20_000)
    ds = pydicom.dcmread(pacs.store.path_of(pacs.store.index.instance(report.sr_sop_instance_uid)))
    assert section_texts(ds) == {"findings": clean_text(report.findings), "impression": clean_text(report.impression)}
    assert ds.StudyInstanceUID == uid and ds.VerificationFlag == "VERIFIED"
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == uid
    referenced = {ref.ReferencedSOPInstanceUID for series in evidence.ReferencedSeriesSequence
                  for ref in series.ReferencedSOPSequence}
    assert referenced == {info["sop_instance_uid"] for info in study["image_info"]}
    qtbot.waitUntil(lambda: model.row_of(uid).badge == "sent", timeout=10_000)
    qtbot.waitUntil(lambda: panel.signed and "Sent to PACS@127.0.0.1" in panel.source.text(), timeout=10_000)
    assert panel.findings.isReadOnly() and not panel.sign.isEnabled() and panel.export.isEnabled()


def clean_draft(text: str) -> str:
    from desktop.draft_panel import qt_plain

    return qt_plain(text)


def test_nothing_blocks_when_the_bundle_is_bad_and_the_port_is_taken(desktop, qtbot, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "broken").mkdir()
        window = desktop(**{"node.port": port, "engine.model": str(tmp_path / "broken")})
        assert window.ws.node is None and window.ws.model is None
        text = window.banner.text.text()
        assert "cannot listen on 127.0.0.1" in text and "model.json" in text and window.banner.isVisible()
        qtbot.waitUntil(lambda: "not listening" in window.status_bar.node.text(), timeout=5_000)
        assert "no model" in window.status_bar.model.text()
        assert not window.panel.draft_findings.isEnabled()
        start = time.monotonic()
        qtbot.waitUntil(lambda: window.feed.fetches >= 1, timeout=5_000)  # the app goes on working
        assert time.monotonic() - start < 5


@pytest.mark.slow
def test_a_draft_being_generated_streams_into_the_open_study(desktop, qtbot, tiny_bundle, phantom_studies):
    from dicom_node.sender import send_files

    study = phantom_studies[2]
    window = desktop(**{"engine.model": str(tiny_bundle), "engine.providers": ["cpu"], "engine.max_new_tokens": 16,
                        "node.stable_after_s": 1.5})
    streamed: list[tuple[str, str]] = []
    original = window.panel.append_stream
    window.panel.append_stream = lambda section, piece: (streamed.append((section, piece)), original(section, piece))
    send_files("127.0.0.1", window.ws.node.port, study["paths"], called_ae="RADDRAFT")
    window.open_study(study["study_uid"])  # opened while its images are still "receiving"
    qtbot.waitUntil(lambda: window.opened is not None, timeout=5_000)
    assert window.opened.draft is None
    qtbot.waitUntil(lambda: "AI draft by tiny-test" in window.panel.source.text(), timeout=30_000)
    draft = latest_draft(window.ws.store.index, study["study_uid"])
    assert {section for section, _ in streamed} == {"findings", "impression"}
    assert window.panel.findings.toPlainText() == clean_draft(draft.findings)
    assert window.panel.findings.section.unreviewed()


def test_raddraft_app_command_opens_the_window_and_quits(tmp_path):
    import os
    import sys

    (tmp_path / "raddraft.toml").write_text("")
    shot = tmp_path / "window.png"
    result = subprocess.run(
        [sys.executable, "-m", "raddraft", "app", "--config", str(tmp_path / "raddraft.toml"), "--store",
         str(tmp_path / "store"), "--port", "0", "--no-draft", "--screenshot", str(shot)],
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert shot.stat().st_size > 10_000
    assert "Traceback" not in result.stderr
