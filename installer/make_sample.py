"""Writes the self-test's sample study, `resources/samples/phantom-effusion/`, with its ground truth.

    .venv/bin/python installer/make_sample.py            # (re)writes resources/samples/phantom-effusion/

One frontal phantom radiograph (128 px, like the embedded model's training data, stored as JPEG 2000
lossless so the installed app's decoder plugins are exercised) with a moderate right pleural effusion
and nothing else. Candidates (seed SEED, index 0, 1, ...) are drafted with the embedded model in every
variant it ships, and the first whose drafts all pass the self-test's label check is kept: the sample
tests the installation, not the model. Needs the training code (numpy only, no torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.runtime import load_model
from engine.settings import EngineSettings
from raddraft.resources import embedded_model_dir, resources_dir
from raddraft.self_test import GROUND_TRUTH_NAME, SAMPLE_NAME, compare_labels
from training.data.findings import Finding, labels_from_findings
from training.data.phantoms import PhantomConfig, plan_study, write_study
from engine.findings.labeler import label_report

SEED = 8008
FINDINGS = (Finding("pleural_effusion", side="right", severity="moderate"),)
CONFIG = PhantomConfig(image_size=128, lateral_fraction=0.0, ap_fraction=0.0, monochrome1_fraction=0.0,
                       transfer_syntax_weights={"jpeg2000": 1.0}, workers=1)


def drafts_agree(study_files: list[Path], labels: dict[str, str], models) -> list[str]:
    problems = []
    for model in models:
        draft = model.draft(study_files)
        text = f"{draft.findings.strip()} {draft.impression.strip()}"
        problems += [f"{model.variant}: {m}" for m in compare_labels(labels, label_report(text))]
    return problems


def make_sample(out: Path, max_candidates: int) -> dict[str, object]:
    bundle = embedded_model_dir()
    variants = json.loads((bundle / "model.json").read_text())["variants"]
    models = [load_model(bundle, EngineSettings(variant=v, providers=("cpu",))) for v in variants]
    with tempfile.TemporaryDirectory() as work:
        for index in range(max_candidates):
            spec = plan_study(SEED, index, CONFIG, findings=FINDINGS)
            record = write_study(spec, Path(work), CONFIG)
            files = [Path(work) / image for image in record["images"]]
            problems = drafts_agree(files, labels_from_findings(spec.findings), models)
            print(f"candidate {index}: {'ok' if not problems else '; '.join(problems)}")
            if not problems:
                return _write(out, record, files, index)
    raise SystemExit(f"no candidate among {max_candidates} was drafted correctly by every variant")


def _write(out: Path, record: dict, files: list[Path], index: int) -> dict[str, object]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for path in files:
        shutil.copyfile(path, out / path.name)
    truth = {
        "description": "phantom chest radiograph, PA, moderate right pleural effusion (synthetic, not a patient)",
        "generated_by": "installer/make_sample.py",
        "generator": {"seed": SEED, "index": index, "options": dataclasses.asdict(CONFIG)},
        "study_uid": record["study_uid"],
        "images": [path.name for path in files],
        "labels": record["labels"],
        "findings": record["findings"],
        "reference_report": record["report"],
    }
    (out / GROUND_TRUTH_NAME).write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=resources_dir() / "samples" / SAMPLE_NAME)
    parser.add_argument("--max-candidates", type=int, default=20)
    args = parser.parse_args()
    truth = make_sample(args.out, args.max_candidates)
    print(f"wrote {args.out} (index {truth['generator']['index']}, {', '.join(truth['images'])})")


if __name__ == "__main__":
    main()
