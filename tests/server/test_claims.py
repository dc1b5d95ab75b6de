"""Drafting leases on PostgreSQL: workers asking at once get different studies (SKIP LOCKED), an expired
lease makes the study claimable again, a lost lease gets 409 and the draft is written once."""

from __future__ import annotations

import threading
import time

from dicom_node.drafts import drafts_of
from dicom_node.index import StudyState
from server.claims import claim_jobs


def test_workers_claiming_at_once_get_disjoint_studies(running_site, tmp_path):
    """Four workers at once, three rounds: each study is claimed once and none is left over (a worker that
    committed its claim just before another locked the row once had its study claimed twice)."""
    index = running_site.site.index
    for _round in range(3):
        studies = {running_site.add_study(tmp_path) for _ in range(12)}
        taken: dict[str, list[str]] = {}
        start = threading.Barrier(4)

        def take(worker: str) -> None:
            start.wait()
            taken[worker] = [job.study_uid for job in claim_jobs(index, worker, 3, lease_s=30.0)]

        threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        claimed = [uid for uids in taken.values() for uid in uids]
        assert sorted(claimed) == sorted(studies)  # each study once, none left over
        assert all(index.study(uid).state == StudyState.DRAFTING for uid in studies)
        assert claim_jobs(index, "late", 5, lease_s=30.0) == []


def test_an_expired_lease_is_claimed_again_and_the_first_worker_gets_409(running_site, tmp_path):
    study_uid = running_site.add_study(tmp_path)
    index = running_site.site.index
    (lost,) = claim_jobs(index, "killed", 1, lease_s=30.0, now=time.time() - 60.0)  # its lease ran out
    with running_site.client(running_site.login("gpu1")) as gpu1:
        (job,) = gpu1.post("/api/worker/claim", json={"worker_id": "gpu1", "max": 4}).json()
        assert job["study_uid"] == study_uid and job["lease_id"] != lost.lease_id
        assert [i["sop_instance_uid"] for i in job["instances"]] and "path" not in job["instances"][0]
        body = {"findings": "Lungs clear.", "impression": "Normal.", "model": "m@1", "provider": "cpu"}
        late = gpu1.post(f"/api/worker/jobs/{study_uid}/draft", json={**body, "lease_id": lost.lease_id})
        assert late.status_code == 409
        assert gpu1.post(f"/api/worker/jobs/{study_uid}/renew", json={"lease_id": job["lease_id"]}).status_code == 200
        done = gpu1.post(f"/api/worker/jobs/{study_uid}/draft", json={**body, "lease_id": job["lease_id"]})
        twice = gpu1.post(f"/api/worker/jobs/{study_uid}/draft", json={**body, "lease_id": job["lease_id"]})
        assert done.status_code == 200 and twice.status_code == 409
        beat = gpu1.post("/api/worker/heartbeat", json={"worker_id": "gpu1", "model": "m@1", "provider": "cpu",
                                                        "batch": 4, "studies_per_minute": 12.5})
        assert beat.status_code == 200
    assert [d.findings for d in drafts_of(index, study_uid)] == ["Lungs clear."]
    assert index.study(study_uid).state == StudyState.DRAFTED
    with running_site.client(running_site.login("anna")) as anna:
        (row,) = anna.get("/api/studies").json()
        (worker,) = anna.get("/api/workers").json()
        refused = anna.post("/api/worker/claim", json={"worker_id": "anna"})
    assert (row["drafts"], row["state"]) == (1, "drafted")
    assert (worker["worker_id"], worker["batch"], worker["studies_per_minute"]) == ("gpu1", 4, 12.5)
    assert refused.status_code == 403  # a radiologist is not a worker


def test_a_failed_job_fails_the_study_with_the_reason(running_site, tmp_path):
    study_uid = running_site.add_study(tmp_path)
    with running_site.client(running_site.login("gpu1")) as gpu1:
        (job,) = gpu1.post("/api/worker/claim", json={"worker_id": "gpu1"}).json()
        gpu1.post(f"/api/worker/jobs/{study_uid}/fail", json={"lease_id": job["lease_id"], "reason": "out of memory"})
    study = running_site.site.index.study(study_uid)
    assert (study.state, study.state_reason) == (StudyState.FAILED, "out of memory")


def test_with_a_prior_gate_a_stable_study_is_offered_only_once_its_lookup_is_on_record(running_site, tmp_path):
    """The node marks a study stable before the gate hears of it: a worker claiming in between must not get
    it without its prior (this once drafted a study whose prior was on its way)."""
    from dicom_node.priors import PriorRetriever
    from dicom_node.settings import PacsSettings

    study_uid = running_site.add_study(tmp_path)
    index = running_site.site.index
    assert claim_jobs(index, "early", 5, lease_s=30.0, after_prior_lookup=True) == []
    assert index.study(study_uid).state == StudyState.STABLE
    retriever = PriorRetriever(PacsSettings(), index, running_site.site.store, move_destination="RADDRAFT")
    retriever.retrieve_for(study_uid)  # no PACS configured: an outcome all the same
    assert index.reader().execute("SELECT 1 FROM prior_lookups WHERE study_uid = ?", (study_uid,)).fetchone()
    (job,) = claim_jobs(index, "after", 5, lease_s=30.0, after_prior_lookup=True)
    assert job.study_uid == study_uid
