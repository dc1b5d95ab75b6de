"""Where the shipped resources are: next to the source tree, or inside a PyInstaller bundle."""

from __future__ import annotations

import sys
from pathlib import Path

EMBEDDED_MODEL_NAME = "raddraft-phantom-cxr"


def resources_dir() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"


def embedded_model_dir() -> Path:
    return resources_dir() / "models" / EMBEDDED_MODEL_NAME


def model_dir(configured: Path | None) -> Path:
    """The configured bundle, or the embedded default one."""
    return Path(configured) if configured else embedded_model_dir()
