"""`raddraft server` looks up priors as the workstation does, with Orthanc as the PACS: a study sent by storescu
is offered to workers only once the server has C-FINDed the patient's earlier study at Orthanc and C-MOVEd it
to its own node; the worker's job carries that prior with the report read from its SR, its images are served
by WADO-RS, and the prior itself is never in the worklist."""

from __future__ import annotations

import io
import ssl
import time

import httpx
import pytest
from pydicom import dcmread

from peers.dcmtk import storescu_send
from peers.orthanc import Modality, running_orthanc
from tests.dicom_node.priors_fixtures import write_cr_study, write_report_sr
from tests.server.server_process import (
    add_users,
    orthanc_binary,
    running_server,
    user_token,
    write_server_config,
)

PATIENT = "PRI-SERVER-18"
PRIOR_FINDINGS, PRIOR_IMPRESSION = "Moderate right pleural effusion. No pneumothorax.", "Right pleural effusion."


@pytest.mark.slow
@pytest.mark.peers
def test_the_server_moves_the_prior_from_the_pacs_before_a_worker_gets_the_study(tmp_path, postgres_url,
                                                                                 certificate):
    with running_orthanc(tmp_path / "orthanc", binary=orthanc_binary(), ae_title="PACS") as orthanc:
        prior = write_cr_study(tmp_path / "prior", PATIENT, "20240302")
        sr = write_report_sr(tmp_path / "prior", prior, PRIOR_FINDINGS, PRIOR_IMPRESSION)
        storescu_send([*prior.paths, sr], orthanc.dicom_port, "PACS", calling_ae="ARCHIVE")
        _server_with_priors(tmp_path, postgres_url, certificate, orthanc, prior)


def _server_with_priors(tmp_path, postgres_url, certificate, orthanc, prior):
    cert, _ = certificate
    config = write_server_config(tmp_path / "raddraft.toml", orthanc.dicom_port, postgres_url,
                                 query_priors=True, find_timeout_s=5.0, move_timeout_s=30.0)
    add_users(postgres_url, ("anna", "radiologist", "a long password"), ("gpu1", "worker", "a long password"))
    token = user_token(postgres_url, "gpu1")
    with running_server(tmp_path, config, certificate, until="priors:") as server:
        assert "  priors: looked up before a worker drafts the study\n" in server.printed
        url, dicom_port = server.url, server.dicom_port
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
            assert jobs, server.log_text()
            (job,) = jobs
            frontal = job["prior"]["instances"][0]
            image = http.get(f"/api/studies/{prior.study_uid}/series/{frontal['series_uid']}/instances/"
                             f"{frontal['sop_instance_uid']}", headers=worker)
            login = http.post("/api/login", json={"username": "anna", "password": "a long password"}).json()
            reader = {"Authorization": f"Bearer {login['token']}"}
            listed = [row["study_uid"] for row in http.get("/api/studies", headers=reader).json()]
            served = http.get(f"/api/studies/{current.study_uid}/priors", headers=reader).json()
    assert job["study_uid"] == current.study_uid
    got = job["prior"]
    assert (got["study_uid"], got["date"], got["modality"]) == (prior.study_uid, "2024-03-02", "CR")
    assert (got["findings"], got["impression"], got["report_source"]) == (PRIOR_FINDINGS, PRIOR_IMPRESSION, "sr")
    assert [row["view_position"] for row in got["instances"]] == ["PA", "LL"]  # frontal first, no SR
    assert image.status_code == 200
    assert dcmread(io.BytesIO(image.content)).SOPInstanceUID == frontal["sop_instance_uid"]
    assert listed == [current.study_uid]  # the prior is in the store, not in the worklist
    assert served["state"] == "retrieved" and served["reason"] == "prior of 2024-03-02 ready"
