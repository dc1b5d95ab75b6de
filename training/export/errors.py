"""The one error type of the export: its message says what is wrong and, where it can, what to do."""

from __future__ import annotations

import json
from pathlib import Path


class ExportError(Exception):
    """A checkpoint cannot be exported, or the exported graphs do not agree with the torch model."""


def read_json_object(path: Path) -> dict:
    """A checkpoint's JSON file (config, image processor, generation config...) as a dict, or ExportError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: does not hold a JSON object")
    return data
