"""Does the impression follow the findings it is given? Each of N phantom studies is given another study's
findings (`raddraft draft --findings-text`'s path); the labeler reads the given findings and the drafted
impression, and the micro F1 between them (positive = present) is the figure (issue 15 asks >= 0.9).
Beside it, the impression drafted from the images alone against the same given findings: what a model that
ignores the text scores. Then the same with findings typed in words of a radiologist's own (`TYPED_FINDINGS`).

    .venv/bin/python bench/impression_follows_findings.py [--studies 40] [--model BUNDLE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# Findings as radiologists type them, in words of their own rather than the phantom reports' templates (and
# unlike the edits training writes): whether the text wins when it is short and phrased otherwise.
TYPED_FINDINGS = (
    "Large right pneumothorax. No nodule. No lines.",
    "Moderate cardiomegaly. No effusion.",
    "Left lower lobe consolidation.",
    "Lungs clear. No effusion or pneumothorax. Heart normal.",
    "Right upper lobe 2 cm nodule. Small left pleural effusion.",
    "ET tube 4 cm above the carina. Mild pulmonary edema.",
    "Small bilateral pleural effusions. Cardiomegaly.",
    "Small left apical pneumothorax.",
    "Right base atelectasis. No consolidation.",
    "Pacemaker in place. Heart enlarged. Interstitial edema.",
    "Retrocardiac consolidation and a small left effusion.",
    "No acute findings.",
)


def follow_scores(bundle: Path | None, studies: int, max_new_tokens: int = 40, typed: bool = False):
    """(micro F1 of impressions drafted from the given findings, of those drafted from the images alone, both
    against the given findings; seconds; model id; studies). typed: give each study one of `TYPED_FINDINGS`
    instead of the next study's findings."""
    from engine.findings.labeler import label_report
    from engine.runtime import load_model
    from engine.settings import EngineSettings
    from raddraft.commands.draft import impression_from_given_findings
    from raddraft.resources import embedded_model_dir
    from training.data.phantoms import generate_dataset
    from training.evaluation.metrics import clinical_scores

    model = load_model(bundle or embedded_model_dir(), EngineSettings(providers=("cpu",), max_new_tokens=max_new_tokens))
    with tempfile.TemporaryDirectory(prefix="raddraft-follow-") as tmp:
        out = Path(tmp)
        generate_dataset(out, studies, seed=1515)
        records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        given, followed, from_image = [], [], []
        started = time.perf_counter()
        for i, record in enumerate(records):
            other = records[(i + 1) % len(records)]  # another study's findings beside these images
            paths = [out / image for image in record["images"]]
            findings = TYPED_FINDINGS[i % len(TYPED_FINDINGS)] if typed else \
                other["findings_text"] if "findings_text" in other else other["report"]["findings"]
            draft = impression_from_given_findings(model, paths, findings, model.default_options(), None, None)
            features = model.image_features(model.prepare(paths))
            alone = model.generate("impression", features, model.default_options()).text
            given.append(label_report(findings))
            followed.append(label_report(draft.impression))
            from_image.append(label_report(alone))
        seconds = time.perf_counter() - started
    return (clinical_scores(followed, given), clinical_scores(from_image, given), seconds, model.model_id,
            len(records))


def follow_score(bundle: Path | None, studies: int, typed: bool = False) -> float:
    return follow_scores(bundle, studies, typed=typed)[0]["micro_f1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--model", type=Path, help="model bundle (default: the embedded one)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args(argv)

    from engine.prompts import IMPRESSION_FROM_FINDINGS

    for typed, given in ((False, "the next study's findings"), (True, "findings typed in other words")):
        follows, ignores, seconds, model_id, count = follow_scores(args.model or None, args.studies,
                                                                   args.max_new_tokens, typed=typed)
        print(f"model {model_id}, {count} phantom studies, each given {given} ({seconds:.0f} s on CPU)")
        print(f"{'impression drafted':<52} {'micro F1 vs given findings':>27} {'precision':>10} {'recall':>8}")
        for name, score in ((f"from the given findings ({IMPRESSION_FROM_FINDINGS})", follows),
                            ("from the images alone (impression)", ignores)):
            print(f"{name:<52} {score['micro_f1']:>27.3f} {score['micro_precision']:>10.3f} "
                  f"{score['micro_recall']:>8.3f}")
        print()
    print("target (issue 15): >= 0.900 from the given findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
