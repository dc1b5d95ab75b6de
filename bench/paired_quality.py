"""Is a candidate bundle as good as the current one? Paired bootstrap over the same held-out studies.

    .venv/bin/python bench/paired_quality.py --current BUNDLE --candidate BUNDLE [--studies 300] [--resamples 1000]
        [--current-variant fp32] [--candidate-variant int4]     # e.g. a quantized variant against fp32

Both bundles draft the same held-out phantom studies without priors (seed 90001, 1.1.0's card set, lateral
views as in real studies) through the ONNX engine (greedy; each in its variant, fp32 unless told). Each section's finding labels
(`engine.findings.labeler`) are scored against the phantoms' ground truth; the studies are resampled with
replacement, both bundles together, and the table gives each bundle's micro F1, the difference (candidate
minus current) and its 95 % interval. An interval that holds 0 says "as good, within the noise"; one above 0,
"better". This is the rule for replacing the embedded model: better or equal on its metrics.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECTIONS = ("findings", "impression")


def counts(drafts: list[dict], studies: list, section: str) -> np.ndarray:
    """Per study (true positives, false positives, false negatives) of the section's present labels."""
    from engine.findings.labeler import label_report
    from engine.findings.vocabulary import LABEL_KEYS, PRESENT

    rows = []
    for draft, study in zip(drafts, studies):
        predicted = label_report(draft[section])
        tp = sum(predicted[k] == PRESENT and study.labels[k] == PRESENT for k in LABEL_KEYS)
        fp = sum(predicted[k] == PRESENT and study.labels[k] != PRESENT for k in LABEL_KEYS)
        fn = sum(predicted[k] != PRESENT and study.labels[k] == PRESENT for k in LABEL_KEYS)
        rows.append((tp, fp, fn))
    return np.array(rows, dtype=float)


def micro_f1(rows: np.ndarray) -> np.ndarray:
    """Micro F1 of (..., studies, 3) counts summed over the studies axis."""
    tp, fp, fn = (rows.sum(axis=-2)[..., i] for i in range(3))
    return np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)


def paired(current: np.ndarray, candidate: np.ndarray, resamples: int, seed: int = 0) -> tuple[float, float, float]:
    """(difference, low, high): candidate minus current micro F1 and its 95 % bootstrap interval."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(current), size=(resamples, len(current)))
    differences = micro_f1(candidate[picks]) - micro_f1(current[picks])
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(micro_f1(candidate) - micro_f1(current)), float(low), float(high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--current", type=Path, required=True, help="the bundle in use")
    parser.add_argument("--candidate", type=Path, required=True, help="the bundle that would replace it")
    parser.add_argument("--studies", type=int, default=300, help="held-out studies without priors (seed 90001)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--current-variant", default="fp32", help="the current bundle's variant (default fp32)")
    parser.add_argument("--candidate-variant", default="fp32", help="the candidate bundle's variant (default fp32)")
    args = parser.parse_args(argv)

    from bench.prior_quality import held_out
    from training.train.evaluation import draft_with_engine

    with tempfile.TemporaryDirectory(prefix="paired-quality-") as work:
        studies = held_out(Path(work) / "phantoms-test", args.studies, 90001, priors=False)
        drafts = {name: draft_with_engine(bundle, studies, variant=variant)
                  for name, bundle, variant in (("current", args.current, args.current_variant),
                                                ("candidate", args.candidate, args.candidate_variant))}
    print(f"\n{len(studies)} held-out studies without priors (seed 90001), engine, greedy; "
          f"{args.resamples} paired resamples\n")
    print(f"| section | {args.current.name} {args.current_variant} (current) "
          f"| {args.candidate.name} {args.candidate_variant} (candidate) | difference | 95 % interval |")
    print("|---|---|---|---|---|")
    for section in SECTIONS:
        current, candidate = counts(drafts["current"], studies, section), counts(drafts["candidate"], studies, section)
        difference, low, high = paired(current, candidate, args.resamples)
        print(f"| {section} | {micro_f1(current):.3f} | {micro_f1(candidate):.3f} | {difference:+.3f} "
              f"| {low:+.3f} .. {high:+.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
