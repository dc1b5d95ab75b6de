"""The change reader and the comparison claim beside simpler rules, on phantom and real report language.

    python bench/change_reader.py [--studies 300] [--seed 21] [--csv ../shared/data/iu_reports_dev.csv]

Writes longitudinal phantoms (`raddraft synth --priors`, 32 px: only the reports matter) and scores their
reference reports against the manifest's `change` (comparison micro F1) and, for the studies without a prior,
the share that claims a comparison (it must be 0), and counts the hand-judged sentences of
tests/training/change_cases.py read exactly. Beside `training.evaluation.change` stands a keyword rule:
every change word of a sentence applies to every finding the labeler names in it, with no negation, ownership
or follow-up reasons. On the IU reports it prints the share of reports that claim a comparison, split by their
own Comparison field ("None" or a prior named), for the reader and for the check before signing alone.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "training"))
from change_cases import NEGATED, PHANTOM, REAL

from engine.findings.checks import comparison_without_prior
from engine.findings.labeler import label_mentions
from training.data.phantoms import PhantomConfig, generate_dataset, read_manifest
from training.evaluation.change import CHANGES, claims_comparison, read_changes

KEYWORDS = (("unchanged", r"unchanged|stable|again seen|no change|similar|persist"),
            ("new", r"\bnew\b|development|placement"), ("resolved", r"resol|removed|removal|no longer"),
            ("increased", r"increas|larger|worse"), ("decreased", r"decreas|smaller|improv"))
NO_COMPARISON_FIELD = re.compile(r"^\s*(?:none|none available|n/?a)?\.?\s*$", re.IGNORECASE)


def keyword_rule(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for sentence in re.split(r"(?<=[.;])\s+", text):
        label = next((name for name, pattern in KEYWORDS if re.search(pattern, sentence, re.IGNORECASE)), None)
        if label:
            for mention in label_mentions(sentence):
                found.setdefault(mention.key, label)
    return found


def sentences_right(cases: list[tuple[str, dict[str, str]]], reader) -> str:
    return f"{sum(reader(text) == expected for text, expected in cases)} of {len(cases)}"


def change_f1(records: list[dict], reader) -> tuple[float, int]:
    tp = fp = fn = 0
    for record in records:
        truth = dict(record["change"])
        read = reader(f"{record['report']['findings']} {record['report']['impression']}")
        if "moved" in record["device_change"].values():
            truth.pop("support_device", None)
            read.pop("support_device", None)
        assert set(truth.values()) <= set(CHANGES)
        tp += len(set(truth.items()) & set(read.items()))
        fp += len(set(read.items()) - set(truth.items()))
        fn += len(set(truth.items()) - set(read.items()))
    return (2 * tp / (2 * tp + fp + fn) if tp else 0.0), tp + fn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--csv", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/iu_reports_dev.csv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        generate_dataset(folder, args.studies, args.seed, config=PhantomConfig(image_size=32), priors=True)
        records = read_manifest(Path(folder) / "manifest.jsonl")
    with_prior = [r for r in records if r["prior_study_uid"]]
    without = [f"{r['report']['findings']} {r['report']['impression']}" for r in records if not r["prior_study_uid"]]
    started = time.perf_counter()
    ours, pairs = change_f1(with_prior, read_changes)
    seconds = time.perf_counter() - started
    naive, _ = change_f1(with_prior, keyword_rule)
    print(f"longitudinal phantoms, seed {args.seed}: {len(with_prior)} with a prior ({pairs} change pairs), "
          f"{len(without)} without\n")
    print("| measure | change reader | keyword rule | check before signing |\n|---|---|---|---|")
    print(f"| comparison micro F1, reference reports | {ours:.3f} | {naive:.3f} | - |")
    for name, cases in (("real report sentences (tests/training/change_cases.py)", REAL),
                        ("phantom phrasing", PHANTOM), ("negated (\"no new effusion\")", NEGATED)):
        print(f"| read exactly, {name} | {sentences_right(cases, read_changes)} | "
              f"{sentences_right(cases, keyword_rule)} | - |")
    print(f"| claims a comparison, reports without a prior | {sum(map(claims_comparison, without)) / len(without):.3f} "
          f"| - | {sum(bool(comparison_without_prior(t)) for t in without) / len(without):.3f} |")
    if args.csv.is_file():
        with args.csv.open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        for named in (False, True):
            texts = [f"{r['findings'] or ''} {r['impression'] or ''}" for r in rows
                     if bool(NO_COMPARISON_FIELD.match(r["comparison"] or "")) != named]
            share = sum(map(claims_comparison, texts)) / len(texts)
            check = sum(bool(comparison_without_prior(t)) for t in texts) / len(texts)
            what = "a prior named" if named else "\"None\""
            print(f"| IU reports claiming a comparison, Comparison field {what} ({len(texts)}) | {share:.3f} | - "
                  f"| {check:.3f} |")
    print(f"\nchange reader: {1000 * seconds / len(with_prior):.1f} ms per report (labeler included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
