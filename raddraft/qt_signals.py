"""SIGTERM and SIGINT for the desktop app: handled like closing the window.

Python runs a signal handler only between bytecodes of the main thread, and the main thread of a Qt app
sits in Qt's C++ event loop: without help a signal waits until the next mouse move, or (SIGTERM's default)
kills the process with 143 before the node, the queue and the store are stopped. `signal.set_wakeup_fd`
makes the interpreter write a byte to a socket when a signal arrives; a `QSocketNotifier` on the other end
wakes the loop, Python runs the handler, and the handler closes the windows on the next turn of the loop.
From there the app stops exactly as when the reader closes the window: `run_app` returns 0 after the
workstation stopped the node (in-flight associations finish within `shutdown_grace_s`) and the queue.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Callable

from PySide6.QtCore import QObject, QSocketNotifier, QTimer
from PySide6.QtWidgets import QApplication

log = logging.getLogger("raddraft.app")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalQuit(QObject):
    """Owns the wake-up socket pair and the notifier; `restore()` puts the previous handlers back."""

    def __init__(self, app: QApplication, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        super().__init__(app)
        self._app = app
        self.received: signal.Signals | None = None
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._notifier = QSocketNotifier(self._reader.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._drain)
        self._previous = {signum: signal.signal(signum, self._on_signal) for signum in signals}

    def _drain(self, *_: object) -> None:
        # The bytes only wake the loop; the handler itself runs as soon as Python gets control back.
        try:
            while self._reader.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _on_signal(self, signum: int, _frame: object) -> None:
        first = self.received is None
        self.received = signal.Signals(signum)
        if first:
            log.info("%s received: closing the window and stopping cleanly", self.received.name)
            # Not from inside the handler: the loop may be in the middle of something.
            QTimer.singleShot(0, self._close)

    def _close(self) -> None:
        self._app.closeAllWindows()
        self._app.quit()

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._notifier.setEnabled(False)
        self._reader.close()
        self._writer.close()


def quit_on_signals(app: QApplication) -> Callable[[], None]:
    """Handle SIGINT and SIGTERM as a closed window from now on; return the function that undoes it."""
    return SignalQuit(app).restore
