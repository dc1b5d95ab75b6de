"""Durable file writes: temp file in the target folder, fsync, rename, fsync of the folder.

A crash at any point leaves either the old state or the complete new file, never a partial one.
Temp files carry the `TEMP_SUFFIX` so that the store can sweep strays left by a crash.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".partial"
_HAS_FDATASYNC = hasattr(os, "fdatasync")


def _sync_file(fd: int) -> None:
    # fdatasync skips metadata such as mtime that recovery does not need; the size is still synced.
    if _HAS_FDATASYNC:
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS/Windows
        os.fsync(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside `path` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - Windows cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(path: Path, stop_at: Path) -> None:
    """Create `path` (and missing parents up to `stop_at`) and fsync each parent that changed."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != stop_at and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        fsync_dir(folder.parent)


def temp_path_for(final: Path) -> Path:
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def write_synced_temp(final: Path, chunks: Iterable[bytes | bytearray | memoryview], mode: int = 0o640) -> Path:
    """Write `chunks` to a new temp file beside `final` and sync it; return the temp path.

    On any error the temp file is removed and the error re-raised.
    """
    temp = temp_path_for(final)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            _sync_file(fd)
        finally:
            os.close(fd)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def commit_temp(temp: Path, final: Path) -> None:
    """Atomically put a synced temp file in place of `final` and make the rename durable."""
    try:
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def write_atomically(final: Path, chunks: Iterable[bytes | bytearray | memoryview], mode: int = 0o640) -> None:
    """Write `chunks` to `final` durably and atomically: either the old state or the whole new file.

    The folder of `final` must exist.
    """
    commit_temp(write_synced_temp(final, chunks, mode), final)


def write_text_atomically(final: Path, text: str) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(final, [text.encode("utf-8")])


def replace_folder(staging: Path, target: Path) -> None:
    """Put the finished folder `staging` in place of `target` (absent, or an old one that is replaced).

    The old folder is moved aside first and put back if the rename fails, so `target` is always either the
    old folder or the new one. The caller has synced the files inside `staging`.
    """
    import shutil

    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, and `folder` itself."""
    for path in Path(folder).rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(Path(folder))


@contextmanager
def folder_written_aside(target: Path) -> Iterator[Path]:
    """Yield a hidden sibling folder to write into; when the block ends without error, its contents are made
    durable and it replaces `target` (`replace_folder`); on any error it is removed and `target` is untouched."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    staging.mkdir()
    try:
        yield staging
        fsync_tree(staging)
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
