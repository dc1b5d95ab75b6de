"""`raddraft worker` against the real site server (HTTPS, PostgreSQL): claims, drafts written once, leases
renewed and lost, heartbeats, and a worker killed with SIGKILL mid-draft losing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dicom_node.drafts import drafts_of as index_drafts
from dicom_node.index import StudyState
from dicom_node.store import ReceivedInstance
from engine.runtime import load_model
from engine.settings import EngineSettings
from raddraft.worker.cache import InstanceCache
from raddraft.worker.client import LeaseLost, WorkerClient
from raddraft.worker.drafting import DraftingWorker
from raddraft.worker.leases import LeaseKeeper
from raddraft.worker.settings import WorkerSettings

EMBEDDED = Path(__file__).resolve().parents[2] / "resources" / "models" / "raddraft-phantom-cxr"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def batching_model():
    return load_model(EMBEDDED, EngineSettings(providers=("cpu",), batch_size=4))


def add_phantom_study(running_site, record: dict) -> str:
    """A phantom study as the node would have it: its instances stored, the study complete."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    study_uid = generate_uid()
    for path in record["paths"]:
        ds = dcmread(path)
        ds.StudyInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = generate_uid()
        target = path.parent / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(target, enforce_file_format=True)
        running_site.site.store.put(ReceivedInstance.from_part10(target.read_bytes()))
        target.unlink()
    running_site.site.index.transition(study_uid, StudyState.STABLE)
    return study_uid


@pytest.fixture
def make_worker(running_site, tmp_path: Path):
    """Drafting workers on the running site (their connections closed at the end, so the server stops at once)."""
    clients: list[WorkerClient] = []

    def make(model, name: str = "gpu1-test", batch: int = 4) -> DraftingWorker:
        settings = WorkerSettings(server=running_site.url, batch=batch, lease_s=30.0, poll_interval_s=0.1,
                                  heartbeat_s=0.2)
        clients.append(WorkerClient(running_site.url, running_site.login("gpu1"), ca_file=running_site.cert))
        return DraftingWorker(clients[-1], model, settings, InstanceCache(tmp_path / name), name, ("pneumothorax",))

    yield make
    for client in clients:
        client.close()


def drafts_of(running_site, study_uid: str) -> list[dict]:
    with running_site.client(running_site.login("anna")) as http:
        return http.get(f"/api/studies/{study_uid}/drafts").json()


@pytest.mark.slow
def test_a_worker_drafts_each_waiting_study_once_as_the_workstation_would(running_site, batching_model, make_worker,
                                                                        phantom_studies, tmp_path):
    studies = [add_phantom_study(running_site, record) for record in phantom_studies]
    worker = make_worker(batching_model)
    assert worker.run_once() == 4
    assert worker.run_once() == 0  # nothing is offered twice
    with running_site.client(running_site.login("anna")) as http:
        rows = {row["study_uid"]: row for row in http.get("/api/studies").json()}
    assert {(rows[uid]["state"], rows[uid]["drafts"]) for uid in studies} == {("drafted", 1)}
    (draft,) = drafts_of(running_site, studies[0])
    alone = batching_model.draft(phantom_studies[0]["paths"])
    assert (draft["findings"], draft["impression"]) == (alone.findings, alone.impression)
    assert draft["model"] == batching_model.model_id and draft["detail"]["worker"] == "gpu1"
    assert draft["detail"]["timings"]["batch"] == 4 and draft["detail"]["instances"] == len(phantom_studies[0]["paths"])
    assert not any((tmp_path / "gpu1-test").iterdir())  # the cache is emptied once the drafts are written


def test_the_heartbeat_reports_model_provider_batch_and_throughput(running_site, batching_model, make_worker,
                                                                   phantom_studies):
    add_phantom_study(running_site, phantom_studies[0])
    worker = make_worker(batching_model, batch=2)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while worker.drafted < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a heartbeat after the draft
    finally:
        stop.set()
        thread.join(30)
    with running_site.client(running_site.login("root")) as http:
        (known,) = http.get("/api/workers").json()
    assert (known["worker_id"], known["model"], known["provider"], known["batch"]) == \
        ("gpu1-test", batching_model.model_id, "cpu", 2)
    assert known["studies_per_minute"] > 0 and known["tokens_per_s"] > 0


def test_a_lost_lease_is_never_written_and_renewal_notices_it(running_site, phantom_studies):
    from server.claims import claim_jobs

    study_uid = add_phantom_study(running_site, phantom_studies[1])
    client = WorkerClient(running_site.url, running_site.login("gpu1"), ca_file=running_site.cert)
    try:
        (job,) = client.claim("slow", 1, 30.0)
        assert client.renew(job) > time.time()
        keeper = LeaseKeeper(client, every_s=60.0)
        keeper.hold([job])
        # the lease runs out (seen from a minute later) and another worker takes the study
        (taken,) = claim_jobs(running_site.site.index, "fast", 1, 30.0, now=time.time() + 60.0)
        assert taken.study_uid == study_uid and taken.lease_id != job.lease_id
        assert not keeper.lost(job)
        keeper.renew_all()
        assert keeper.lost(job)
        with pytest.raises(LeaseLost):
            client.renew(job)
        with pytest.raises(LeaseLost):
            client.submit_draft(job, {"findings": "late", "impression": "late", "model": "m", "provider": "cpu"})
    finally:
        client.close()
    assert drafts_of(running_site, study_uid) == []


def test_a_study_that_cannot_be_drafted_fails_alone_with_its_reason(running_site, batching_model, make_worker,
                                                                    phantom_studies, tmp_path):
    from pydicom.uid import generate_uid

    from tests.conftest import copy_with_fresh_uids, sample_path

    good = add_phantom_study(running_site, phantom_studies[2])
    bad, path = generate_uid(), tmp_path / "no-pixels.dcm"
    ds = copy_with_fresh_uids(sample_path("CT_small.dcm"), path, study_uid=bad)
    del ds.PixelData  # nothing the model can look at
    ds.save_as(path, enforce_file_format=True)
    running_site.site.store.put(ReceivedInstance.from_part10(path.read_bytes()))
    running_site.site.index.transition(bad, StudyState.STABLE)
    worker = make_worker(batching_model)
    assert worker.run_once() == 1
    index = running_site.site.index
    assert (index.study(good).state, index.study(bad).state) == (StudyState.DRAFTED, StudyState.FAILED)
    assert "no usable image" in index.study_events(bad)[-1].reason
    assert drafts_of(running_site, bad) == []


@pytest.mark.slow
def test_a_worker_killed_mid_draft_loses_nothing(running_site, make_worker, phantom_studies, tmp_path):
    """SIGKILL after the worker claimed its studies and before it wrote them back: the studies stay
    undrafted until their lease runs out, then another worker drafts each exactly once."""
    studies = [add_phantom_study(running_site, record) for record in phantom_studies]
    rescuer = make_worker(load_model(EMBEDDED, EngineSettings(providers=("cpu",), batch_size=4)), name="rescuer")
    token_file = tmp_path / "token"
    token_file.write_text(running_site.login("gpu1"))
    command = [sys.executable, "-m", "raddraft", "worker", "--server", running_site.url, "--token-file",
               str(token_file), "--ca-file", str(running_site.cert), "--batch", "4", "--lease", "20",
               "--worker-id", "doomed", "--cache-dir", str(tmp_path / "cache"), "--model", str(EMBEDDED),
               "--provider", "cpu"]
    doomed = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    index = running_site.site.index
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and doomed.poll() is None:
            held = index.reader().execute("SELECT COUNT(*) FROM draft_leases WHERE worker_id = 'doomed'").fetchone()
            if held[0] == len(studies):
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"the worker claimed nothing: {doomed.stdout.read().decode() if doomed.stdout else ''}")
        os.kill(doomed.pid, signal.SIGKILL)
    finally:
        doomed.kill()
        doomed.wait(10)
    expires = index.reader().execute("SELECT MAX(expires_at) FROM draft_leases WHERE worker_id = 'doomed'").fetchone()[0]
    # read from the index, not over the API: four logins took the whole lease on a loaded machine
    assert all(index_drafts(index, uid) == [] for uid in studies), "killed before writing anything back"
    assert {index.study(uid).state for uid in studies} == {StudyState.DRAFTING}
    assert time.time() < expires - 1, "the checks above outlasted the lease"
    assert rescuer.run_once() == 0  # the leases still hold
    while time.time() < expires + 0.5:
        time.sleep(0.2)
    assert rescuer.run_once() == len(studies)
    assert [len(drafts_of(running_site, uid)) for uid in studies] == [1] * len(studies)
    assert {index.study(uid).state for uid in studies} == {StudyState.DRAFTED}
