"""Priors on the site server: each complete study's priors are looked up (dicom_node/priors.py, as the
workstation's queue has them looked up) before a worker may claim it, and the API hands them out.

`PriorGate` stands where the workstation's drafting queue has its step before drafting: the node says a
study is complete, its lookup runs (within the `[pacs]` timeouts), and only then is it offered to workers;
`held_back()` names the studies still waiting, which `server.claims.claim_jobs` passes over. A lookup that
fails or times out still hands the study on: it is drafted without a prior, the reason kept.

`prior_json` is the one shape of a prior in the API (the worker's job, the app's priors): what
`dicom_node.priors.PriorStudy` holds, its image instances frontal first, without the server's file paths.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from dicom_node.events import NodeEvents, StudyStable
from dicom_node.index import Index, StudyState
from dicom_node.priors import PriorLookups, PriorStudy, prior_status, priors_of

log = logging.getLogger(__name__)


class PriorGate:
    """Holds each study the node completes back from the workers until its prior lookup has finished."""

    def __init__(self, lookups: PriorLookups) -> None:
        self._lookups = lookups
        self._lock = threading.Lock()
        self._waiting: set[str] = set()
        self._unsubscribe: Callable[[], None] | None = None

    def start(self, index: Index, node_events: NodeEvents) -> None:
        """Follow the node's completed studies, and look up those a previous run left complete without a
        lookup (so a restart never offers one without its prior)."""
        self._unsubscribe = node_events.study_stable.subscribe(self._on_stable)
        for study_uid in not_looked_up(index):
            self.admit(study_uid)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._lookups.stop()

    def admit(self, study_uid: str) -> None:
        with self._lock:
            if study_uid in self._waiting:
                return
            self._waiting.add(study_uid)
        self._lookups.submit(study_uid, self._looked_up)

    def held_back(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._waiting)

    def _on_stable(self, event: StudyStable) -> None:
        self.admit(event.study_uid)

    def _looked_up(self, study_uid: str) -> None:
        with self._lock:
            self._waiting.discard(study_uid)


def not_looked_up(index: Index) -> list[str]:
    """Complete studies waiting for a worker whose priors were never looked up, oldest first."""
    rows = index.reader().execute(
        "SELECT s.study_uid FROM studies s LEFT JOIN prior_lookups p ON p.study_uid = s.study_uid "
        "WHERE s.state = ? AND p.study_uid IS NULL ORDER BY s.last_received", (StudyState.STABLE.value,)).fetchall()
    return [str(row[0]) for row in rows]


def prior_json(index: Index, prior: PriorStudy) -> dict[str, Any]:
    """One prior as the API answers it (docs/site-api.md): instances are WADO-RS addresses, no paths."""
    from engine.prompts import iso_date

    return {"study_uid": prior.study_uid, "study_date": prior.study_date, "date": iso_date(prior.study_date),
            "modality": prior.modality, "description": prior.description, "findings": prior.findings,
            "impression": prior.impression, "report_source": prior.report_source,
            "instances": [instance_json(row) for row in prior.instances],
            "series": [asdict(s) for s in index.series_of(prior.study_uid)]}


def newest_prior_json(index: Index, study_uid: str) -> dict[str, Any] | None:
    """The study's most recent retrieved prior (the one the workstation's queue drafts with), or None."""
    priors = priors_of(index, study_uid)
    return prior_json(index, priors[0]) if priors else None


def priors_answer(index: Index, study_uid: str) -> dict[str, Any]:
    """`GET /api/studies/{study}/priors`: the priors newest first, and what the lookup came to."""
    state, reason = prior_status(index, study_uid)
    return {"study_uid": study_uid, "state": state, "reason": reason,
            "priors": [prior_json(index, prior) for prior in priors_of(index, study_uid)]}


def instance_json(row: Any) -> dict[str, Any]:
    values = asdict(row)
    values.pop("path", None)  # where the file lies on the server is nobody's business
    return values
