"""The thin workstation's image cache stays under its size, dropping the images read longest ago first."""

from __future__ import annotations

import os
from pathlib import Path

from desktop.site_client import ImageCache


def cached(cache: ImageCache, name: str, size: int, last_read: float) -> Path:
    path = cache.path_of("1.2.3", "1.2.3.4", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    os.utime(path, (last_read, last_read))
    return path


def test_prune_removes_the_least_recently_read_until_under_the_limit(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    oldest, older, recent = (cached(cache, name, 1000, when) for name, when in
                             (("a", 1_000.0), ("b", 2_000.0), ("c", 3_000.0)))
    assert cache.prune(2500) == 1000
    assert not oldest.exists() and older.exists() and recent.exists()
    assert cache.prune(2500) == 0  # already under: nothing more goes
    assert cache.prune(0) == 2000 and not recent.exists()

