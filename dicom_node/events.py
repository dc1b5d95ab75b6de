"""Events the node publishes; other parts (the drafting queue, the desktop) subscribe to them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
E = TypeVar("E")


class Topic(Generic[E]):
    """A thread-safe list of subscribers; a failing subscriber is logged and never stops the others."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[E], None]] = []

    def subscribe(self, callback: Callable[[E], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: E) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("subscriber %r of %s failed", callback, self.name)


@dataclass(frozen=True)
class InstanceStored:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    outcome: str  # a PutOutcome value


@dataclass(frozen=True)
class StudyStable:
    study_uid: str
    num_instances: int


class NodeEvents:
    """The node's topics, created once and passed to whoever publishes or subscribes."""

    def __init__(self) -> None:
        self.instance_stored: Topic[InstanceStored] = Topic("instance_stored")
        self.study_stable: Topic[StudyStable] = Topic("study_stable")
