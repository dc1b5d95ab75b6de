"""Study claims (a radiologist reading a study) and drafting leases (a worker drafting one).

A claim or a lease has an expiry; an expired one is free to take. Workers take jobs with
`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL, so two workers asking at once get different studies and
neither waits for the other. A draft is written once: completing a lease removes it, in the transaction
that saves the draft, and a lease that was lost (taken again after expiring) answers Conflict.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from dicom_node.drafts import DraftRecord, insert_draft
from dicom_node.index import Index, StudyState
from server.errors import Conflict, NotFound

CLAIMABLE_FOR_DRAFTING = (StudyState.STABLE, StudyState.DRAFTING)


@dataclass(frozen=True)
class StudyClaim:
    study_uid: str
    user_name: str
    claimed_at: float
    expires_at: float


def claim_study(index: Index, study_uid: str, user_name: str, lease_s: float, *,
                now: float | None = None) -> StudyClaim:
    """Claim (or renew) the study for `user_name`; Conflict naming the holder when another holds it."""
    now = time.time() if now is None else now
    with index.transaction() as conn:
        if conn.execute("SELECT 1 FROM studies WHERE study_uid = ?", (study_uid,)).fetchone() is None:
            raise NotFound(f"unknown study {study_uid}")
        held = conn.execute("SELECT user_name, claimed_at, expires_at FROM study_claims WHERE study_uid = ?",
                            (study_uid,)).fetchone()
        if held and held["user_name"] != user_name and held["expires_at"] >= now:
            raise Conflict(f"being read by {held['user_name']}", claimed_by=held["user_name"])
        claimed_at = held["claimed_at"] if held and held["user_name"] == user_name else now
        # One study at a time per radiologist: opening another releases the one before.
        conn.execute("DELETE FROM study_claims WHERE user_name = ? AND study_uid != ?", (user_name, study_uid))
        conn.execute("INSERT INTO study_claims(study_uid, user_name, claimed_at, expires_at) VALUES (?,?,?,?) "
                     "ON CONFLICT(study_uid) DO UPDATE SET user_name = excluded.user_name, "
                     "claimed_at = excluded.claimed_at, expires_at = excluded.expires_at",
                     (study_uid, user_name, claimed_at, now + lease_s))
    return StudyClaim(study_uid, user_name, claimed_at, now + lease_s)


def release_study(conn: Any, study_uid: str, user_name: str, *, any_holder: bool) -> str | None:
    """Release the claim (the holder's own, or anyone's with `any_holder`); the holder it had, if any."""
    held = conn.execute("SELECT user_name FROM study_claims WHERE study_uid = ?", (study_uid,)).fetchone()
    if held is None:
        return None
    if held["user_name"] != user_name and not any_holder:
        raise Conflict(f"being read by {held['user_name']}", claimed_by=held["user_name"])
    conn.execute("DELETE FROM study_claims WHERE study_uid = ?", (study_uid,))
    return str(held["user_name"])


def active_claims(index: Index, *, now: float | None = None) -> dict[str, str]:
    """study_uid -> who holds it, for the claims not expired."""
    now = time.time() if now is None else now
    rows = index.reader().execute("SELECT study_uid, user_name FROM study_claims WHERE expires_at >= ?",
                                  (now,)).fetchall()
    return {r["study_uid"]: r["user_name"] for r in rows}


# -- drafting leases --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    study_uid: str
    lease_id: str
    lease_expires: float


CLAIM_ROUNDS = 4  # a round that lost rows to a worker committing at that moment is followed by another


def claim_jobs(index: Index, worker_id: str, count: int, lease_s: float, *, now: float | None = None,
               held_back: Collection[str] = (), after_prior_lookup: bool = False) -> list[Job]:
    """Up to `count` studies waiting to be drafted (stable, or drafting under an expired lease), oldest
    first, each moved to "drafting" under a new lease for `worker_id`. `held_back`: studies not offered yet
    (their priors are being looked up again: server.priors.PriorGate). `after_prior_lookup`: a stable study
    is offered only once its prior lookup has an outcome on record, so a worker that claims between the
    study becoming stable and the gate hearing of it does not get it without its prior."""
    now = time.time() if now is None else now
    jobs: list[Job] = []
    with index.db.concurrent_transaction() as conn:
        for _ in range(CLAIM_ROUNDS):
            rows = _waiting(conn, index, count - len(jobs), now, [*held_back, *(job.study_uid for job in jobs)],
                            after_prior_lookup)
            claimable = [row for row in rows if _still_waiting(conn, row["study_uid"], now)]
            jobs += [_lease(conn, row, worker_id, lease_s, now) for row in claimable]
            if len(claimable) == len(rows):  # nothing was taken from under us: no more is waiting
                break
    return jobs


def _waiting(conn: Any, index: Index, count: int, now: float, excluded: list[str],
             after_prior_lookup: bool = False) -> list:
    """The oldest `count` studies waiting to be drafted, locked for this transaction (PostgreSQL: rows other
    workers hold are skipped)."""
    if count <= 0:
        return []
    skip_locked = " FOR UPDATE OF s SKIP LOCKED" if index.dialect.name == "postgresql" else ""
    not_in = f" AND s.study_uid NOT IN ({', '.join('?' * len(excluded))})" if excluded else ""
    stable = "s.state = ?"
    if after_prior_lookup:
        stable += " AND EXISTS (SELECT 1 FROM prior_lookups p WHERE p.study_uid = s.study_uid)"
    return conn.execute(
        "SELECT s.study_uid, s.state FROM studies s LEFT JOIN draft_leases l ON l.study_uid = s.study_uid "
        f"WHERE (({stable}) OR (s.state = ? AND COALESCE(l.expires_at, 0) < ?))" + not_in +
        " ORDER BY s.last_received, s.study_uid LIMIT ?" + skip_locked,
        (StudyState.STABLE.value, StudyState.DRAFTING.value, now, *excluded, count)).fetchall()


def _still_waiting(conn: Any, study_uid: str, now: float) -> bool:
    """Read again in a statement of its own, once the row is locked: a worker that claimed the study and
    committed just before we got its lock has its lease seen now. (PostgreSQL rechecks a locked row that
    changed, but with the lease table as the first statement saw it, so the new lease would not count.)"""
    row = conn.execute("SELECT s.state, l.expires_at FROM studies s LEFT JOIN draft_leases l "
                       "ON l.study_uid = s.study_uid WHERE s.study_uid = ?", (study_uid,)).fetchone()
    if row is None:
        return False
    state = StudyState(row["state"])
    return state == StudyState.STABLE or (state == StudyState.DRAFTING and (row["expires_at"] or 0) < now)


def _lease(conn: Any, row, worker_id: str, lease_s: float, now: float) -> Job:
    lease_id = uuid.uuid4().hex
    state = StudyState(row["state"])
    reason = f"drafting by worker {worker_id}" + (" (the previous lease expired)"
                                                  if state == StudyState.DRAFTING else "")
    Index.set_state(conn, row["study_uid"], state, StudyState.DRAFTING, reason, now)
    conn.execute("INSERT INTO draft_leases(study_uid, lease_id, worker_id, claimed_at, expires_at) "
                 "VALUES (?,?,?,?,?) ON CONFLICT(study_uid) DO UPDATE SET lease_id = excluded.lease_id, "
                 "worker_id = excluded.worker_id, claimed_at = excluded.claimed_at, "
                 "expires_at = excluded.expires_at",
                 (row["study_uid"], lease_id, worker_id, now, now + lease_s))
    return Job(row["study_uid"], lease_id, now + lease_s)


def _held_lease(conn: Any, study_uid: str, lease_id: str) -> None:
    row = conn.execute("SELECT lease_id FROM draft_leases WHERE study_uid = ?", (study_uid,)).fetchone()
    if row is None or row["lease_id"] != lease_id:
        raise Conflict(f"the lease on {study_uid} was lost (drafted or taken by another worker)")


def renew_job(index: Index, study_uid: str, lease_id: str, lease_s: float, *, now: float | None = None) -> float:
    now = time.time() if now is None else now
    with index.db.concurrent_transaction() as conn:
        _held_lease(conn, study_uid, lease_id)
        conn.execute("UPDATE draft_leases SET expires_at = ? WHERE study_uid = ?", (now + lease_s, study_uid))
    return now + lease_s


def complete_job(index: Index, lease_id: str, draft: DraftRecord, *, now: float | None = None) -> DraftRecord:
    """Save the worker's draft and end its lease, in one transaction; Conflict when the lease was lost."""
    now = time.time() if now is None else now
    with index.db.concurrent_transaction() as conn:
        _held_lease(conn, draft.study_uid, lease_id)
        conn.execute("DELETE FROM draft_leases WHERE study_uid = ?", (draft.study_uid,))
        return insert_draft(conn, draft, now)


def fail_job(index: Index, study_uid: str, lease_id: str, reason: str, *, now: float | None = None) -> None:
    now = time.time() if now is None else now
    with index.db.concurrent_transaction() as conn:
        _held_lease(conn, study_uid, lease_id)
        conn.execute("DELETE FROM draft_leases WHERE study_uid = ?", (study_uid,))
        state = conn.execute("SELECT state FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        if state and StudyState(state[0]) == StudyState.DRAFTING:
            Index.set_state(conn, study_uid, StudyState.DRAFTING, StudyState.FAILED, reason[:500], now)


def record_heartbeat(index: Index, worker_id: str, user_name: str, client: str, report: dict[str, Any], *,
                     now: float | None = None) -> None:
    now = time.time() if now is None else now
    with index.transaction() as conn:
        conn.execute(
            "INSERT INTO workers(worker_id, user_name, model, provider, batch, studies_per_minute, tokens_per_s, "
            "last_seen, client) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(worker_id) DO UPDATE SET "
            "user_name = excluded.user_name, model = excluded.model, provider = excluded.provider, "
            "batch = excluded.batch, studies_per_minute = excluded.studies_per_minute, "
            "tokens_per_s = excluded.tokens_per_s, last_seen = excluded.last_seen, client = excluded.client",
            (worker_id, user_name, str(report.get("model", "")), str(report.get("provider", "")),
             int(report.get("batch", 1) or 1), float(report.get("studies_per_minute", 0) or 0),
             float(report.get("tokens_per_s", 0) or 0), now, client))


def known_workers(index: Index) -> list[dict[str, Any]]:
    return [dict(r) for r in index.reader().execute("SELECT * FROM workers ORDER BY worker_id").fetchall()]
