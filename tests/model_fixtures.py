"""Fixtures shared across test folders: a tiny exported bundle and a few phantom studies, built once
per test session (registered in tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="building a test model needs the training extra (torch)")
    from tests.training.tiny_llava import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("tiny-checkpoint"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(tiny_checkpoint, out, name="tiny-test", version="0.0.1", quantize=("int8",), include_checkpoint=True)
    return out


@pytest.fixture(scope="session")
def phantom_studies(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Four phantom studies (64 px); each record has `paths` (absolute) besides the manifest fields."""
    from training.data.phantoms import PhantomConfig, generate_dataset

    out = tmp_path_factory.mktemp("phantoms")
    generate_dataset(out, 4, seed=11, config=PhantomConfig(image_size=64, workers=1))
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    for record in records:
        record["paths"] = [out / image for image in record["images"]]
    return records
