"""The end of `raddraft train`: merged checkpoint, curves, bundle export, evaluation, metrics in the bundle."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from torch import nn

from dicom_node.durable import write_text_atomically
from engine.bundle import GenerationDefaults, Preprocessing
from training.train.curves import plot_curves
from training.train.evaluation import (
    draft_with_engine,
    evaluate_drafts,
    quality_section,
    summary_metrics,
    write_bundle_metrics,
)
from training.train.merge import save_hf_checkpoint
from training.train.precision import memory_record
from training.train.studies import Study, cached_pixels, cached_prior_pixels
from training.train.tasks import Context

log = logging.getLogger(__name__)


def source_text(source) -> str:
    if source.phantoms:
        p = source.phantoms
        what = f"{p.studies} synthetic phantom studies (seed {p.seed}, {p.image_size} px)"
    else:
        what = f"manifest {source.manifest}"
    return f"{source.name}: {what}, weight {source.weight:g}"


def provenance(ctx: Context, outcome) -> dict[str, Any]:
    """What the bundle was trained from and how, for model.json and the card (compact, readable)."""
    config = ctx.config
    stages = {name: f"{s['steps']} steps, {s['samples']} samples, {s['train_seconds']:.0f} s"
              for name, s in outcome.stages.items()}
    return {"training": {
        "base_model": str(config.model.base) if config.model.base else f"none: trained from scratch "
                                                                         f"(size {config.model.size})",
        "data": "; ".join(source_text(s) for s in config.data.sources),
        "studies": f"{len(ctx.train)} training, {len(ctx.validation)} validation",
        "stages": stages,
        "seconds": dict(outcome.timings),
        "memory": memory_record(config),
        "prompts": ctx.prompts.recorded(),
        "tool": "raddraft train",
    }}


def export(ctx: Context, merged: Path, prep: Preprocessing, outcome, progress: bool):
    from tqdm import tqdm

    from training.export import export_bundle

    config = ctx.config
    with tqdm(total=1, desc="export", unit="step", disable=not progress, file=sys.stderr) as bar:
        def step(done: int, total: int, what: str) -> None:
            bar.total = total
            bar.n = done
            bar.set_postfix_str(what)
            bar.refresh()

        return export_bundle(merged, config.output.bundle, name=config.output.name, version=config.output.version,
                             quantize=config.output.quantize, preprocessing=prep,
                             # a chat template is rendered again from the merged checkpoint's spec
                             prompts=None if ctx.prompts.templated else config.prompts,
                             prompt_spec=ctx.prompts.spec,
                             generation=GenerationDefaults(max_new_tokens=config.output.max_new_tokens),
                             provenance=provenance(ctx, outcome), card_notes=config.output.description or None,
                             progress=step, overwrite=False,
                             include_checkpoint=config.output.include_checkpoint, prior=config.prior,
                             impression_from=config.prompting.impression_from)


def engine_drafts(ctx: Context, bundle: Path, studies: list[Study], progress: bool) -> dict[str, list[dict]]:
    """Drafts of every variant of the bundle through the ONNX engine."""
    from tqdm import tqdm

    from engine.bundle import read_manifest

    drafts = {}
    for variant in read_manifest(bundle).variants:
        with tqdm(total=len(studies), desc=f"evaluate {variant}", unit="study", disable=not progress,
                  file=sys.stderr) as bar:
            drafts[f"engine {variant}"] = draft_with_engine(bundle, studies, variant=variant,
                                                            threads=ctx.config.compute.threads,
                                                            max_new_tokens=ctx.config.output.max_new_tokens,
                                                            progress=bar.update)
    return drafts


def torch_drafts(ctx: Context, llava: nn.Module, prep: Preprocessing, studies: list[Study],
                 progress: bool) -> dict[str, list[dict]]:
    """Drafts of the merged model with torch generation (when the engine cannot be used)."""
    from tqdm import tqdm

    from training.train.drafting import draft_studies

    config = ctx.config
    name = config.data.test.name if config.data.test else "test"
    pixels = cached_pixels(f"{name}-eval", studies, prep, config.cache_dir)
    priors = cached_prior_pixels(f"{name}-eval", studies, prep, config.cache_dir)
    with tqdm(total=len(studies), desc="evaluate torch", unit="study", disable=not progress, file=sys.stderr) as bar:
        return {"torch": draft_studies(llava, ctx.report_encoder(llava), studies, pixels, pad_id=ctx.pad_id,
                                       max_new_tokens=config.output.max_new_tokens, progress=bar.update,
                                       priors=priors)}


def evaluate(ctx: Context, llava: nn.Module, prep: Preprocessing, bundle: Path | None, progress: bool,
             report) -> tuple[dict[str, dict], str] | None:
    """Draft the held-out studies (engine on the bundle; torch when the engine is unavailable) and score them."""
    from engine.errors import EngineError
    from training.train.pipeline import test_studies

    studies, where = test_studies(ctx.config)
    if not studies:
        report("evaluation skipped: no held-out test studies")
        return None
    drafts: dict[str, list[dict]] = {}
    if bundle is not None and ctx.config.output.eval_engine != "torch":
        try:
            drafts = engine_drafts(ctx, bundle, studies, progress)
        except (ImportError, EngineError) as exc:
            if ctx.config.output.eval_engine == "engine":
                raise
            report(f"the engine cannot draft with the bundle ({exc}); evaluating with torch instead")
    if not drafts:
        drafts = torch_drafts(ctx, llava, prep, studies, progress)
    out = ctx.run_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, predictions in drafts.items():
        write_text_atomically(out / f"predictions-{name.replace(' ', '-')}.jsonl",
                              "".join(json.dumps(p) + "\n" for p in predictions))
        results[name] = evaluate_drafts(predictions, studies)
    write_text_atomically(out / "results.json", json.dumps(results, indent=1) + "\n")
    return results, where


def add_domain(ctx: Context, bundle: Path, report) -> float:
    """Every trained bundle carries the domain signature of its own training and validation studies."""
    from training.export import ExportError
    from training.export.domain import add_domain_signature

    started = time.perf_counter()
    try:
        entry = add_domain_signature(bundle, [s.paths for s in ctx.train.studies],
                                     [s.paths for s in ctx.validation.studies],
                                     source=f"raddraft train: {ctx.config.output.name}")
    except ExportError as error:  # the bundle stays usable; its drafts say in_domain unknown
        report(f"no domain signature: {error}")
        return round(time.perf_counter() - started, 1)
    report(f"domain signature: {entry['studies']['train']} training, {entry['studies']['validation']} validation "
           f"studies; thresholds {entry['thresholds']}")
    return round(time.perf_counter() - started, 1)


def finish_run(ctx: Context, llava: nn.Module, prep: Preprocessing, outcome, *, progress: bool, report):
    config = ctx.config
    started = time.perf_counter()
    outcome.merged_dir = save_hf_checkpoint(llava, ctx.tokenizer, ctx.run_dir / "merged",
                                            inputs_from=config.model.base, prompt_spec=ctx.prompts.spec)
    history = [r for summary in outcome.stages.values() for r in summary.get("history", [])]
    if history:
        outcome.curves = plot_curves(history, ctx.run_dir / "training_curves.png", title=config.output.name)
    if config.output.export:
        exported = export(ctx, outcome.merged_dir, prep, outcome, progress)
        outcome.bundle_dir = exported.bundle_dir
        outcome.timings["export_seconds"] = round(exported.seconds, 1)
        report("\n".join(exported.summary_lines()))
        outcome.timings["domain_seconds"] = add_domain(ctx, exported.bundle_dir, report)
    started_eval = time.perf_counter()
    if config.output.evaluate:
        evaluated = evaluate(ctx, llava, prep, outcome.bundle_dir, progress, report)
        if evaluated is not None:
            results, where = evaluated
            first = next(iter(results))
            outcome.metrics = summary_metrics(results[first], evaluated_with=first, test_set=where)
            outcome.metrics["variants"] = {name: summary_metrics(r, evaluated_with=name, test_set=where)["report"]
                                           for name, r in results.items()}
            outcome.timings["evaluate_seconds"] = round(time.perf_counter() - started_eval, 1)
            if outcome.bundle_dir is not None:
                write_bundle_metrics(outcome.bundle_dir, outcome.metrics, quality_section(results, where),
                                     provenance(ctx, outcome))
    if outcome.curves is not None and outcome.bundle_dir is not None:
        (outcome.bundle_dir / outcome.curves.name).write_bytes(outcome.curves.read_bytes())
    outcome.timings["finish_seconds"] = round(time.perf_counter() - started, 1)
    write_text_atomically(ctx.run_dir / "summary.json", json.dumps(
        {"metrics": outcome.metrics, "timings": outcome.timings,
         "stages": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in outcome.stages.items()},
         "bundle": str(outcome.bundle_dir) if outcome.bundle_dir else None}, indent=2) + "\n")
    return outcome
