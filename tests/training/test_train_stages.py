"""Each stage trains exactly its parts: gradients reach only them, and only they change after a few steps."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from training.train.config import ComputeConfig, LoraSettings
from training.train.stages import StageError, apply_lora, part_parameters, prepare_stage
from training.train.tasks import language_task, report_task, vision_task
from training.train.tiny_run import fresh_llava, tiny_context, tiny_recipe
from training.train.trainer import make_accelerator, run_stage


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return tiny_context(tiny_recipe(tmp_path_factory.mktemp("stages") / "run"))


def names_of(model, part):
    ids = {id(p) for p in part_parameters(model, part)}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(model, before):
    return {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}


def gradient_names(task):
    items = task.plan(0)[:4]
    loss, count = task.loss(task.model, task.collate(items))
    (loss / count).backward()
    names = {name for name, p in task.model.named_parameters() if p.grad is not None}
    task.model.zero_grad(set_to_none=True)
    return names


def run_steps(task, steps=2):
    return run_stage(task, make_accelerator(ComputeConfig(device="cpu")), progress=False, stop_after=steps,
                     resume=False)


def test_vision_stage_trains_the_tower_and_its_head_only(ctx):
    llava = fresh_llava(ctx)
    task = vision_task(ctx, llava)
    grads = gradient_names(task)
    assert grads and all(n.startswith(("vision_tower.", "head.")) for n in grads)
    assert not any("post_layernorm" in n for n in grads)  # LLaVA reads the features before it
    before = snapshot(llava)
    run_steps(task)
    moved = changed(llava, before)
    vision = names_of(llava, "vision")
    assert moved and moved <= vision
    assert len(moved) >= len(vision) - 2  # everything but the unused final norm (weight, bias)


def test_language_stage_trains_the_language_model_only(ctx):
    llava = fresh_llava(ctx)
    task = language_task(ctx, llava)
    language = names_of(llava, "language")
    assert gradient_names(task) <= language
    before = snapshot(llava)
    run_steps(task)
    moved = changed(llava, before)
    assert moved <= language
    assert {n for n in language if "layers.0." in n} <= moved


def test_projector_stage_trains_the_projector_only(ctx):
    llava = fresh_llava(ctx)
    model, _ = prepare_stage(llava, ("projector",), ctx.config.lora)
    task = report_task(ctx, "projector", model)
    projector = names_of(model, "projector")
    assert gradient_names(task) == projector
    before = snapshot(model)
    run_steps(task)
    assert changed(model, before) == projector


def test_finetune_stage_trains_lora_on_the_language_model_and_the_projector(ctx):
    llava = fresh_llava(ctx)
    model, _ = prepare_stage(llava, ("projector", "lora"), ctx.config.lora)
    task = report_task(ctx, "finetune", model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all((".lora_" in n and ".language_model." in n) or
                             ".multi_modal_projector.modules_to_save." in n for n in trainable)
    assert gradient_names(task) == trainable
    before = snapshot(model)
    run_steps(task)
    moved = changed(model, before)
    assert moved <= trainable
    assert any(".lora_B." in n for n in moved) and any(".modules_to_save." in n for n in moved)
    assert not any("vision_tower" in n for n in moved)


def test_default_lora_targets_stay_out_of_the_vision_tower(ctx):
    model = apply_lora(fresh_llava(ctx), LoraSettings(), train_projector=True)
    adapted = {n for n, _ in model.named_parameters() if ".lora_A." in n}
    assert adapted and not any("vision_tower" in n for n in adapted)
    with pytest.raises(StageError, match="vision tower"):
        apply_lora(fresh_llava(ctx), LoraSettings(target_modules=r".*\.(q_proj|v_proj)"), train_projector=False)
    with pytest.raises(StageError, match="matches no"):
        apply_lora(fresh_llava(ctx), LoraSettings(target_modules=r"nothing"), train_projector=False)


def test_the_loss_depends_on_the_image(ctx):
    """The image reaches the language model: the same tokens with other images give another loss."""
    model, _ = prepare_stage(fresh_llava(ctx), ("projector",), ctx.config.lora)
    task = report_task(ctx, "projector", model)
    batch = task.collate(task.plan(0)[:4])
    shuffled = dict(batch, pixel_values=batch["pixel_values"].flip(0))
    with torch.no_grad():
        same, _ = task.loss(model, batch)
        other, _ = task.loss(model, shuffled)
    assert not torch.isclose(same, other)
