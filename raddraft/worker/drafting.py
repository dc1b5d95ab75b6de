"""The worker's loop: claim up to `batch` studies, fetch them, draft them together, write each draft back.

A study that cannot be drafted (its images undecodable, the model refuses it) is reported failed with the
reason and never holds up the others of its batch. A job carries the study's most recent prior (the server
looked it up before offering the study); for a model that takes priors it reaches the prompt by the rule of
the workstation's queue (`engine.prompts.prior_input`), its frontal image fetched by WADO-RS for a
"report+image" model. The whole batch is drafted together (`DraftModel.draft_batch(priors=...)`), each study
with its own prior and its impression made where the bundle says (`impression_from`). When the server cannot
be reached the studies are left to their leases: the server offers them again, to this worker or another.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError
from engine.findings.critical import find_critical
from raddraft.worker.cache import InstanceCache
from raddraft.worker.client import (
    Forbidden,
    Job,
    LeaseLost,
    NotAuthorized,
    ServerUnreachable,
    WorkerApiError,
    WorkerClient,
)
from raddraft.worker.leases import LeaseKeeper
from raddraft.worker.settings import WorkerSettings

if TYPE_CHECKING:
    from engine.prompts import PriorInput
    from engine.runtime import Draft, DraftModel, StudyInput

log = logging.getLogger("raddraft.worker")
THROUGHPUT_WINDOW_S = 600.0


@dataclass(frozen=True)
class _Ready:
    """A job whose files are here: the study prepared for the batch, and its prior as the engine takes it."""

    job: Job
    paths: list[Path]
    study: StudyInput
    prior: PriorInput | None = None


@dataclass(frozen=True)
class _Batch:
    finished_at: float
    seconds: float
    studies: int
    new_tokens: int


class Throughput:
    """Studies per minute and generated tokens per second over the last ten minutes of work."""

    def __init__(self, window_s: float = THROUGHPUT_WINDOW_S) -> None:
        self._window_s = window_s
        self._batches: deque[_Batch] = deque()
        self._lock = threading.Lock()

    def add(self, seconds: float, studies: int, new_tokens: int, now: float | None = None) -> None:
        with self._lock:
            self._batches.append(_Batch(time.monotonic() if now is None else now, seconds, studies, new_tokens))

    def report(self, now: float | None = None) -> dict[str, float]:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._batches and self._batches[0].finished_at < now - self._window_s:
                self._batches.popleft()
            batches = list(self._batches)
        if not batches:
            return {"studies_per_minute": 0.0, "tokens_per_s": 0.0}
        busy = sum(b.seconds for b in batches)
        # from the start of the oldest batch in the window: idle time between batches counts
        span = max(now - (batches[0].finished_at - batches[0].seconds), busy, 1e-9)
        return {"studies_per_minute": round(60.0 * sum(b.studies for b in batches) / span, 2),
                "tokens_per_s": round(sum(b.new_tokens for b in batches) / max(busy, 1e-9), 1)}


def draft_detail(draft: Draft, instances: int, critical_names: tuple[str, ...]) -> dict[str, Any]:
    """The detail saved with the draft, as the workstation's drafting queue saves it (engine.queue)."""
    domain = dict(draft.domain or {"in_domain": None, "score": None, "threshold": None})
    critical: list[str] = []
    if domain.get("in_domain") is not False:  # an out-of-domain draft turns on no critical alert by itself
        try:
            found = find_critical({"findings": draft.findings, "impression": draft.impression}, critical_names)
            critical = [finding.title for finding in found]
        except Exception:  # the draft is worth keeping even when the labeler fails
            log.exception("critical findings of a draft could not be read")
    return {"variant": draft.variant, "images": list(draft.images), "instances": instances,
            "skipped": [{"sop_instance_uid": uid, "why": why} for uid, why in draft.skipped],
            "prompts": draft.prompts, "prior": draft.prior, "timings": draft.timings, "domain": domain,
            "confidence": dict(draft.confidence or {}), "critical": critical}


class DraftingWorker:
    def __init__(self, client: WorkerClient, model: DraftModel, settings: WorkerSettings, cache: InstanceCache,
                 worker_id: str, critical_names: tuple[str, ...]) -> None:
        self._client = client
        self._model = model
        self._settings = settings
        self._cache = cache
        self.worker_id = worker_id
        self._critical = critical_names
        self._leases = LeaseKeeper(client, settings.renew_every_s)
        self.throughput = Throughput()
        self.drafted = 0

    # -- the loop ----------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the report-language pipeline (seconds) before the first claim rather than inside the first
        batch, as the workstation's queue does."""
        try:
            find_critical({"findings": "No pneumothorax.", "impression": ""}, self._critical)
        except Exception:  # drafting works without it; the first batch then pays for the load
            log.exception("the findings labeler could not be loaded ahead of drafting")

    def run(self, stop: threading.Event) -> None:
        """Draft until `stop` is set (the batch in hand is finished first). NotAuthorized and Forbidden end it."""
        self._leases.start()
        heartbeat = threading.Thread(target=self._beat, args=(stop,), name="raddraft-worker-heartbeat", daemon=True)
        heartbeat.start()
        try:
            while not stop.is_set():
                try:
                    drafted = self.run_once()
                except ServerUnreachable as error:
                    log.warning("the server cannot be reached (%s); trying again", error)
                    drafted = 0
                if drafted == 0:
                    stop.wait(self._settings.poll_interval_s)
        finally:
            self._leases.stop()

    def run_once(self) -> int:
        """One claim and its batch; how many studies it drafted."""
        jobs = self._client.claim(self.worker_id, self._settings.batch, self._settings.lease_s)
        if not jobs:
            return 0
        self._leases.hold(jobs)
        try:
            return self._draft_jobs(jobs)
        finally:
            self._leases.release(jobs)
            for job in jobs:
                self._cache.drop(job.study_uid)

    def heartbeat(self) -> None:
        self._client.heartbeat({"worker_id": self.worker_id, "model": self._model.model_id,
                                "provider": self._model.provider, "variant": self._model.variant,
                                "batch": self._settings.batch, "drafted": self.drafted,
                                **self.throughput.report()})

    # -- one batch ---------------------------------------------------------------------------------
    def _draft_jobs(self, jobs: list[Job]) -> int:
        started = time.perf_counter()
        ready = [item for job in jobs if (item := self._prepare(job)) is not None]
        if not ready:
            return 0
        drafted = [(item, draft) for item, draft in zip(ready, self._draft_together(ready)) if draft is not None]
        written = sum(self._write_back(item.job, draft, len(item.paths)) for item, draft in drafted)
        new_tokens = sum(len_tokens(draft) for _, draft in drafted)
        self.throughput.add(time.perf_counter() - started, written, new_tokens)
        self.drafted += written
        log.info("drafted %d of %d studies in %.2f s (batch %d)", written, len(jobs),
                 time.perf_counter() - started, len(ready))
        return written

    def _draft_together(self, ready: list[_Ready]) -> list[Draft | None]:
        if not ready:
            return []
        try:
            return list(self._model.draft_batch([item.study for item in ready],
                                                 priors=[item.prior for item in ready]))
        except Exception as error:  # the worker must survive anything one batch does
            self._fail_all([item.job for item in ready], error)
            return [None] * len(ready)

    def _fail_all(self, jobs: list[Job], error: Exception) -> None:
        reason = str(error) if isinstance(error, EngineError) else f"internal error: {type(error).__name__}: {error}"
        if not isinstance(error, EngineError):
            log.exception("drafting failed")
        for job in jobs:
            self._fail(job, reason)

    def _prepare(self, job: Job) -> _Ready | None:
        """The job's files, and its study as the batch takes it (or its prior as the engine takes it); None
        (reported failed) when it cannot be drafted."""
        try:
            instances = job.instances or self._client.study_instances(job.study_uid)
            paths = self._cache.fetch(self._client, job.study_uid, instances)
            return _Ready(job, paths, self._model.prepare(paths), self._prior_of(job))
        except EngineError as error:
            self._fail(job, str(error))
        except (ServerUnreachable, NotAuthorized, Forbidden):
            raise  # nothing of the batch can go on; the leases run out and the studies are offered again
        except WorkerApiError as error:
            self._fail(job, f"its images could not be fetched: {error}")
        return None

    def _prior_of(self, job: Job) -> PriorInput | None:
        """The job's prior as the engine takes it (the workstation queue's rule, `engine.prompts.prior_input`),
        or None when there is none (a model that takes none gets it without images, so that its draft says so).
        Its images are fetched only for a model that reads the prior's image; when they cannot be fetched the engine drafts as it does with a prior whose image
        cannot be read (told there is none, `prompts.prior` saying why)."""
        from engine.prompts import prior_input

        prior, intake = job.prior, self._model.takes_prior
        if prior is None:
            return None
        if intake != "report+image":
            prior = dataclasses.replace(prior, instances=())
        else:
            try:
                self._cache.fetch(self._client, job.study_uid, prior.instances, of_study=prior.study_uid)
            except (ServerUnreachable, NotAuthorized, Forbidden):
                raise
            except WorkerApiError as error:
                log.warning("study %s: the images of its prior %s could not be fetched (%s)", job.study_uid,
                            prior.study_uid, error)
                prior = dataclasses.replace(prior, instances=())
        return prior_input(prior, lambda ref: self._cache.path_of(job.study_uid, ref))

    def _write_back(self, job: Job, draft: Draft, instances: int) -> int:
        if self._leases.lost(job):
            log.warning("study %s: lease lost while drafting; its draft is not written", job.study_uid)
            return 0
        try:
            self._client.submit_draft(job, {
                "findings": draft.findings, "impression": draft.impression, "model": draft.model,
                "provider": draft.provider, "detail": draft_detail(draft, instances, self._critical)})
        except LeaseLost as error:
            log.warning("study %s: %s", job.study_uid, error)
            return 0
        return 1

    def _fail(self, job: Job, reason: str) -> None:
        log.warning("study %s cannot be drafted: %s", job.study_uid, reason)
        try:
            self._client.fail(job, reason)
        except WorkerApiError as error:
            log.warning("study %s: reporting the failure did not reach the server (%s)", job.study_uid, error)

    def _beat(self, stop: threading.Event) -> None:
        while True:
            try:
                self.heartbeat()
            except WorkerApiError as error:
                log.warning("heartbeat failed: %s", error)
            if stop.wait(self._settings.heartbeat_s):
                return


def len_tokens(draft: Draft) -> int:
    timings = draft.timings
    return sum(int(timings.get(section, {}).get("new_tokens", 0)) for section in ("findings", "impression")
               if isinstance(timings.get(section), dict))
