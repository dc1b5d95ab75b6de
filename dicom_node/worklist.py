"""What the worklist shows, read from the index in one query: every study with its state, whether a draft
is waiting, who opened it, and how its report's send to PACS is going.

`badge` is the one word the worklist paints for a row. It is the study's state, except for a signed
study whose SR is waiting or failing to go out ("sending", "send failed").
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from dicom_node.db import Dialect
from dicom_node.index import Index, StudyState

BADGES = ("receiving", "stable", "drafting", "drafted", "failed", "signed", "sending", "send failed", "sent",
          "changed after signing")


@dataclass(frozen=True)
class WorklistRow:
    study_uid: str
    patient_name: str
    patient_id: str
    accession_number: str
    modalities: str
    study_description: str
    study_date: str
    study_time: str
    first_received: float
    last_received: float
    num_instances: int
    state: StudyState
    state_reason: str
    has_draft: bool
    opened_at: float | None
    opened_by: str
    send_status: str  # "" (never queued), "pending" or "sent" (the latest send of the latest report)
    send_attempts: int
    send_error: str
    critical: tuple[str, ...] = ()  # critical findings the current draft states ("pneumothorax (tension or large)")
    changed_after_signing: int = 0  # instances received (new or replaced) after the last report was signed
    amendments: int = 0  # reports that replaced an earlier one (addenda, corrections)
    # the current draft's domain state: True / False (outside the model's training domain) / None (unknown)
    in_domain: bool | None = None

    @property
    def out_of_domain_unread(self) -> bool:
        """A draft outside its model's domain waits for a radiologist (counted in the status bar)."""
        return self.has_draft and self.in_domain is False and self.state not in (StudyState.SIGNED, StudyState.SENT)

    @property
    def critical_unread(self) -> bool:
        """A critical finding waits for a radiologist: the study goes to the top of the worklist."""
        return bool(self.critical) and self.state not in (StudyState.SIGNED, StudyState.SENT)

    @property
    def in_progress(self) -> bool:
        """Opened by a radiologist and not signed yet."""
        return self.opened_at is not None and self.state not in (StudyState.SIGNED, StudyState.SENT)

    @property
    def badge(self) -> str:
        if self.changed_after_signing:
            return "changed after signing"
        if self.state == StudyState.SIGNED and self.send_status == "pending":
            return "send failed" if self.send_attempts else "sending"
        return self.state.value

    @property
    def badge_detail(self) -> str:
        """The reason behind the badge (a tooltip)."""
        if self.badge == "send failed":
            return f"send failed {self.send_attempts}x, retrying: {self.send_error}"
        if self.changed_after_signing:
            return (f"{self.changed_after_signing} image(s) received after the report was signed "
                    f"({self.state.value}): open it to review them and add an addendum")
        parts = [self.state_reason] if self.state_reason else []
        if self.amendments > 0:
            parts.append(f"report amended {self.amendments}x")
        if self.has_draft and self.state == StudyState.RECEIVING:
            # A speculative draft (dicom_node/stability.py) came before these images: say so.
            parts.append("the draft was made before the latest images arrived; it is drafted again "
                         "once the study is complete")
        if self.in_progress:
            opened = time.strftime("%H:%M", time.localtime(self.opened_at))
            parts.append(f"opened by {self.opened_by or 'someone'} at {opened}")
        return "; ".join(parts)


def _query(dialect: Dialect) -> str:
    """The worklist's one query, in the index's SQL dialect (string aggregation and JSON differ)."""
    return f"""
SELECT s.study_uid, s.patient_name, s.patient_id, s.accession_number,
       COALESCE((SELECT {dialect.group_concat("m.modality")} FROM series m
                 WHERE m.study_uid = s.study_uid AND m.modality != ''), '') AS modalities,
       s.study_description, s.study_date, s.study_time, s.first_received, s.last_received, s.num_instances,
       s.state, s.state_reason,
       EXISTS(SELECT 1 FROM drafts d WHERE d.study_uid = s.study_uid AND d.stale = 0) AS has_draft,
       r.opened_at, COALESCE(r.opened_by, '') AS opened_by,
       COALESCE(o.status, '') AS send_status, COALESCE(o.attempts, 0) AS send_attempts,
       COALESCE(o.last_error, '') AS send_error,
       COALESCE((SELECT {dialect.json_text("d.detail", "critical")} FROM drafts d
                 WHERE d.study_uid = s.study_uid AND d.stale = 0 ORDER BY d.id DESC LIMIT 1), '[]') AS critical,
       (SELECT {dialect.json_boolean("d.detail", "domain", "in_domain")} FROM drafts d
                 WHERE d.study_uid = s.study_uid AND d.stale = 0 ORDER BY d.id DESC LIMIT 1) AS in_domain,
       (SELECT COUNT(*) FROM instances i JOIN reports p ON p.id = (SELECT MAX(id) FROM reports q
                WHERE q.study_uid = s.study_uid)
            WHERE i.study_uid = s.study_uid AND CASE WHEN {dialect.json_absent("p.detail", "images_signed")}
                THEN i.received_at > p.signed_at
                ELSE COALESCE(ABS({dialect.json_number("p.detail", "images_signed", "i.sop_instance_uid")}
                                  - i.received_at) > 1e-6, {dialect.true}) END) AS changed_after_signing,
       (SELECT COUNT(*) - 1 FROM reports p WHERE p.study_uid = s.study_uid) AS amendments
FROM studies s
LEFT JOIN readings r ON r.study_uid = s.study_uid
LEFT JOIN outbox o ON o.id = (SELECT MAX(id) FROM outbox x WHERE x.study_uid = s.study_uid)
"""


# Priors retrieved from PACS (dicom_node/priors.py) are shown beside their study, never as work of their own.
_NOT_PRIOR = f"s.state != '{StudyState.PRIOR.value}'"


def worklist_rows(index: Index) -> list[WorklistRow]:
    """Every study but the priors, most recently received first."""
    return [_row(row) for row in index.reader().execute(
        _query(index.dialect) + f" WHERE {_NOT_PRIOR} ORDER BY s.last_received DESC").fetchall()]


def worklist_row(index: Index, study_uid: str) -> WorklistRow | None:
    """The study's row; None for an unknown study or a prior."""
    row = index.reader().execute(_query(index.dialect) + f" WHERE s.study_uid = ? AND {_NOT_PRIOR}", (study_uid,)).fetchone()
    return _row(row) if row else None


def _row(row: object) -> WorklistRow:
    values = dict(zip(row.keys(), row, strict=True))  # type: ignore[attr-defined]  # C-speed, for 10,000 rows
    values["state"] = StudyState(values["state"])
    values["has_draft"] = bool(values["has_draft"])
    values["amendments"] = max(0, values["amendments"])
    critical = json.loads(values["critical"] or "[]")
    values["critical"] = tuple(str(c) for c in critical) if isinstance(critical, list) else ()
    values["in_domain"] = None if values["in_domain"] is None else bool(values["in_domain"])
    return WorklistRow(**values)


def studies_received_since(index: Index, since: float) -> int:
    return int(index.reader().execute(f"SELECT COUNT(*) FROM studies s WHERE s.first_received >= ? AND {_NOT_PRIOR}",
                                      (since,)).fetchone()[0])


def start_of_today(now: float | None = None) -> float:
    local = time.localtime(time.time() if now is None else now)
    return time.mktime((local.tm_year, local.tm_mon, local.tm_mday, 0, 0, 0, 0, 0, -1))
