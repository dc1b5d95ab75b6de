"""`raddraft user` and `raddraft server` as an administrator runs them: a study sent by storescu reaches the
worklist of the HTTPS API, a worker's token claims it and writes its draft, a radiologist signs it, the
audit log has the sign, and the SR reaches the PACS (Orthanc)."""

from __future__ import annotations

import os
import ssl
import subprocess
import time

import httpx
import pytest

from peers.orthanc import running_orthanc
from tests.conftest import copy_with_fresh_uids, peer_env, require_tool, sample_path
from tests.server.server_process import (
    add_users,
    orthanc_binary,
    running_server,
    user_token,
    write_server_config,
)


@pytest.mark.slow
@pytest.mark.peers
def test_server_and_user_commands_end_to_end(tmp_path, postgres_url, certificate):
    storescu = require_tool("storescu")
    with running_orthanc(tmp_path / "orthanc", binary=orthanc_binary(), ae_title="PACS") as orthanc:
        _server_end_to_end(tmp_path, postgres_url, certificate, storescu, orthanc)


def _server_end_to_end(tmp_path, postgres_url, certificate, storescu, orthanc):
    cert, _ = certificate
    config = write_server_config(tmp_path / "raddraft.toml", orthanc.dicom_port, postgres_url,
                                 retry_initial_s=1.0, query_priors=False)
    # the users go in with --database, as an administrator adds them before the server's first start
    add_users(postgres_url, ("anna", "radiologist", "a long password"), ("gpu1", "worker", "another password"),
              ("root", "admin", "the admin password"))
    token = user_token(postgres_url, "gpu1")
    assert len(token) > 30
    with running_server(tmp_path, config, certificate) as server:
        deadline = time.monotonic() + 60
        url, dicom_port = server.url, str(server.dicom_port)
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
            assert state == "sent", server.log_text()
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
    assert not os.path.exists(tmp_path / "store" / "index.sqlite3")
