"""Keeps the leases of the studies being drafted alive: renewed every `lease_s / 3` from a thread, so a
long batch never loses its studies to another worker, and a dead worker's leases simply run out."""

from __future__ import annotations

import logging
import threading

from raddraft.worker.client import Job, LeaseLost, WorkerApiError, WorkerClient

log = logging.getLogger("raddraft.worker")


class LeaseKeeper:
    def __init__(self, client: WorkerClient, every_s: float) -> None:
        self._client = client
        self._every_s = every_s
        self._held: dict[str, Job] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raddraft-worker-leases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._every_s + 5.0)

    def hold(self, jobs: list[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._held[job.study_uid] = job
                self._lost.discard(job.study_uid)

    def release(self, jobs: list[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._held.pop(job.study_uid, None)

    def lost(self, job: Job) -> bool:
        with self._lock:
            return job.study_uid in self._lost

    def renew_all(self) -> None:
        with self._lock:
            jobs = list(self._held.values())
        for job in jobs:
            try:
                self._client.renew(job)
            except LeaseLost:
                log.warning("lost the lease on study %s (another worker may draft it)", job.study_uid)
                with self._lock:
                    self._lost.add(job.study_uid)
                    self._held.pop(job.study_uid, None)
            except WorkerApiError as error:  # a failed renewal is tried again; the lease outlasts two
                log.warning("renewing the lease on study %s failed: %s", job.study_uid, error)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self.renew_all()
