"""Work off the GUI thread: `Background.run(fn, on_done, on_error)` runs `fn` on a thread pool and calls the
callbacks on the GUI thread (through a queued signal), so the event loop never waits on disk, network or
the model."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

log = logging.getLogger(__name__)


class _Job(QRunnable):
    def __init__(self, job_id: int, fn: Callable[[], Any], owner: Background) -> None:
        super().__init__()
        self._id, self._fn, self._owner = job_id, fn, owner

    def run(self) -> None:
        try:
            result = self._fn()
        except Exception as error:  # noqa: BLE001 - delivered to the caller's error callback
            self._owner._failed.emit(self._id, error)
        else:
            self._owner._done.emit(self._id, result)


class Background(QObject):
    _done = Signal(int, object)
    _failed = Signal(int, object)

    def __init__(self, parent: QObject | None = None, max_threads: int = 4) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._callbacks: dict[int, tuple[Callable | None, Callable | None]] = {}
        self._ids = itertools.count(1)
        self._done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._failed.connect(self._on_failed, Qt.ConnectionType.QueuedConnection)

    def run(self, fn: Callable[[], Any], on_done: Callable[[Any], None] | None = None,
            on_error: Callable[[Exception], None] | None = None) -> None:
        job_id = next(self._ids)
        self._callbacks[job_id] = (on_done, on_error)
        self.pool.start(_Job(job_id, fn, self))

    def busy(self) -> int:
        return len(self._callbacks)

    def wait(self, timeout_ms: int = 30000) -> bool:
        return self.pool.waitForDone(timeout_ms)

    @Slot(int, object)
    def _on_done(self, job_id: int, result: object) -> None:
        on_done, _ = self._callbacks.pop(job_id, (None, None))
        if on_done is not None:
            on_done(result)

    @Slot(int, object)
    def _on_failed(self, job_id: int, error: object) -> None:
        _, on_error = self._callbacks.pop(job_id, (None, None))
        if on_error is not None:
            on_error(error)
        else:
            log.error("background task failed: %s", error, exc_info=error)  # type: ignore[arg-type]
