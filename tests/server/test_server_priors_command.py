"""`raddraft server` looks up priors as the workstation does, with Orthanc as the PACS: a study sent by storescu
is offered to workers only once the server has C-FINDed the patient's earlier study at Orthanc and C-MOVEd it
to its own node; the worker's job carries that prior with the report read from its SR, its images are served
by WADO-RS, and the prior itself is never in the worklist."""

from __future__ import annotations

import io
import signal
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from pydicom import dcmread

from peers.dcmtk import storescu_send
from peers.orthanc import Modality, running_orthanc
from tests.dicom_node.priors_fixtures import write_cr_study, write_report_sr
from tests.server.test_server_command import _STARTED, _orthanc_binary, _raddraft

PATIENT = "PRI-SERVER-18"
PRIOR_FINDINGS, PRIOR_IMPRESSION = "Moderate right pleural effusion. No pneumothorax.", "Right pleural effusion."


@pytest.mark.slow
@pytest.mark.peers
def test_the_server_moves_the_prior_from_the_pacs_before_a_worker_gets_the_study(tmp_path, postgres_url,
                                                                                 certificate):
    with running_orthanc(tmp_path / "orthanc", binary=_orthanc_binary(), ae_title="PACS") as orthanc:
        prior = write_cr_study(tmp_path / "prior", PATIENT, "20240302")
        sr = write_report_sr(tmp_path / "prior", prior, PRIOR_FINDINGS, PRIOR_IMPRESSION)
        storescu_send([*prior.paths, sr], orthanc.dicom_port, "PACS", calling_ae="ARCHIVE")
        _server_with_priors(tmp_path, postgres_url, certificate, orthanc, prior)


def _server_with_priors(tmp_path, postgres_url, certificate, orthanc, prior):
    cert, key = certificate
    config = tmp_path / "raddraft.toml"
    config.write_text(f"""[pacs]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n"""
                      "calling_ae = \"RADDRAFT\"\nquery_priors = true\nfind_timeout_s = 5.0\nmove_timeout_s = 30.0\n"
                      f"[server]\ndatabase = \"{postgres_url}\"\n")
    for name, role in (("anna", "radiologist"), ("gpu1", "worker")):
        assert _raddraft("user", "--database", postgres_url, "add", name, "--role", role,
                         stdin="a long password\n").returncode == 0
    token = _raddraft("user", "--database", postgres_url, "token", "gpu1").stdout.strip()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "raddraft", "server", "--config", str(config), "--store", str(tmp_path / "store"),
         "--port", "0", "--http-port", "0", "--tls-cert", str(cert), "--tls-key", str(key), "--stable-after", "1"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        deadline = time.monotonic() + 60
        lines: list[str] = []
        while not any("priors:" in line for line in lines) and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        match = _STARTED.search(lines[0]) if lines else None
        assert match, (tmp_path / "server.log").read_text()
        assert "  priors: looked up before a worker drafts the study\n" in lines
        url, dicom_port = match.group(1), int(match.group(2))
        orthanc.add_modality(Modality("raddraft", "RADDRAFT", "127.0.0.1", dicom_port))  # the C-MOVE destination
        current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
        storescu_send(current.paths, dicom_port, "RADDRAFT", calling_ae="CRROOM1")
        with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(cert)), timeout=30) as http:
            worker = {"Authorization": f"Bearer {token}"}
            jobs: list = []
            deadline = time.monotonic() + 90
            while not jobs and time.monotonic() < deadline:
                jobs = http.post("/api/worker/claim", headers=worker, json={"worker_id": "gpu1"}).json()
                time.sleep(0.2)
            assert jobs, (tmp_path / "server.log").read_text()
            (job,) = jobs
            frontal = job["prior"]["instances"][0]
            image = http.get(f"/api/studies/{prior.study_uid}/series/{frontal['series_uid']}/instances/"
                             f"{frontal['sop_instance_uid']}", headers=worker)
            login = http.post("/api/login", json={"username": "anna", "password": "a long password"}).json()
            reader = {"Authorization": f"Bearer {login['token']}"}
            listed = [row["study_uid"] for row in http.get("/api/studies", headers=reader).json()]
            served = http.get(f"/api/studies/{current.study_uid}/priors", headers=reader).json()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "server.log").read_text()
        log.close()
    assert job["study_uid"] == current.study_uid
    got = job["prior"]
    assert (got["study_uid"], got["date"], got["modality"]) == (prior.study_uid, "2024-03-02", "CR")
    assert (got["findings"], got["impression"], got["report_source"]) == (PRIOR_FINDINGS, PRIOR_IMPRESSION, "sr")
    assert [row["view_position"] for row in got["instances"]] == ["PA", "LL"]  # frontal first, no SR
    assert image.status_code == 200
    assert dcmread(io.BytesIO(image.content)).SOPInstanceUID == frontal["sop_instance_uid"]
    assert listed == [current.study_uid]  # the prior is in the store, not in the worklist
    assert served["state"] == "retrieved" and served["reason"] == "prior of 2024-03-02 ready"
