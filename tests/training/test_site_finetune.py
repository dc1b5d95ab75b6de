"""`raddraft finetune`: the promotion rule, the inputs it refuses, and a real fine-tuning run of a tiny model
on a site-style dataset (signed reports without ground truth), resumed, compared and decided."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from training.site.compare import Rule, decide
from training.site.finetune import FinetuneError, original_weight, resolve_start

FINDINGS = ("cardiomegaly", "pleural_effusion", "nodule")


def scores(micro: float, **per_finding: float) -> dict:
    f1 = {key: per_finding.get(key, 0.8) for key in FINDINGS}
    return {"micro_f1": micro, "per_finding_f1": f1, "support": {"cardiomegaly": 5, "pleural_effusion": 4,
                                                                 "nodule": 0}}


def test_better_overall_and_no_finding_worse_is_promoted():
    decision = decide(scores(0.80), scores(0.85, cardiomegaly=0.79), studies=40, rule=Rule(tolerance=0.02))
    assert decision.promote and not decision.forced
    assert any("better" in reason for reason in decision.reasons)


def test_not_better_overall_is_kept():
    decision = decide(scores(0.80), scores(0.80), studies=40, rule=Rule())
    assert not decision.promote
    assert decision.reasons[0].startswith("overall micro F1 not better")


def test_one_finding_worse_beyond_tolerance_is_kept_and_named():
    decision = decide(scores(0.80), scores(0.90, pleural_effusion=0.70), studies=40, rule=Rule(tolerance=0.05))
    assert not decision.promote
    assert any(reason.startswith("pleural_effusion worse") for reason in decision.reasons)


def test_a_finding_absent_from_the_test_studies_does_not_count():
    decision = decide(scores(0.80), scores(0.90, nodule=0.0), studies=40, rule=Rule())
    assert decision.promote


def test_too_few_test_studies_is_kept_and_force_promotes_recorded():
    kept = decide(scores(0.5), scores(0.9), studies=3, rule=Rule(min_test_studies=10))
    assert not kept.promote and "only 3 held-out test studies" in kept.reasons[0]
    forced = decide(scores(0.5), scores(0.9), studies=3, rule=Rule(min_test_studies=10), force=True)
    assert forced.promote and forced.forced and "forced" in forced.reasons[-1]


def test_original_share_sets_the_original_weight():
    weight = original_weight(0.25, site_studies=30, original_studies=900)
    assert weight * 900 / (weight * 900 + 30) == pytest.approx(0.25)
    assert original_weight(0.0, 30, 900) == 0.0


def test_a_bundle_without_checkpoint_or_a_random_folder_is_refused(tmp_path, tiny_checkpoint):
    from training.export import export_bundle

    bare = export_bundle(tiny_checkpoint, tmp_path / "bare", name="bare", version="1", parity=False).bundle_dir
    with pytest.raises(FinetuneError, match="carries no training checkpoint"):
        resolve_start(bare)
    with pytest.raises(FinetuneError, match="neither a model bundle"):
        resolve_start(tmp_path)
    assert resolve_start(tiny_checkpoint).bundle is None


# ------------------------------------------------------------------------------------ a real run
@pytest.fixture(scope="module")
def site_dataset(tmp_path_factory) -> Path:
    """A dataset shaped as `raddraft dataset` writes it: signed reports, splits by patient, no labels."""
    from training.data.phantoms import PhantomConfig, generate_dataset, read_manifest

    out = tmp_path_factory.mktemp("site-data")
    generate_dataset(out, 18, seed=404, config=PhantomConfig(image_size=64, workers=1))
    records = read_manifest(out / "manifest.jsonl")
    lines = [json.dumps({"study_uid": r["study_uid"], "images": r["images"], "report": r["report"],
                         "split": ("test", "validation", "train", "train")[i % 4]}) for i, r in enumerate(records)]
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def original_data(tmp_path_factory) -> Path:
    from training.data.phantoms import PhantomConfig, generate_dataset

    out = tmp_path_factory.mktemp("original-data")
    generate_dataset(out, 12, seed=405, config=PhantomConfig(image_size=64, workers=1))
    return out / "manifest.jsonl"


def finetune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", "finetune", *args], capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.slow
def test_finetune_trains_compares_and_decides_then_resumes(tiny_bundle, site_dataset, original_data, tmp_path):
    out = tmp_path / "run"
    args = ["--from", str(tiny_bundle), "--data", str(site_dataset), "--out", str(out),
            "--original", str(original_data), "--original-share", "0.25", "--min-test-studies", "3",
            "--set", "stages.finetune.optimisation.epochs=1", "--set", "stages.finetune.optimisation.batch_size=4",
            "--set", "output.quantize=[]", "--set", "compute.threads=1", "--set", "output.max_new_tokens=12",
            "--no-promote", "--progress", "json"]
    done = finetune(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    steps = [e for e in events if e["event"] == "progress" and e["task"] == "finetune"]
    assert steps and steps[-1]["done"] == steps[-1]["total"] and "loss" in steps[-1]
    assert {e["task"] for e in events if e["event"] == "progress"} >= {"evaluate current"}
    result = events[-1]
    assert result["event"] == "result" and result["installed"] is None

    record = json.loads((out / "comparison.json").read_text())
    assert record["current"]["version"] == "0.0.1"
    assert record["candidate"]["version"].startswith("0.0.1+site.")
    assert record["test_studies"] == 5
    for side in ("current", "candidate"):
        assert {"micro_f1", "macro_f1", "bleu4", "rouge_l", "per_finding_f1"} <= set(record["metrics"][side])
    assert record["decision"] == result["decision"]
    assert (out / "comparison.png").stat().st_size > 5000
    assert "| clinical micro F1 (report) |" in (out / "comparison.md").read_text()

    from engine.bundle import validate_bundle

    candidate = validate_bundle(out / "candidate")
    assert candidate.checkpoint == "checkpoint" and candidate.version == record["candidate"]["version"]
    assert "Fine-tuned at this site" in (out / "candidate" / "MODEL_CARD.md").read_text()
    # Only stage 2 ran, from the tiny model's weights: the vision tower is the base model's.
    train_config = json.loads((out / "train" / "config.json").read_text())
    assert train_config["model"]["base"] == str((tiny_bundle / "checkpoint").resolve())
    assert sorted(p.name for p in (out / "train" / "stages").iterdir()) == ["finetune"]

    again = finetune(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert any(e.get("text", "").startswith("stage finetune: finished before")
               for e in map(json.loads, again.stdout.splitlines()))
    assert json.loads((out / "comparison.json").read_text())["candidate"]["version"] == record["candidate"]["version"]


def test_a_missing_dataset_is_one_line_and_exit_1(tiny_bundle, tmp_path):
    done = finetune("--from", str(tiny_bundle), "--data", str(tmp_path), "--out", str(tmp_path / "run"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("raddraft finetune:") and "manifest.jsonl" in done.stderr


def test_finetune_plan_prints_the_stage_2_plan_and_trains_nothing(tiny_bundle, site_dataset, tmp_path):
    out = tmp_path / "run"
    done = finetune("--from", str(tiny_bundle), "--data", str(site_dataset), "--out", str(out), "--plan")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage finetune" in done.stdout and "largest batch that fits" in done.stdout
    assert "expected peak" in done.stdout and "stage projector" not in done.stdout
    assert not (out / "train" / "stages").exists()


def test_finetune_plan_refuses_a_batch_that_cannot_fit_in_one_line(tiny_bundle, site_dataset, tmp_path):
    done = finetune("--from", str(tiny_bundle), "--data", str(site_dataset), "--out", str(tmp_path / "run"),
                    "--plan", "--set", "stages.finetune.optimisation.batch_size=10000000")
    assert done.returncode == 1, done.stdout[-3000:]
    refused = [line for line in done.stdout.splitlines() if line.startswith("refused:")]
    assert len(refused) == 1 and "stages.finetune.optimisation.batch_size=" in refused[0]
