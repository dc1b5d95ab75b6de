"""Drafting quality with and without a prior, bundles side by side (issues 18 and 15).

    .venv/bin/python bench/prior_quality.py [--model BUNDLE ...] [--with-prior 40] [--without 60] [--follows 40]

Each bundle (default: the embedded one) drafts, through the ONNX engine as the app does (fp32, greedy):
- held-out longitudinal phantoms (`raddraft synth --priors`, seed 90002, lateral views as in real studies),
  each with its prior when it has one: findings / impression micro F1 against ground truth,
  `comparison.micro_f1` over the per-finding change labels and `comparison.hallucinated` (the share of drafts
  for studies without a prior that claim a comparison); and the comparison when the impression is drafted from
  the study's true findings instead of its drafted ones (what the comparison step costs on its own);
- phantoms without priors (the model card's seed 90001): findings / impression micro F1;
- impression from another study's findings, and from findings typed in other words
  (bench/impression_follows_findings.py): micro F1 between the given findings and the drafted impression.
One table, a row per bundle.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def held_out(out: Path, studies: int, seed: int, priors: bool) -> list:
    """`studies` held-out phantoms of `seed`; none (that set is not measured) for 0."""
    if studies == 0:
        return []
    from training.data.phantoms import PhantomConfig, generate_dataset
    from training.train.studies import read_studies

    generate_dataset(out, studies, seed=seed, priors=priors,
                     config=PhantomConfig(image_size=128, lateral_fraction=0.35, workers=2))
    return read_studies(out / "manifest.jsonl", out.name)


def scores(bundle: Path, studies: list) -> dict:
    if not studies:
        return {"findings": None, "impression": None, "comparison": {}}
    from training.train.evaluation import draft_with_engine, evaluate_drafts

    result = evaluate_drafts(draft_with_engine(bundle, studies), studies)
    sections = result["sections_clinical"]
    truth = {name: (block.get("clinical_vs_ground_truth") or block["clinical"])["micro_f1"]
             for name, block in sections.items()}
    return {**truth, "comparison": result.get("comparison") or {}}


def comparison_from_true_findings(bundle: Path, studies: list) -> float | None:
    """`comparison.micro_f1` when each impression is drafted from the study's true findings (the manifest's
    findings as written without the prior) instead of the model's own: the comparison step alone, without the
    errors of the drafted findings."""
    from engine.runtime import load_model
    from engine.settings import EngineSettings
    from training.train.evaluation import evaluate_drafts

    with_prior = [study for study in studies if study.prior is not None]
    if not with_prior:
        return None
    model = load_model(bundle, EngineSettings(providers=("cpu",), variant="fp32"))
    drafts = []
    for study in with_prior:
        findings = study.findings_without_prior or study.findings_text
        impression = model.draft_section(study.paths, "impression", findings=findings, prior=study.prior).text
        drafts.append({"study_uid": study.uid, "findings": findings, "impression": impression})
    return evaluate_drafts(drafts, with_prior)["comparison"]["micro_f1"]


def follows(bundle: Path, studies: int, typed: bool = False) -> float:
    from bench.impression_follows_findings import follow_score

    return follow_score(bundle, studies, typed=typed)


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", help="bundle (repeatable; default: the embedded one)")
    parser.add_argument("--with-prior", type=int, default=40,
                        help="held-out longitudinal studies (seed 90002; 0: not measured)")
    parser.add_argument("--without", type=int, default=60,
                        help="held-out studies without priors (seed 90001; 0: not measured)")
    parser.add_argument("--follows", type=int, default=40,
                        help="studies given another study's findings (0: not measured)")
    args = parser.parse_args(argv)
    if min(args.with_prior, args.without, args.follows) < 0:
        parser.error("study counts are 0 (that set is not measured) or more")

    from raddraft.resources import embedded_model_dir

    bundles = args.model or [embedded_model_dir()]
    with tempfile.TemporaryDirectory(prefix="prior-quality-") as work:
        longitudinal = held_out(Path(work) / "longitudinal-test", args.with_prior, 90002, priors=True)
        plain = held_out(Path(work) / "phantoms-test", args.without, 90001, priors=False)
        with_prior = sum(study.prior is not None for study in longitudinal)
        rows = []
        for bundle in bundles:
            a, b = scores(bundle, longitudinal), scores(bundle, plain)
            a["comparison_given"] = comparison_from_true_findings(bundle, longitudinal)
            follow = (follows(bundle, args.follows), follows(bundle, args.follows, typed=True)) if args.follows \
                else (None, None)
            rows.append((bundle, a, b, follow))
            print(f"{bundle}: done", file=sys.stderr, flush=True)
    print(f"\n{len(longitudinal)} longitudinal studies ({with_prior} with a prior), {len(plain)} without priors, "
          f"{args.follows} given another study's findings; engine fp32, greedy\n")
    print("| bundle | with priors: findings / impression micro F1 | comparison.micro_f1 | comparison from the true "
          "findings | comparison.hallucinated | without priors: findings / impression "
          "| impression follows given findings: another study's / typed |")
    print("|---|---|---|---|---|---|---|")
    for bundle, a, b, follow in rows:
        comparison = a["comparison"]
        print(f"| {bundle.name} | {fmt(a['findings'])} / {fmt(a['impression'])} | {fmt(comparison.get('micro_f1'))} "
              f"| {fmt(a['comparison_given'])} | {fmt(comparison.get('hallucinated'))} "
              f"| {fmt(b['findings'])} / {fmt(b['impression'])} | {fmt(follow[0])} / {fmt(follow[1])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
