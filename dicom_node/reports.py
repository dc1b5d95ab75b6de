"""Signed reports in the store's index, the outbox of their sends to PACS, and who is reading a study.

Signing (`sign_report`) is allowed from "stable", "drafting", "drafted" and "failed": a report can be
signed without any draft (drafting off or failed), and while a draft is still being generated (that draft
is then kept as stale). A study whose images are still arriving ("receiving") cannot be signed, and a
signed or sent study is not signed again (an addendum would be a report of its own). Saving the report,
moving the study to "signed" and queuing its send are one transaction.

Sending: when PACS acknowledges the SR, the outbox row becomes "sent" and the study "sent" in one
transaction (`record_send_success`). A failed attempt stays "pending" with its error, the number of
attempts and the time of the next one (`record_send_failure`): nothing signed is ever dropped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydicom.uid import generate_uid

from dicom_node.drafts import discard_working_draft
from dicom_node.errors import NodeError
from dicom_node.index import Index, StudyRow, StudyState

SIGNABLE = frozenset({StudyState.STABLE, StudyState.DRAFTING, StudyState.DRAFTED, StudyState.FAILED})
PENDING, SENT = "pending", "sent"


class SigningError(NodeError):
    """The report cannot be signed (empty section, nobody signing, study not in a signable state)."""


@dataclass(frozen=True)
class SignedReport:
    study_uid: str
    findings: str
    impression: str
    signed_by: str
    draft_id: int | None = None
    ai_share_kept: float = 0.0  # share of the model's text still in the signed report, 0..1
    edit_distance: int = 0  # characters changed between the AI text and the signed text
    detail: dict[str, Any] = field(default_factory=dict)
    signed_at: float = 0.0
    id: int = 0
    sr_series_uid: str = ""
    sr_sop_instance_uid: str = ""


@dataclass(frozen=True)
class ComparisonStudy:
    """The prior study a report was read against, as recorded with the report at signing (so that the text,
    the PDF and the SR name the same study however the priors in the store change later)."""

    study_uid: str
    study_date: str  # DICOM DA, "YYYYMMDD"
    modality: str = ""
    description: str = ""
    instances: tuple[tuple[str, str, str], ...] = ()  # (series, SOP class, SOP instance UID), frontal first
    impression: str = ""  # the prior report's impression, when it had one

    @classmethod
    def of_prior(cls, prior: Any) -> ComparisonStudy:
        """From a `dicom_node.priors.PriorStudy` (its instances are index rows, frontal first)."""
        return cls(prior.study_uid, prior.study_date, prior.modality, prior.description,
                   tuple((row.series_uid, row.sop_class_uid, row.sop_instance_uid) for row in prior.instances),
                   getattr(prior, "impression", "") or "")

    def as_detail(self) -> dict[str, Any]:
        return {"study_uid": self.study_uid, "study_date": self.study_date, "modality": self.modality,
                "description": self.description, "instances": [list(row) for row in self.instances],
                "impression": self.impression}

    @classmethod
    def from_detail(cls, value: dict[str, Any]) -> ComparisonStudy:
        return cls(str(value["study_uid"]), str(value.get("study_date", "")), str(value.get("modality", "")),
                   str(value.get("description", "")),
                   tuple((str(a), str(b), str(c)) for a, b, c in value.get("instances", ())),
                   str(value.get("impression", "")))

    @property
    def title(self) -> str:
        """"CR chest 2024-03-02": what the report's comparison line names."""
        return " ".join(part for part in (self.modality.strip(), self.description.strip(),
                                          format_date(self.study_date)) if part)


NO_PRIOR = ComparisonStudy("", "")  # what a report read without a prior was compared with: nothing


def comparison_detail(comparison: ComparisonStudy | None) -> dict[str, Any]:
    """The report detail recording what the report was compared with; None (or NO_PRIOR): no prior."""
    return {"comparison": comparison.as_detail() if comparison is not None and comparison.study_uid else None}


def comparison_of(report: SignedReport) -> ComparisonStudy | None:
    value = report.detail.get("comparison") if isinstance(report.detail, dict) else None
    return ComparisonStudy.from_detail(value) if isinstance(value, dict) and value.get("study_uid") else None


def comparison_line(report: SignedReport) -> str:
    """"Comparison: CR chest 2024-03-02." or "Comparison: none." (also for reports signed before priors)."""
    comparison = comparison_of(report)
    return f"Comparison: {comparison.title}." if comparison is not None else "Comparison: none."


@dataclass(frozen=True)
class OutboxItem:
    id: int
    report_id: int
    study_uid: str
    status: str
    attempts: int
    last_error: str
    next_attempt_at: float
    created_at: float
    sent_at: float | None
    destination: str

    @property
    def failing(self) -> bool:
        """Pending after at least one failed attempt."""
        return self.status == PENDING and self.attempts > 0


def sign_report(index: Index, report: SignedReport, *, queue_send: bool = False,
                now: float | None = None, also: Callable[[Any, SignedReport], None] | None = None) -> SignedReport:
    """Save `report`, move its study to "signed" and, with `queue_send`, queue the SR for PACS; one
    transaction, which `also` joins (the site server's audit row). Raises SigningError naming what is wrong."""
    _refuse_incomplete(report)
    now = time.time() if now is None else now
    signed = replace(report, signed_at=now, sr_series_uid=report.sr_series_uid or generate_uid(),
                     sr_sop_instance_uid=report.sr_sop_instance_uid or generate_uid())
    with index.transaction() as conn:
        row = conn.execute("SELECT state FROM studies WHERE study_uid = ?", (report.study_uid,)).fetchone()
        if row is None:
            raise SigningError(f"unknown study {report.study_uid}")
        current = StudyState(row[0])
        if current not in SIGNABLE:
            why = ("its images are still arriving" if current == StudyState.RECEIVING
                   else "it is already signed")
            raise SigningError(f"the study cannot be signed: {why} ({current.value})")
        signed = _insert_report(conn, signed)
        Index.set_state(conn, signed.study_uid, current, StudyState.SIGNED, f"signed by {signed.signed_by}", now)
        discard_working_draft(conn, signed.study_uid)
        if queue_send:
            _insert_send(conn, signed.id, signed.study_uid, now)
        if also is not None:
            also(conn, signed)
    return signed



def _refuse_incomplete(report: SignedReport) -> None:
    problems = [f"{name} is empty" for name in ("findings", "impression") if not getattr(report, name).strip()]
    if not report.signed_by.strip():
        problems.append("nobody is signing (set the radiologist's name in the settings)")
    if problems:
        raise SigningError("; ".join(problems))


def _insert_report(conn: Any, signed: SignedReport) -> SignedReport:
    """Insert a signed report with the images it was signed on; returns it with its row id."""
    signed = replace(signed, detail={**signed.detail, "images_signed": _images_now(conn, signed.study_uid)})
    report_id = conn.execute(
        "INSERT INTO reports(study_uid, signed_at, signed_by, findings, impression, draft_id, ai_share_kept, "
        "edit_distance, sr_series_uid, sr_sop_instance_uid, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
        (signed.study_uid, signed.signed_at, signed.signed_by, signed.findings, signed.impression,
         signed.draft_id, float(signed.ai_share_kept), int(signed.edit_distance), signed.sr_series_uid,
         signed.sr_sop_instance_uid, json.dumps(signed.detail, sort_keys=True)),
    ).fetchone()[0]
    return replace(signed, id=int(report_id))


AMENDABLE = frozenset({StudyState.SIGNED, StudyState.SENT})


def sign_amendment(index: Index, report: SignedReport, amends: SignedReport, addendum: str, *,
                   queue_send: bool = False, now: float | None = None) -> SignedReport:
    """Save `report` as an amendment of the signed report `amends` (an addendum or a correction): a new
    report of the same study, whose SR goes in the same series and refers to the one it replaces; the study
    is "signed" again until its SR is sent. One transaction."""
    if not addendum.strip():
        raise SigningError("say what the amendment changes (the addendum text)")
    if amends.study_uid != report.study_uid or not amends.id:
        raise SigningError("an amendment replaces a signed report of the same study")
    _refuse_incomplete(report)
    now = time.time() if now is None else now
    detail = {**report.detail, "amends": amends.id, "addendum": addendum.strip(),
              "revision": int(amends.detail.get("revision", 0)) + 1,
              "predecessor": {"study_uid": amends.study_uid, "series_uid": amends.sr_series_uid,
                              "sop_instance_uid": amends.sr_sop_instance_uid}}
    signed = replace(report, signed_at=now, detail=detail, sr_series_uid=amends.sr_series_uid,
                     sr_sop_instance_uid=report.sr_sop_instance_uid or generate_uid())
    with index.transaction() as conn:
        row = conn.execute("SELECT state FROM studies WHERE study_uid = ?", (report.study_uid,)).fetchone()
        if row is None or StudyState(row[0]) not in AMENDABLE:
            raise SigningError("only a signed or sent report can be amended")
        latest = conn.execute("SELECT MAX(id) FROM reports WHERE study_uid = ?", (report.study_uid,)).fetchone()[0]
        if latest != amends.id:
            raise SigningError(f"report {amends.id} was amended already: amend the latest one ({latest})")
        signed = _insert_report(conn, signed)
        Index.set_state(conn, signed.study_uid, StudyState(row[0]), StudyState.SIGNED,
                        f"amended by {signed.signed_by} (report {amends.id} replaced)", now)
        if queue_send:
            _insert_send(conn, signed.id, signed.study_uid, now)
    return signed


def reports_of(index: Index, study_uid: str) -> list[SignedReport]:
    """Every report of the study, oldest first: the original and its amendments (the history)."""
    rows = index.reader().execute("SELECT * FROM reports WHERE study_uid = ? ORDER BY id", (study_uid,)).fetchall()
    return [_report(row) for row in rows]


def latest_report(index: Index, study_uid: str) -> SignedReport | None:
    row = index.reader().execute(
        "SELECT * FROM reports WHERE study_uid = ? ORDER BY id DESC LIMIT 1", (study_uid,)).fetchone()
    return _report(row) if row else None


def report_by_id(index: Index, report_id: int) -> SignedReport | None:
    row = index.reader().execute("SELECT * FROM reports WHERE id = ?", (report_id,)).fetchone()
    return _report(row) if row else None


def _report(row: Any) -> SignedReport:
    values = dict(row)
    values["detail"] = json.loads(values["detail"])
    return SignedReport(**values)


# -- the outbox ------------------------------------------------------------------------------------
def queue_send(index: Index, report_id: int, *, now: float | None = None) -> OutboxItem:
    """Queue the SR of a signed report for sending; a send already pending is simply due again now."""
    now = time.time() if now is None else now
    with index.transaction() as conn:
        report = conn.execute("SELECT study_uid FROM reports WHERE id = ?", (report_id,)).fetchone()
        if report is None:
            raise KeyError(f"unknown report {report_id}")
        pending = conn.execute("SELECT id FROM outbox WHERE report_id = ? AND status = ?",
                               (report_id, PENDING)).fetchone()
        if pending:
            conn.execute("UPDATE outbox SET next_attempt_at = ? WHERE id = ?", (now, pending[0]))
            item_id = int(pending[0])
        else:
            item_id = _insert_send(conn, report_id, report[0], now)
    return outbox_item(index, item_id)  # type: ignore[return-value]


def _insert_send(conn: Any, report_id: int, study_uid: str, now: float) -> int:
    return int(conn.execute(
        "INSERT INTO outbox(report_id, study_uid, status, next_attempt_at, created_at) VALUES (?,?,?,?,?) "
        "RETURNING id", (report_id, study_uid, PENDING, now, now)).fetchone()[0])


def outbox_item(index: Index, item_id: int) -> OutboxItem | None:
    row = index.reader().execute("SELECT * FROM outbox WHERE id = ?", (item_id,)).fetchone()
    return OutboxItem(**dict(row)) if row else None


def outbox_of(index: Index, study_uid: str) -> list[OutboxItem]:
    rows = index.reader().execute("SELECT * FROM outbox WHERE study_uid = ? ORDER BY id", (study_uid,)).fetchall()
    return [OutboxItem(**dict(r)) for r in rows]


def due_sends(index: Index, now: float | None = None) -> list[OutboxItem]:
    now = time.time() if now is None else now
    rows = index.reader().execute(
        "SELECT * FROM outbox WHERE status = ? AND next_attempt_at <= ? ORDER BY next_attempt_at, id",
        (PENDING, now)).fetchall()
    return [OutboxItem(**dict(r)) for r in rows]


def next_send_at(index: Index) -> float | None:
    row = index.reader().execute("SELECT MIN(next_attempt_at) FROM outbox WHERE status = ?", (PENDING,)).fetchone()
    return row[0] if row and row[0] is not None else None


def pending_sends(index: Index) -> int:
    return int(index.reader().execute("SELECT COUNT(*) FROM outbox WHERE status = ?", (PENDING,)).fetchone()[0])


def record_send_success(index: Index, item_id: int, destination: str, *, now: float | None = None) -> None:
    """PACS acknowledged the SR: the send is done and the study "sent" (one transaction)."""
    now = time.time() if now is None else now
    with index.transaction() as conn:
        row = conn.execute("SELECT study_uid FROM outbox WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise KeyError(f"unknown outbox item {item_id}")
        conn.execute("UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = '', sent_at = ?, "
                     "destination = ? WHERE id = ?", (SENT, now, destination, item_id))
        state = conn.execute("SELECT state FROM studies WHERE study_uid = ?", (row[0],)).fetchone()
        if state and StudyState(state[0]) == StudyState.SIGNED:
            Index.set_state(conn, row[0], StudyState.SIGNED, StudyState.SENT, f"report sent to {destination}", now)


def record_send_failure(index: Index, item_id: int, error: str, next_attempt_at: float, destination: str) -> None:
    """A failed attempt: the send stays pending with its error and the time of the next try."""
    with index.transaction() as conn:
        conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
                     "destination = ? WHERE id = ? AND status = ?",
                     (error[:500], next_attempt_at, destination, item_id, PENDING))


# -- reading -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChangedInstance:
    """An image of a signed study received after its last report was signed."""

    sop_instance_uid: str
    kind: str  # "replaced" (same SOP Instance UID, new content) or "new"
    received_at: float
    instance_number: int | None = None


def _images_now(conn: Any, study_uid: str) -> dict[str, float]:
    """The study's instances as signed: SOP Instance UID -> when that content was received."""
    rows = conn.execute("SELECT sop_instance_uid, received_at FROM instances WHERE study_uid = ?", (study_uid,))
    return {row[0]: row[1] for row in rows}


def changed_after_signing(index: Index, study_uid: str) -> list[ChangedInstance]:
    """The instances that are not as the study's latest report was signed on: new ones, and replaced ones
    (same SOP Instance UID, content received since). Empty when unsigned or unchanged."""
    report = latest_report(index, study_uid)
    if report is None:
        return []
    seen = report.detail.get("images_signed")
    rows = index.reader().execute("SELECT sop_instance_uid, received_at, instance_number FROM instances "
                                  "WHERE study_uid = ? ORDER BY received_at", (study_uid,)).fetchall()
    changed = []
    for uid, received_at, number in rows:
        if seen is None:  # signed before images were recorded with the report: by time
            if received_at > report.signed_at:
                changed.append(ChangedInstance(uid, "new", received_at, number))
        elif uid not in seen:
            changed.append(ChangedInstance(uid, "new", received_at, number))
        elif abs(float(seen[uid]) - received_at) > 1e-6:
            changed.append(ChangedInstance(uid, "replaced", received_at, number))
    return changed


def close_readings(index: Index, by: str, *, keep: str = "") -> None:
    """`by` is no longer reading the studies they opened (but `keep`): "in progress" clears."""
    with index.transaction() as conn:
        conn.execute("DELETE FROM readings WHERE opened_by = ? AND study_uid != ?", (by, keep))


def mark_opened(index: Index, study_uid: str, by: str, *, now: float | None = None) -> None:
    """Record that `by` opened the study (the worklist shows it in progress); the study `by` had open
    before is no longer in progress."""
    now = time.time() if now is None else now
    with index.transaction() as conn:
        conn.execute("DELETE FROM readings WHERE opened_by = ? AND study_uid != ?", (by, study_uid))
        conn.execute("INSERT INTO readings(study_uid, opened_at, opened_by) VALUES (?,?,?) "
                     "ON CONFLICT(study_uid) DO UPDATE SET opened_at = excluded.opened_at, "
                     "opened_by = excluded.opened_by", (study_uid, now, by))


# -- export ------------------------------------------------------------------------------------------
def report_as_text(report: SignedReport, study: StudyRow) -> str:
    """The signed report as plain text (what the text export writes and the PDF shows)."""
    signed = time.strftime("%Y-%m-%d %H:%M", time.localtime(report.signed_at))
    fields = [_fields(("Patient", person_name(study.patient_name)), ("ID", study.patient_id)),
              _fields(("Accession", study.accession_number), ("Study date", format_date(study.study_date))),
              _fields(("Study", study.study_description))]
    amended = ([f"AMENDED REPORT (revision {report.detail.get('revision', 1)}): "
                f"{report.detail.get('addendum', '')}".rstrip(), ""] if report.detail.get("amends") else [])
    lines = [
        "RADIOLOGY REPORT",
        "",
        *(line for line in fields if line),  # an empty field is left out, not printed as "Accession:"
        "",
        *amended,
        comparison_line(report),
        "",
        "FINDINGS",
        report.findings.strip(),
        "",
        "IMPRESSION",
        report.impression.strip(),
        "",
        f"Signed by {person_name(report.signed_by)} on {signed}.",
        "Drafted with AI assistance (RadDraft); reviewed and verified by the signing radiologist.",
    ]
    return "\n".join(lines) + "\n"


def _fields(*pairs: tuple[str, str]) -> str:
    return "    ".join(f"{label}: {value.strip()}" for label, value in pairs if value and value.strip())


def person_name(value: str) -> str:
    """A DICOM person name "Family^Given^Middle^Prefix^Suffix" as "Family, Given Middle"; other text as is."""
    if "^" not in value:
        return value.strip()
    parts = [p.strip() for p in value.split("=")[0].split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    rest = " ".join(p for p in (prefix, given, middle, suffix) if p)
    return f"{family}, {rest}" if family and rest else family or rest


def format_date(value: str) -> str:
    """DICOM DA "YYYYMMDD" as "YYYY-MM-DD" (other values unchanged)."""
    value = value.strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value
