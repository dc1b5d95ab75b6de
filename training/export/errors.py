"""The one error type of the export: its message says what is wrong and, where it can, what to do."""

from __future__ import annotations


class ExportError(Exception):
    """A checkpoint cannot be exported, or the exported graphs do not agree with the torch model."""
