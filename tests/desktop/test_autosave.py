"""No edit is lost: the unsigned text is in the store within a second of typing, with its origins, and
survives moving between studies, closing, and the app being killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from PySide6.QtGui import QTextCursor

from dicom_node.drafts import DraftRecord, save_draft, working_draft
from dicom_node.index import StudyState
from dicom_node.settings import StoreSettings
from dicom_node.store import ReceivedInstance, Store
from tests.conftest import copy_with_fresh_uids, sample_path

DRAFT_FINDINGS, DRAFT_IMPRESSION = "No effusion. Heart is normal.", "Normal chest."


def drafted_study(store: Store, tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.dcm"
    uid = str(copy_with_fresh_uids(sample_path("CT_small.dcm"), path).StudyInstanceUID)
    store.put(ReceivedInstance.from_part10(path.read_bytes()))
    store.index.transition(uid, StudyState.STABLE)
    store.index.transition(uid, StudyState.DRAFTING)
    save_draft(store.index, DraftRecord(uid, "tiny@1", "cpu", DRAFT_FINDINGS, DRAFT_IMPRESSION))
    return uid


def origins(editor) -> list[tuple[str, str]]:
    return [(origin.value, text) for origin, _, text in editor.runs()]


def open_and_wait(window, qtbot, uid: str) -> None:
    window.open_study(uid)
    qtbot.waitUntil(lambda: window.opened is not None and window.opened.study.study_uid == uid, timeout=10_000)


def type_at_end(qtbot, editor, text: str) -> None:
    editor.setFocus()
    editor.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClicks(editor, text)


def test_text_is_saved_within_a_second_and_kept_across_studies(desktop, qtbot, tmp_path, no_model):
    window = desktop(**no_model)
    store = window.ws.store
    first, second = drafted_study(store, tmp_path, "a"), drafted_study(store, tmp_path, "b")
    open_and_wait(window, qtbot, first)
    assert window.panel.findings.hasFocus() and window.panel.findings.textCursor().atEnd()
    typed_at = time.monotonic()
    type_at_end(qtbot, window.panel.findings, " Mild cardiomegaly.")
    qtbot.waitUntil(lambda: working_draft(store.index, first) is not None, timeout=5_000)
    assert time.monotonic() - typed_at < 1.0 + 0.5  # (the typing itself takes a moment under qtbot)
    open_and_wait(window, qtbot, second)  # then straight back, as Ctrl+Down, Ctrl+Up
    assert window.panel.findings.toPlainText() == DRAFT_FINDINGS
    open_and_wait(window, qtbot, first)
    assert origins(window.panel.findings) == [("ai", DRAFT_FINDINGS), ("human", " Mild cardiomegaly.")]
    assert window.panel.findings.section.model_text == DRAFT_FINDINGS
    assert "restored" in window.panel.source.text()


def test_text_typed_just_before_closing_is_kept(desktop, qtbot, tmp_path, no_model):
    window = desktop(**no_model)
    uid = drafted_study(window.ws.store, tmp_path, "a")
    open_and_wait(window, qtbot, uid)
    type_at_end(qtbot, window.panel.impression, " No change.")
    window.close()  # before the autosave timer fires
    saved = working_draft(window.ws.store.index, uid)
    assert saved is not None
    assert saved.sections["impression"]["runs"] == [["ai", "draft 1 (tiny@1)", DRAFT_IMPRESSION],
                                                    ["human", "", " No change."]]


CHILD = """
import os, sys, time
from pathlib import Path
from PySide6.QtGui import QTextCursor
from PySide6.QtTest import QTest
from desktop.app import application, open_main_window
from raddraft.config import load_config
from raddraft.workstation import Workstation

config, values, uid = Path(sys.argv[1]), eval(sys.argv[2]), sys.argv[3]
ws = Workstation.start(load_config(config, values), config_path=config, overrides=values)
window = open_main_window(ws, (1200, 800))
app = application()
window.open_study(uid)
while window.opened is None:
    app.processEvents(); time.sleep(0.01)
editor = window.panel.findings
editor.setFocus()
editor.moveCursor(QTextCursor.MoveOperation.End)
QTest.keyClicks(editor, " Typed before the crash.")
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    app.processEvents(); time.sleep(0.01)
print("typed", window.autosaves, flush=True)
app.exec()
"""


def test_text_survives_sigkill_of_the_app(desktop, qtbot, tmp_path, no_model):
    store = Store(StoreSettings(tmp_path / "store"))
    uid = drafted_study(store, tmp_path, "a")
    store.close()
    config = tmp_path / "raddraft.toml"
    config.write_text("")
    values = {"store.root": str(tmp_path / "store"), "node.port": 0, "reading.radiologist": "Smith^Anna", **no_model}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), str(config), repr(values), uid],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, cwd=Path(__file__).parents[2])
    try:
        line = child.stdout.readline()
        assert line.startswith("typed"), child.stderr.read() if child.poll() is not None else line
    finally:
        child.send_signal(signal.SIGKILL)  # no closeEvent, no atexit: only what reached the store counts
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    window = desktop(**no_model)  # restart on the same store
    open_and_wait(window, qtbot, uid)
    assert window.panel.findings.toPlainText() == DRAFT_FINDINGS + " Typed before the crash."
    assert origins(window.panel.findings) == [("ai", DRAFT_FINDINGS), ("human", " Typed before the crash.")]
    assert window.panel.impression.section.unreviewed()  # the model's text is still marked as the model's
