"""`raddraft self-test`: check an installation end to end on the bundled phantom study."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from raddraft.commands.common_options import add_model_arguments, model_overrides

HELP = ("check this installation end to end: start the DICOM node on a free port, send it the bundled "
        "phantom study, draft it with the model and check the draft against the study's ground truth "
        "(exit 0 when every step passes, 1 naming the step that failed)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="longest wait for each of: the study to be complete, the draft (default 120)")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    # The report is the output; the node's and the engine's INFO lines would only bury it.
    return {**model_overrides(args), "logging.level": "WARNING"}


def run(args: argparse.Namespace, config) -> int:
    from raddraft.self_test import STEPS, format_summary, run_self_test

    def show_step(number: int, name: str, seconds: float) -> None:
        print(f"[{number}/{len(STEPS)}] {name:<16} ok  {seconds:6.2f} s", file=sys.stderr, flush=True)

    if args.timeout <= 0:
        print("raddraft self-test: --timeout must be positive", file=sys.stderr)
        return 2
    # stdout is the report alone: what libraries print (onnxruntime-gpu prints its provider fallbacks)
    # goes to stderr, or --json would not be JSON.
    with contextlib.redirect_stdout(sys.stderr):
        report = run_self_test(config, timeout_s=args.timeout, on_step=None if args.json else show_step)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_summary(report))
    if not report.ok:
        print(f"raddraft self-test: FAILED at step '{report.failed_step}': {report.error}", file=sys.stderr)
        return 1
    return 0
