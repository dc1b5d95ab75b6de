"""The drafting queue: drafts each stable study in a worker thread, one at a time, and records the result.

A study moves stable -> drafting -> drafted (draft saved in the same transaction) or -> failed (with the
reason). A study found "drafting" at start was interrupted by a crash and is queued again; a failing
study never blocks the ones behind it. The model can be swapped while running: the study being drafted
finishes on the model it started with.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from dicom_node.drafts import DraftRecord, save_draft
from dicom_node.errors import StateTransitionError
from dicom_node.events import NodeEvents, StudyStable
from dicom_node.index import StudyState
from dicom_node.store import Store
from engine.errors import EngineError
from engine.events import DraftEvents, DraftFailed, DraftFinished, DraftPiece, DraftStarted
from engine.findings.critical import DEFAULT_CRITICAL_FINDINGS, check_critical_names, find_critical
from engine.prompts import newest_prior_input
from engine.runtime import Draft

log = logging.getLogger(__name__)


class Drafter(Protocol):
    @property
    def model_id(self) -> str: ...

    def draft(self, study: list[Path], *, on_piece=None) -> Draft: ...


class BeforeDrafting(Protocol):
    """Work done for a complete study before it is queued (dicom_node.priors.PriorLookups: its priors);
    `then(study_uid)` is called once that is done, whatever it came to."""

    def submit(self, study_uid: str, then: Callable[[str], None]) -> None: ...

    def stop(self) -> None: ...


class DraftingQueue:
    def __init__(self, store: Store, model: Drafter, events: DraftEvents | None = None,
                 critical_findings: tuple[str, ...] = DEFAULT_CRITICAL_FINDINGS,
                 before_drafting: BeforeDrafting | None = None) -> None:
        self._store = store
        self._before_drafting = before_drafting
        self._model = model
        self._critical = check_critical_names(critical_findings)
        self.events = events or DraftEvents()
        self._pending: deque[str] = deque()
        self._queued: set[str] = set()
        self._current: str | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="raddraft-drafting", daemon=True)
        self._unsubscribe = None
        self.warmed = threading.Event()  # set once the report-language pipeline is loaded

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, node_events: NodeEvents | None = None) -> None:
        """Queue what a previous run left undone, subscribe to "study stable", start the worker."""
        if node_events is not None:
            self._unsubscribe = node_events.study_stable.subscribe(self._on_stable)
        self._requeue_unfinished()
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the study being drafted (if any); queued studies stay "stable" for the next run."""
        if self._unsubscribe:
            self._unsubscribe()
        if self._before_drafting is not None:
            self._before_drafting.stop()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- public API --------------------------------------------------------------------------------
    def enqueue(self, study_uid: str) -> None:
        with self._cond:
            if study_uid in self._queued:
                return
            self._queued.add(study_uid)
            self._pending.append(study_uid)
            self._cond.notify()

    def swap_model(self, model: Drafter) -> None:
        """Use `model` from the next study on."""
        with self._cond:
            self._model = model

    def swap_before_drafting(self, step: BeforeDrafting | None) -> None:
        """Use `step` for studies completed from now on (new settings); the old one is stopped."""
        with self._cond:
            old, self._before_drafting = self._before_drafting, step
        if old is not None:
            old.stop()

    @property
    def model(self) -> Drafter:
        with self._cond:
            return self._model

    def length(self) -> int:
        """Studies waiting, plus the one being drafted."""
        with self._cond:
            return len(self._pending) + (1 if self._current else 0)

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._current is None, timeout)

    # -- worker ------------------------------------------------------------------------------------
    def _on_stable(self, event: StudyStable) -> None:
        self._admit(event.study_uid)

    def _admit(self, study_uid: str) -> None:
        """Queue a complete study, after the step before drafting (its priors) when there is one."""
        step = self._before_drafting
        if step is not None:
            step.submit(study_uid, self.enqueue)
        else:
            self.enqueue(study_uid)

    def _requeue_unfinished(self) -> None:
        index = self._store.index
        for study in index.studies(frozenset({StudyState.DRAFTING})):
            try:
                index.transition(study.study_uid, StudyState.STABLE, expected=frozenset({StudyState.DRAFTING}),
                                 reason="drafting was interrupted; queued again")
            except StateTransitionError:
                continue
        # Oldest first: the order they became complete in.
        for study in reversed(index.studies(frozenset({StudyState.STABLE}))):
            self._admit(study.study_uid)

    def _next(self) -> tuple[str, Drafter] | None:
        with self._cond:
            self._current = None
            self._cond.notify_all()
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            study_uid = self._pending.popleft()
            self._queued.discard(study_uid)
            self._current = study_uid
            return study_uid, self._model

    def _warm_up(self) -> None:
        """Load the report-language pipeline (about 2 s) before the first study instead of inside its draft:
        the first study of the day is drafted as fast as the rest."""
        try:
            find_critical({"findings": "No pneumothorax.", "impression": ""}, self._critical)
        except Exception:  # drafting works without it; the first draft then pays for the load
            log.exception("the findings labeler could not be loaded ahead of drafting")
        finally:
            self.warmed.set()

    def _run(self) -> None:
        self._warm_up()
        while (item := self._next()) is not None:
            study_uid, model = item
            try:
                self._draft_one(study_uid, model)
            except Exception:  # the worker must survive anything one study does
                log.exception("drafting study %s failed unexpectedly", study_uid)
        with self._cond:
            self._current = None
            self._cond.notify_all()

    def _draft_one(self, study_uid: str, model: Drafter) -> None:
        index = self._store.index
        try:
            index.transition(study_uid, StudyState.DRAFTING, expected=frozenset({StudyState.STABLE}),
                             reason=f"drafting with {model.model_id}")
        except StateTransitionError as error:
            log.info("not drafting %s: %s", study_uid, error)
            return
        self.events.started.publish(DraftStarted(study_uid, model.model_id))
        paths = [self._store.path_of(row) for row in index.instances_of(study_uid)]
        prior = newest_prior_input(index, study_uid, self._store.path_of)
        try:
            draft = model.draft(paths, on_piece=lambda section, text: self.events.piece.publish(
                DraftPiece(study_uid, section, text)), **({"prior": prior} if prior is not None else {}))
        except Exception as error:
            self._fail(study_uid, error)
            return
        record = save_draft(index, DraftRecord(
            study_uid=study_uid, model=draft.model, provider=draft.provider, findings=draft.findings,
            impression=draft.impression,
            # `instances`: how many of the study's images were there (a speculative draft may precede more).
            detail={"variant": draft.variant, "images": list(draft.images), "instances": len(paths),
                    "skipped": [{"sop_instance_uid": uid, "why": why} for uid, why in draft.skipped],
                    "prompts": draft.prompts, "prior": getattr(draft, "prior", None),
                    "timings": draft.timings, **self._trust_of(study_uid, draft)}))
        total = float(draft.timings.get("total_s", 0.0))  # type: ignore[arg-type]
        log.info("study %s drafted by %s in %.2f s%s", study_uid, draft.model, total,
                 " (stale: new images arrived meanwhile)" if record.stale else "")
        self.events.finished.publish(DraftFinished(study_uid, record.id, draft.model, total, record.stale))

    def _trust_of(self, study_uid: str, draft: Draft) -> dict[str, object]:
        """Domain state and confidence for the draft's detail, and its critical findings, except for a draft
        outside the model's domain: its text turns on no critical alert by itself (the radiologist's does)."""
        domain = dict(getattr(draft, "domain", None) or {"in_domain": None, "score": None, "threshold": None})
        if domain.get("in_domain") is False:
            # the study UID, model and score only: no patient identifier goes to the log
            log.info("study %s is outside the training domain of %s (score %s > threshold %s): its draft is "
                     "marked unreliable", study_uid, draft.model, domain.get("score"), domain.get("threshold"))
            critical: list[str] = []
        else:
            critical = self._critical_in(draft)
        return {"domain": domain, "confidence": dict(getattr(draft, "confidence", None) or {}), "critical": critical}

    def _critical_in(self, draft: Draft) -> list[str]:
        """The critical findings the draft states, flagged in the worklist as soon as the draft is saved."""
        try:
            found = find_critical({"findings": draft.findings, "impression": draft.impression}, self._critical)
        except Exception:  # the draft is worth keeping even when the labeler fails
            log.exception("critical findings of a draft could not be read")
            return []
        return [finding.title for finding in found]

    def _fail(self, study_uid: str, error: Exception) -> None:
        if isinstance(error, EngineError):
            reason = str(error)
            log.warning("study %s cannot be drafted: %s", study_uid, reason)
        else:
            reason = f"internal error: {type(error).__name__}: {error}"
            log.exception("drafting study %s failed", study_uid)
        try:
            self._store.index.transition(study_uid, StudyState.FAILED, expected=frozenset({StudyState.DRAFTING}),
                                         reason=reason[:500])
        except StateTransitionError:
            pass  # new images arrived meanwhile: the study is receiving again and will be retried
        self.events.failed.publish(DraftFailed(study_uid, reason))
