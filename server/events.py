"""Live updates for the apps: every change of a study's state (read from the index's study_events, whoever
made it: the node, a worker, a signature) and every claim, pushed to each connected event stream.

One thread looks at the index every `poll_s`; each subscriber has its own asyncio queue, fed from that
thread with `call_soon_threadsafe`, so a slow app never holds up the others (its queue is bounded: a full
one loses the oldest events, and the app re-reads the worklist when it reconnects).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from dicom_node.index import Index

log = logging.getLogger(__name__)
_QUEUE_BOUND = 1000
# Event ids are handed out when a row is inserted, not when it commits: a transaction on another connection
# (a worker's claim) may commit a lower id after a higher one was read. The last ids are read again.
_REORDER_WINDOW = 200


class EventHub:
    def __init__(self, index: Index, poll_s: float) -> None:
        self._index = index
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._subscribers: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._next_id = 0
        self._stop = threading.Event()
        self._high = self._latest_event_id()
        self._start_floor = self._high  # what happened before the server started is not news
        self._published: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="raddraft-site-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def subscribe(self) -> tuple[int, asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue(_QUEUE_BOUND)
        with self._lock:
            self._next_id += 1
            self._subscribers[self._next_id] = (asyncio.get_running_loop(), queue)
            return self._next_id, queue

    def unsubscribe(self, subscriber: int) -> None:
        with self._lock:
            self._subscribers.pop(subscriber, None)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            targets = list(self._subscribers.values())
        for loop, queue in targets:
            try:
                loop.call_soon_threadsafe(_put_dropping_oldest, queue, event)
            except RuntimeError:  # that app's loop is gone
                pass

    def _latest_event_id(self) -> int:
        return int(self._index.reader().execute("SELECT COALESCE(MAX(id), 0) FROM study_events").fetchone()[0])

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                rows = self._index.reader().execute(
                    "SELECT e.id, e.study_uid, e.to_state, e.reason, e.at FROM study_events e WHERE e.id > ? "
                    "ORDER BY e.id", (self._high - _REORDER_WINDOW,)).fetchall()
            except self._index.errors:
                log.exception("reading the study events failed; trying again")
                continue
            for row in rows:
                event_id = int(row["id"])
                if event_id in self._published or event_id <= self._start_floor:
                    continue
                self._published.add(event_id)
                self._high = max(self._high, event_id)
                self.publish({"kind": "study", "study_uid": row["study_uid"], "state": row["to_state"],
                              "reason": row["reason"], "at": row["at"]})
            floor = self._high - _REORDER_WINDOW
            self._published = {i for i in self._published if i > floor}


def _put_dropping_oldest(queue: asyncio.Queue, event: dict[str, Any]) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(event)
