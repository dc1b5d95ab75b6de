"""`raddraft evaluate`: BLEU, ROUGE-L, labeler-based clinical F1 and comparison metrics of predicted reports."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = ("score predicted reports against references: prints a JSON of all metrics on stdout and a table "
        "on stderr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", type=Path, required=True,
                        help="JSONL: study_uid, findings, impression")
    parser.add_argument("--references", type=Path, required=True,
                        help="JSONL manifest: study_uid, report {findings, impression}, optional labels; "
                             "prior_study_uid and change (raddraft synth --priors) add comparison.micro_f1, and "
                             "comparison.hallucinated counts drafts of studies without a prior that claim one")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="write a per-finding F1 bar chart")
    parser.add_argument("--quiet", action="store_true", help="no table on stderr")


def _read_jsonl(path: Path, what: str) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what} {path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{what} {path}:{number}: not a JSON object")
        records.append(record)
    return records


def run(args: argparse.Namespace, config) -> int:
    import logging

    logging.getLogger("absl").setLevel(logging.WARNING)  # rouge-score logs its tokenizer choice at INFO
    from training.evaluation.metrics import MetricsError, evaluate, format_table, plot_per_finding

    try:
        predictions = _read_jsonl(args.predictions, "predictions")
        references = _read_jsonl(args.references, "references")
        result = evaluate(predictions, references)
    except (ValueError, MetricsError) as exc:
        print(f"raddraft evaluate: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    try:
        if args.output:
            args.output.write_text(text + "\n", encoding="utf-8")
        if args.plot:
            plot_per_finding(result, str(args.plot))
    except OSError as exc:
        print(f"raddraft evaluate: cannot write output: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(text)
    if not args.quiet:
        print(format_table(result), file=sys.stderr)
    return 0
