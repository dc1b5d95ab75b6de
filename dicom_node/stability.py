"""Study stability: a study is complete once no instance arrived for a quiet period.

Like DCMTK storescp's end-of-study timeout. The tracker keeps one deadline per receiving study in a
heap; its worker thread moves a study to "stable" in the store (one transaction) and publishes
`StudyStable`. Receiving studies found in the store at start are resumed with their remaining time.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time

from dicom_node.errors import StateTransitionError
from dicom_node.events import NodeEvents, StudyStable
from dicom_node.index import StudyState
from dicom_node.store import Store

log = logging.getLogger(__name__)


class StabilityTracker:
    def __init__(self, store: Store, events: NodeEvents, quiet_s: float) -> None:
        self._store = store
        self._events = events
        self._quiet_s = quiet_s
        self._deadlines: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="raddraft-stability", daemon=True)

    def start(self) -> None:
        self._resume_receiving_studies()
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def pending(self) -> int:
        with self._cond:
            return len(self._deadlines)

    def instance_received(self, study_uid: str) -> None:
        self._schedule(study_uid, time.monotonic() + self._quiet_s)

    def _resume_receiving_studies(self) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        for study in self._store.index.studies(frozenset({StudyState.RECEIVING})):
            remaining = max(0.0, self._quiet_s - (now_wall - study.last_received))
            self._schedule(study.study_uid, now_mono + remaining)

    def _schedule(self, study_uid: str, deadline: float) -> None:
        with self._cond:
            self._deadlines[study_uid] = deadline
            heapq.heappush(self._heap, (deadline, study_uid))
            if self._heap[0][1] == study_uid:
                self._cond.notify()

    def _next_due(self) -> str | None:
        """Wait until a study's deadline passes (or stop); return it, or None when stopping."""
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, study_uid = self._heap[0]
                now = time.monotonic()
                if deadline > now:
                    self._cond.wait(timeout=deadline - now)
                    continue
                heapq.heappop(self._heap)
                # Stale heap entries (the study got a newer deadline) are skipped.
                if self._deadlines.get(study_uid) == deadline:
                    del self._deadlines[study_uid]
                    return study_uid
            return None

    def _run(self) -> None:
        while (study_uid := self._next_due()) is not None:
            try:
                self._mark_stable(study_uid)
            except Exception:
                log.exception("could not mark study %s stable", study_uid)

    def _mark_stable(self, study_uid: str) -> None:
        try:
            self._store.index.transition(
                study_uid, StudyState.STABLE, expected=frozenset({StudyState.RECEIVING}),
                reason=f"no new instance for {self._quiet_s:g} s",
            )
        except StateTransitionError as exc:
            log.info("study not marked stable: %s", exc)
            return
        study = self._store.index.study(study_uid)
        count = study.num_instances if study else 0
        log.info("study %s stable with %d instances", study_uid, count)
        self._events.study_stable.publish(StudyStable(study_uid, count))
