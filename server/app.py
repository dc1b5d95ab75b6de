"""The site server's HTTPS API (FastAPI): docs/site-api.md is the contract.

Every route but /api/login needs `Authorization: Bearer TOKEN`; a wrong password, a bad or expired token
answer 401 before anything is read. Routes that do blocking work (index, files, PNG) are plain `def`:
FastAPI runs them in its thread pool.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from dicom_node.drafts import DraftRecord, drafts_of, save_working_draft, working_draft
from dicom_node.index import StudyState
from dicom_node.reports import (
    SignedReport,
    SigningError,
    latest_report,
    outbox_of,
    queue_send,
    report_as_text,
    reports_of,
)
from dicom_node.reports import sign_report as sign_in_index
from dicom_node.store import Store
from dicom_node.worklist import worklist_row, worklist_rows
from server import audit, claims, users
from server.errors import Forbidden, NotAuthenticated, NotFound, SiteError, UserError
from server.events import EventHub
from server.priors import instance_json, newest_prior_json, priors_answer
from server.settings import ServerSettings
from server.single_flight import SingleFlight


@dataclass
class Site:
    """What the API serves from: the store (files + index), the model registry, the outbox's wake-up."""

    store: Store
    settings: ServerSettings
    registry: Any = None  # engine.registry.ModelRegistry, or None (no models page)
    send_on_sign: bool = True
    notify_outbox: Callable[[], None] = lambda: None
    on_model_switch: Callable[[Any], None] = lambda installed: None
    hub: EventHub | None = None
    drafter: Any = None  # server.generation.OnDemandDrafter, or None (no drafting on request)
    software: str = "RadDraft"  # the SR's software line ("RadDraft 1.2.3")
    critical_findings: tuple[str, ...] | None = None  # None: the engine's default list
    prior_gate: Any = None  # server.priors.PriorGate: studies held back from workers while priors are looked up
    look_for_priors: Callable[[str], Any] | None = None  # study_uid -> dicom_node.priors.PriorsOutcome (again)

    @property
    def index(self):
        return self.store.index


_bearer = HTTPBearer(auto_error=False)


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else ""


class Login(BaseModel):
    username: str
    password: str


class NewUser(BaseModel):
    name: str
    role: str
    password: str


class Sign(BaseModel):
    findings: str
    impression: str
    draft_id: int | None = None
    provenance: dict[str, Any] = {}
    ai_share_kept: float = 0.0
    edit_distance: int = 0
    review: dict[str, Any] | None = None
    comparison: str | None = None  # the prior read beside it (its Study Instance UID), null: none; absent: newest


class WorkingDraftBody(BaseModel):
    sections: dict[str, Any]


class Generate(BaseModel):
    section: str
    findings: str | None = None
    indication: str | None = None


class WorkerClaim(BaseModel):
    worker_id: str
    max: int = 1
    lease_s: float | None = None


class Lease(BaseModel):
    lease_id: str


class WorkerDraft(BaseModel):
    lease_id: str
    findings: str
    impression: str
    model: str
    provider: str
    detail: dict[str, Any] = {}


class WorkerFail(BaseModel):
    lease_id: str
    reason: str


class Heartbeat(BaseModel):
    worker_id: str
    model: str = ""
    provider: str = ""
    batch: int = 1
    studies_per_minute: float = 0.0
    tokens_per_s: float = 0.0


def current_user(request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> users.User:
    if credentials is None:
        raise NotAuthenticated("log in first (Authorization: Bearer TOKEN)")
    return users.user_of_token(request.app.state.site.index, credentials.credentials)


def _role(*allowed: str) -> Callable[..., users.User]:
    def check(user: Annotated[users.User, Depends(current_user)]) -> users.User:
        if user.role not in allowed:
            raise Forbidden(f"the role {user.role} may not do this (needs {' or '.join(allowed)})")
        return user
    return check


Anyone = Annotated[users.User, Depends(current_user)]
Reader = Annotated[users.User, Depends(_role("radiologist", "admin"))]
Admin = Annotated[users.User, Depends(_role("admin"))]
Worker = Annotated[users.User, Depends(_role("worker", "admin"))]
Radiologist = Annotated[users.User, Depends(_role("radiologist"))]


def create_app(site: Site) -> FastAPI:
    app = FastAPI(title="RadDraft site server", docs_url=None, redoc_url=None)
    app.state.site = site
    index = site.index
    # encoded once for every app asking at the same moment, and never older than the request
    worklist_body = SingleFlight(lambda: json.dumps(worklist(site), separators=(",", ":")).encode())

    @app.exception_handler(SiteError)
    def _refused(_request: Request, error: SiteError) -> JSONResponse:
        detail: Any = str(error)
        if getattr(error, "detail", None):
            detail = {"message": str(error), **error.detail}  # type: ignore[attr-defined]
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"detail": detail}, status_code=error.status, headers=headers)

    @app.exception_handler(SigningError)
    def _unsignable(_request: Request, error: SigningError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    def known_study(study_uid: str):
        study = index.study(study_uid)
        if study is None or study.state == StudyState.PRIOR:
            raise NotFound(f"unknown study {study_uid}")
        return study

    # -- login ------------------------------------------------------------------------------------------
    @app.post("/api/login")
    def login(body: Login, request: Request) -> dict[str, Any]:
        try:
            user = users.check_password(index, body.username, body.password)
        except NotAuthenticated:
            audit.record_alone(index, body.username, audit.LOGIN_FAILED, _client(request))
            raise
        issued = users.issue_token(index, user, site.settings.token_ttl_s)
        return {"token": issued.token, "expires_at": _iso(issued.expires_at), "user": asdict(user)}

    @app.get("/api/me")
    def me(user: Anyone) -> dict[str, Any]:
        return asdict(user)

    @app.post("/api/users")
    def add_user(body: NewUser, request: Request, user: Admin) -> dict[str, Any]:
        added = users.add_user(index, body.name, body.role, body.password)
        audit.record_alone(index, user.name, audit.USER_ADDED, _client(request), detail=asdict(added))
        return asdict(added)

    @app.get("/api/users")
    def list_users(_user: Admin) -> list[dict[str, Any]]:
        return [asdict(u) for u in users.list_users(index)]

    # -- the worklist ------------------------------------------------------------------------------------
    @app.get("/api/studies")
    def studies(_user: Reader) -> Response:
        return Response(worklist_body.get(), media_type="application/json")

    @app.get("/api/events")
    async def events(request: Request, _user: Reader) -> StreamingResponse:
        if site.hub is None:
            raise NotFound("this server pushes no events")
        hub = site.hub
        subscriber, queue = hub.subscribe()

        async def stream():
            try:
                yield ": connected\n\n"
                while not await request.is_disconnected():
                    try:
                        event = await asyncio.wait_for(queue.get(), timeout=15.0)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: {event['kind']}\ndata: {json.dumps(event)}\n\n"
            finally:
                hub.unsubscribe(subscriber)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- one study -------------------------------------------------------------------------------------
    @app.get("/api/studies/{study_uid}")
    def study(study_uid: str, _user: Reader) -> dict[str, Any]:
        row = known_study(study_uid)
        held = claims.active_claims(index).get(study_uid)
        return {"study": {**_plain(asdict(row)), "claimed_by": held},
                "series": [asdict(s) for s in index.series_of(study_uid)],
                "instances": [_instance(i) for i in index.instances_of(study_uid)],
                "drafts": [_plain(asdict(d)) for d in drafts_of(index, study_uid)],
                "reports": [_plain(asdict(r)) for r in reports_of(index, study_uid)],
                "sends": [asdict(o) for o in outbox_of(index, study_uid)]}

    @app.get("/api/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")
    def instance(study_uid: str, series_uid: str, sop_uid: str,
                 _user: Annotated[users.User, Depends(_role("radiologist", "admin", "worker"))]):  # workers draft it
        row = _instance_row(study_uid, series_uid, sop_uid)
        return FileResponse(site.store.path_of(row), media_type="application/dicom")

    @app.get("/api/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered")
    def rendered(study_uid: str, series_uid: str, sop_uid: str, _user: Reader,
                 window: str = "header") -> Response:
        row = _instance_row(study_uid, series_uid, sop_uid)
        return Response(render_png(site.store.path_of(row), window), media_type="image/png")

    def _instance_row(study_uid: str, series_uid: str, sop_uid: str):
        row = index.instance(sop_uid)
        if row is None or row.study_uid != study_uid or row.series_uid != series_uid:
            raise NotFound(f"no instance {sop_uid} in series {series_uid} of study {study_uid}")
        return row

    @app.get("/api/studies/{study_uid}/drafts")
    def drafts(study_uid: str, _user: Reader) -> list[dict[str, Any]]:
        known_study(study_uid)
        return [_plain(asdict(d)) for d in drafts_of(index, study_uid)]

    @app.get("/api/studies/{study_uid}/working-draft")
    def get_working_draft(study_uid: str, _user: Reader) -> dict[str, Any]:
        known_study(study_uid)
        kept = working_draft(index, study_uid)
        return asdict(kept) if kept else {"study_uid": study_uid, "sections": None}

    @app.put("/api/studies/{study_uid}/working-draft")
    def put_working_draft(study_uid: str, body: WorkingDraftBody,
                          user: Reader) -> dict[str, Any]:
        known_study(study_uid)
        kept = save_working_draft(index, study_uid, body.sections, saved_by=user.name)
        if kept is None:
            raise SigningError("the study is signed: its text is the signed report now")
        return asdict(kept)

    @app.post("/api/studies/{study_uid}/generate")
    def generate(study_uid: str, body: Generate, _user: Reader) -> StreamingResponse:
        from engine.prompts import newest_prior_input
        from server.generation import SECTIONS, stream_section

        known_study(study_uid)
        if site.drafter is None:
            raise NotFound("this server drafts nothing on request (no model here)")
        if body.section not in SECTIONS:
            raise SiteError(f"unknown section {body.section!r} (findings or impression)")
        paths = [site.store.path_of(row) for row in index.instances_of(study_uid)]
        prior = newest_prior_input(index, study_uid, site.store.path_of)  # as the drafting workers take it
        return StreamingResponse(stream_section(site.drafter, paths, body.section, body.findings, body.indication,
                                                prior),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # -- priors ------------------------------------------------------------------------------------------
    @app.get("/api/studies/{study_uid}/priors")
    def priors(study_uid: str, _user: Reader) -> dict[str, Any]:
        known_study(study_uid)
        return priors_answer(index, study_uid)

    @app.post("/api/studies/{study_uid}/priors/lookup")
    def look_for_priors(study_uid: str, _user: Reader) -> dict[str, Any]:
        known_study(study_uid)
        if site.look_for_priors is None:
            raise NotFound("this server looks up no priors ([pacs] query_priors)")
        outcome = site.look_for_priors(study_uid)
        return {**priors_answer(index, study_uid), "state": outcome.state, "reason": outcome.reason}

    # -- claims ------------------------------------------------------------------------------------------
    @app.post("/api/studies/{study_uid}/claim")
    def claim(study_uid: str, user: Reader) -> dict[str, Any]:
        known_study(study_uid)
        held = claims.claim_study(index, study_uid, user.name, site.settings.claim_lease_s)
        _publish(site, {"kind": "claim", "study_uid": study_uid, "claimed_by": user.name})
        return {**asdict(held), "expires_at_iso": _iso(held.expires_at)}

    @app.delete("/api/studies/{study_uid}/claim")
    def release(study_uid: str, request: Request, user: Reader) -> dict[str, Any]:
        with index.transaction() as conn:
            holder = claims.release_study(conn, study_uid, user.name, any_holder=user.role == "admin")
            if holder is not None and holder != user.name:
                audit.record(conn, user.name, audit.CLAIM_RELEASED, _client(request), study_uid=study_uid,
                             detail={"held_by": holder})
        _publish(site, {"kind": "claim", "study_uid": study_uid, "claimed_by": None})
        return {"study_uid": study_uid, "released": holder}

    # -- signing and sending --------------------------------------------------------------------------------
    @app.post("/api/studies/{study_uid}/sign")
    def sign(study_uid: str, body: Sign, request: Request, user: Radiologist):
        from server.signing import report_to_sign

        known_study(study_uid)
        from server.signing import NEWEST_PRIOR

        report = report_to_sign(index, study_uid, user.name, body, software=site.software,
                                critical_names=site.critical_findings,
                                comparison=body.comparison if "comparison" in body.model_fields_set else NEWEST_PRIOR)

        def audited(conn: Any, signed: SignedReport) -> None:
            audit.record(conn, user.name, audit.SIGN, _client(request), study_uid=study_uid,
                         detail={"report_id": signed.id, "sr_sop_instance_uid": signed.sr_sop_instance_uid,
                                 "queued": site.send_on_sign})

        signed = sign_in_index(index, report, queue_send=site.send_on_sign, also=audited)
        with index.transaction() as conn:
            conn.execute("DELETE FROM study_claims WHERE study_uid = ?", (study_uid,))
        if site.send_on_sign:
            site.notify_outbox()
        return {"report": _plain(asdict(signed))}

    @app.post("/api/studies/{study_uid}/send")
    def send(study_uid: str, request: Request, user: Reader) -> dict[str, Any]:
        known_study(study_uid)
        report = latest_report(index, study_uid)
        if report is None:
            raise NotFound(f"study {study_uid} has no signed report to send")
        item = queue_send(index, report.id)
        audit.record_alone(index, user.name, audit.SEND, _client(request), study_uid=study_uid,
                           detail={"report_id": report.id, "outbox_id": item.id})
        site.notify_outbox()
        return asdict(item)

    @app.get("/api/studies/{study_uid}/report.txt")
    def report_text(study_uid: str, _user: Reader) -> Response:
        row = known_study(study_uid)
        report = latest_report(index, study_uid)
        if report is None:
            raise NotFound(f"study {study_uid} has no signed report")
        return Response(report_as_text(report, row), media_type="text/plain; charset=utf-8")

    # -- models ------------------------------------------------------------------------------------------
    @app.get("/api/models")
    def models(_user: Anyone) -> dict[str, Any]:
        if site.registry is None:
            return {"models": []}
        return {"models": [_model(m) for m in site.registry.models()]}

    @app.post("/api/models/{version}/use")
    def use_model(version: str, request: Request, user: Admin) -> dict[str, Any]:
        if site.registry is None:
            raise NotFound("this server has no model registry")
        before = site.registry.current().model_id
        installed = site.registry.use(version)
        audit.record_alone(index, user.name, audit.MODEL_SWITCH, _client(request),
                           detail={"from": before, "to": installed.model_id})
        site.on_model_switch(installed)
        return _model(installed)

    @app.get("/api/audit")
    def audit_log(_user: Admin, action: str | None = None, limit: int = 1000):
        return audit.audit_rows(index, limit=min(max(limit, 1), 10000), action=action)

    # -- workers -------------------------------------------------------------------------------------------
    @app.post("/api/worker/claim")
    def worker_claim(body: WorkerClaim, _user: Worker) -> list[dict[str, Any]]:
        lease_s = body.lease_s or site.settings.job_lease_s
        held_back = site.prior_gate.held_back() if site.prior_gate is not None else ()
        jobs = claims.claim_jobs(index, body.worker_id, max(1, min(body.max, 64)), lease_s, held_back=held_back,
                                 after_prior_lookup=site.prior_gate is not None)
        return [{"study_uid": job.study_uid, "lease_id": job.lease_id, "lease_expires": job.lease_expires,
                 "instances": [_instance(i) for i in index.instances_of(job.study_uid)],
                 "series": [asdict(s) for s in index.series_of(job.study_uid)],
                 "prior": newest_prior_json(index, job.study_uid)} for job in jobs]

    @app.post("/api/worker/jobs/{study_uid}/renew")
    def worker_renew(study_uid: str, body: Lease, _user: Worker) -> dict[str, Any]:
        expires = claims.renew_job(index, study_uid, body.lease_id, site.settings.job_lease_s)
        return {"study_uid": study_uid, "lease_expires": expires}

    @app.post("/api/worker/jobs/{study_uid}/draft")
    def worker_draft(study_uid: str, body: WorkerDraft, user: Worker) -> dict[str, Any]:
        draft = DraftRecord(study_uid, body.model, body.provider, body.findings, body.impression,
                            {**body.detail, "worker": user.name})
        return _plain(asdict(claims.complete_job(index, body.lease_id, draft)))

    @app.post("/api/worker/jobs/{study_uid}/fail")
    def worker_fail(study_uid: str, body: WorkerFail, _user: Worker) -> dict[str, Any]:
        claims.fail_job(index, study_uid, body.lease_id, body.reason)
        return {"study_uid": study_uid, "state": "failed"}

    @app.post("/api/worker/heartbeat")
    def heartbeat(body: Heartbeat, request: Request, user: Worker) -> dict[str, Any]:
        claims.record_heartbeat(index, body.worker_id, user.name, _client(request), body.model_dump())
        return {"worker_id": body.worker_id, "at": time.time()}

    @app.get("/api/workers")
    def workers(_user: Anyone) -> list[dict[str, Any]]:
        now = time.time()
        return [{**w, "seconds_since_heartbeat": round(now - w["last_seen"], 1)} for w in claims.known_workers(index)]

    return app


# -- shapes of the answers ---------------------------------------------------------------------------------
def worklist(site: Site) -> list[dict[str, Any]]:
    """The worklist rows with the number of drafts and who holds each study (three queries in all)."""
    index = site.index
    counts = {r[0]: int(r[1]) for r in index.reader().execute(
        "SELECT study_uid, COUNT(*) FROM drafts GROUP BY study_uid").fetchall()}
    held = claims.active_claims(index)
    out = []
    for row in worklist_rows(index):
        values = _plain(vars(row))  # flat rows: a shallow copy (asdict's deep copy cost ~1 s per 10,000)
        values.update(drafts=counts.get(row.study_uid, 0), claimed_by=held.get(row.study_uid), badge=row.badge,
                      modality=row.modalities, domain=row.in_domain)
        out.append(values)
    return out


def one_worklist_row(site: Site, study_uid: str) -> dict[str, Any] | None:
    row = worklist_row(site.index, study_uid)
    return _plain(asdict(row)) if row else None


_instance = instance_json


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, StudyState) else list(v) if isinstance(v, tuple) else v)
            for k, v in values.items()}


def _model(model: Any) -> dict[str, Any]:
    return {"name": model.name, "version": model.version, "model_id": model.model_id, "key": model.key,
            "current": model.current, "embedded": model.embedded, "how": model.how, "broken": model.broken,
            "metrics": model.metrics, "installed_at": model.installed_at.isoformat() if model.installed_at else None,
            **_prompting(model)}


def _prompting(model: Any) -> dict[str, Any]:
    """What a workstation's window needs of how the model is prompted (read from its model.json): whether it
    takes an indication, and where its impression comes from."""
    from engine.bundle import read_manifest
    from engine.errors import BundleError

    if model.broken is not None:
        return {}
    try:
        manifest = read_manifest(model.path)
    except (BundleError, OSError):
        return {}
    return {"takes_indication": manifest.prompting.takes_indication, "impression_from": manifest.impression_from}


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _publish(site: Site, event: dict[str, Any]) -> None:
    if site.hub is not None:
        site.hub.publish(event)


WINDOWS = ("header", "auto", "full", "lung", "mediastinum", "bone")


def render_png(path: Path, window: str) -> bytes:
    """The frame at the named window, by the viewer's own rules (engine.display)."""
    from engine.display import load_frame, presets, render
    from server.png import png_bytes

    frame = load_frame(path)
    if frame.colour:
        return png_bytes(frame.values)
    named = {p.name.lower(): p for p in presets(frame)}
    center, width = frame.default_window
    if window in ("auto", "automatic"):
        center, width = frame.auto_window
    elif window in ("full", "full range"):
        center, width = named["full range"].center, named["full range"].width
    elif window != "header":
        preset = named.get(window.lower())
        if preset is None:
            raise NotFound(f"no window {window!r} for this image (one of: header, auto, full, "
                           f"{', '.join(sorted(named))})")
        center, width = preset.center, preset.width
    return png_bytes(render(frame, center, width))


__all__ = ["Site", "UserError", "create_app", "render_png", "worklist"]
