"""`raddraft user` and `raddraft server` as an administrator runs them: a study sent by storescu reaches the
worklist of the HTTPS API, and a worker's token can claim it."""

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

from tests.conftest import copy_with_fresh_uids, peer_env, require_tool, sample_path

_STARTED = re.compile(r"RadDraft site server (https://\S+) node \S+ listening on \S+:(\d+)")


def _raddraft(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.slow
def test_server_and_user_commands_end_to_end(tmp_path, postgres_url, certificate):
    storescu = require_tool("storescu")
    cert, key = certificate
    added = _raddraft("user", "--database", postgres_url, "add", "anna", "--role", "radiologist",
                      stdin="a long password\n")
    assert added.returncode == 0, added.stderr
    assert _raddraft("user", "--database", postgres_url, "add", "gpu1", "--role", "worker",
                     stdin="another password\n").returncode == 0
    token = _raddraft("user", "--database", postgres_url, "token", "gpu1").stdout.strip()
    assert len(token) > 30
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "raddraft", "server", "--database", postgres_url, "--store", str(tmp_path / "store"),
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
            jobs = http.post("/api/worker/claim", headers={"Authorization": f"Bearer {token}"},
                             json={"worker_id": "gpu1"}).json()
            assert [job["study_uid"] for job in jobs] == [study.StudyInstanceUID]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "server.log").read_text()
        log.close()
    assert not os.path.exists(tmp_path / "store" / "index.sqlite3")
