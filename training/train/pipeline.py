"""`raddraft train`: data -> tokenizer and model -> stages 0-2 -> merge -> export -> evaluate -> card, curves.

Everything lands in the run folder (`output.run_dir`): the resolved config, the tokenizer, each stage's
checkpoints and output weights, the merged Hugging Face checkpoint, training curves and the evaluation.
Running again with the same config resumes: finished stages are loaded from their output, an interrupted
stage continues from its latest checkpoint. Under `accelerate launch` the stages run data-parallel; the
main process does the data preparation first and the merge, export and evaluation alone.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from dicom_node.durable import write_text_atomically
from engine.bundle import Preprocessing
from training.train.config import PRETRAIN_STAGES, TrainConfig
from training.train.studies import Pool, Study, read_studies, source_manifest, training_pools
from training.train.tasks import Context, language_task, report_task, vision_task
from training.train.trainer import StageResult, StepObserver, TrainingError, make_accelerator, run_stage

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
OUTPUT_WEIGHTS = "weights.safetensors"
DONE = "done.json"
Report = Callable[[str], None]


@dataclass
class TrainOutcome:
    run_dir: Path
    finished: bool
    merged_dir: Path | None = None
    bundle_dir: Path | None = None
    metrics: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: Path | None = None


# ------------------------------------------------------------------------------------------- set-up
def check_run_dir(config: TrainConfig, fresh: bool) -> Path:
    """Create the run folder; a previous run there must have the same config (else `fresh` clears it)."""
    run_dir = config.output.run_dir
    saved = run_dir / CONFIG_NAME
    if fresh and (run_dir / "stages").exists():
        shutil.rmtree(run_dir / "stages")
    resuming = saved.is_file() and (run_dir / "stages").exists()
    if resuming and json.loads(saved.read_text(encoding="utf-8")) != config.to_dict():
        raise TrainingError(f"{run_dir} holds a run with a different configuration ({saved}); resume it with "
                            "that configuration, choose another output.run_dir, or start over with --fresh")
    write_text_atomically(saved, config.to_json())
    return run_dir


def preprocessing(config: TrainConfig, image_size: int, spec=None) -> Preprocessing:
    """The checkpoint's own image processor (`preprocessor_config.json`, as the export reads it) when the
    base has one, else the recipe's `data` settings."""
    import dataclasses

    data = config.data
    if config.model.base is not None:
        from training.export.layout import read_preprocessing

        found = read_preprocessing(config.model.base, image_size, spec)
        if found is not None:
            return dataclasses.replace(found, window=data.window)
    views = tuple(spec.views) if spec is not None else tuple(data.views)
    combine = spec.combine if spec is not None else data.combine
    return Preprocessing(image_size=image_size, mean=tuple(data.mean), std=tuple(data.std), window=data.window,
                         views=views, combine=combine)


def base_prompt_spec(config: TrainConfig):
    """The prompt spec of a base checkpoint with a chat template (None: plain prompts)."""
    from training.export.layout import read_chat_template
    from training.train.prompting import prompt_spec

    base = config.model.base
    if base is None or not _has_chat_template(base, read_chat_template):
        return None
    return prompt_spec(base, config.data.views, config.data.combine, config.prompting.indication,
                       config.prompting.system)


def _has_chat_template(base: Path, read_chat_template) -> bool:
    from transformers import AutoTokenizer

    if not (base / "tokenizer_config.json").is_file():
        return False
    return read_chat_template(base, AutoTokenizer.from_pretrained(str(base))) is not None


def training_prompts(config: TrainConfig, spec):
    from training.train.prompting import TrainingPrompts, checkpoint_prompts

    prompts = TrainingPrompts(config.prompts) if spec is None else checkpoint_prompts(config.model.base, spec,
                                                                                     config.prompts)
    if not prompts.templated:  # the plain prompts are the ones trained with: they need the {prior} slot
        config.check_prior_slots()
    return prompts


def base_image_size(config: TrainConfig) -> int:
    if config.model.from_scratch:
        return config.model.llava_size().vision.image_size
    data = json.loads((config.model.base / "config.json").read_text(encoding="utf-8"))
    return int(data["vision_config"].get("image_size", 224))


def tokenizer_for(config: TrainConfig, train: Pool, run_dir: Path):
    """The base checkpoint's tokenizer, or one trained on the training reports (saved in the run)."""
    from training.modeling.tokenizer import as_transformers, load_tokenizer
    from training.train.lm_pretrain import train_report_tokenizer

    if not config.model.from_scratch:
        if (config.model.base / "tokenizer_config.json").is_file():  # a released checkpoint: its own tokens
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(config.model.base))
        return load_tokenizer(config.model.base)
    folder = run_dir / "tokenizer"
    if (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder)
    tokenizer = as_transformers(train_report_tokenizer(train.studies, config.prompts, config.model.tokenizer_vocab))
    tokenizer.save_pretrained(folder)
    return tokenizer


def initial_model(config: TrainConfig, tokenizer) -> nn.Module:
    from training.modeling.llava import build_llava
    from training.train.precision import load_base

    if config.model.from_scratch:
        return build_llava(config.model.llava_size(), tokenizer, seed=config.model.seed)
    return load_base(config)


# ------------------------------------------------------------------------------------------- stages
def stage_plan(config: TrainConfig) -> list[str]:
    """The stages that run: pretraining only from scratch, each only when enabled."""
    return [name for name, stage in config.stages.named()
            if stage.enabled and (config.model.from_scratch or name not in PRETRAIN_STAGES)]


def save_stage_output(llava: nn.Module, stage_dir: Path, result: StageResult) -> None:
    from safetensors.torch import save_model

    output = stage_dir / "output"
    output.mkdir(parents=True, exist_ok=True)
    temp = output / f".{OUTPUT_WEIGHTS}.partial"
    save_model(llava, str(temp))
    temp.replace(output / OUTPUT_WEIGHTS)
    write_text_atomically(stage_dir / DONE, json.dumps(stage_summary(result), indent=2) + "\n")
    write_text_atomically(stage_dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in result.history))


def stage_summary(result: StageResult) -> dict[str, Any]:
    return {"stage": result.name, "steps": result.steps, "samples": result.samples,
            "train_seconds": round(result.seconds, 1), "history": result.history}


def load_stage_output(llava: nn.Module, stage_dir: Path) -> dict[str, Any] | None:
    """Load a finished stage's weights into `llava`; None when the stage has not finished."""
    from safetensors.torch import load_model

    if not (stage_dir / DONE).is_file():
        return None
    load_model(llava, str(stage_dir / "output" / OUTPUT_WEIGHTS))
    return json.loads((stage_dir / DONE).read_text(encoding="utf-8"))


def train_one_stage(name: str, ctx: Context, llava: nn.Module, accelerator, *, progress: bool,
                    stop_after: int | None, on_step: StepObserver | None = None) -> tuple[nn.Module, StageResult]:
    """Run stage `name` on `llava`; returns the plain LLaVA (LoRA merged) and the result."""
    from accelerate.utils import set_seed

    from training.train.merge import merge_lora
    from training.train.precision import merged_from_bf16_base, prepare_memory
    from training.train.stages import prepare_stage

    stage = getattr(ctx.config.stages, name)
    set_seed(stage.optimisation.seed)  # new weights (probe head, LoRA) do not depend on earlier stages
    if name == "vision":
        result = run_stage(vision_task(ctx, llava), accelerator, progress=progress, stop_after=stop_after,
                           on_step=on_step)
        return llava, result
    if name == "language":
        result = run_stage(language_task(ctx, llava), accelerator, progress=progress, stop_after=stop_after,
                           on_step=on_step)
        return llava, result
    model, _ = prepare_stage(llava, stage.trains, ctx.config.lora)
    model = prepare_memory(model, ctx.config.memory, stage.trains)
    result = run_stage(report_task(ctx, name, model), accelerator, progress=progress, stop_after=stop_after,
                       on_step=on_step)
    if not result.finished:
        return result.model, result
    if ctx.config.memory.quantize_base != "none":
        return merged_from_bf16_base(result.model, ctx.config, stage.trains), result
    return merge_lora(result.model), result


def run_stages(ctx: Context, llava: nn.Module, accelerator, *, progress: bool, stop_after: tuple[str, int] | None,
               report: Report, on_step: StepObserver | None = None
               ) -> tuple[nn.Module, dict[str, dict[str, Any]], bool]:
    """All planned stages in order, skipping finished ones; False when stopped early."""
    summaries: dict[str, dict[str, Any]] = {}
    for name in stage_plan(ctx.config):
        stage_dir = ctx.stage_dir(name)
        done = load_stage_output(llava, stage_dir)
        if done is not None:
            summaries[name] = done
            report(f"stage {name}: finished before, loaded its output")
            continue
        started = time.perf_counter()
        limit = stop_after[1] if stop_after and stop_after[0] == name else None
        llava, result = train_one_stage(name, ctx, llava, accelerator, progress=progress, stop_after=limit,
                                        on_step=on_step)
        if not result.finished:
            return llava, summaries, False
        if accelerator.is_main_process:
            save_stage_output(llava, stage_dir, result)
        accelerator.wait_for_everyone()
        summaries[name] = {**stage_summary(result), "wall_seconds": round(time.perf_counter() - started, 1)}
        report(f"stage {name}: {result.steps} steps, {result.samples} samples, {result.seconds:.0f} s training")
    return llava, summaries, True


# ------------------------------------------------------------------------------------------- the end
def test_studies(config: TrainConfig) -> tuple[list[Study], str]:
    """The held-out studies and a description of them."""
    test = config.data.test
    if test is None:
        studies = [s for source in config.data.sources
                   for s in read_studies(source_manifest(source, config.data_dir), source.name) if s.split == "test"]
        return studies, "the test split of the training sources"
    studies = read_studies(source_manifest(test, config.data_dir), test.name)
    studies = [s for s in studies if test.split == "all" or s.split == test.split]
    studies = studies[:test.limit] if test.limit else studies
    where = (f"a phantom set of its own (seed {test.phantoms.seed}, {len(studies)} studies)" if test.phantoms
             else f"{test.manifest} ({test.split})")
    return studies, where


def run_training(config: TrainConfig, *, progress: bool = True, fresh: bool = False,
                 stop_after: tuple[str, int] | None = None, report: Report | None = None,
                 on_step: StepObserver | None = None) -> TrainOutcome:
    """The whole `raddraft train` chain (see the module docstring); on_step: see `run_stage`."""
    from training.train.finish import finish_run

    report = report or log.info
    timings: dict[str, float] = {}
    started = time.perf_counter()
    accelerator = make_accelerator(config.compute)
    with accelerator.main_process_first():
        run_dir = check_run_dir(config, fresh) if accelerator.is_main_process else config.output.run_dir
        spec = base_prompt_spec(config)
        prep = preprocessing(config, base_image_size(config), spec)
        train, validation = training_pools(config.data.sources, prep, config.data_dir, config.cache_dir,
                                           config.data.validation_limit)
        tokenizer = tokenizer_for(config, train, run_dir)
    timings["data_seconds"] = round(time.perf_counter() - started, 1)
    report(f"data: {len(train)} training and {len(validation)} validation studies ({timings['data_seconds']} s)")
    llava = initial_model(config, tokenizer)
    ctx = Context(config, tokenizer, train, validation, run_dir, training_prompts(config, spec))
    llava, summaries, finished = run_stages(ctx, llava, accelerator, progress=progress, stop_after=stop_after,
                                            report=report, on_step=on_step)
    outcome = TrainOutcome(run_dir=run_dir, finished=finished, stages=summaries, timings=timings)
    if not finished or not accelerator.is_main_process:
        return outcome
    timings["stages_seconds"] = round(sum(s.get("wall_seconds", s.get("train_seconds", 0)) for s in
                                          summaries.values()), 1)
    return finish_run(ctx, llava, prep, outcome, progress=progress, report=report)
