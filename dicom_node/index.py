"""The index of the store: studies, series, instances and every change of state.

In SQLite (a workstation) or PostgreSQL (a site server), through one interface (dicom_node/db.py): one
writer connection guarded by a lock; readers have their own connections. SQLite runs with
synchronous=NORMAL: a commit survives a crash of the process; after a power loss the last commits may be
missing from the index, but their files are already durable and `Store.reconcile()` re-indexes any file the
index lacks. PostgreSQL commits durably (its own fsync).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dicom_node.db import Connection, Database, DatabaseError, Dialect, open_database
from dicom_node.errors import StateTransitionError
from dicom_node.header import InstanceHeader

SCHEMA_VERSION = 2  # 2: reports, outbox, readings (created on open: old stores upgrade)


class StudyState(StrEnum):
    RECEIVING = "receiving"
    STABLE = "stable"
    DRAFTING = "drafting"
    DRAFTED = "drafted"
    FAILED = "failed"
    SIGNED = "signed"
    SENT = "sent"
    # A study retrieved from PACS as the prior of another (dicom_node/priors.py): never completed, drafted
    # or listed in the worklist.
    PRIOR = "prior"


# States a new instance sends back to "receiving": the draft (if any) no longer covers every image.
REOPENED_BY_NEW_INSTANCE = frozenset({StudyState.STABLE, StudyState.DRAFTING, StudyState.DRAFTED, StudyState.FAILED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_name TEXT NOT NULL DEFAULT '',
    patient_id TEXT NOT NULL DEFAULT '',
    patient_birth_date TEXT NOT NULL DEFAULT '',
    patient_sex TEXT NOT NULL DEFAULT '',
    accession_number TEXT NOT NULL DEFAULT '',
    study_id TEXT NOT NULL DEFAULT '',
    study_date TEXT NOT NULL DEFAULT '',
    study_time TEXT NOT NULL DEFAULT '',
    study_description TEXT NOT NULL DEFAULT '',
    referring_physician TEXT NOT NULL DEFAULT '',
    body_part TEXT NOT NULL DEFAULT '',
    num_series INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    state_reason TEXT NOT NULL DEFAULT '',
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    state_changed REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_by_state ON studies(state);
CREATE INDEX IF NOT EXISTS studies_by_received ON studies(last_received);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT NOT NULL DEFAULT '',
    series_number INTEGER,
    series_description TEXT NOT NULL DEFAULT '',
    body_part TEXT NOT NULL DEFAULT '',
    num_instances INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS series_by_study ON series(study_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    instance_number INTEGER,
    view_position TEXT NOT NULL DEFAULT '',
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL,
    calling_ae TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS study_events (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL,
    at REAL NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS study_events_by_study ON study_events(study_uid);
CREATE TABLE IF NOT EXISTS store_events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS drafts (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    created_at REAL NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    findings TEXT NOT NULL,
    impression TEXT NOT NULL,
    -- images used, prompts, timings, generation options (JSON)
    detail TEXT NOT NULL DEFAULT '{}',
    -- a draft made while new images arrived covers only some of them
    stale INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS drafts_by_study ON drafts(study_uid);
-- Signed reports (dicom_node/reports.py); the SR's UIDs are fixed at signing so that resends repeat them.
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    signed_at REAL NOT NULL,
    signed_by TEXT NOT NULL,
    findings TEXT NOT NULL,
    impression TEXT NOT NULL,
    draft_id INTEGER REFERENCES drafts(id),
    ai_share_kept REAL NOT NULL DEFAULT 0,
    edit_distance INTEGER NOT NULL DEFAULT 0,
    sr_series_uid TEXT NOT NULL,
    sr_sop_instance_uid TEXT NOT NULL UNIQUE,
    -- provenance per section, metrics, the AI text each section started from (JSON)
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS reports_by_study ON reports(study_uid);
-- Reports waiting to be sent (or sent) to PACS as DICOM SR.
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    report_id INTEGER NOT NULL REFERENCES reports(id),
    study_uid TEXT NOT NULL,
    status TEXT NOT NULL,                -- pending / sent
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL,
    destination TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_by_status ON outbox(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_by_study ON outbox(study_uid);
-- The radiologist's unsigned text of a study, autosaved as typed (dicom_node/drafts.py): sections with the
-- origin of every character (JSON); removed in the transaction that signs the study.
CREATE TABLE IF NOT EXISTS working_drafts (
    study_uid TEXT PRIMARY KEY REFERENCES studies(study_uid),
    saved_at REAL NOT NULL,
    saved_by TEXT NOT NULL DEFAULT '',
    sections TEXT NOT NULL
);
-- Who opened a study last (the worklist shows it "in progress"); not a state of the study.
CREATE TABLE IF NOT EXISTS readings (
    study_uid TEXT PRIMARY KEY REFERENCES studies(study_uid),
    opened_at REAL NOT NULL,
    opened_by TEXT NOT NULL DEFAULT ''
);
-- Priors (dicom_node/priors.py): one lookup per current study (its outcome), one row per prior it found.
-- A study whose UID is a prior_study_uid here is created in state "prior" when its first instance arrives.
CREATE TABLE IF NOT EXISTS prior_lookups (
    study_uid TEXT PRIMARY KEY,
    state TEXT NOT NULL,                 -- disabled / none-found / pacs-unreachable / timeout / failed / retrieved
    reason TEXT NOT NULL DEFAULT '',
    finished_at REAL NOT NULL,
    find_s REAL NOT NULL DEFAULT 0,
    retrieve_s REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS priors (
    study_uid TEXT NOT NULL,
    prior_study_uid TEXT NOT NULL,
    prior_date TEXT NOT NULL DEFAULT '',
    modality TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,                 -- expected / retrieved / failed
    reason TEXT NOT NULL DEFAULT '',
    retrieved_at REAL,
    report_source TEXT NOT NULL DEFAULT '',
    findings TEXT NOT NULL DEFAULT '',
    impression TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (study_uid, prior_study_uid)
);
CREATE INDEX IF NOT EXISTS priors_by_prior ON priors(prior_study_uid);
"""


@dataclass(frozen=True)
class InstanceRow:
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    instance_number: int | None
    view_position: str
    transfer_syntax: str
    path: str
    size: int
    received_at: float
    calling_ae: str


@dataclass(frozen=True)
class SeriesRow:
    series_uid: str
    study_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str
    num_instances: int


@dataclass(frozen=True)
class StudyRow:
    study_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    study_id: str
    study_date: str
    study_time: str
    study_description: str
    referring_physician: str
    body_part: str
    num_series: int
    num_instances: int
    state: StudyState
    state_reason: str
    first_received: float
    last_received: float
    state_changed: float
    modalities: str


@dataclass(frozen=True)
class StudyEvent:
    study_uid: str
    at: float
    from_state: str | None
    to_state: str
    reason: str


def _study_select(dialect: Dialect) -> str:
    return f"""
SELECT s.*, COALESCE((SELECT {dialect.group_concat("m.modality")} FROM series m
                      WHERE m.study_uid = s.study_uid AND m.modality != ''), '') AS modalities
FROM studies s
"""


def _study_from_row(row: object) -> StudyRow:
    values = dict(row)  # type: ignore[call-overload]
    values["state"] = StudyState(values["state"])
    return StudyRow(**values)


class Index:
    """`location`: the SQLite file of a store, a postgresql:// URL, or an open Database."""

    def __init__(self, location: Path | str | Database) -> None:
        self.db = location if hasattr(location, "dialect") else open_database(location)  # type: ignore[arg-type]
        self.path = getattr(self.db, "path", None)
        self.dialect: Dialect = self.db.dialect
        self.errors = self.db.errors
        self._study_select = _study_select(self.dialect)
        try:
            self.db.executescript(self.dialect.schema(_SCHEMA))
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET "
                    "value = excluded.value WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
                    (str(SCHEMA_VERSION),))
        except self.errors as exc:
            self.db.close()
            raise DatabaseError(f"cannot prepare the index: {exc}") from exc
        except DatabaseError:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    # -- connections -----------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction; rolled back if the block raises."""
        with self.db.transaction() as conn:
            yield conn

    def instance_seen_by_writer(self, sop_instance_uid: str) -> InstanceRow | None:
        """The instance row read on the writer's connection, for the store's write path: it runs on
        short-lived association threads, and a reader connection per thread would cost an open per
        association and stay open until the thread's storage is freed."""
        with self.db.writer_connection() as conn:
            return self.existing_instance(conn, sop_instance_uid)

    def reader(self) -> Connection:
        return self.db.reader()

    # -- writes (called inside `transaction()`) --------------------------------------------------
    @staticmethod
    def existing_instance(conn: Connection, sop_instance_uid: str) -> InstanceRow | None:
        row = conn.execute("SELECT * FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone()
        return InstanceRow(**dict(row)) if row else None

    @staticmethod
    def add_instance(conn: Connection, header: InstanceHeader, row: InstanceRow, now: float) -> None:
        """Insert a new instance, creating or refreshing its study and series rows."""
        study_is_new = conn.execute(
            """INSERT INTO studies(study_uid, patient_name, patient_id, patient_birth_date, patient_sex,
                   accession_number, study_id, study_date, study_time, study_description, referring_physician,
                   body_part, state, first_received, last_received, state_changed)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,
                       CASE WHEN EXISTS(SELECT 1 FROM priors WHERE prior_study_uid = ?) THEN ? ELSE ? END,?,?,?)
               ON CONFLICT(study_uid) DO NOTHING""",
            (header.study_uid, header.patient_name, header.patient_id, header.patient_birth_date,
             header.patient_sex, header.accession_number, header.study_id, header.study_date, header.study_time,
             header.study_description, header.referring_physician, header.body_part,
             header.study_uid, StudyState.PRIOR.value, StudyState.RECEIVING.value, now, now, now),
        ).rowcount == 1
        if study_is_new:
            state = StudyState(conn.execute("SELECT state FROM studies WHERE study_uid = ?",
                                            (header.study_uid,)).fetchone()[0])
            Index._record_event(conn, header.study_uid, now, None, state,
                                "first instance of a prior retrieved from PACS" if state == StudyState.PRIOR
                                else "first instance received")
        series_is_new = conn.execute(
            """INSERT INTO series(series_uid, study_uid, modality, series_number, series_description, body_part)
               VALUES (?,?,?,?,?,?) ON CONFLICT(series_uid) DO NOTHING""",
            (header.series_uid, header.study_uid, header.modality, header.series_number,
             header.series_description, header.body_part),
        ).rowcount == 1
        conn.execute(
            """INSERT INTO instances(sop_instance_uid, sop_class_uid, series_uid, study_uid, instance_number,
                   view_position, transfer_syntax, path, size, received_at, calling_ae)
               VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
            (row.sop_instance_uid, row.sop_class_uid, row.series_uid, row.study_uid, row.instance_number,
             row.view_position, row.transfer_syntax, row.path, row.size, row.received_at, row.calling_ae),
        )
        conn.execute("UPDATE series SET num_instances = num_instances + 1 WHERE series_uid = ?", (header.series_uid,))
        conn.execute(
            "UPDATE studies SET num_instances = num_instances + 1, num_series = num_series + ?, last_received = ? "
            "WHERE study_uid = ?",
            (1 if series_is_new else 0, now, header.study_uid),
        )
        Index.reopen_if_needed(conn, header.study_uid, now)

    @staticmethod
    def replace_instance(conn: Connection, row: InstanceRow, now: float) -> None:
        """Point an existing instance (same UIDs and path) at new content."""
        conn.execute(
            "UPDATE instances SET size = ?, received_at = ?, calling_ae = ?, transfer_syntax = ?, "
            "instance_number = ?, view_position = ? WHERE sop_instance_uid = ?",
            (row.size, row.received_at, row.calling_ae, row.transfer_syntax, row.instance_number,
             row.view_position, row.sop_instance_uid),
        )
        conn.execute("UPDATE studies SET last_received = ? WHERE study_uid = ?", (now, row.study_uid))
        Index.reopen_if_needed(conn, row.study_uid, now)

    @staticmethod
    def remove_instance(conn: Connection, row: InstanceRow) -> None:
        """Remove an instance row and keep the counters of its series and study right."""
        conn.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (row.sop_instance_uid,))
        conn.execute("UPDATE series SET num_instances = num_instances - 1 WHERE series_uid = ?", (row.series_uid,))
        emptied = conn.execute(
            "DELETE FROM series WHERE series_uid = ? AND num_instances <= 0", (row.series_uid,)
        ).rowcount
        conn.execute(
            "UPDATE studies SET num_instances = num_instances - 1, num_series = num_series - ? WHERE study_uid = ?",
            (emptied, row.study_uid),
        )
        Index._settle_if_empty(conn, row.study_uid)

    @staticmethod
    def _settle_if_empty(conn: Connection, study_uid: str) -> None:
        """A study whose last instance went (re-sent under another study, or its file lost) must never be
        drafted: it is removed, or, when drafts or reports refer to it, marked failed with the reason."""
        study = conn.execute("SELECT num_instances, state FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        if study is None or study[0] > 0:
            return
        referenced = conn.execute(
            "SELECT EXISTS(SELECT 1 FROM drafts WHERE study_uid = ?) OR EXISTS(SELECT 1 FROM reports WHERE "
            "study_uid = ?) OR EXISTS(SELECT 1 FROM readings WHERE study_uid = ?) OR EXISTS(SELECT 1 FROM "
            "working_drafts WHERE study_uid = ?)", (study_uid,) * 4).fetchone()[0]
        now = time.time()
        if not referenced:
            conn.execute("DELETE FROM series WHERE study_uid = ?", (study_uid,))
            conn.execute("DELETE FROM studies WHERE study_uid = ?", (study_uid,))
            Index.record_store_event(conn, "study_removed", "", f"{study_uid}: no instances left", now)
            return
        state = StudyState(study[1])
        if state in REOPENED_BY_NEW_INSTANCE | {StudyState.RECEIVING}:
            Index.set_state(conn, study_uid, state, StudyState.FAILED, "no instances left", now)

    @staticmethod
    def reopen_if_needed(conn: Connection, study_uid: str, now: float) -> None:
        state = conn.execute("SELECT state FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()[0]
        if StudyState(state) in REOPENED_BY_NEW_INSTANCE:
            Index.set_state(conn, study_uid, StudyState(state), StudyState.RECEIVING, "new instance received", now)

    @staticmethod
    def record_store_event(conn: Connection, kind: str, sop_instance_uid: str, detail: str, now: float) -> None:
        conn.execute(
            "INSERT INTO store_events(at, kind, sop_instance_uid, detail) VALUES (?,?,?,?)",
            (now, kind, sop_instance_uid, detail),
        )

    @staticmethod
    def _record_event(conn: Connection, study_uid: str, now: float, from_state: StudyState | None,
                      to_state: StudyState, reason: str) -> None:
        conn.execute(
            "INSERT INTO study_events(study_uid, at, from_state, to_state, reason) VALUES (?,?,?,?,?)",
            (study_uid, now, from_state.value if from_state else None, to_state.value, reason),
        )

    @staticmethod
    def set_state(conn: Connection, study_uid: str, from_state: StudyState, to_state: StudyState,
                   reason: str, now: float) -> None:
        conn.execute(
            "UPDATE studies SET state = ?, state_reason = ?, state_changed = ? WHERE study_uid = ?",
            (to_state.value, reason, now, study_uid),
        )
        Index._record_event(conn, study_uid, now, from_state, to_state, reason)

    def transition(self, study_uid: str, to_state: StudyState, *, expected: frozenset[StudyState] | None = None,
                   reason: str = "") -> StudyState:
        """Move a study to `to_state` in one transaction; return the state it left.

        With `expected`, the move happens only from one of those states, else StateTransitionError.
        """
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute("SELECT state FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
            if row is None:
                raise StateTransitionError(f"unknown study {study_uid}")
            current = StudyState(row[0])
            if expected is not None and current not in expected:
                raise StateTransitionError(
                    f"study {study_uid} is {current.value}, not {'/'.join(sorted(s.value for s in expected))}"
                )
            self.set_state(conn, study_uid, current, to_state, reason, now)
        return current

    # -- reads -----------------------------------------------------------------------------------
    def study(self, study_uid: str) -> StudyRow | None:
        row = self.reader().execute(self._study_select + " WHERE s.study_uid = ?", (study_uid,)).fetchone()
        return _study_from_row(row) if row else None

    def studies(self, states: frozenset[StudyState] | None = None) -> list[StudyRow]:
        sql = self._study_select
        params: tuple[str, ...] = ()
        if states:
            sql += f" WHERE s.state IN ({','.join('?' * len(states))})"
            params = tuple(s.value for s in states)
        rows = self.reader().execute(sql + " ORDER BY s.last_received DESC", params).fetchall()
        return [_study_from_row(r) for r in rows]

    def series_of(self, study_uid: str) -> list[SeriesRow]:
        rows = self.reader().execute(
            "SELECT * FROM series WHERE study_uid = ? ORDER BY series_number, series_uid", (study_uid,)
        ).fetchall()
        return [SeriesRow(**dict(r)) for r in rows]

    def instances_of(self, study_uid: str) -> list[InstanceRow]:
        rows = self.reader().execute(
            "SELECT i.* FROM instances i JOIN series s ON s.series_uid = i.series_uid WHERE i.study_uid = ? "
            "ORDER BY s.series_number, i.series_uid, i.instance_number, i.sop_instance_uid",
            (study_uid,),
        ).fetchall()
        return [InstanceRow(**dict(r)) for r in rows]

    def instance(self, sop_instance_uid: str) -> InstanceRow | None:
        row = self.reader().execute(
            "SELECT * FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
        ).fetchone()
        return InstanceRow(**dict(row)) if row else None

    def all_instance_paths(self) -> dict[str, InstanceRow]:
        rows = self.reader().execute("SELECT * FROM instances").fetchall()
        return {r["path"]: InstanceRow(**dict(r)) for r in rows}

    def study_events(self, study_uid: str) -> list[StudyEvent]:
        rows = self.reader().execute(
            "SELECT study_uid, at, from_state, to_state, reason FROM study_events WHERE study_uid = ? ORDER BY id",
            (study_uid,),
        ).fetchall()
        return [StudyEvent(**dict(r)) for r in rows]

    def store_events(self, kind: str | None = None) -> list[dict[str, object]]:
        sql, params = "SELECT * FROM store_events", ()
        if kind:
            sql, params = sql + " WHERE kind = ?", (kind,)
        return [dict(r) for r in self.reader().execute(sql + " ORDER BY id", params).fetchall()]
