"""`raddraft label`: label findings in report texts (present / absent / uncertain / not_mentioned)."""

from __future__ import annotations

import argparse
import json
import sys

HELP = ("label findings in reports read from stdin: JSONL lines with a 'text' field (one output line each) "
        "or plain text (one report)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["auto", "jsonl", "text"], default="auto",
                        help="input format (auto: JSONL when the first non-blank line starts with '{')")


def run(args: argparse.Namespace, config) -> int:
    from engine.findings.labeler import label_report

    data = sys.stdin.read()
    stripped = data.lstrip()
    jsonl = args.format == "jsonl" or (args.format == "auto" and stripped.startswith("{"))
    if not jsonl:
        print(json.dumps({"labels": label_report(data)}))
        return 0
    outputs = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            print(f"raddraft label: line {number}: not JSON ({exc.msg})", file=sys.stderr)
            return 2
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            print(f"raddraft label: line {number}: needs a string field 'text'", file=sys.stderr)
            return 2
        out = {k: record[k] for k in ("id", "study_uid") if k in record}
        out["labels"] = label_report(record["text"])
        outputs.append(json.dumps(out))
    if outputs:
        print("\n".join(outputs))
    return 0
