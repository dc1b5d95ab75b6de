"""Which process hosts the DICOM node of a store: an OS lock on `STORE/host.lock`, held while it runs.

`raddraft service` and `raddraft app` take it before listening. The desktop app that finds it taken
attaches to that service instead of starting a second node on the same store; a second service refuses
to start. The OS releases the lock when its holder exits, crash included, so a stale file never blocks.
Who holds it (pid, AE title, address) is written to `STORE/host.json` for the others to show.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from dicom_node.durable import write_text_atomically

LOCK_FILE, INFO_FILE = "host.lock", "host.json"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


@dataclass(frozen=True)
class HostInfo:
    kind: str  # "service" or "app"
    pid: int
    ae_title: str
    host: str
    port: int

    def describe(self) -> str:
        return f"raddraft {self.kind} (pid {self.pid}), node {self.ae_title} on {self.host}:{self.port}"


class HostLock:
    def __init__(self, root: Path, handle: int) -> None:
        self.root = Path(root)
        self._fd: int | None = handle

    @classmethod
    def acquire(cls, root: Path, info: HostInfo) -> HostLock | None:
        """Take the store's host lock and publish `info`; None when another process holds it."""
        root = Path(root)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.close(fd)
            return None
        lock = cls(root, fd)
        lock.update(info)
        return lock

    def update(self, info: HostInfo) -> None:
        """Publish new details (the node moved to another port, say)."""
        write_text_atomically(self.root / INFO_FILE, json.dumps(asdict(info)))

    def release(self) -> None:
        if self._fd is None:
            return
        (self.root / INFO_FILE).unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor releases the lock
        self._fd = None


def current_host(root: Path) -> HostInfo | None:
    """Who hosts the store's node now, or None when nobody does."""
    root = Path(root)
    if not (root / LOCK_FILE).exists():
        return None
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:  # pragma: no cover - Windows
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            return None  # nobody holds it
        except OSError:
            pass
    finally:
        os.close(fd)
    try:
        return HostInfo(**json.loads((root / INFO_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return HostInfo("unknown", 0, "", "", 0)
