"""The four stages as `StageTask`s: what each one feeds the loop, its loss and its validation metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from training.train.config import StageConfig, TrainConfig
from training.train.drafting import draft_studies
from training.train.lm_pretrain import TextEncoder, collate_text, mean_token_loss, token_loss
from training.train.prompting import TrainingPrompts
from training.train.samples import Item, SampleEncoder, collate, plan_epoch
from training.train.studies import Pool, has_ground_truth
from training.train.trainer import StageTask
from training.train.vision_pretrain import (
    build_probe,
    collate_images,
    make_probe_loss,
    positive_weights,
    probe_metrics,
    target_base_rates,
)

log = logging.getLogger(__name__)
VALIDATION_BATCH = 32


@dataclass
class Context:
    """What every stage of one run shares."""

    config: TrainConfig
    tokenizer: object  # PreTrainedTokenizerFast
    train: Pool
    validation: Pool
    run_dir: Path
    prompting: TrainingPrompts | None = None  # None: the recipe's plain prompts

    @property
    def prompts(self) -> TrainingPrompts:
        return self.prompting or TrainingPrompts(self.config.prompts)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / "stages" / name

    def report_encoder(self, llava: nn.Module) -> SampleEncoder:
        config = llava.config
        return SampleEncoder(self.tokenizer.backend_tokenizer, self.config.prompts,
                             image_token_id=int(config.image_token_index), image_tokens=image_tokens(config),
                             eos_id=self.eos_id, max_positions=int(config.text_config.max_position_embeddings),
                             prompting=self.prompts, prior=self.config.prior,
                             impression_from=self.config.prompting.impression_from)

    def text_encoder(self, llava: nn.Module) -> TextEncoder:
        return TextEncoder(self.tokenizer.backend_tokenizer, self.config.prompts, self.eos_id,
                           int(llava.config.text_config.max_position_embeddings))


def image_tokens(config) -> int:
    """Image features per image of a LLaVA config: the tower's patches, its CLS token (CLIP, Dinov2) unless
    the "default" strategy drops the first token (as transformers' LLaVA does for any tower)."""
    vision = config.vision_config
    patches = (int(vision.image_size) // int(vision.patch_size)) ** 2
    cls = 0 if vision.model_type.startswith("siglip") else 1
    return patches + cls - (1 if config.vision_feature_select_strategy == "default" else 0)


def _stage(ctx: Context, name: str) -> StageConfig:
    return getattr(ctx.config.stages, name)


def _weights(ctx: Context, stage: StageConfig) -> list[float]:
    """Per-study copies per epoch: the source's mix weight times the stage's share of the data."""
    return [w * stage.data_fraction for w in ctx.train.weights]


def _batches(items: list[Item], collate_fn, size: int = VALIDATION_BATCH):
    for start in range(0, len(items), size):
        yield collate_fn(items[start:start + size])


# ------------------------------------------------------------------------------------------ stage 0
def vision_task(ctx: Context, llava: nn.Module) -> StageTask:
    """Findings classification on the vision tower (shared with `llava`, so `llava` learns it)."""
    stage = _stage(ctx, "vision")
    probe = build_probe(llava, stage.optimisation.seed)
    for parameter in probe.parameters():
        parameter.requires_grad_(True)
    post = getattr(llava.model.vision_tower.vision_model, "post_layernorm", None)
    for parameter in post.parameters() if post is not None else ():
        parameter.requires_grad_(False)  # LLaVA reads the features before it: no gradient reaches it
    base_rates = target_base_rates(ctx.train.studies)

    def validate(model: nn.Module) -> dict[str, float]:
        if not len(ctx.validation):
            return {}
        return probe_metrics(model, ctx.validation.studies, ctx.validation.pixels, base_rates=base_rates)

    return StageTask(
        name="vision", model=probe, optimisation=stage.optimisation,
        plan=lambda epoch: plan_epoch(_weights(ctx, stage), None, 0.0, stage.optimisation.seed, epoch),
        collate=lambda items: collate_images(items, ctx.train.studies, ctx.train.pixels),
        loss=make_probe_loss(positive_weights(base_rates)), stage_dir=ctx.stage_dir("vision"), config_json=ctx.config.to_json(),
        validate=validate, checkpoint_every=stage.checkpoint_every)


def language_task(ctx: Context, llava: nn.Module) -> StageTask:
    """Next-token pretraining of the language model on report text (no image)."""
    from training.train.stages import set_trainable

    stage = _stage(ctx, "language")
    set_trainable(llava, ["language"])
    encoder = ctx.text_encoder(llava)
    items = [Item(i, kind) for i in range(len(ctx.validation)) for kind in ("findings", "impression")]

    def validate(model: nn.Module) -> dict[str, float]:
        if not items:
            return {}
        batches = _batches(items, lambda b: collate_text(b, ctx.validation.studies, encoder, ctx.pad_id))
        return {"val_loss": round(mean_token_loss(model, batches), 5)}

    return StageTask(
        name="language", model=llava, optimisation=stage.optimisation,
        plan=lambda epoch: plan_epoch(_weights(ctx, stage), ctx.config.data.tasks, stage.vqa_fraction,
                                      stage.optimisation.seed, epoch),
        collate=lambda batch: collate_text(batch, ctx.train.studies, encoder, ctx.pad_id),
        loss=token_loss, stage_dir=ctx.stage_dir("language"), config_json=ctx.config.to_json(),
        validate=validate, checkpoint_every=stage.checkpoint_every)


# -------------------------------------------------------------------------------------- stages 1, 2
def report_validation(ctx: Context, model: nn.Module, encoder: SampleEncoder, drafts: int) -> dict[str, float]:
    """Validation loss on findings + impression, and the metrics of greedy drafts of a few studies."""
    from training.evaluation.metrics import evaluate
    from training.train.evaluation import headline_metrics

    pool = ctx.validation
    if not len(pool):
        return {}
    items = [Item(i, kind) for i in range(len(pool)) for kind in ("findings", "impression")]
    batches = _batches(items, lambda b: collate(b, pool.studies, pool.pixels, encoder, ctx.pad_id, pool.prior_pixels))
    metrics = {"val_loss": round(mean_token_loss(model, batches), 5)}
    if drafts:
        chosen = pool.subset(range(min(drafts, len(pool))))
        predictions = draft_studies(model, encoder, chosen.studies, chosen.pixels, pad_id=ctx.pad_id,
                                    max_new_tokens=ctx.config.output.max_new_tokens, priors=chosen.prior_pixels)
        result = evaluate(predictions, [s.reference() for s in chosen.studies])
        metrics.update(headline_metrics(result))
    return metrics


def report_task(ctx: Context, name: str, model: nn.Module) -> StageTask:
    """Stage 1 (projector) or stage 2 (LoRA + projector, with VQA mixup) on image-report pairs."""
    stage = _stage(ctx, name)
    encoder = ctx.report_encoder(model)
    askable = [has_ground_truth(study) for study in ctx.train.studies]

    return StageTask(
        name=name, model=model, optimisation=stage.optimisation,
        plan=lambda epoch: plan_epoch(_weights(ctx, stage), ctx.config.data.tasks, stage.vqa_fraction,
                                      stage.optimisation.seed, epoch, vqa_eligible=askable),
        collate=lambda items: collate(items, ctx.train.studies, ctx.train.pixels, encoder, ctx.pad_id,
                                      ctx.train.prior_pixels),
        loss=token_loss, stage_dir=ctx.stage_dir(name), config_json=ctx.config.to_json(),
        validate=lambda m: report_validation(ctx, m, encoder, stage.validation_drafts),
        checkpoint_every=stage.checkpoint_every, memory=ctx.config.memory)
