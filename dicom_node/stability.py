"""Study stability: a study is complete once no instance arrived for a quiet period.

Like DCMTK storescp's end-of-study timeout. The tracker keeps one deadline per receiving study in a
heap; its worker thread moves a study to "stable" in the store (one transaction) and publishes
`StudyStable`. Receiving studies found in the store at start are resumed with their remaining time.

With `complete_early` a study is complete sooner, the quiet period staying the upper bound:
- known complete: the sender's Number of Study Related Instances (0020,1208) is reached;
- speculative: `ready(study_uid)` holds (the front door asks the engine: a frontal image is there) and
  no instance came for `after_s`. An instance arriving later sends the study back to "receiving"
  (Index.reopen_if_needed), and it is completed, and drafted, again.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

import pydicom

from dicom_node.errors import StateTransitionError
from dicom_node.events import NodeEvents, StudyStable
from dicom_node.index import StudyState
from dicom_node.store import Store

log = logging.getLogger(__name__)
QUIET, EARLY, COUNT = "quiet", "early", "count"
STUDY_RELATED_INSTANCES = 0x00201208


class StabilityTracker:
    def __init__(self, store: Store, events: NodeEvents, quiet_s: float) -> None:
        self._store = store
        self._events = events
        self._quiet_s = quiet_s
        self._deadlines: dict[tuple[str, str], float] = {}  # (kind, study) -> its latest deadline
        self._heap: list[tuple[float, str, str]] = []
        self._early_s: float | None = None
        self._ready: Callable[[str], bool] | None = None
        self._expected: dict[str, int | None] = {}  # the sender's count per study, None: not given
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

    def complete_early(self, after_s: float, ready: Callable[[str], bool]) -> None:
        """Complete studies whose count is known at their last instance, and studies that are `ready`
        after `after_s` without an instance (0: only the known count). Call before `start`."""
        self._early_s, self._ready = (after_s if after_s > 0 else None), ready

    def pending(self) -> int:
        with self._cond:
            return sum(1 for kind, _ in self._deadlines if kind == QUIET)

    def instance_received(self, study_uid: str) -> None:
        now = time.monotonic()
        self._schedule(study_uid, now + self._quiet_s)
        if self._ready is not None:
            self._schedule(study_uid, now, COUNT)
            if self._early_s is not None:
                self._schedule(study_uid, now + self._early_s, EARLY)

    def _resume_receiving_studies(self) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        for study in self._store.index.studies(frozenset({StudyState.RECEIVING})):
            remaining = max(0.0, self._quiet_s - (now_wall - study.last_received))
            self._schedule(study.study_uid, now_mono + remaining)

    def _schedule(self, study_uid: str, deadline: float, kind: str = QUIET) -> None:
        with self._cond:
            self._deadlines[(kind, study_uid)] = deadline
            heapq.heappush(self._heap, (deadline, kind, study_uid))
            if self._heap[0][2] == study_uid:
                self._cond.notify()

    def _next_due(self) -> tuple[str, str] | None:
        """Wait until a deadline passes (or stop); return (kind, study), or None when stopping."""
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, kind, study_uid = self._heap[0]
                now = time.monotonic()
                if deadline > now:
                    self._cond.wait(timeout=deadline - now)
                    continue
                heapq.heappop(self._heap)
                # Stale heap entries (the study got a newer deadline) are skipped.
                if self._deadlines.get((kind, study_uid)) == deadline:
                    del self._deadlines[(kind, study_uid)]
                    return kind, study_uid
            return None

    def _run(self) -> None:
        while (due := self._next_due()) is not None:
            kind, study_uid = due
            try:
                if kind == QUIET:
                    self._expected.pop(study_uid, None)
                    self._mark_stable(study_uid, f"no new instance for {self._quiet_s:g} s")
                elif kind == COUNT:
                    self._complete_if_counted(study_uid)
                elif self._ready is not None and self._ready(study_uid):
                    self._mark_stable(study_uid, f"speculative: ready and no new instance for {self._early_s:g} s")
            except Exception:
                log.exception("could not mark study %s stable", study_uid)

    def _complete_if_counted(self, study_uid: str) -> None:
        if study_uid not in self._expected:
            self._expected[study_uid] = self._sender_count(study_uid)
        expected = self._expected[study_uid]
        study = self._store.index.study(study_uid) if expected else None
        if study is not None and study.num_instances >= expected:  # type: ignore[operator]
            self._mark_stable(study_uid, f"all {expected} instances the sender announced are stored")

    def _sender_count(self, study_uid: str) -> int | None:
        """Number of Study Related Instances from one stored instance of the study; None if not given."""
        rows = self._store.index.instances_of(study_uid)
        if not rows:
            return None
        try:
            ds = pydicom.dcmread(self._store.path_of(rows[0]), stop_before_pixels=True,
                                 specific_tags=[STUDY_RELATED_INSTANCES])
            value = int(ds.get(STUDY_RELATED_INSTANCES).value)
        except (AttributeError, TypeError, ValueError, OSError, pydicom.errors.InvalidDicomError):
            return None
        return value if value > 0 else None

    def _mark_stable(self, study_uid: str, reason: str) -> None:
        try:
            self._store.index.transition(
                study_uid, StudyState.STABLE, expected=frozenset({StudyState.RECEIVING}), reason=reason)
        except StateTransitionError as exc:
            log.debug("study not marked stable: %s", exc)  # completed early already, or reopened
            return
        study = self._store.index.study(study_uid)
        count = study.num_instances if study else 0
        log.info("study %s stable with %d instances (%s)", study_uid, count, reason)
        self._events.study_stable.publish(StudyStable(study_uid, count))
