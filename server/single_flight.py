"""One computation of an expensive answer shared by every request that is waiting for it.

Twenty apps asking for the worklist of 10,000 studies at the same moment each built it from the index and
encoded it again (37 s median). A request here waits for the next computation that *starts after it
arrived*, so its answer is never older than the request, and at most one computation runs at a time: twenty
requests at once cost at most two computations instead of twenty.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self, compute: Callable[[], T]) -> None:
        self._compute = compute
        self._lock = threading.Condition()
        self._running = False
        self._started = 0   # computations started
        self._finished = 0  # computations finished (with their result or error below)
        self._result: T | None = None
        self._error: BaseException | None = None

    def get(self) -> T:
        with self._lock:
            # the first computation to start after now answers this request
            wanted = self._started + 1
            while True:
                if self._finished >= wanted:
                    if self._error is not None:
                        raise self._error
                    return self._result  # type: ignore[return-value]
                if not self._running:
                    break
                self._lock.wait()
            self._running = True
            self._started += 1
            mine = self._started
        result: T | None = None
        error: BaseException | None = None
        try:
            result = self._compute()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter, then raised here too
            error = exc
        with self._lock:
            self._result, self._error = result, error
            self._finished = mine
            self._running = False
            self._lock.notify_all()
        if error is not None:
            raise error
        return result  # type: ignore[return-value]
