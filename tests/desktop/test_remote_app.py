"""`raddraft app --server URL` under pytest-qt, offscreen: the main window over `desktop.remote.SiteWorkstation`,
talking HTTPS to the real site server app (server/, uvicorn, a private PostgreSQL cluster; the
`running_site` fixture of tests/server). Drafts are written through the workers' own API."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from desktop.login_dialog import LoginDialog
from desktop.site_client import SiteClient, SiteSettings
from desktop.worklist import STATE_COLUMN
from raddraft.config import load_config
from raddraft.site_app import open_site

pytest.importorskip("fastapi", reason="the site server's extra is not installed (pip install '.[server]')")
site_fixtures = pytest.importorskip("tests.server.conftest", reason="the site server is not in this tree")
certificate, running_site, PASSWORD = site_fixtures.certificate, site_fixtures.running_site, site_fixtures.PASSWORD
pytestmark = pytest.mark.slow

FINDINGS, IMPRESSION = "No effusion. Heart is normal.", "Normal chest."


def settings_for(site, tmp_path: Path, who: str) -> SiteSettings:
    return SiteSettings(url=site.url, cache_dir=tmp_path / f"cache-{who}", ca_file=site.cert, claim_renew_s=0.5)


@pytest.fixture
def reader(running_site, tmp_path: Path, open_window) -> Callable[[str], Any]:
    """`reader(name)` -> a shown main window logged in to the site server as `name`."""
    (tmp_path / "raddraft.toml").write_text("")
    config = load_config(tmp_path / "raddraft.toml", {"store.root": str(tmp_path / "unused-store")})

    def make(name: str):
        settings = settings_for(running_site, tmp_path, name)
        login = SiteClient(settings)
        session = login.login(name, PASSWORD)
        login.close()
        return open_window(open_site(settings, config, session))

    return make


def drafted(running_site, tmp_path: Path) -> str:
    """A stable study with a draft written as a worker writes one (claim, then draft under the lease)."""
    uid = running_site.add_study(tmp_path)
    with running_site.client(running_site.login("gpu1")) as http:
        (job,) = [j for j in http.post("/api/worker/claim", json={"worker_id": "w1", "max": 8}).json()
                  if j["study_uid"] == uid]
        http.post("/api/worker/heartbeat", json={"worker_id": "w1", "model": "tiny@1", "provider": "cpu",
                                                 "studies_per_minute": 12.0}).raise_for_status()
        http.post(f"/api/worker/jobs/{uid}/draft", json={
            "lease_id": job["lease_id"], "findings": FINDINGS, "impression": IMPRESSION, "model": "tiny@1",
            "provider": "cpu"}).raise_for_status()
    return uid


def open_and_wait(window, qtbot, uid: str) -> None:
    window.open_study(uid)
    qtbot.waitUntil(lambda: window.opened is not None and window.opened.study.study_uid == uid, timeout=15_000)


def wait_signed(window, qtbot) -> None:
    try:
        qtbot.waitUntil(lambda: window.panel.signed, timeout=30_000)
    except qtbot.TimeoutError:
        raise AssertionError(f"not signed: {window.panel.message.text()!r}, banner {window.banner.text.text()!r}, "
                             f"sign dialog {window.sign_dialog}") from None


def state_text(window, uid: str) -> str:
    model = window.worklist.model
    row = model.row_of(uid)
    return model.index(model._rows.index(row), STATE_COLUMN).data() if row else ""


def api(running_site, name: str, method: str, path: str, **kwargs):
    with running_site.client(running_site.login(name)) as http:
        answer = http.request(method, path, **kwargs)
    answer.raise_for_status()
    return answer.json()


def test_the_login_dialog_refuses_a_wrong_password_then_logs_in(running_site, tmp_path, qtbot):
    client = SiteClient(settings_for(running_site, tmp_path, "anna"))
    dialog = LoginDialog(running_site.url, client.login, user="anna")
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.password.setText("not the password")
    dialog.submit()
    qtbot.waitUntil(lambda: dialog.buttons.isEnabled(), timeout=10_000)
    assert dialog.message.text() == "Wrong user name or password." and dialog.session is None
    assert dialog.password.text() == ""
    dialog.password.setText(PASSWORD)
    dialog.submit()
    qtbot.waitUntil(lambda: dialog.session is not None, timeout=10_000)
    assert dialog.result() == LoginDialog.DialogCode.Accepted
    assert (dialog.session.user_name, dialog.session.role) == ("anna", "radiologist")
    client.close()


def test_a_study_opened_by_one_reader_is_being_read_by_them_for_the_other(running_site, reader, tmp_path, qtbot):
    uid = drafted(running_site, tmp_path)
    anna, ben = reader("anna"), reader("ben")
    qtbot.waitUntil(lambda: anna.worklist.model.row_of(uid) is not None, timeout=10_000)
    open_and_wait(anna, qtbot, uid)
    # the images came by WADO-RS into anna's cache, and the viewer shows them
    assert all(Path(p).is_file() and str(p).startswith(str(tmp_path / "cache-anna")) for p in anna.opened.paths)
    assert anna.viewer.stacks and anna.panel.findings.section.text == FINDINGS
    cached = Path(anna.opened.paths[0])
    os.utime(cached, (1_000.0, 1_000.0))
    inode = cached.stat().st_ino
    anna.ws.open_study(uid, mark=False)  # read again: from the cache, marked as just used (for pruning)
    assert cached.stat().st_ino == inode and cached.stat().st_mtime > 1_000.0
    assert api(running_site, "root", "GET", f"/api/studies/{uid}")["study"]["claimed_by"] == "anna"
    qtbot.waitUntil(lambda: state_text(ben, uid) == "drafted · being read by anna", timeout=10_000)
    qtbot.waitUntil(lambda: state_text(anna, uid) == "drafted · in progress", timeout=10_000)
    assert "1 worker (cpu), 12.0 studies/min" in anna.status_bar.model.text()  # as the server heard from it
    ben.open_study(uid)
    qtbot.waitUntil(lambda: "being read by anna" in ben.banner.text.text(), timeout=10_000)
    assert ben.opened is None
    anna.shutdown()  # closing the app releases the claim
    qtbot.waitUntil(lambda: state_text(ben, uid) == "drafted", timeout=10_000)
    assert api(running_site, "root", "GET", f"/api/studies/{uid}")["study"]["claimed_by"] is None


def test_typed_text_is_autosaved_on_the_server_and_signed_by_the_logged_in_user(running_site, reader, tmp_path,
                                                                                 qtbot):
    uid = drafted(running_site, tmp_path)
    anna = reader("anna")
    qtbot.waitUntil(lambda: anna.worklist.model.row_of(uid) is not None, timeout=10_000)
    open_and_wait(anna, qtbot, uid)
    anna.panel.accept_ai()
    editor = anna.panel.findings
    editor.setFocus()
    editor.moveCursor(editor.textCursor().MoveOperation.End)
    qtbot.keyClicks(editor, " Lungs are clear.")
    qtbot.waitUntil(lambda: (api(running_site, "anna", "GET", f"/api/studies/{uid}/working-draft")
                             .get("sections") or {}).get("findings") is not None, timeout=10_000)
    saved = api(running_site, "anna", "GET", f"/api/studies/{uid}/working-draft")
    assert saved["saved_by"] == "anna"
    assert ["human", "", " Lungs are clear."] in saved["sections"]["findings"]["runs"]
    anna.sign()
    wait_signed(anna, qtbot)
    (report,) = api(running_site, "root", "GET", f"/api/studies/{uid}")["reports"]
    assert report["signed_by"] == "anna" and report["findings"] == FINDINGS + " Lungs are clear."
    assert report["detail"]["provenance"]["findings"]["runs"][-1] == ["human", " Lungs are clear."]
    signs = [row for row in api(running_site, "root", "GET", "/api/audit", params={"action": "sign"})
             if row["study_uid"] == uid]
    assert [row["user_name"] for row in signs] == ["anna"]
    qtbot.waitUntil(lambda: anna.worklist.model.row_of(uid).state.value == "signed", timeout=10_000)


def test_the_models_page_is_read_only_for_a_radiologist(running_site, reader, qtbot):
    anna = reader("anna")
    page = anna.open_models()
    qtbot.waitUntil(lambda: page.overview is not None, timeout=10_000)
    assert "chosen by an admin" in page.note.text()
    assert "runs on the site server" in page.unavailable_label.text()
    with pytest.raises(Exception, match="role"):
        anna.ws.use_model("embedded")


def test_a_session_that_ran_out_says_so_and_reads_nothing(running_site, reader, tmp_path, qtbot):
    from server.users import find_user, issue_token

    uid = drafted(running_site, tmp_path)
    anna = reader("anna")
    qtbot.waitUntil(lambda: anna.worklist.model.row_of(uid) is not None, timeout=10_000)
    short = issue_token(running_site.site.index, find_user(running_site.site.index, "anna"), 0.5)
    anna.ws.client.session = dataclasses.replace(anna.ws.client.session, token=short.token)
    time.sleep(1.0)
    anna.open_study(uid)
    qtbot.waitUntil(lambda: "your session on" in anna.banner.text.text(), timeout=10_000)
    assert "has ended" in anna.banner.text.text() and anna.opened is None


def test_the_worklist_is_read_again_only_when_the_server_says_something_changed(running_site, tmp_path):
    from desktop.remote import SiteWorkstation

    first_uid = running_site.add_study(tmp_path)
    client = SiteClient(settings_for(running_site, tmp_path, "anna"))
    client.login("anna", PASSWORD)
    (tmp_path / "app.toml").write_text("")
    ws = SiteWorkstation(client, load_config(tmp_path / "app.toml", {})).start()
    try:
        deadline = time.monotonic() + 10
        while ws._stale.is_set() is False and time.monotonic() < deadline:  # the event stream is open
            time.sleep(0.05)
        first = ws.worklist()
        assert [row.study_uid for row in first] == [first_uid]
        again = ws.worklist()
        assert again[0] is first[0], "nothing changed: the rows read before, no request"
        second_uid = running_site.add_study(tmp_path)  # the server's event marks the list stale
        deadline = time.monotonic() + 10
        while second_uid not in {row.study_uid for row in ws.worklist()}:
            assert time.monotonic() < deadline, "the new study never reached the worklist"
            time.sleep(0.1)
    finally:
        ws.stop()


def test_raddraft_app_server_logs_in_from_stdin_opens_the_window_and_refuses_a_wrong_password(running_site,
                                                                                                tmp_path):
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(repo), "XDG_CACHE_HOME": str(tmp_path)}
    (tmp_path / "app.toml").write_text("")
    command = [sys.executable, "-m", "raddraft", "app", "--config", str(tmp_path / "app.toml"), "--server",
               running_site.url, "--ca-file", str(running_site.cert), "--user", "anna", "--password-stdin",
               "--exit-when-ready"]
    opened = subprocess.run(command, input=PASSWORD + "\n", capture_output=True, text=True, timeout=120, env=env,
                            cwd=repo, check=False)
    assert opened.returncode == 0, opened.stderr
    assert f"RadDraft window ready, anna (radiologist) on {running_site.url}" in opened.stdout
    refused = subprocess.run(command, input="wrong\n", capture_output=True, text=True, timeout=120, env=env,
                             cwd=repo, check=False)
    assert refused.returncode == 1 and "wrong user name or password" in refused.stderr


def test_an_admin_releases_another_readers_claim_from_the_worklist(running_site, reader, tmp_path, qtbot):
    uid = drafted(running_site, tmp_path)
    api(running_site, "anna", "POST", f"/api/studies/{uid}/claim")
    root, ben = reader("root"), reader("ben")
    qtbot.waitUntil(lambda: state_text(root, uid) == "drafted · being read by anna", timeout=10_000)
    assert ben.worklist.release_text(uid) is None  # a radiologist may not
    assert root.worklist.release_text(uid) == "Release the study from anna"
    root.worklist.request_release(uid)
    qtbot.waitUntil(lambda: state_text(root, uid) == "drafted", timeout=10_000)
    assert api(running_site, "root", "GET", f"/api/studies/{uid}")["study"]["claimed_by"] is None
    (released,) = api(running_site, "root", "GET", "/api/audit", params={"action": "claim_released_by_admin"})
    assert (released["user_name"], released["study_uid"], released["detail"]["held_by"]) == ("root", uid, "anna")
