"""The app's main window under pytest-qt, for any test folder (registered in tests/conftest.py).

`open_window(workstation)` opens the window over a workstation the test built (hosting, or a site client), as
`raddraft app` opens it, and shuts both down after the test. Qt is imported only when a test asks for it, and
the offscreen platform stays the asking folder's choice (tests/desktop/conftest.py sets it before Qt starts).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

WINDOW_SIZE = (1400, 900)


@pytest.fixture
def open_window(qtbot) -> Iterator[Callable[[Any], Any]]:
    """`open_window(workstation)` -> a shown MainWindow over it; window and workstation are stopped at teardown."""
    from desktop.app import open_main_window

    opened = []

    def open_over(workstation):
        window = open_main_window(workstation, WINDOW_SIZE)
        opened.append((window, workstation))
        qtbot.addWidget(window)
        return window

    yield open_over
    for window, workstation in opened:
        window.shutdown()
        workstation.stop()
    # open_main_window freezes start-up memory (desktop.app.settle_memory); later tests must not inherit it
    gc.unfreeze()
