"""Warnings raised while reading a site's files are counted, never shown: pydicom's messages quote the
values they complain about (a name in the wrong character set, an ID of the wrong length), and the
app's log and a terminal are outside the de-identified data."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class _Withheld(logging.Filter):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.counts[f"pydicom log {record.levelname.lower()}"] += 1
            return False
        return False  # debug and info records may quote values too


@contextmanager
def values_withheld(counts: Counter) -> Iterator[Counter]:
    """Within the block, warnings and pydicom log records are counted into `counts` by kind only."""
    loggers = [logging.getLogger("pydicom")] + [
        logger for name, logger in list(logging.Logger.manager.loggerDict.items())
        if name.startswith("pydicom.") and isinstance(logger, logging.Logger)]
    withheld = _Withheld(counts)
    for logger in loggers:
        logger.addFilter(withheld)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield counts
            finally:
                for warning in caught:
                    counts[warning.category.__name__] += 1
    finally:
        for logger in loggers:
            logger.removeFilter(withheld)
