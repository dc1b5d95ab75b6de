"""Checkpoints resume exactly: N steps straight == N/2 steps, a new process-like start, N/2 more."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from training.train.checkpoint import (
    CHECKPOINTS,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_trainable_state,
)
from training.train.config import ComputeConfig
from training.train.stages import prepare_stage
from training.train.tasks import report_task
from training.train.tiny_run import fresh_llava, tiny_context, tiny_recipe
from training.train.trainer import make_accelerator, run_stage

STEPS = 6  # one epoch of the tiny finetune stage at batch 4


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    overrides = {"stages.finetune.optimisation.batch_size": 4, "stages.finetune.validation_drafts": 0}
    return tiny_context(tiny_recipe(tmp_path_factory.mktemp("resume") / "run", overrides))


def finetune(ctx, stage_dir, stop_after=None):
    """A fresh model (as a new process would build it) trained by the finetune stage in `stage_dir`."""
    model, _ = prepare_stage(fresh_llava(ctx), ("projector", "lora"), ctx.config.lora)
    task = report_task(ctx, "finetune", model)
    task.stage_dir = stage_dir
    return run_stage(task, make_accelerator(ComputeConfig(device="cpu")), progress=False, stop_after=stop_after)


def train_losses(result):
    return [r["loss"] for r in result.history if r["kind"] == "train"]


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_resume_continues_exactly(ctx, tmp_path):
    straight = finetune(ctx, tmp_path / "straight", stop_after=STEPS)
    assert straight.steps == STEPS and len(train_losses(straight)) == STEPS

    first = finetune(ctx, tmp_path / "resumed", stop_after=STEPS // 2)
    assert not first.finished and first.steps == STEPS // 2
    second = finetune(ctx, tmp_path / "resumed", stop_after=STEPS)
    assert second.resumed_from is not None and second.steps == STEPS

    assert train_losses(second) == pytest.approx(train_losses(straight), rel=1e-5, abs=1e-6)
    a, b = trainable(straight.model), trainable(second.model)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoint_holds_config_position_and_refuses_another_model(ctx, tmp_path):
    finetune(ctx, tmp_path / "stage", stop_after=2)
    path = latest_checkpoint(tmp_path / "stage")
    assert path is not None and path.parent.name == CHECKPOINTS
    assert json.loads((path / "config.json").read_text())["output"]["run_dir"] == str(ctx.config.output.run_dir)
    checkpoint = load_checkpoint(path)
    assert checkpoint.state.position.step == 2
    assert not any(p.name.endswith(".partial") for p in path.parent.iterdir())
    with pytest.raises(CheckpointError, match="does not fit"):
        load_trainable_state(fresh_llava(ctx), checkpoint.trainable)  # no LoRA: other parameter names
