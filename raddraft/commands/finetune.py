"""`raddraft finetune`: fine-tune the current model on the site's signed reports (stage 2: LoRA + projector),
compare candidate and current on the site's held-out studies, and promote the candidate when it is better."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from raddraft.commands.common_options import add_registry_arguments, registry_overrides

HELP = ("fine-tune a model on a `raddraft dataset` folder, compare it with the current model on the held-out "
        "site studies, and promote it when it is better (`--force` to override)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", type=Path, required=True, metavar="BUNDLE_OR_CHECKPOINT",
                        help="the model to fine-tune: a bundle carrying its checkpoint, or a checkpoint folder")
    parser.add_argument("--data", type=Path, required=True, metavar="DIR", help="a `raddraft dataset` folder")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="run folder (default: <store root>/training/finetune-<time>); running again resumes")
    parser.add_argument("--recipe", type=Path, help="training recipe (default: training/configs/site-finetune.toml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value (TOML syntax), e.g. --set stages.finetune.optimisation.epochs=5")
    parser.add_argument("--original", type=Path, metavar="MANIFEST",
                        help="the original training data to mix in (default: the recipe's 'original' source)")
    parser.add_argument("--original-share", type=float, default=0.3, metavar="F",
                        help="share of each epoch drawn from the original data, so the model does not forget "
                             "(default 0.3; 0 for none)")
    parser.add_argument("--current", type=Path, metavar="BUNDLE",
                        help="the bundle to compare with (default: --from when it is a bundle)")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="largest F1 loss allowed on any finding (default 0.02)")
    parser.add_argument("--min-test-studies", type=int, default=10,
                        help="fewest held-out studies to decide on (default 10)")
    parser.add_argument("--force", action="store_true", help="promote even when the rule says no (recorded)")
    parser.add_argument("--no-promote", dest="promote", action="store_false",
                        help="stop after the comparison (the app promotes from its Models page)")
    parser.add_argument("--store", type=Path,
                        help="store folder whose model registry is promoted into (default: the configuration's)")
    add_registry_arguments(parser)
    parser.add_argument("--version", dest="model_version", metavar="V",
                        help="the candidate's version (default: <current version>+site.<time>)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--plan", action="store_true",
                        help="print the expected peak memory and the largest batch that fits, and exit "
                             "(1 when the recipe does not fit, saying what to change)")
    parser.add_argument("--progress", choices=["bars", "json"], default="bars",
                        help="progress bars on stderr, or JSON lines on stdout (for the app)")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {"store.root": str(args.store) if args.store else None, **registry_overrides(args),
            "logging.level": "WARNING"}


class TerminalEvents:
    """Stage headers and messages on stderr; the trainer draws its own bars, evaluation gets one here."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def stage(self, name: str) -> None:
        print(f"== {name}", file=sys.stderr)

    def progress(self, task: str, done: int, total: int, **extra: Any) -> None:
        if task == "finetune":
            return  # the trainer's own bar shows it
        from tqdm import tqdm

        bar = self.bars.get(task)
        if bar is None:
            bar = self.bars[task] = tqdm(total=total, desc=task, unit="study", file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def message(self, text: str) -> None:
        print(text, file=sys.stderr)


class JsonEvents:
    """One JSON object per line on stdout: progress, stage, message, and finally result or error."""

    def emit(self, event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    def stage(self, name: str) -> None:
        self.emit("stage", name=name)

    def progress(self, task: str, done: int, total: int, **extra: Any) -> None:
        self.emit("progress", task=task, done=done, total=total, **extra)

    def message(self, text: str) -> None:
        self.emit("message", text=text)


def run(args: argparse.Namespace, config) -> int:
    import logging
    import time

    for noisy in ("openjpeg", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from engine.errors import EngineError
    from raddraft.resources import embedded_model_dir, models_dir
    from training.export.errors import ExportError
    from training.site.compare import Rule
    from training.site.finetune import FinetuneError, FinetuneRequest, plan_finetune, promote, run_finetune
    from training.train.config import TrainConfigError, parse_override
    from training.train.studies import StudyDataError
    from training.train.trainer import TrainingError

    events = JsonEvents() if args.progress == "json" else TerminalEvents()
    out = args.out or config.store.root / "training" / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        request = FinetuneRequest(
            source=args.source, data=args.data, out=out, overrides=dict(parse_override(t) for t in args.overrides),
            original=args.original, original_share=args.original_share, current=args.current,
            rule=Rule(tolerance=args.tolerance, min_test_studies=args.min_test_studies), force=args.force,
            version=args.model_version, device=args.device, progress_bars=args.progress == "bars",
            **({"recipe": args.recipe} if args.recipe else {}))
        if getattr(args, "plan", False):
            return plan_finetune(request)
        outcome = run_finetune(request, events)
        decision = outcome.decision
        print_summary(outcome, args.progress == "json")
        installed = None
        if args.promote and decision["promote"]:
            installed = promote(outcome.out, models_dir(config), embedded_model_dir(), force=args.force,
                                log=events.message)
    except (FinetuneError, TrainConfigError, StudyDataError, TrainingError, ExportError, EngineError,
            OSError) as error:
        return fail(args, str(error))
    if args.progress == "json":
        events.emit("result", out=str(outcome.out), comparison=str(outcome.paths["json"]),
                    plot=str(outcome.paths["plot"]), candidate=str(outcome.candidate), decision=decision,
                    installed=installed.version if installed else None)
    return 0


def print_summary(outcome, as_json: bool) -> None:
    if as_json:
        return
    print(outcome.paths["markdown"].read_text(encoding="utf-8"))
    print(f"comparison: {outcome.paths['json']}\nplot: {outcome.paths['plot']}\ncandidate: {outcome.candidate}")


def fail(args: argparse.Namespace, message: str) -> int:
    if args.progress == "json":
        sys.stdout.write(json.dumps({"event": "error", "message": message}) + "\n")
    print(f"raddraft finetune: {message}", file=sys.stderr)
    return 1

