"""The audit log: who did what, when, from where. Rows are only ever inserted (triggers refuse the rest)."""

from __future__ import annotations

import json
import time
from typing import Any

from dicom_node.index import Index

SIGN, SEND, MODEL_SWITCH, LOGIN_FAILED, CLAIM_RELEASED, USER_ADDED = (
    "sign", "send", "model_switch", "login_failed", "claim_released_by_admin", "user_added")


def record(conn: Any, user_name: str, action: str, client: str, *, study_uid: str = "",
           detail: dict[str, Any] | None = None, now: float | None = None) -> None:
    """Inside the caller's transaction, so the action and its audit row commit together."""
    conn.execute("INSERT INTO audit(at, user_name, action, study_uid, detail, client) VALUES (?,?,?,?,?,?)",
                 (time.time() if now is None else now, user_name, action, study_uid,
                  json.dumps(detail or {}, sort_keys=True), client))


def record_alone(index: Index, user_name: str, action: str, client: str, **kwargs: Any) -> None:
    with index.transaction() as conn:
        record(conn, user_name, action, client, **kwargs)


def audit_rows(index: Index, *, limit: int = 1000, action: str | None = None) -> list[dict[str, Any]]:
    sql, params = "SELECT * FROM audit", []
    if action:
        sql, params = sql + " WHERE action = ?", [action]
    rows = index.reader().execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]
