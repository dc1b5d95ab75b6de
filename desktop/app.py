"""`raddraft app`: the QApplication and the main window over a started `raddraft.workstation.Workstation`."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from desktop.main_window import MainWindow


def application() -> QApplication:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("RadDraft")
    app.setOrganizationName("RadDraft")
    return app  # type: ignore[return-value]


def settle_memory() -> None:
    """Collect once, then exempt everything that exists after start-up from the garbage collector.

    A full (generation 2) collection walks every tracked object while holding the GIL, whichever thread
    triggers it; with the modules, sessions and widgets of start-up in that walk it pauses the GUI for
    a visible moment. Frozen, they are skipped, and later full collections only walk what came since.
    """
    gc.collect()
    gc.freeze()


def open_main_window(workstation, size: tuple[int, int] = (1440, 900)) -> MainWindow:
    """The main window, shown, with start-up memory settled (what `run_app` and the tests open)."""
    application()
    window = MainWindow(workstation)
    window.resize(*size)
    window.show()
    settle_memory()
    return window


def when_ready(window: MainWindow, callback: Callable[[], None], poll_ms: int = 5) -> QTimer:
    """Call `callback` once, as soon as the window is on screen with its worklist loaded (the first moment
    a reader can pick a study)."""
    timer = QTimer(window, interval=poll_ms)

    def check() -> None:
        if window.isVisible() and window.feed.fetches > 0:
            timer.stop()
            callback()

    timer.timeout.connect(check)
    timer.start()
    return timer


def run_app(workstation, screenshot: Path | None = None, settle_ms: int = 3000,
            on_ready: Callable[[], None] | None = None, exit_when_ready: bool = False) -> int:
    """Show the window until it is closed; then stop the workstation's services. With `screenshot`, save a
    picture of the window after `settle_ms` and quit. `on_ready` is called once the window is ready (see
    `when_ready`); with `exit_when_ready` the window then closes (start-up measurements)."""
    app = application()
    window = open_main_window(workstation)
    if screenshot is not None:
        QTimer.singleShot(settle_ms, lambda: (window.grab().save(str(screenshot)), window.close()))
    if on_ready is not None or exit_when_ready:
        def ready() -> None:
            if on_ready is not None:
                on_ready()
            if exit_when_ready:
                window.close()

        when_ready(window, ready)
    try:
        return app.exec()
    finally:
        window.shutdown()
        workstation.stop()
