"""Priors on the site server (issue 18 over issue 20), against the real server (HTTPS, PostgreSQL): a complete
study is offered to workers only once its priors were looked up; the job carries its newest prior and the
worker's draft is prompted with it exactly as the workstation's queue prompts it; the API serves a study's
priors with their images; signing checks a stated comparison against the study's priors and records it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.site_studies import store_as_new_study
from dicom_node.events import NodeEvents, StudyStable
from dicom_node.index import StudyState
from dicom_node.priors import RETRIEVED, PriorLookups, PriorRetriever, prior_status, priors_of
from dicom_node.reports import SignedReport, sign_report
from dicom_node.settings import PacsSettings
from server.priors import PriorGate
from tests.dicom_node.test_priors import silent_pacs  # noqa: F401  (a fixture: a PACS that never answers)
from tests.server.test_worker import make_worker  # noqa: F401  (a fixture: workers on the running site)

EMBEDDED = Path(__file__).resolve().parents[2] / "resources" / "models" / "raddraft-phantom-cxr"
PATIENT = "PRI-SITE-18"
EARLIER_DATE, CURRENT_DATE = "20230105", "20250110"
COMPARING = "Right pleural effusion, increased since the prior study."


def store_study(running_site, paths, folder: Path, *, patient_id: str, study_date: str) -> str:
    """The files as one new study of `patient_id` on `study_date`, stored as the node stores what it receives."""
    return store_as_new_study(running_site.site.store, paths, folder, patient_id=patient_id, study_date=study_date)


def signed_earlier(running_site, record: dict, folder: Path, patient_id: str = PATIENT) -> str:
    """An earlier study of the patient, read and signed here (a prior with RadDraft's own report)."""
    uid = store_study(running_site, record["paths"], folder, patient_id=patient_id, study_date=EARLIER_DATE)
    index = running_site.site.index
    index.transition(uid, StudyState.DRAFTED)
    sign_report(index, SignedReport(uid, record["report"]["findings"], record["report"]["impression"], "Reader^A"))
    return uid


def current_with_prior(running_site, phantom_studies, tmp_path: Path) -> tuple[str, str]:
    """(current, earlier): a complete study whose prior lookup found the earlier one in the store."""
    earlier = signed_earlier(running_site, phantom_studies[1], tmp_path / "earlier")
    current = store_study(running_site, phantom_studies[0]["paths"], tmp_path / "current", patient_id=PATIENT,
                          study_date=CURRENT_DATE)
    site = running_site.site
    site.index.transition(current, StudyState.STABLE)
    retriever = PriorRetriever(PacsSettings(), site.index, site.store, move_destination="RADDRAFT")
    assert retriever.retrieve_for(current).has_prior
    return current, earlier


@pytest.fixture(scope="module")
def prior_model(tmp_path_factory):
    """The embedded model's weights behind prompts that take the prior's report and frontal image."""
    from engine.runtime import load_model
    from engine.settings import EngineSettings
    from tests.engine.test_priors_prompt import prior_bundle

    bundle = prior_bundle(EMBEDDED, tmp_path_factory.mktemp("bundles") / "with-prior")
    return load_model(bundle, EngineSettings(providers=("cpu",), max_new_tokens=12, batch_size=4))


def claim(http, count: int = 8) -> list[dict]:
    answer = http.post("/api/worker/claim", json={"worker_id": "w-test", "max": count, "lease_s": 30})
    answer.raise_for_status()
    return answer.json()


def test_a_study_is_offered_to_workers_once_its_prior_lookup_is_done_with_its_newest_prior(
        running_site, phantom_studies, tmp_path, silent_pacs):  # noqa: F811
    site = running_site.site
    index = site.index
    earlier = signed_earlier(running_site, phantom_studies[1], tmp_path / "earlier")
    # complete before the gate starts (a server restarted with a study never looked up) ...
    alone = store_study(running_site, phantom_studies[2]["paths"], tmp_path / "alone", patient_id="PRI-ALONE",
                        study_date=CURRENT_DATE)
    index.transition(alone, StudyState.STABLE)
    # ... and completed by the node while it runs; the PACS answers nothing: each lookup waits find_timeout_s
    current = store_study(running_site, phantom_studies[0]["paths"], tmp_path / "current", patient_id=PATIENT,
                          study_date=CURRENT_DATE)
    pacs = PacsSettings(ae_title="ARCHIVE", host="127.0.0.1", port=silent_pacs, find_timeout_s=4.0)
    events = NodeEvents()
    gate = PriorGate(PriorLookups(PriorRetriever(pacs, index, site.store, move_destination="RADDRAFT")))
    site.prior_gate = gate
    with running_site.client(running_site.login("gpu1")) as http:
        try:
            started = time.monotonic()
            gate.start(index, events)
            index.transition(current, StudyState.STABLE)
            events.study_stable.publish(StudyStable(current, len(phantom_studies[0]["paths"])))
            assert gate.held_back() == {alone, current}
            assert claim(http) == []  # nothing is drafted before its prior is known
            assert time.monotonic() - started < 4.0, "the machine was too slow to see the studies held back"
            while gate.held_back() and time.monotonic() - started < 30:
                time.sleep(0.1)
            assert not gate.held_back() and time.monotonic() - started >= 3.5
            jobs = {job["study_uid"]: job for job in claim(http)}
            assert set(jobs) == {alone, current}
            prior = jobs[current]["prior"]
            frontal = prior["instances"][0]
            wado = http.get(f"/api/studies/{earlier}/series/{frontal['series_uid']}/instances/"
                            f"{frontal['sop_instance_uid']}")
        finally:
            gate.stop()
            site.prior_gate = None
    assert jobs[alone]["prior"] is None
    report = phantom_studies[1]["report"]
    assert (prior["study_uid"], prior["study_date"], prior["date"]) == (earlier, EARLIER_DATE, "2023-01-05")
    assert (prior["findings"], prior["impression"], prior["report_source"]) == (
        report["findings"], report["impression"], "raddraft")
    assert frontal["view_position"] in ("PA", "AP") and "path" not in frontal  # frontal first, no server path
    assert len(prior["instances"]) == len(phantom_studies[1]["paths"])
    assert wado.status_code == 200 and wado.content == site.store.path_of(index.instance(
        frontal["sop_instance_uid"])).read_bytes()
    # the silent PACS cost the lookup its C-FIND, not the prior the store holds
    state, reason = prior_status(index, current)
    assert state == RETRIEVED and "the PACS was not asked" in reason


@pytest.mark.slow
def test_the_worker_drafts_with_the_jobs_prior_as_the_workstation_queue_would(
        running_site, phantom_studies, prior_model, make_worker, tmp_path):  # noqa: F811
    from engine.prompts import prior_input

    site = running_site.site
    current, earlier = current_with_prior(running_site, phantom_studies, tmp_path)
    alone = store_study(running_site, phantom_studies[2]["paths"], tmp_path / "alone", patient_id="PRI-ALONE",
                        study_date=CURRENT_DATE)
    site.index.transition(alone, StudyState.STABLE)
    worker = make_worker(prior_model)
    assert worker.run_once() == 2
    with running_site.client(running_site.login("anna")) as http:
        (with_prior,) = http.get(f"/api/studies/{current}/drafts").json()
        (without,) = http.get(f"/api/studies/{alone}/drafts").json()
    # what the workstation's queue gives the model: the newest prior of the store, its files the store's own
    queued = prior_model.draft(phantom_studies[0]["paths"],
                               prior=prior_input(priors_of(site.index, current)[0], site.store.path_of))
    assert queued.prior == {"study_uid": earlier, "date": "2023-01-05"} and queued.prompts["prior"] == "given"
    detail = with_prior["detail"]
    assert detail["prior"] == queued.prior and detail["prompts"]["prior"] == "given"
    # the prior's frontal image block and report reached the shared prefix, as in the queue's draft
    assert detail["timings"]["shared_prefix_tokens"] == queued.timings["shared_prefix_tokens"]
    assert detail["timings"]["shared_prefix_tokens"] > 2 * prior_model.manifest.architecture.image_tokens
    assert (with_prior["findings"], with_prior["impression"]) == (queued.findings, queued.impression)
    # a study without a prior is told there is none, drafted in one batch with the study that has one
    assert without["detail"]["prior"] is None and "prior" not in without["detail"]["prompts"]
    assert without["detail"]["timings"]["batch"] == detail["timings"]["batch"] == 2
    assert not any((tmp_path / "gpu1-test").iterdir())  # the prior's files went with the job's


def test_the_api_serves_priors_looks_again_and_signing_knows_the_study_has_one(running_site, phantom_studies,
                                                                              tmp_path):
    site = running_site.site
    current, earlier = current_with_prior(running_site, phantom_studies, tmp_path)
    alone = store_study(running_site, phantom_studies[2]["paths"], tmp_path / "alone", patient_id="PRI-ALONE",
                        study_date=CURRENT_DATE)
    site.index.transition(alone, StudyState.STABLE)
    retriever = PriorRetriever(PacsSettings(), site.index, site.store, move_destination="RADDRAFT")
    retriever.retrieve_for(alone)
    text = {"findings": "Right pleural effusion.", "impression": COMPARING}
    with running_site.client(running_site.login("anna")) as anna:
        served = anna.get(f"/api/studies/{current}/priors").json()
        none = anna.get(f"/api/studies/{alone}/priors").json()
        frontal = served["priors"][0]["instances"][0]
        png = anna.get(f"/api/studies/{earlier}/series/{frontal['series_uid']}/instances/"
                       f"{frontal['sop_instance_uid']}/rendered")
        not_here = anna.post(f"/api/studies/{alone}/priors/lookup")
        claimed_without = anna.post(f"/api/studies/{alone}/sign", json=text)
        not_a_prior = anna.post(f"/api/studies/{current}/sign", json={**text, "comparison": alone})
        signed = anna.post(f"/api/studies/{current}/sign", json=text)
        report_text = anna.get(f"/api/studies/{current}/report.txt").text
        # the prior reaches the store later: "look for priors" on the server finds it
        site.look_for_priors = lambda uid: retriever.retrieve_for(uid, again=True)
        later = signed_earlier(running_site, phantom_studies[3], tmp_path / "later", patient_id="PRI-ALONE")
        looked = anna.post(f"/api/studies/{alone}/priors/lookup").json()
    assert (served["state"], [p["study_uid"] for p in served["priors"]]) == (RETRIEVED, [earlier])
    assert served["priors"][0]["date"] == "2023-01-05" and served["priors"][0]["report_source"] == "raddraft"
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert none["priors"] == [] and none["state"] == "disabled" and "none in the store" in none["reason"]
    assert not_here.status_code == 404  # this server was given no lookup
    # a stated comparison needs a reason only where the study has no prior
    assert claimed_without.status_code == 409 and "but this study has none" in claimed_without.json()["detail"]
    assert not_a_prior.status_code == 400
    assert signed.status_code == 200, signed.text
    comparison = signed.json()["report"]["detail"]["comparison"]
    assert comparison["study_uid"] == earlier and comparison["study_date"] == EARLIER_DATE
    assert "Comparison: " in report_text and "2023-01-05." in report_text
    assert looked["state"] == RETRIEVED and [p["study_uid"] for p in looked["priors"]] == [later]
