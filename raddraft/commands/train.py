"""`raddraft train`: two-stage LLaVA fine-tuning with LoRA (stage 0 pretraining when starting from scratch),
then merge, bundle export, evaluation and model card, from one training recipe (TOML)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = ("train a drafting model from a recipe (TOML): stage 0 (from scratch) -> projector -> LoRA -> merge -> "
        "export the bundle -> evaluate -> model card")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # `--config` is the shared option of every subcommand; for `train` it names the training recipe (see
    # `config_overrides`), so it is not added here.
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value (TOML syntax), e.g. --set stages.finetune.optimisation.lr=1e-4;"
                             " repeatable")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides compute.device")
    parser.add_argument("--run-dir", type=Path, help="overrides output.run_dir")
    parser.add_argument("--bundle-dir", type=Path, help="overrides output.bundle_dir")
    parser.add_argument("--fresh", action="store_true",
                        help="discard the stages of a previous run in the run folder instead of resuming")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--print-config", action="store_true", help="print the resolved recipe (JSON) and exit")
    parser.add_argument("--plan", action="store_true",
                        help="print the expected peak memory of each stage and the largest batch that fits, "
                             "and exit (1 when the recipe does not fit, saying what to change)")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    """`raddraft train --config RECIPE.toml`: the file is the training recipe, not the application
    configuration (which `train` does not use), so it is taken out of the application's hands here."""
    args.train_config = getattr(args, "config", None)
    if hasattr(args, "config"):
        del args.config
    return {}


def recipe_overrides(args: argparse.Namespace) -> dict[str, object]:
    from training.train.config import parse_override

    overrides = dict(parse_override(text) for text in args.overrides)
    for key, value in (("compute.device", args.device), ("output.run_dir", args.run_dir),
                       ("output.bundle_dir", args.bundle_dir)):
        if value is not None:
            overrides[key] = str(value)
    return overrides


def run(args: argparse.Namespace, config) -> int:
    import logging

    for noisy in ("openjpeg", "absl"):  # per-tile and tokenizer-choice INFO lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from training.train.config import TrainConfigError, load_train_config

    if getattr(args, "train_config", None) is None:
        print("raddraft train: name the training recipe with --config RECIPE.toml "
              "(e.g. training/configs/phantom-cxr.toml)", file=sys.stderr)
        return 2
    try:
        recipe = load_train_config(args.train_config, recipe_overrides(args))
    except TrainConfigError as exc:
        print(f"raddraft train: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(recipe.to_json(), end="")
        return 0
    if args.plan:
        return _plan(recipe)
    return _train(recipe, args)


def _plan(recipe) -> int:
    from training.train.plan import PlanError, report_plan

    try:
        return report_plan(recipe)
    except (PlanError, OSError) as exc:
        print(f"raddraft train: {exc}", file=sys.stderr)
        return 1


def _train(recipe, args: argparse.Namespace) -> int:
    from engine.errors import EngineError
    from training.export.errors import ExportError
    from training.train.checkpoint import CheckpointError
    from training.train.pipeline import run_training
    from training.train.stages import StageError
    from training.train.studies import StudyDataError
    from training.train.trainer import TrainingError

    try:
        outcome = run_training(recipe, progress=not args.no_progress, fresh=args.fresh,
                               report=lambda text: print(text, file=sys.stderr))
    except (TrainingError, StageError, StudyDataError, CheckpointError, ExportError, EngineError) as exc:
        print(f"raddraft train: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"raddraft train: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}", file=sys.stderr)
        return 1
    if outcome.metrics:
        report = outcome.metrics["report"]
        print(f"test ({outcome.metrics['studies']} studies, {outcome.metrics['evaluated_with']}): "
              f"micro F1 {report['micro_f1']:.3f}, BLEU-4 {report['bleu4']:.3f}, ROUGE-L {report['rouge_l']:.3f}")
    print(f"run: {outcome.run_dir}" + (f"\nbundle: {outcome.bundle_dir}" if outcome.bundle_dir else ""))
    return 0
