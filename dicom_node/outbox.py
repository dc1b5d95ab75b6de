"""The outbox worker: sends the SR of each signed report to PACS by C-STORE, retrying until PACS takes it.

A worker thread sends whatever is due in the outbox table (dicom_node/reports.py), then sleeps until the
next retry or until `notify()` (a new signature, a "send now", new settings). A failed attempt is recorded
with its error and retried after `retry_initial_s`, doubling up to `retry_max_s`; the send stays queued
across restarts because the queue is the index. Every attempt is published on `events.sent`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dicom_node.errors import NodeError
from dicom_node.events import Topic
from dicom_node.reports import (
    OutboxItem,
    due_sends,
    next_send_at,
    record_send_failure,
    record_send_success,
    report_by_id,
)
from dicom_node.sender import SendError, send_files
from dicom_node.settings import PacsSettings, ReadingSettings
from dicom_node.sr import write_report_sr
from dicom_node.store import Store

log = logging.getLogger(__name__)
_IDLE_WAKE_S = 60.0  # PACS not configured: only settings changes (which notify) matter
_POLL_S = 2.0


@dataclass(frozen=True)
class SendAttempt:
    item_id: int
    report_id: int
    study_uid: str
    ok: bool
    destination: str
    error: str = ""
    attempts: int = 0
    next_attempt_at: float | None = None


class OutboxEvents:
    def __init__(self) -> None:
        self.sent: Topic[SendAttempt] = Topic("report_sent")


def ensure_report_sr(store: Store, report_id: int, organization: str = "RadDraft") -> Path:
    """The SR file of a signed report (written under STORE/reports/ the first time)."""
    report = report_by_id(store.index, report_id)
    if report is None:
        raise KeyError(f"unknown report {report_id}")
    study = store.index.study(report.study_uid)
    if study is None:
        raise KeyError(f"unknown study {report.study_uid}")
    return write_report_sr(store.root, report, study, store.index.instances_of(report.study_uid),
                           organization=organization)


def retry_delay(pacs: PacsSettings, attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones (1, 2, ...)."""
    return min(pacs.retry_initial_s * (2 ** max(attempts - 1, 0)), pacs.retry_max_s)


class OutboxWorker:
    def __init__(self, store: Store, pacs: PacsSettings, reading: ReadingSettings | None = None,
                 events: OutboxEvents | None = None) -> None:
        self._store = store
        self._pacs = pacs
        self._reading = reading or ReadingSettings()
        self.events = events or OutboxEvents()
        self._cond = threading.Condition()
        self._wake = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="raddraft-outbox", daemon=True)

    @property
    def pacs(self) -> PacsSettings:
        with self._cond:
            return self._pacs

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def notify(self) -> None:
        """Look at the outbox now (something was queued or is due again)."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def set_settings(self, pacs: PacsSettings, reading: ReadingSettings | None = None) -> None:
        with self._cond:
            self._pacs = pacs
            if reading is not None:
                self._reading = reading
            self._wake = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                pacs, reading = self._pacs, self._reading
                self._wake = False
            try:
                if pacs.configured:
                    for item in due_sends(self._store.index):
                        self._attempt(item, pacs, reading)
                        with self._cond:
                            if self._stopping:
                                return
                wait = self._seconds_to_next() if pacs.configured else _IDLE_WAKE_S
            except Exception:  # the worker must outlive anything one report does
                log.exception("outbox worker failed; retrying")
                wait = 5.0
            with self._cond:
                if not self._wake and not self._stopping:
                    self._cond.wait(timeout=max(wait, 0.05))

    def _seconds_to_next(self) -> float:
        # Another process (an app attached to this service) may queue a send at any time: look again soon.
        due = next_send_at(self._store.index)
        return _POLL_S if due is None else min(_POLL_S, due - time.time())

    def _attempt(self, item: OutboxItem, pacs: PacsSettings, reading: ReadingSettings) -> None:
        destination = pacs.describe()
        try:
            path = ensure_report_sr(self._store, item.report_id, reading.organization)
            summary = send_files(pacs.host, pacs.port, [path], calling_ae=pacs.calling_ae,
                                 called_ae=pacs.ae_title, timeout_s=pacs.timeout_s)
            outcome = summary.outcomes[0] if summary.outcomes else None
            if outcome is None or not outcome.ok:
                status = "no status" if outcome is None or outcome.status is None else f"status 0x{outcome.status:04X}"
                comment = outcome.comment if outcome else ""
                raise SendError(f"{destination} refused the report ({status}{': ' + comment if comment else ''})")
        except (NodeError, OSError, KeyError, ValueError) as error:
            attempts = item.attempts + 1
            next_at = time.time() + retry_delay(pacs, attempts)
            message = str(error) or type(error).__name__
            record_send_failure(self._store.index, item.id, message, next_at, destination)
            log.warning("sending the report of study %s failed (attempt %d, next in %.0f s): %s",
                        item.study_uid, attempts, next_at - time.time(), message)
            self.events.sent.publish(SendAttempt(item.id, item.report_id, item.study_uid, False, destination,
                                                 message, attempts, next_at))
            return
        record_send_success(self._store.index, item.id, destination)
        log.info("report of study %s sent to %s", item.study_uid, destination)
        self.events.sent.publish(SendAttempt(item.id, item.report_id, item.study_uid, True, destination,
                                             attempts=item.attempts + 1))
