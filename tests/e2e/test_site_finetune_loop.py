"""The site loop from the command line, end to end on phantoms: studies stored and signed through the store
API -> `raddraft dataset` (de-identified) -> `raddraft finetune` of the current (tiny) model -> compared,
promoted -> `raddraft draft` drafts with the new version -> `raddraft model use` rolls back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from dicom_node.index import StudyState
from dicom_node.reports import SignedReport, sign_report
from dicom_node.settings import StoreSettings
from dicom_node.store import ReceivedInstance, Store

pytestmark = pytest.mark.slow
STUDIES = 12


def raddraft(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "raddraft", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"raddraft {' '.join(args)}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def signed_store(tmp_path_factory) -> tuple[Path, list[dict], Path]:
    """A store of phantom studies, each signed with its report, as radiologists would in the app."""
    from training.data.phantoms import PhantomConfig, generate_dataset, read_manifest

    phantoms = tmp_path_factory.mktemp("site-phantoms")
    generate_dataset(phantoms, STUDIES, seed=2024, config=PhantomConfig(image_size=64, workers=1))
    records = read_manifest(phantoms / "manifest.jsonl")
    root = tmp_path_factory.mktemp("site") / "store"
    store = Store(StoreSettings(root))
    try:
        for record in records:
            for image in record["images"]:
                store.put(ReceivedInstance.from_part10((phantoms / image).read_bytes(), calling_ae="SITEPACS"))
            store.index.transition(record["study_uid"], StudyState.STABLE)
            sign_report(store.index, SignedReport(
                study_uid=record["study_uid"], signed_by="Site^Radiologist",
                findings=f"{record['report']['findings']} Discussed with {record['patient_id']}.",
                impression=record["report"]["impression"]))
    finally:
        store.close()
    return root, records, phantoms


def drafted_model(study: Path, models_dir: Path) -> str:
    done = raddraft("draft", "--models-dir", str(models_dir), "--variant", "fp32", str(study))
    return json.loads(done.stdout)["model"]


def test_sign_dataset_finetune_promote_draft_and_roll_back(signed_store, tiny_bundle, tmp_path):
    root, records, phantoms = signed_store
    store = ["--store", str(root)]
    models = root / "models"
    raddraft("model", *store, "install", str(tiny_bundle), "--use")

    dataset = root / "training" / "dataset"
    raddraft("dataset", "--from-store", str(root), "--out", str(dataset))
    manifest = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == STUDIES and {r["split"] for r in manifest} == {"train", "validation", "test"}
    written = b"".join(p.read_bytes() for p in dataset.rglob("*") if p.is_file())
    for record in records:  # the identifying values never leave the store
        for value in (record["patient_id"], record["study_uid"]):
            assert value.encode() not in written
    assert "[ID]" in manifest[0]["report"]["findings"]

    run = root / "training" / "finetune"
    done = raddraft("finetune", "--from", str(models / "tiny-test-0.0.1"), "--data", str(dataset), "--out", str(run),
                    *store, "--original-share", "0", "--min-test-studies", "1", "--force",
                    "--set", "stages.finetune.optimisation.epochs=1", "--set", "stages.finetune.optimisation.batch_size=4",
                    "--set", "output.quantize=[]", "--set", "compute.threads=1", "--set", "output.max_new_tokens=8")
    record = json.loads((run / "comparison.json").read_text())
    candidate = record["candidate"]["version"]
    assert record["current"]["version"] == "0.0.1" and candidate.startswith("0.0.1+site.")
    assert f"now drafting with tiny-test {candidate}" in done.stderr

    listing = raddraft("model", *store, "list").stdout
    current_row = next(line for line in listing.splitlines() if line.startswith("*"))
    assert candidate in current_row and ("promoted" in current_row or "forced" in current_row)
    installed = json.loads((models / f"tiny-test-{candidate}" / "install.json").read_text())["record"]
    assert installed["comparison"] == str((run / "comparison.json").resolve())
    assert installed["decision"]["promote"] and installed["compared_with"]["version"] == "0.0.1"

    study = phantoms / Path(records[0]["images"][0]).parent
    assert drafted_model(study, models) == f"tiny-test@{candidate}"

    raddraft("model", *store, "use", "0.0.1")
    assert drafted_model(study, models) == "tiny-test@0.0.1"
    assert (models / f"tiny-test-{candidate}" / "model.json").is_file()  # kept for a later switch back
