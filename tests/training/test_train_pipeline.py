"""`raddraft train` end to end on the tiny recipe: stages -> merge -> export -> evaluate -> card -> curves; then
a second run resumes from the finished stages instead of training again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("onnxruntime")

from engine.bundle import validate_bundle
from training.train.tiny_run import TINY_RECIPE

pytestmark = pytest.mark.slow


def raddraft_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", "train", "--config", str(TINY_RECIPE),
                           "--no-progress", *args], capture_output=True, text=True, timeout=280, check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    done = raddraft_train("--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, done


def test_train_writes_every_stage_the_merged_checkpoint_and_curves(trained):
    run_dir, done = trained
    for stage in ("vision", "language", "projector", "finetune"):
        assert (run_dir / "stages" / stage / "done.json").is_file()
        assert (run_dir / "stages" / stage / "output" / "weights.safetensors").is_file()
        checkpoint = run_dir / "stages" / stage / "checkpoints"
        latest = (checkpoint / "latest").read_text().strip()
        assert json.loads((checkpoint / latest / "config.json").read_text()) == \
            json.loads((run_dir / "config.json").read_text())
    assert (run_dir / "merged" / "model.safetensors").is_file()
    assert (run_dir / "merged" / "tokenizer.json").is_file()
    assert (run_dir / "training_curves.png").stat().st_size > 1000
    assert "micro F1" in done.stdout and "bundle:" in done.stdout


def test_the_bundle_is_evaluated_and_carries_its_numbers(trained):
    run_dir, _ = trained
    bundle = run_dir / "bundle"
    manifest = validate_bundle(bundle)
    metrics = manifest.metrics
    assert metrics["studies"] == 4 and metrics["evaluated_with"] == "engine fp32"
    for section in ("report", "findings", "impression"):
        assert {"bleu4", "rouge_l", "micro_f1"} <= set(metrics[section])
    assert set(metrics["per_finding_f1"]) >= {"pleural_effusion", "pneumothorax", "no_finding"}
    assert "steps" in manifest.provenance["training"]["stages"]["finetune"]
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "## Measured quality" in card and "BLEU-4" in card and "pleural_effusion" in card
    assert card.count("## Measured quality") == 1
    assert "pipeline tests only" in card  # the recipe's description
    predictions = (run_dir / "evaluation" / "predictions-engine-fp32.jsonl").read_text().splitlines()
    assert len(predictions) == 4 and {"findings", "impression"} <= set(json.loads(predictions[0]))


def test_a_second_run_resumes_and_a_changed_recipe_is_refused(trained):
    run_dir, _ = trained
    again = raddraft_train("--run-dir", str(run_dir), "--set", "output.export=false", "--set", "output.evaluate=false")
    assert again.returncode != 0 and "different configuration" in again.stderr
    resumed = raddraft_train("--run-dir", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("finished before, loaded its output") == 4


def test_torch_drafts_of_the_merged_model_agree_with_the_engine(trained):
    """Training-time generation (torch, used for validation metrics and as the evaluation fallback) and the
    engine on the exported bundle draft the same text."""
    from transformers import LlavaForConditionalGeneration

    from training.train.finish import torch_drafts
    from training.train.pipeline import base_image_size, preprocessing, test_studies
    from training.train.tiny_run import tiny_context, tiny_recipe

    run_dir, _ = trained
    ctx = tiny_context(tiny_recipe(run_dir))
    model = LlavaForConditionalGeneration.from_pretrained(run_dir / "merged", attn_implementation="eager").eval()
    studies, _ = test_studies(ctx.config)
    prep = preprocessing(ctx.config, base_image_size(ctx.config))
    drafts = torch_drafts(ctx, model, prep, studies, progress=False)["torch"]
    engine = [json.loads(line) for line in
              (run_dir / "evaluation" / "predictions-engine-fp32.jsonl").read_text().splitlines()]
    assert [d["study_uid"] for d in drafts] == [e["study_uid"] for e in engine]
    same = sum(d["findings"] == e["findings"] and d["impression"] == e["impression"] for d, e in zip(drafts, engine))
    assert same >= len(engine) - 1, (drafts, engine)


def test_training_from_a_local_llava_checkpoint_skips_stage_0(tmp_path):
    """A base checkpoint (any local LlavaForConditionalGeneration folder + tokenizer.json) starts at stage 1,
    with its own tokenizer and image size."""
    from tiny_llava import save_tiny_llava

    from training.train.pipeline import run_training
    from training.train.tiny_run import tiny_recipe

    base = save_tiny_llava(tmp_path / "base")  # TINY: 64 px images, 16 image tokens
    config = tiny_recipe(tmp_path / "run", {"model.base": str(base), "output.evaluate": False})
    outcome = run_training(config, progress=False)
    assert outcome.finished and list(outcome.stages) == ["projector", "finetune"]
    manifest = validate_bundle(outcome.bundle_dir)
    assert manifest.preprocessing.image_size == 64 and manifest.architecture.vocab_size == 300
    assert (tmp_path / "run" / "merged" / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()
