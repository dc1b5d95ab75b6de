"""`raddraft user` and `raddraft server` as an administrator runs them: a study sent by storescu reaches the
worklist of the HTTPS API, a worker's token claims it and writes its draft, a radiologist signs it, the
audit log has the sign, and the SR reaches the PACS (Orthanc)."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time

import httpx
import pytest

from peers.orthanc import find_orthanc, running_orthanc
from tests.conftest import REQUIRE_PEERS, copy_with_fresh_uids, peer_env, require_tool, sample_path

_STARTED = re.compile(r"RadDraft site server (https://\S+) node \S+ listening on \S+:(\d+)")


def _raddraft(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


def _orthanc_binary():
    binary = find_orthanc()
    if binary is None:
        if REQUIRE_PEERS:
            pytest.fail("required peer missing: Orthanc (apt-get install orthanc)")
        pytest.skip("Orthanc is not installed (apt-get install orthanc)")
    return binary


@pytest.mark.slow
@pytest.mark.peers
def test_server_and_user_commands_end_to_end(tmp_path, postgres_url, certificate):
    storescu = require_tool("storescu")
    with running_orthanc(tmp_path / "orthanc", binary=_orthanc_binary(), ae_title="PACS") as orthanc:
        _server_end_to_end(tmp_path, postgres_url, certificate, storescu, orthanc)


def _server_end_to_end(tmp_path, postgres_url, certificate, storescu, orthanc):
    cert, key = certificate
    config = tmp_path / "raddraft.toml"
    config.write_text(f"""[pacs]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n"""
                      "calling_ae = \"RADDRAFT\"\nretry_initial_s = 1.0\nquery_priors = false\n"
                      f"[server]\ndatabase = \"{postgres_url}\"\n")  # the users were added with --database
    added = _raddraft("user", "--database", postgres_url, "add", "anna", "--role", "radiologist",
                      stdin="a long password\n")
    assert added.returncode == 0, added.stderr
    assert _raddraft("user", "--database", postgres_url, "add", "gpu1", "--role", "worker",
                     stdin="another password\n").returncode == 0
    assert _raddraft("user", "--database", postgres_url, "add", "root", "--role", "admin",
                     stdin="the admin password\n").returncode == 0
    token = _raddraft("user", "--database", postgres_url, "token", "gpu1").stdout.strip()
    assert len(token) > 30
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "raddraft", "server", "--config", str(config), "--store", str(tmp_path / "store"),
         "--port", "0", "--http-port", "0", "--tls-cert", str(cert), "--tls-key", str(key), "--stable-after", "1"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        match = None
        deadline = time.monotonic() + 60
        while match is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            match = _STARTED.search(line)
        assert match, (tmp_path / "server.log").read_text()
        url, dicom_port = match.group(1), match.group(2)
        study = copy_with_fresh_uids(sample_path("CT_small.dcm"), tmp_path / "ct.dcm")
        subprocess.run([storescu, "-aec", "RADDRAFT", "127.0.0.1", dicom_port, str(tmp_path / "ct.dcm")],
                       check=True, env=peer_env(), capture_output=True, timeout=60)
        verify = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=url, verify=verify, timeout=30) as http:
            login = http.post("/api/login", json={"username": "anna", "password": "a long password"}).json()
            reader = {"Authorization": f"Bearer {login['token']}"}
            rows: list = []
            while time.monotonic() < deadline and not (rows and rows[0]["state"] == "stable"):
                rows = http.get("/api/studies", headers=reader).json()
                time.sleep(0.2)
            assert [(r["study_uid"], r["state"], r["drafts"]) for r in rows] == [(study.StudyInstanceUID, "stable", 0)]
            gpu1 = {"Authorization": f"Bearer {token}"}
            (job,) = http.post("/api/worker/claim", headers=gpu1, json={"worker_id": "gpu1"}).json()
            assert job["study_uid"] == study.StudyInstanceUID
            draft = http.post(f"/api/worker/jobs/{job['study_uid']}/draft", headers=gpu1, json={
                "lease_id": job["lease_id"], "findings": "Lungs are clear.", "impression": "Normal chest.",
                "model": "test@1", "provider": "cpu"}).json()
            assert http.get("/api/studies", headers=reader).json()[0]["drafts"] == 1
            signed = http.post(f"/api/studies/{job['study_uid']}/sign", headers=reader, json={
                "findings": "Lungs are clear.", "impression": "Normal chest.", "draft_id": draft["id"]})
            assert signed.status_code == 200, signed.text
            sr_uid = signed.json()["report"]["sr_sop_instance_uid"]
            state = ""
            while time.monotonic() < deadline + 60 and state != "sent":
                state = http.get(f"/api/studies/{job['study_uid']}", headers=reader).json()["study"]["state"]
                time.sleep(0.2)
            assert state == "sent", (tmp_path / "server.log").read_text()
            orthanc_study = orthanc.study_id(study.StudyInstanceUID)
            sops = {orthanc.instance_tags(i["ID"])["SOPInstanceUID"]
                    for i in orthanc.study_instances(orthanc_study)}
            assert sr_uid in sops
            admin = http.post("/api/login", json={"username": "root", "password": "the admin password"}).json()
            signs = http.get("/api/audit", params={"action": "sign"},
                             headers={"Authorization": f"Bearer {admin['token']}"}).json()
            assert [(a["user_name"], a["study_uid"]) for a in signs] == [("anna", study.StudyInstanceUID)]
            wrong = http.post("/api/login", json={"username": "anna", "password": "not it"})
            assert wrong.status_code == 401 and "token" not in wrong.text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "server.log").read_text()
        log.close()
    assert not os.path.exists(tmp_path / "store" / "index.sqlite3")
