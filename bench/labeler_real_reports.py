"""The findings labeler on real report language, beside a 20-line negation rule, in one run.

    python bench/labeler_real_reports.py [--csv ../shared/data/iu_reports_dev.csv] [--runs 3]

Scores both on the IU X-ray reports against their MeSH indexing (training/evaluation/real_reports.py:
positive = present or uncertain, the issue's mapping; Findings + Impression labeled together), adds the
labeler under MeSH's own hedge convention (positive = present or probable; the rule has no hedge strength),
and times them (median of runs, reports per second, after the pipeline is built). Prints one table per
finding and one of speed.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.findings.labeler import Labeler
from engine.findings.vocabulary import ABSENT, PRESENT
from training.evaluation.real_reports import SCORED_KEYS, read_reports, score, score_probable

# The baseline of the labeler issue: a mention regex per finding, negated when a negation word precedes it
# in the sentence.
MENTION = {
    "cardiomegaly": r"cardiomegaly|enlarged (?:heart|cardiac)|heart (?:size )?is enlarged",
    "pleural_effusion": r"effusion",
    "pneumothorax": r"pneumothora",
    "consolidation": r"consolidation|pneumonia|airspace disease|air space disease",
    "nodule": r"nodule|mass\b",
    "edema": r"edema",
    "atelectasis": r"atelecta",
}
NEGATION = re.compile(r"\b(?:no|without|negative for|free of|clear of)\b")


def negation_rule(texts: list[str]) -> list[dict[str, str]]:
    out = []
    for text in texts:
        labels = {}
        for key, pattern in MENTION.items():
            status = "not_mentioned"
            for sentence in re.split(r"(?<=[.!?])\s+|\n", text.lower()):
                match = re.search(pattern, sentence)
                if match:
                    negated = NEGATION.search(sentence[:match.start()])
                    status = PRESENT if not negated or status == PRESENT else (status if status == PRESENT else ABSENT)
                    if not negated:
                        break
            labels[key] = status
        out.append(labels)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_reports_dev.csv")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    reports = read_reports(args.csv)
    labeler = Labeler()
    started = time.perf_counter()
    labeler.warm_up()
    build_s = time.perf_counter() - started
    peers = {"RadDraft labeler (medspaCy ConText)": labeler.label_many, "20-line negation rule": negation_rule}
    scores = {name: score(reports, predict) for name, predict in peers.items()}
    scores["RadDraft labeler, positive = present or probable (MeSH's convention)"] = score_probable(
        reports, labeler.mentions_many)
    names = list(scores)
    print(f"{len(reports)} reports from {args.csv.name}; positive = present or uncertain unless said; "
          "F1 (TP/FP/FN)\n")
    print("| finding | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key in SCORED_KEYS:
        cells = [f"{s.per_key[key][0]:.3f} ({s.per_key[key][1]}/{s.per_key[key][2]}/{s.per_key[key][3]})"
                 for s in scores.values()]
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("| **macro F1** | " + " | ".join(f"**{s.macro_f1:.3f}**" for s in scores.values()) + " |")
    print(f"\nspeed (median of {args.runs} runs over all reports; the labeler's pipeline built once in {build_s:.1f} s)\n")
    print("| labeler | s per 1,000 reports | reports/s |")
    print("|---|---|---|")
    for name, predict in peers.items():
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            predict([r.text for r in reports])
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        print(f"| {name} | {1000 * median / len(reports):.2f} | {len(reports) / median:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
