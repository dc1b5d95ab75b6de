"""The site server's model listing (/api/models) says how each usable model is prompted, read from its
model.json, so that a thin workstation's window drafts on demand as the model's queued drafts are made: the
indication field, and the impression of "Draft both" from the drafted findings (impression_from)."""

from __future__ import annotations

from pathlib import Path

from engine.bundle import read_manifest
from engine.registry import InstalledModel
from server.app import _model
from tests.embedded_model import embedded_prompted

EMBEDDED = Path(__file__).resolve().parents[2] / "resources" / "models" / "raddraft-phantom-cxr"


def installed(path: Path, broken: str | None = None) -> InstalledModel:
    return InstalledModel(version="1.0.0", name="raddraft-phantom-cxr", path=path, installed_at=None, current=True,
                          embedded=True, metrics={}, record=None, broken=broken)


def test_the_listing_says_how_each_model_is_prompted(tmp_path: Path) -> None:
    for impression_from in ("image", "findings"):
        listed = _model(installed(embedded_prompted(tmp_path / impression_from, impression_from)))
        assert listed["impression_from"] == impression_from and listed["takes_indication"] is False
    assert _model(installed(EMBEDDED))["impression_from"] == read_manifest(EMBEDDED).impression_from


def test_a_broken_or_unreadable_model_is_listed_without_them(tmp_path: Path) -> None:
    assert "impression_from" not in _model(installed(EMBEDDED, broken="its graphs are missing"))
    (tmp_path / "model.json").write_text("{")
    listed = _model(installed(tmp_path))
    assert "impression_from" not in listed and listed["model_id"] == "raddraft-phantom-cxr@1.0.0"

