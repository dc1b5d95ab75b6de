"""The memory settings of a recipe and the memory plan (`raddraft train --plan`).

Fast: the settings are checked values (4 bits and 8-bit optimisers refused on CPU, saying what to change);
the plan of the tiny recipe counts what the model has, gives the largest batch, and refuses in one line.
Slow: real-width LLaVA-1.5 shapes (1-2 layers) trained in a fresh process each, the plan made there before
the model exists and compared with the measured peak resident size of the training steps (within 20 %);
the bf16 base + fp32 LoRA + gradient checkpointing run learns, and only LoRA and the projector change.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from training.train.config import MemoryConfig, TrainConfigError
from training.train.plan import GiB, plan_recipe, refusal
from training.train.precision import PrecisionError, check_cuda_settings
from training.train.tiny_run import tiny_recipe


def test_memory_settings_are_checked_values(tmp_path):
    with pytest.raises(TrainConfigError, match="memory.base_dtype"):
        tiny_recipe(tmp_path, {"memory.base_dtype": "int3"})
    with pytest.raises(TrainConfigError, match="memory.quantize_base: .*CUDA only"):
        tiny_recipe(tmp_path, {"memory.quantize_base": "4bit", "model.base": str(tmp_path)})
    with pytest.raises(TrainConfigError, match="memory.optimizer: .*CUDA only"):
        tiny_recipe(tmp_path, {"memory.optimizer": "adamw-8bit"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_qlora_is_refused_without_cuda():
    with pytest.raises(PrecisionError, match="need a CUDA GPU"):
        check_cuda_settings(MemoryConfig(quantize_base="4bit"), "auto")


@pytest.mark.slow
def test_the_plan_counts_the_model_and_refuses_in_one_line(tmp_path):
    from training.train.stages import count_parameters, lora_parameters, prepare_stage
    from training.train.tiny_run import fresh_llava, tiny_context

    config = tiny_recipe(tmp_path / "run")
    _, plans = plan_recipe(config, budget=64 * GiB, runtime=0)
    finetune = next(p for p in plans if p.stage == "finetune")
    model, _ = prepare_stage(fresh_llava(tiny_context(config)), ("projector", "lora"), config.lora)
    projector = count_parameters(model.get_base_model().model.multi_modal_projector.modules_to_save.parameters())
    assert finetune.trainable == 4 * (count_parameters(lora_parameters(model)) + projector)
    assert finetune.optimiser == 2 * finetune.trainable and finetune.gradients == finetune.trainable
    assert finetune.fits and refusal(finetune, config.memory) is None

    _, tight = plan_recipe(config, budget=finetune.fixed + 3 * finetune.activations_per_sample, runtime=0)
    line = refusal(next(p for p in tight if p.stage == "finetune"), config.memory)
    assert "\n" not in line
    assert "stages.finetune.optimisation.batch_size=3" in line and "accumulation=3" in line

    _, hopeless = plan_recipe(config, budget=finetune.fixed, runtime=0)
    line = refusal(next(p for p in hopeless if p.stage == "finetune"), config.memory)
    assert "even at batch 1" in line and "memory.gradient_checkpointing=true" in line


def test_train_plan_command_prints_the_plan(tmp_path, capsys):
    from raddraft.cli import main

    code = main(["train", "--config", "training/configs/tiny.toml", "--run-dir", str(tmp_path), "--plan"])
    out = capsys.readouterr().out
    assert code == 0
    assert "stage finetune" in out and "largest batch that fits" in out and "expected peak" in out


def measured(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "training.train.real_width", *args], capture_output=True,
                          text=True, timeout=1500, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ("--text-layers", "1", "--vision-layers", "1", "--batch", "1", "--base-dtype", "fp32", "--steps", "2"),
    ("--text-layers", "2", "--vision-layers", "2", "--batch", "2", "--base-dtype", "fp32", "--steps", "2"),
], ids=["1-layer-batch-1", "2-layers-batch-2"])
def test_the_plan_is_within_20_percent_of_the_measured_peak(args):
    result = measured("--image-size", "28", "--report-tokens", "12", *args)
    assert result["plan_peak"] == pytest.approx(result["peak_rss"], rel=0.20), result


def cpu_has_bf16_matmul() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.slow
def test_stage_2_with_a_bf16_base_and_checkpointing_learns_only_lora_and_the_projector(tmp_path):
    """The mechanics at the tiny width (any CPU): bf16 frozen base, fp32 LoRA + projector, checkpointing."""
    from training.train.config import ComputeConfig
    from training.train.precision import prepare_memory
    from training.train.stages import prepare_stage, trainable_names
    from training.train.tasks import report_task
    from training.train.tiny_run import fresh_llava, tiny_context
    from training.train.trainer import make_accelerator, run_stage

    memory = MemoryConfig(base_dtype="bf16", gradient_checkpointing=True)
    ctx = tiny_context(tiny_recipe(tmp_path / "run", {"stages.finetune.optimisation.batch_size": 4,
                                                      "stages.finetune.validation_drafts": 0}))
    model, _ = prepare_stage(fresh_llava(ctx).to(torch.bfloat16), ("projector", "lora"), ctx.config.lora)
    model = prepare_memory(model, memory, ("projector", "lora"))
    assert model.get_base_model().model.language_model.is_gradient_checkpointing
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    task = report_task(ctx, "finetune", model)
    task.validate = None
    result = run_stage(task, make_accelerator(ComputeConfig(device="cpu")), progress=False, resume=False)
    losses = [r["loss"] for r in result.history if r["kind"] == "train"]
    assert sum(losses[-2:]) < sum(losses[:2])
    changed = {n for n, p in result.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == set(trainable_names(result.model))
    assert all("lora_" in n or "multi_modal_projector.modules_to_save" in n for n in changed)
    assert {p.dtype for p in result.model.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in result.model.parameters() if not p.requires_grad} == {torch.bfloat16}


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_bf16_matmul(), reason="this CPU has no bf16 matrix instructions (avx512_bf16 / "
                    "AMX): torch's bf16 backward through a 4096 x 11008 layer takes about 30 s here")
def test_real_width_stage_2_with_a_bf16_base_and_checkpointing_learns_only_lora_and_the_projector():
    result = measured("--text-layers", "1", "--vision-layers", "1", "--image-size", "28", "--report-tokens", "12",
                      "--base-dtype", "bf16", "--checkpointing", "--steps", "3")
    assert result["checkpointing"] and result["frozen_dtypes"] == ["torch.bfloat16"]
    assert result["trainable_dtypes"] == ["torch.float32"]
    losses = result["losses"]
    assert losses[-1] < losses[0]
    assert result["changed"] and set(result["changed"]) == set(result["trainable"])
    assert all("lora_" in name or "multi_modal_projector.modules_to_save" in name for name in result["changed"])
    assert result["plan_peak"] == pytest.approx(result["peak_rss"], rel=0.20), result
