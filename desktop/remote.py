"""`raddraft app --server URL`: the workstation surface the main window binds to, over the site server's API
instead of a local store, node and model (docs/site-api.md).

`SiteWorkstation` answers the same calls as `raddraft.workstation.Workstation` (worklist, status,
open_study, draft_section, sign_checks, sign, send, report_text, models_overview, ...) and publishes the
server's event stream into the same topics the window's `EventBridge` subscribes to. Opening a study claims
it for the logged-in user (renewed every `claim_renew_s`, released when another study is opened or the app
closes); a study another radiologist holds raises `StudyClaimed` ("being read by X"). Images come by WADO-RS
into `ImageCache`; the viewer reads the cached files as it reads the store's, the study's priors too
(`loaded_priors`: the server's priors with their images, hung and shown as the standalone app hangs its
store's). Every method may touch the network: the window calls them from worker threads. This module never
imports `server` (HTTP only).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from desktop.hanging import LoadedPrior, PriorsOfStudy
from desktop.site_client import ImageCache, SiteClient, SiteError, SiteSettings
from dicom_node.drafts import DraftRecord, WorkingDraft
from dicom_node.events import InstanceStored, NodeEvents, StudyStable
from dicom_node.index import InstanceRow, SeriesRow, StudyRow, StudyState
from dicom_node.outbox import OutboxEvents, SendAttempt
from dicom_node.priors import PriorsOutcome, PriorStudy
from dicom_node.reports import ComparisonStudy, OutboxItem, SignedReport, SigningError
from dicom_node.worklist import WorklistRow
from engine.events import DraftEvents, DraftFailed, DraftFinished, DraftStarted
from engine.findings.checks import SignReview, check_report, review_problems
from engine.findings.critical import find_critical
from engine.provenance import SectionText, signing_metrics, validate_for_signing

log = logging.getLogger(__name__)
SECTIONS = ("findings", "impression")
WORKERS_EVERY_S = 10.0
WORKLIST_AT_LEAST_S = 30.0  # the worklist is read this often even without events (a stream that went quiet)
WORKER_GONE_S = 60.0  # a worker not heard from for this long is not counted as drafting


# -- what the window reads, as the standalone workstation's classes of the same shape -----------------------
@dataclass(frozen=True)
class SiteStatus:
    node: str
    listening: bool
    studies_today: int
    model: str
    provider: str
    queue_length: int
    outbox_pending: int
    pacs: str


@dataclass(frozen=True)
class RemoteStudy:
    study: StudyRow
    instances: tuple[InstanceRow, ...]
    paths: tuple[Path, ...]
    draft: DraftRecord | None
    report: SignedReport | None
    sends: tuple[OutboxItem, ...]
    series: tuple[SeriesRow, ...] = ()


@dataclass(frozen=True)
class SiteSignChecks:
    problems: tuple
    critical: tuple


@dataclass(frozen=True)
class ServerModel:
    """The model the site's workers draft with, as the window needs it (on-demand drafts run on the server)."""

    model_id: str
    variant: str = ""
    provider: str = ""
    takes_indication: bool = False
    impression_from_findings: bool = False  # model.json impression_from = "findings"


@dataclass(frozen=True)
class SiteModel:
    """A model of the server's registry, with the attributes the Models page reads (engine.registry's
    InstalledModel has the same)."""

    version: str
    name: str
    installed_at: Any
    current: bool
    embedded: bool
    metrics: dict
    record: dict | None
    broken: str | None
    how: str
    key: str

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    def section_f1(self, section: str) -> float | None:
        values = self.metrics.get(section)
        value = values.get("micro_f1") if isinstance(values, dict) else None
        return float(value) if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class SiteModelsOverview:
    models: tuple
    running: Any
    running_id: str
    running_path: Path | None
    pinned: Path | None
    card: str
    signed_total: int
    signed_new: int
    store_root: Path
    work_dir: Path
    problem: str | None = None


class _Outbox:
    """The window subscribes to `workstation.outbox.events`: here the server's sends arrive there."""

    def __init__(self) -> None:
        self.events = OutboxEvents()


# -- JSON -> the index's dataclasses ------------------------------------------------------------------------
_EMPTY = {"str": "", "int": 0, "float": 0.0, "bool": False}


def _empty_for(annotation: str) -> Any:
    if "None" in annotation:
        return None
    if annotation.startswith(("dict", "Mapping")):
        return {}
    if annotation.startswith("tuple"):
        return ()
    if annotation == "StudyState":
        return StudyState.RECEIVING
    return _EMPTY.get(annotation, "")


def from_json(cls, data: Mapping[str, Any], **values: Any):
    """`cls` from an API object: its known keys, the given `values`, and empty values for what is missing."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = values[f.name]
        elif f.name in data and data[f.name] is not None:
            value = data[f.name]
            kwargs[f.name] = StudyState(value) if f.type == "StudyState" else (
                tuple(value) if str(f.type).startswith("tuple") and isinstance(value, list) else value)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = _empty_for(str(f.type))
    return cls(**kwargs)


def _in_domain(domain: Any) -> bool | None:
    if isinstance(domain, dict):
        domain = domain.get("in_domain")
    return domain if isinstance(domain, bool) else None


def worklist_row(data: Mapping[str, Any], now: float) -> WorklistRow:
    """One row of GET /api/studies: a claim shows as the study opened by its holder ("being read by X")."""
    claimed_by = data.get("claimed_by") or ""
    state = str(data.get("state", StudyState.RECEIVING.value))
    drafts = data.get("drafts", 0)
    return from_json(
        WorklistRow, data, state=StudyState(state),
        modalities=str(data.get("modalities") or data.get("modality") or ""),
        has_draft=bool(drafts) if not isinstance(drafts, list) else bool(len(drafts)),
        opened_at=now if claimed_by else None, opened_by=claimed_by,
        send_status=str(data.get("send_status") or ""),
        critical=tuple(data.get("critical") or ()), in_domain=_in_domain(data.get("domain")))


def section_body(section: SectionText) -> dict[str, Any]:
    """A section as the server keeps its provenance: runs of (origin, text), and the model text it started from."""
    text, origins = section.text, section.origins()
    return {"text": text, "runs": [[span.origin.value, text[span.start:span.end]] for span in section.spans()]
            if origins else [], "model_text": section.model_text, "source": section.source}


def review_body(review: SignReview | None) -> dict[str, Any]:
    if review is None:
        return {}
    body: dict[str, Any] = {"override_reason": review.override_reason}
    if review.communication is not None:
        body["communication"] = dataclasses.asdict(review.communication)
    return body


# -- the workstation over the site server -------------------------------------------------------------------
class SiteWorkstation:
    def __init__(self, client: SiteClient, config, problems: list[str] | None = None) -> None:
        """`client`: logged in. `config`: the app's configuration, its reading.radiologist the logged-in user."""
        self.client, self.config = client, config
        self.settings: SiteSettings = client.settings
        self.cache = ImageCache(self.settings.cache_dir)
        self.problems: list[str] = list(problems or [])
        self.node_events, self.draft_events, self.outbox = NodeEvents(), DraftEvents(), _Outbox()
        self.reading_data = self  # the window's ReadingData (desktop.data_source): the server's
        self.model: ServerModel | None = None
        self._claimed: str | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_rows: list[WorklistRow] = []
        self._report_studies: dict[int, str] = {}  # reports seen here -> their study (send, export)
        self._workers, self._workers_read_at = "", float("-inf")
        self._stale, self._listed_at = threading.Event(), float("-inf")  # the worklist: changed since read?

    @property
    def user(self) -> str:
        return self.client.session.user_name if self.client.session else ""

    @property
    def role(self) -> str:
        return self.client.session.role if self.client.session else ""

    def start(self) -> SiteWorkstation:
        """Read the server's current model, then follow its events, keep the open study's claim and prune the
        image cache."""
        self.model = self._current_model()
        for target, name in ((self._follow_events, "site-events"), (self._renew_claims, "site-claims"),
                             (self._prune_cache, "site-cache")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopped.set()
        try:
            self.close_readings()
        except SiteError as error:
            log.warning("could not release the claim: %s", error)
        self.client.close()  # ends the event stream's read
        for thread in self._threads:
            thread.join(timeout=5)

    # -- events and claims (own threads) --------------------------------------------------------------
    def _follow_events(self) -> None:
        while not self._stopped.is_set():
            try:
                for name, data in self.client.events("/api/events", on_open=self._stale.set):
                    if self._stopped.is_set():
                        return
                    try:
                        self._publish(name, data if isinstance(data, dict) else {})
                    except (TypeError, ValueError) as error:  # an event of a newer server: the rest still count
                        log.warning("could not follow the event %s %r: %s", name, data, error)
            except SiteError as error:
                if self._stopped.is_set():
                    return
                log.warning("%s; reconnecting", error)
            self._stopped.wait(self.settings.reconnect_s)
            self._stale.set()  # changes missed meanwhile: read the list
            self.node_events.study_stable.publish(StudyStable("", 0))

    def _publish(self, name: str, event: dict[str, Any]) -> None:
        """A server event into the topics of the standalone workstation (they refresh the worklist, stream
        into or reload the open study)."""
        uid, state = str(event.get("study_uid", "")), str(event.get("state", ""))
        if not uid:
            return
        self._stale.set()
        if state == StudyState.DRAFTING.value:
            self.draft_events.started.publish(DraftStarted(uid, str(event.get("model", ""))))
        elif state == StudyState.DRAFTED.value:
            self.draft_events.finished.publish(DraftFinished(uid, int(event.get("draft_id") or 0),
                                                             str(event.get("model", "")), 0.0, False))
        elif state == StudyState.FAILED.value:
            self.draft_events.failed.publish(DraftFailed(uid, str(event.get("reason", ""))))
        elif state == StudyState.SENT.value:
            self.outbox.events.sent.publish(SendAttempt(0, 0, uid, True, str(event.get("destination") or "PACS")))
        elif state == StudyState.RECEIVING.value:
            self.node_events.instance_stored.publish(InstanceStored(uid, "", "", "stored"))
        else:  # claims, signing, anything else: the worklist is read again
            self.node_events.study_stable.publish(StudyStable(uid, int(event.get("num_instances") or 0)))

    def _prune_cache(self) -> None:
        try:
            freed = self.cache.prune(self.settings.cache_max_bytes)
        except OSError as error:
            log.warning("could not prune the image cache %s: %s", self.cache.root, error)
            return
        if freed:
            log.info("image cache: %.1f MB of the least recently read images removed", freed / 1e6)

    def _renew_claims(self) -> None:
        while not self._stopped.wait(self.settings.claim_renew_s):
            uid = self._claimed
            if uid is None:
                continue
            try:
                self.client.request("POST", f"/api/studies/{uid}/claim", study_uid=uid)
            except SiteError as error:
                log.warning("could not renew the claim of %s: %s", uid, error)

    def _claim(self, study_uid: str) -> None:
        """Claim `study_uid` (StudyClaimed when another holds it), then let the previous one go."""
        self.client.request("POST", f"/api/studies/{study_uid}/claim", study_uid=study_uid)
        with self._lock:
            previous, self._claimed = self._claimed, study_uid
        if previous is not None and previous != study_uid:
            self._release(previous)

    def _release(self, study_uid: str) -> None:
        try:
            self.client.request("DELETE", f"/api/studies/{study_uid}/claim", study_uid=study_uid)
        except SiteError as error:  # the lease ends it anyway
            log.warning("could not release the claim of %s: %s", study_uid, error)

    # -- reading ---------------------------------------------------------------------------------------
    def worklist(self) -> list[WorklistRow]:
        """The site's worklist. It is read from the server only when an event said something changed (or
        `WORKLIST_AT_LEAST_S` passed): the window also asks every 3 s, which for a thin workstation costs
        nothing, and twenty apps do not read 10,000 studies each every 3 s."""
        now = time.monotonic()
        if not self._stale.is_set() and now - self._listed_at < WORKLIST_AT_LEAST_S:
            return list(self._last_rows)
        self._stale.clear()  # before reading: a change during the read marks the list stale again
        wall = time.time()
        rows = [worklist_row(item, wall) for item in self.client.json("GET", "/api/studies")]
        self._last_rows, self._listed_at = rows, now
        return rows

    def status(self) -> SiteStatus:
        """Who is logged in where, the studies waiting for a draft, and the workers drafting them (as the
        server last heard from them)."""
        rows = self._last_rows
        today = time.mktime(time.localtime()[:3] + (0, 0, 0, 0, 0, -1))
        waiting = sum(row.state in (StudyState.STABLE, StudyState.DRAFTING) for row in rows)
        model = self.model
        return SiteStatus(
            node=f"{self.user} ({self.role}) on {self.settings.url}", listening=True,
            studies_today=sum(row.last_received >= today for row in rows),
            model=f"{model.model_id}" if model else "no model", provider=self._workers_text(),
            queue_length=waiting, outbox_pending=sum(row.send_status == "pending" for row in rows),
            pacs="by the site server")

    def _workers_text(self) -> str:
        """E.g. "2 workers (cuda, cpu), 14.0 studies/min"; read at most every `WORKERS_EVERY_S` (the status
        bar asks every second)."""
        now = time.monotonic()
        if now - self._workers_read_at >= WORKERS_EVERY_S:
            self._workers_read_at = now
            alive = [w for w in self.client.json("GET", "/api/workers") or ()
                     if float(w.get("seconds_since_heartbeat") or 0) < WORKER_GONE_S]
            providers = ", ".join(sorted({str(w.get("provider") or "?") for w in alive}))
            rate = sum(float(w.get("studies_per_minute") or 0) for w in alive)
            self._workers = (f"{len(alive)} worker{'s' if len(alive) != 1 else ''}"
                             + (f" ({providers}), {rate:.1f} studies/min" if alive else ""))
        return self._workers

    def open_study(self, study_uid: str, mark: bool = True) -> RemoteStudy:
        """The study, its images (cached locally), latest draft and report; with `mark`, claimed."""
        if mark:
            self._claim(study_uid)
        detail = self.client.json("GET", f"/api/studies/{study_uid}", study_uid=study_uid)
        body = detail.get("study", detail)
        study = from_json(StudyRow, body, state=StudyState(str(body.get("state", "receiving"))),
                          modalities=str(body.get("modalities") or body.get("modality") or ""))
        instances = tuple(from_json(InstanceRow, {**item, "study_uid": study_uid})
                          for item in detail.get("instances", ()))
        series = tuple(from_json(SeriesRow, {**item, "study_uid": study_uid}) for item in detail.get("series", ()))
        paths = self._fetch_all(study_uid, instances)
        report = self._report(study_uid, detail)
        if report is not None:
            self._report_studies[report.id] = study_uid
        return RemoteStudy(study, instances, paths, self._latest_draft(study_uid, detail), report,
                           self._sends(detail), series)

    def _fetch_all(self, study_uid: str, instances: tuple[InstanceRow, ...]) -> tuple[Path, ...]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return tuple(pool.map(lambda row: self.cache.fetch(self.client, study_uid, row.series_uid,
                                                               row.sop_instance_uid), instances))

    # -- priors (GET /api/studies/{study}/priors; images by WADO-RS into the cache) ----------------------
    def loaded_priors(self, study_uid: str) -> PriorsOfStudy:
        """The study's priors, newest first, with their images cached here, and why there are none (what
        `desktop.hanging.load_priors` gives the viewer from a store of its own)."""
        body = self.client.json("GET", f"/api/studies/{study_uid}/priors", study_uid=study_uid) or {}
        loaded = tuple(self._loaded_prior(item) for item in body.get("priors", ()))
        return PriorsOfStudy(study_uid, loaded, str(body.get("state", "")), str(body.get("reason", "")))

    def _loaded_prior(self, item: Mapping[str, Any]) -> LoadedPrior:
        uid = str(item["study_uid"])
        instances = tuple(from_json(InstanceRow, {**row, "study_uid": uid}) for row in item.get("instances", ()))
        series = tuple(from_json(SeriesRow, {**row, "study_uid": uid}) for row in item.get("series", ()))
        prior = PriorStudy(uid, str(item.get("study_date") or ""), str(item.get("modality") or ""),
                           str(item.get("description") or ""), list(instances), str(item.get("findings") or ""),
                           str(item.get("impression") or ""), str(item.get("report_source") or ""))
        return LoadedPrior(prior, self._fetch_all(uid, instances), series)

    def look_for_priors(self, study_uid: str) -> PriorsOutcome:
        """Ask the server to look up and retrieve the study's priors again now (its PACS, its timeouts)."""
        body = self.client.json("POST", f"/api/studies/{study_uid}/priors/lookup", study_uid=study_uid) or {}
        return PriorsOutcome(study_uid, str(body.get("state", "")), str(body.get("reason", "")),
                             tuple(str(p["study_uid"]) for p in body.get("priors", ())))

    def _has_prior(self, study_uid: str) -> bool:
        body = self.client.json("GET", f"/api/studies/{study_uid}/priors", study_uid=study_uid) or {}
        return bool(body.get("priors"))

    def _latest_draft(self, study_uid: str, detail: Mapping[str, Any]) -> DraftRecord | None:
        drafts = detail.get("drafts")
        if not isinstance(drafts, list):
            drafts = self.client.json("GET", f"/api/studies/{study_uid}/drafts", study_uid=study_uid)
        fresh = [d for d in drafts if not d.get("stale")]
        if not fresh:
            return None
        latest = max(fresh, key=lambda d: (d.get("created_at") or 0, d.get("id") or 0))
        return from_json(DraftRecord, latest, study_uid=study_uid, detail=dict(latest.get("detail") or {}))

    def _report(self, study_uid: str, detail: Mapping[str, Any]) -> SignedReport | None:
        reports = detail.get("reports") or ()
        report = max(reports, key=lambda r: r.get("id") or 0) if reports else None
        return from_json(SignedReport, report, study_uid=study_uid, detail=dict(report.get("detail") or {})) \
            if report else None

    def _sends(self, detail: Mapping[str, Any]) -> tuple[OutboxItem, ...]:
        return tuple(from_json(OutboxItem, item) for item in detail.get("sends", ()))

    # -- ReadingData (desktop.data_source) ---------------------------------------------------------------
    def working_draft(self, study_uid: str) -> WorkingDraft | None:
        body = self.client.json("GET", f"/api/studies/{study_uid}/working-draft", study_uid=study_uid)
        if not body or not body.get("sections"):
            return None
        return WorkingDraft(study_uid, dict(body["sections"]), float(body.get("saved_at") or 0.0),
                            str(body.get("saved_by") or ""))

    def save_working_draft(self, study_uid: str, sections: dict[str, Any]) -> WorkingDraft | None:
        body = self.client.json("PUT", f"/api/studies/{study_uid}/working-draft", study_uid=study_uid,
                                json={"sections": sections})
        return WorkingDraft(study_uid, sections, float((body or {}).get("saved_at") or time.time()), self.user)

    def changed_after_signing(self, study_uid: str) -> list:
        return []  # the server does not list them (yet): nothing is shown as changed

    def close_readings(self) -> None:
        with self._lock:
            claimed, self._claimed = self._claimed, None
        if claimed is not None:
            self._release(claimed)

    def may_release_claims(self) -> bool:
        return self.role == "admin"

    def release_claim(self, study_uid: str) -> None:
        """An admin releases another reader's claim (the server audits it)."""
        self.client.request("DELETE", f"/api/studies/{study_uid}/claim", study_uid=study_uid)

    def training_unavailable(self) -> str | None:
        return "fine-tuning runs on the site server (raddraft finetune there), not on a reading workstation"

    # -- drafting on demand (by the server) --------------------------------------------------------------
    def draft_section(self, study_uid: str, section: str, findings: str | None = None,
                      on_piece: Callable[[str], None] | None = None, indication: str | None = None) -> str:
        """Ask the server to generate one section, streaming its text through `on_piece`; return the text."""
        if section not in SECTIONS:
            raise ValueError(f"unknown section {section!r}")
        body = {"section": section, **({"findings": findings} if findings is not None else {}),
                **({"indication": indication} if indication else {})}
        pieces: list[str] = []
        for name, data in self.client.events(f"/api/studies/{study_uid}/generate", json_body=body, method="POST"):
            if name in ("error", "failed"):
                raise SiteError(f"the server could not draft the {section}: {_text_of(data)}")
            if name in ("result", "done", "end"):
                return _text_of(data) or "".join(pieces)
            piece = _text_of(data)
            pieces.append(piece)
            if on_piece is not None:
                on_piece(piece)
        return "".join(pieces)

    # -- signing and sending ---------------------------------------------------------------------------
    def sign_checks(self, study_uid: str, findings: str, impression: str) -> SiteSignChecks:
        """The checks before signing, run here on the text (the same rules the server applies again: a stated
        comparison is a claim only when the study has no prior)."""
        critical_names = self.config.engine.critical_findings
        problems = check_report(findings, impression, has_prior=self._has_prior(study_uid), critical=critical_names)
        critical = find_critical({"findings": findings, "impression": impression}, critical_names)
        return SiteSignChecks(tuple(problems), tuple(critical))

    def sign(self, study_uid: str, sections: Mapping[str, SectionText], draft_id: int | None,
             review: SignReview | None = None, *, comparison: ComparisonStudy | None = None) -> SignedReport:
        """Sign as the logged-in user: the text, its provenance and the answers of the sign dialog.
        `comparison`: the prior read beside it (NO_PRIOR: none); left None, the server takes the study's
        newest prior, the one the viewer hangs first."""
        sections = {name: copy.deepcopy(sections[name]) for name in SECTIONS}
        problems = validate_for_signing(sections)
        checks = self.sign_checks(study_uid, sections["findings"].text, sections["impression"].text)
        problems += review_problems(list(checks.problems), list(checks.critical), review)
        if problems:
            raise SigningError(" ".join(problems))
        metrics = signing_metrics(sections)
        body = {"findings": sections["findings"].text.strip(), "impression": sections["impression"].text.strip(),
                "draft_id": draft_id, "provenance": {name: section_body(s) for name, s in sections.items()},
                "ai_share_kept": round(metrics.ai_share_kept, 4), "edit_distance": metrics.edit_distance,
                "review": review_body(review),
                **({"comparison": comparison.study_uid or None} if comparison is not None else {})}
        answer = self.client.json("POST", f"/api/studies/{study_uid}/sign", study_uid=study_uid, json=body)
        report = answer.get("report", answer)
        signed = from_json(SignedReport, report, study_uid=study_uid, detail=dict(report.get("detail") or {}))
        self._report_studies[signed.id] = study_uid
        return signed

    def amend(self, study_uid: str, sections, amends_id: int, addendum: str, review=None, *,
              comparison: ComparisonStudy | None = None) -> SignedReport:
        raise SigningError("amendments are signed on the site server's standalone tools for now")

    def send(self, report_id: int) -> OutboxItem:
        uid = self._study_of_report(report_id)
        item = self.client.json("POST", f"/api/studies/{uid}/send", study_uid=uid) or {}
        return from_json(OutboxItem, item, report_id=report_id, study_uid=uid)

    def _study_of_report(self, report_id: int) -> str:
        try:
            return self._report_studies[report_id]
        except KeyError:
            raise SigningError(f"report {report_id} is not of a study opened here") from None

    def report_text(self, report_id: int) -> str:
        uid = self._study_of_report(report_id)
        return self.client.request("GET", f"/api/studies/{uid}/report.txt", study_uid=uid).text

    def export_text(self, report_id: int, path: Path) -> Path:
        from dicom_node.durable import write_text_atomically

        write_text_atomically(Path(path), self.report_text(report_id))
        return Path(path)

    def export_sr(self, report_id: int, path: Path) -> Path:
        raise SiteError("the SR is kept and sent by the site server; export it there")

    # -- models (read-only for a radiologist) ------------------------------------------------------------
    def _registry(self) -> list[dict[str, Any]]:
        body = self.client.json("GET", "/api/models")
        return list(body.get("models", ())) if isinstance(body, dict) else list(body or ())

    def _current_model(self) -> ServerModel | None:
        try:
            current = next((m for m in self._registry() if m.get("current")), None)
        except SiteError as error:
            self.problems.append(f"Cannot read the site's models: {error}")
            return None
        if current is None:
            return None
        return ServerModel(str(current.get("model_id") or f"{current.get('name')}@{current.get('version')}"),
                           str(current.get("variant", "")), str(current.get("provider", "")),
                           bool(current.get("takes_indication", False)),
                           current.get("impression_from") == "findings")

    def models_overview(self) -> SiteModelsOverview:
        models = tuple(_site_model(m) for m in self._registry())
        running = next((m for m in models if m.current), None)
        return SiteModelsOverview(
            models=models, running=running, running_id=running.model_id if running else "no model",
            running_path=None, pinned=None, card="", signed_total=0, signed_new=0,
            store_root=self.settings.cache_dir, work_dir=self.settings.cache_dir,
            problem=None if self.role == "admin" else "Models are chosen by an admin of the site server.")

    def use_model(self, version: str):
        """Admins only (the server answers 403 to others, and audits the switch)."""
        self.client.json("POST", f"/api/models/{version}/use")
        self.model = self._current_model()
        return next(m for m in self.models_overview().models if m.key == version)

    def install_model(self, bundle_dir: Path, record: Mapping[str, Any], use: bool = True):
        raise SiteError("models are installed on the site server")

    # -- settings live on the server -----------------------------------------------------------------------
    def check_settings(self, changes: Mapping[str, Any]) -> None:
        raise SiteError("this workstation reads from the site server; its settings are the server's (admin)")

    def verify_settings(self, changes: Mapping[str, Any]) -> list[str]:
        return []

    def apply_settings(self, changes: Mapping[str, Any]) -> list[str]:
        self.check_settings(changes)
        return []


def _text_of(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("text") or data.get("token") or data.get("piece") or data.get("detail") or "")
    return str(data or "")


def _site_model(data: Mapping[str, Any]) -> SiteModel:
    version, name = str(data.get("version", "")), str(data.get("name", ""))
    installed = data.get("installed_at")
    return SiteModel(version=version, name=name, current=bool(data.get("current")),
                     installed_at=datetime.fromisoformat(installed) if isinstance(installed, str) else None,
                     embedded=bool(data.get("embedded")), metrics=dict(data.get("metrics") or {}),
                     record=data.get("record"), broken=data.get("broken"),
                     how=str(data.get("how") or ("embedded" if data.get("embedded") else "installed")),
                     key=str(data.get("key") or version))
