"""The site server's own tables, beside the index's in the same database (one transaction can sign a
report and write its audit row). The audit log is append-only: triggers refuse UPDATE and DELETE."""

from __future__ import annotations

from dicom_node.index import Index

_TABLES = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
-- Only a hash of each token is kept: a copy of the database logs nobody in.
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users(name),
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    user_name TEXT NOT NULL,
    action TEXT NOT NULL,
    study_uid TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}',
    client TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS study_claims (
    study_uid TEXT PRIMARY KEY REFERENCES studies(study_uid),
    user_name TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
-- A worker's lease on a study it drafts; gone when the draft is written or the job failed.
CREATE TABLE IF NOT EXISTS draft_leases (
    study_uid TEXT PRIMARY KEY REFERENCES studies(study_uid),
    lease_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    batch INTEGER NOT NULL DEFAULT 1,
    studies_per_minute REAL NOT NULL DEFAULT 0,
    tokens_per_s REAL NOT NULL DEFAULT 0,
    last_seen REAL NOT NULL,
    client TEXT NOT NULL DEFAULT ''
);
"""

_SQLITE_APPEND_ONLY = """
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

_POSTGRES_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER audit_no_change BEFORE UPDATE OR DELETE OR TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""


def prepare_site_tables(index: Index) -> None:
    dialect = index.dialect
    append_only = _POSTGRES_APPEND_ONLY if dialect.name == "postgresql" else _SQLITE_APPEND_ONLY
    index.db.executescript(dialect.schema(_TABLES) + append_only)
