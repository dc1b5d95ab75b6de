"""The site fine-tuning loop on phantoms, for real: a "site" whose case mix differs from the embedded model's
training data signs reports in RadDraft's store; `raddraft dataset` de-identifies them; `raddraft finetune`
fine-tunes the embedded model on them, compares candidate and current on the site's held-out patients and
decides; the table is printed with the time of every step.

    python bench/site_finetune.py [--studies 400] [--epochs 3] [--work DIR] [--keep]

The site: phantoms of their own seed at 256 px (the embedded model was trained on 128 px), with fewer
normal studies and more of the findings the embedded model finds hardest (nodule, pneumothorax,
atelectasis). Its reports are signed as the phantom generator wrote them. The run uses the CPU only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SITE_WEIGHTS = {"cardiomegaly": 0.6, "pleural_effusion": 0.8, "pneumothorax": 1.4, "consolidation": 0.8,
                "nodule": 1.6, "edema": 0.5, "atelectasis": 1.4}


def site_studies(out: Path, studies: int, seed: int) -> list[dict]:
    from training.data.findings import FindingSampling
    from training.data.phantoms import PhantomConfig, generate_dataset, read_manifest

    config = PhantomConfig(image_size=256, lateral_fraction=0.35,
                           sampling=FindingSampling(normal_fraction=0.15, weights=SITE_WEIGHTS))
    generate_dataset(out, studies, seed, config=config)
    return read_manifest(out / "manifest.jsonl")


def sign_into_store(store_root: Path, phantoms: Path, records: list[dict]) -> int:
    """Every study stored as the node stores it, then signed with its report (as a radiologist would)."""
    from dicom_node.index import StudyState
    from dicom_node.reports import SignedReport, sign_report
    from dicom_node.settings import StoreSettings
    from dicom_node.store import ReceivedInstance, Store

    store = Store(StoreSettings(store_root))
    try:
        for record in records:
            for image in record["images"]:
                store.put(ReceivedInstance.from_part10((phantoms / image).read_bytes(), calling_ae="SITEPACS"))
            store.index.transition(record["study_uid"], StudyState.STABLE)
            sign_report(store.index, SignedReport(study_uid=record["study_uid"], signed_by="Site^Radiologist",
                                                  findings=record["report"]["findings"],
                                                  impression=record["report"]["impression"]))
    finally:
        store.close()
    return len(records)


def raddraft(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "raddraft", *args], check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7001)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--original-share", type=float, default=0.3)
    parser.add_argument("--test-share", type=float, default=0.3,
                        help="share of the site's patients held out to decide on (default 0.3)")
    parser.add_argument("--work", type=Path, help="work folder (default: a temp folder, removed unless --keep)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from raddraft.resources import embedded_model_dir

    work = args.work or Path(tempfile.mkdtemp(prefix="raddraft-site-"))
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    try:
        started = time.perf_counter()
        records = site_studies(work / "phantoms", args.studies, args.seed)
        times["site phantoms generated"] = time.perf_counter() - started
        started = time.perf_counter()
        sign_into_store(work / "store", work / "phantoms", records)
        times["stored and signed"] = time.perf_counter() - started
        times["raddraft dataset"] = raddraft("dataset", "--from-store", str(work / "store"),
                                             "--out", str(work / "dataset"), "--test-share", str(args.test_share))
        times["raddraft finetune (train, export, compare)"] = raddraft(
            "finetune", "--from", str(embedded_model_dir()), "--data", str(work / "dataset"),
            "--out", str(work / "run"), "--models-dir", str(work / "models"),
            "--original-share", str(args.original_share),
            "--set", f"stages.finetune.optimisation.epochs={args.epochs}")
        record = json.loads((work / "run" / "comparison.json").read_text(encoding="utf-8"))
        dataset = json.loads((work / "dataset" / "dataset.json").read_text(encoding="utf-8"))
        print(f"\nsite: {args.studies} phantom studies (seed {args.seed}, 256 px, case mix {SITE_WEIGHTS}); "
              f"dataset: {json.dumps(dataset.get('studies', dataset.get('splits', {})))}")
        print((work / "run" / "comparison.md").read_text(encoding="utf-8"))
        print("| step | seconds |\n|---|---|")
        for step, seconds in times.items():
            print(f"| {step} | {seconds:.0f} |")
        print(f"\nfine-tune timings: {record.get('seconds')}")
        print(f"plot: {work / 'run' / 'comparison.png'}")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
