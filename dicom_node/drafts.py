"""Drafts kept in the store's index: the text a model wrote for a study, with where it came from.

Saving a draft and moving its study from "drafting" to "drafted" is one transaction, so a crash never
leaves a drafted study without its draft, nor a draft whose study still waits in the queue.

The radiologist's unsigned text is kept apart (`save_working_draft`): one row per study, replaced in one
transaction on every autosave, so a crash leaves the last saved text or the one before, never half of it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from dicom_node.index import Index, StudyState


@dataclass(frozen=True)
class DraftRecord:
    study_uid: str
    model: str
    provider: str
    findings: str
    impression: str
    detail: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    id: int = 0
    stale: bool = False


def save_draft(index: Index, draft: DraftRecord, *, now: float | None = None) -> DraftRecord:
    """Store `draft`; if its study is still "drafting", move it to "drafted" in the same transaction.

    A study that received new images meanwhile is back in "receiving": the draft is kept but marked
    stale, and the study will be drafted again once it is stable.
    """
    now = time.time() if now is None else now
    with index.transaction() as conn:
        return insert_draft(conn, draft, now)


def insert_draft(conn: Any, draft: DraftRecord, now: float) -> DraftRecord:
    """`save_draft` inside a transaction the caller holds (a worker's draft is saved as its lease ends)."""
    row = conn.execute("SELECT state FROM studies WHERE study_uid = ?", (draft.study_uid,)).fetchone()
    if row is None:
        raise KeyError(f"unknown study {draft.study_uid}")
    current = StudyState(row[0])
    stale = current != StudyState.DRAFTING
    draft_id = conn.execute(
        "INSERT INTO drafts(study_uid, created_at, model, provider, findings, impression, detail, stale) "
        "VALUES (?,?,?,?,?,?,?,?) RETURNING id",
        (draft.study_uid, now, draft.model, draft.provider, draft.findings, draft.impression,
         json.dumps(draft.detail, sort_keys=True), int(stale)),
    ).fetchone()[0]
    if not stale:
        Index.set_state(conn, draft.study_uid, current, StudyState.DRAFTED, f"drafted by {draft.model}", now)
    return DraftRecord(draft.study_uid, draft.model, draft.provider, draft.findings, draft.impression,
                       draft.detail, now, int(draft_id), stale)


def latest_draft(index: Index, study_uid: str, *, include_stale: bool = False) -> DraftRecord | None:
    sql = "SELECT * FROM drafts WHERE study_uid = ?" + ("" if include_stale else " AND stale = 0")
    row = index.reader().execute(sql + " ORDER BY id DESC LIMIT 1", (study_uid,)).fetchone()
    return _record(row) if row else None


def drafts_of(index: Index, study_uid: str) -> list[DraftRecord]:
    rows = index.reader().execute("SELECT * FROM drafts WHERE study_uid = ? ORDER BY id", (study_uid,)).fetchall()
    return [_record(row) for row in rows]


def _record(row: Any) -> DraftRecord:
    values = dict(row)
    return DraftRecord(study_uid=values["study_uid"], model=values["model"], provider=values["provider"],
                       findings=values["findings"], impression=values["impression"],
                       detail=json.loads(values["detail"]), created_at=values["created_at"], id=values["id"],
                       stale=bool(values["stale"]))


@dataclass(frozen=True)
class WorkingDraft:
    """The unsigned text of a study as the desktop last autosaved it (sections with their origins)."""

    study_uid: str
    sections: dict[str, Any]
    saved_at: float
    saved_by: str = ""


def save_working_draft(index: Index, study_uid: str, sections: dict[str, Any], *, saved_by: str = "",
                       now: float | None = None) -> WorkingDraft | None:
    """Keep `sections` as the study's unsigned text (replacing the previous save), in one transaction.
    None when the study is signed meanwhile (a save that arrives after the signing is not kept)."""
    now = time.time() if now is None else now
    with index.transaction() as conn:
        row = conn.execute("SELECT state FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        if row is None:
            raise KeyError(f"unknown study {study_uid}")
        if StudyState(row[0]) in (StudyState.SIGNED, StudyState.SENT):
            return None
        conn.execute(
            "INSERT INTO working_drafts(study_uid, saved_at, saved_by, sections) VALUES (?,?,?,?) "
            "ON CONFLICT(study_uid) DO UPDATE SET saved_at = excluded.saved_at, saved_by = excluded.saved_by, "
            "sections = excluded.sections", (study_uid, now, saved_by, json.dumps(sections, sort_keys=True)))
    return WorkingDraft(study_uid, sections, now, saved_by)


def working_draft(index: Index, study_uid: str) -> WorkingDraft | None:
    row = index.reader().execute("SELECT * FROM working_drafts WHERE study_uid = ?", (study_uid,)).fetchone()
    if row is None:
        return None
    return WorkingDraft(row["study_uid"], json.loads(row["sections"]), row["saved_at"], row["saved_by"])


def discard_working_draft(conn: Any, study_uid: str) -> None:
    """Inside a transaction (signing): the unsigned text is now the signed report."""
    conn.execute("DELETE FROM working_drafts WHERE study_uid = ?", (study_uid,))
