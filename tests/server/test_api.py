"""The site API over real HTTPS on PostgreSQL: authentication, claims, signing with its audit row, WADO-RS."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pydicom
import pytest

from dicom_node.index import StudyState
from dicom_node.reports import outbox_of
from server.users import find_user, issue_token
from tests.conftest import dataset_bytes
from tests.server.conftest import PASSWORD


def test_a_wrong_password_or_an_expired_token_gets_401_and_no_data(running_site, tmp_path):
    running_site.add_study(tmp_path)
    with running_site.client() as http:
        wrong = http.post("/api/login", json={"username": "anna", "password": "not the password"})
        unknown = http.post("/api/login", json={"username": "nobody", "password": PASSWORD})
        anonymous = http.get("/api/studies")
    assert (wrong.status_code, unknown.status_code, anonymous.status_code) == (401, 401, 401)
    assert "token" not in wrong.json() and "study_uid" not in anonymous.text
    index = running_site.site.index
    expired = issue_token(index, find_user(index, "anna"), ttl_s=60.0, now=time.time() - 120.0)
    for token in (expired.token, "made-up-token"):
        with running_site.client(token) as http:
            answer = http.get("/api/studies")
        assert answer.status_code == 401 and "study_uid" not in answer.text
    with running_site.client(running_site.login("root")) as http:
        failures = http.get("/api/audit", params={"action": "login_failed"}).json()
    assert {(row["user_name"], row["action"]) for row in failures} == {("anna", "login_failed"),
                                                                         ("nobody", "login_failed")}
    assert all(row["client"].startswith("127.0.0.1:") for row in failures)


def test_radiologist_b_sees_a_claim_and_cannot_take_it_until_an_admin_releases_it(running_site, tmp_path):
    study_uid = running_site.add_study(tmp_path)
    anna, ben, root = (running_site.client(running_site.login(n)) for n in ("anna", "ben", "root"))
    try:
        assert anna.post(f"/api/studies/{study_uid}/claim").status_code == 200
        (row,) = ben.get("/api/studies").json()
        assert (row["study_uid"], row["claimed_by"], row["drafts"], row["state"]) == (study_uid, "anna", 0, "stable")
        refused = ben.post(f"/api/studies/{study_uid}/claim")
        assert refused.status_code == 409 and refused.json()["detail"]["claimed_by"] == "anna"
        assert ben.delete(f"/api/studies/{study_uid}/claim").status_code == 409  # not his to release
        assert root.delete(f"/api/studies/{study_uid}/claim").json()["released"] == "anna"
        assert ben.post(f"/api/studies/{study_uid}/claim").status_code == 200
        (released,) = root.get("/api/audit", params={"action": "claim_released_by_admin"}).json()
        assert (released["user_name"], released["study_uid"], released["detail"]) == ("root", study_uid,
                                                                                        {"held_by": "anna"})
    finally:
        for http in (anna, ben, root):
            http.close()


def test_an_expired_claim_is_free_again(running_site, tmp_path):
    from server.claims import claim_study

    study_uid = running_site.add_study(tmp_path)
    claim_study(running_site.site.index, study_uid, "anna", lease_s=60.0, now=time.time() - 120.0)
    with running_site.client(running_site.login("ben")) as ben:
        (row,) = ben.get("/api/studies").json()
        assert row["claimed_by"] is None
        assert ben.post(f"/api/studies/{study_uid}/claim").json()["user_name"] == "ben"


def test_signing_is_by_the_logged_in_user_audited_and_queued_for_pacs(running_site, tmp_path):
    study_uid = running_site.add_study(tmp_path)
    with running_site.client(running_site.login("anna")) as anna:
        answer = anna.post(f"/api/studies/{study_uid}/sign", json={"findings": "Lungs clear.",
                                                                   "impression": "Normal chest."})
        assert answer.status_code == 200, answer.text
        report = answer.json()["report"]
        again = anna.post(f"/api/studies/{study_uid}/sign", json={"findings": "x", "impression": "y"})
    assert report["signed_by"] == "anna" and again.status_code == 409
    index = running_site.site.index
    assert index.study(study_uid).state == StudyState.SIGNED
    (queued,) = outbox_of(index, study_uid)
    assert queued.report_id == report["id"] and queued.status == "pending" and running_site.outbox_wakes
    with running_site.client(running_site.login("root")) as root:
        (signed,) = root.get("/api/audit", params={"action": "sign"}).json()
        forbidden = root.post(f"/api/studies/{study_uid}/sign", json={"findings": "a", "impression": "b"})
    assert (signed["user_name"], signed["study_uid"], signed["detail"]["report_id"]) == ("anna", study_uid,
                                                                                         report["id"])
    assert forbidden.status_code == 403  # an admin does not sign reports


def test_the_audit_log_cannot_be_changed_even_in_the_database(running_site):
    from server.audit import record_alone

    index = running_site.site.index
    record_alone(index, "root", "model_switch", "127.0.0.1:1")
    for statement in ("UPDATE audit SET user_name = 'someone else'", "DELETE FROM audit"):
        with pytest.raises(index.errors, match="append-only"), index.transaction() as conn:
            conn.execute(statement)
    assert [row["user_name"] for row in index.reader().execute("SELECT user_name FROM audit")] == ["root"]


def test_wado_rs_serves_the_stored_bytes_and_a_rendered_png(running_site, tmp_path):
    study_uid = running_site.add_study(tmp_path)
    with running_site.client(running_site.login("anna")) as anna:
        detail = anna.get(f"/api/studies/{study_uid}").json()
        (item,) = detail["instances"]
        base = f"/api/studies/{study_uid}/series/{item['series_uid']}/instances/{item['sop_instance_uid']}"
        dicom = anna.get(base)
        png = anna.get(base + "/rendered", params={"window": "lung"})
        missing = anna.get(f"/api/studies/{study_uid}/series/1.2.3/instances/{item['sop_instance_uid']}")
    assert "path" not in item and detail["study"]["state"] == "stable"
    row = running_site.site.index.instance(item["sop_instance_uid"])
    assert dicom.headers["content-type"] == "application/dicom"
    assert dicom.content == (running_site.site.store.path_of(row)).read_bytes()
    assert dataset_bytes(running_site.site.store.path_of(row)) is not None
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    ds = pydicom.dcmread(running_site.site.store.path_of(row), stop_before_pixels=True)
    assert int.from_bytes(png.content[16:20], "big") == ds.Columns and int.from_bytes(png.content[20:24], "big") == ds.Rows
    assert missing.status_code == 404


def test_events_stream_a_state_change_and_a_claim(running_site, tmp_path):
    import httpx_sse

    study_uid = running_site.add_study(tmp_path, state=StudyState.RECEIVING)
    token = running_site.login("ben")
    seen: list[dict] = []
    connected = threading.Event()

    def listen() -> None:
        with running_site.client(token) as http, httpx_sse.connect_sse(http, "GET", "/api/events") as source:
            connected.set()
            for event in source.iter_sse():
                seen.append(event.json())
                if len(seen) == 2:
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    time.sleep(0.3)
    running_site.site.index.transition(study_uid, StudyState.STABLE)
    time.sleep(0.3)
    with running_site.client(running_site.login("anna")) as anna:
        anna.post(f"/api/studies/{study_uid}/claim")
    listener.join(10)
    assert seen == [{"kind": "study", "study_uid": study_uid, "state": "stable", "reason": "",
                     "at": seen[0]["at"]}, {"kind": "claim", "study_uid": study_uid, "claimed_by": "anna"}]


def test_a_section_is_generated_on_request_and_streamed(running_site, tmp_path):
    import httpx_sse

    from engine.runtime import load_model
    from engine.settings import EngineSettings
    from server.generation import OnDemandDrafter

    embedded = Path(__file__).resolve().parents[2] / "resources" / "models" / "raddraft-phantom-cxr"
    running_site.site.drafter = OnDemandDrafter(lambda: load_model(embedded, EngineSettings(providers=("cpu",))))
    study_uid = running_site.add_study(tmp_path)
    events = []
    with running_site.client(running_site.login("anna")) as anna:
        with httpx_sse.connect_sse(anna, "POST", f"/api/studies/{study_uid}/generate",
                                   json={"section": "impression", "findings": "Lungs are clear."}) as source:
            events = [(event.event, event.json()) for event in source.iter_sse()]
        unknown = anna.post(f"/api/studies/{study_uid}/generate", json={"section": "history"})
    pieces = [data["text"] for name, data in events if name == "piece"]
    (name, result) = events[-1]
    assert name == "result" and pieces and result["text"].strip()
    assert "".join(pieces).strip() == result["text"].strip()
    assert unknown.status_code == 400


def test_the_checks_before_signing_run_again_on_the_server(running_site, tmp_path):
    study_uid = running_site.add_study(tmp_path)
    text = {"findings": "Large right pneumothorax.", "impression": "Large right pneumothorax."}
    told = {"recipient": "Dr. Who (ED)", "communicated_at": "2026-01-02 10:30", "method": "telephone"}
    with running_site.client(running_site.login("anna")) as anna:
        unanswered = anna.post(f"/api/studies/{study_uid}/sign", json=text)
        answered = anna.post(f"/api/studies/{study_uid}/sign", json={**text, "review": {"communication": told}})
    assert unanswered.status_code == 409 and "critical finding" in unanswered.json()["detail"]
    assert answered.status_code == 200, answered.text
    detail = answered.json()["report"]["detail"]
    assert detail["critical_communication"]["recipient"] == "Dr. Who (ED)"
    assert detail["critical_findings"] and detail["software"].startswith("RadDraft")
