"""comparison.micro_f1 and comparison.hallucinated on hand-made predictions with known values, and through
`raddraft evaluate` on a longitudinal phantom manifest."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from training.data.phantoms import PhantomConfig, generate_dataset, read_manifest
from training.evaluation.metrics import MetricsError, comparison_scores, evaluate, format_table


def _ref(uid, findings, impression, change=None, prior=True, device_change=None):
    record = {"study_uid": uid, "report": {"findings": findings, "impression": impression},
              "prior_study_uid": f"{uid}.9" if prior else None, "change": change if prior else None}
    if device_change is not None:
        record["device_change"] = device_change
    return record


def _pred(uid, findings, impression=""):
    return {"study_uid": uid, "findings": findings, "impression": impression}


REFS = [
    _ref("2.1", "The right pleural effusion has increased. Stable cardiomegaly.", "Increased right effusion.",
         {"pleural_effusion": "increased", "cardiomegaly": "unchanged"}),
    _ref("2.2", "Interval resolution of the left lower lobe consolidation.", "Resolved consolidation.",
         {"consolidation": "resolved"}),
    _ref("2.3", "No prior for comparison. Small left pleural effusion.", "Small left pleural effusion.", prior=False),
    _ref("2.4", "No prior studies are available for comparison. Lungs are clear.", "Normal chest.", prior=False),
]


def test_references_score_themselves_perfectly():
    result = evaluate([_pred(r["study_uid"], r["report"]["findings"], r["report"]["impression"]) for r in REFS], REFS)
    comparison = result["comparison"]
    assert comparison["micro_f1"] == 1.0 and comparison["hallucinated"] == 0.0
    assert (comparison["tp"], comparison["fp"], comparison["fn"]) == (3, 0, 0)
    assert comparison["n_with_prior"] == 2 and comparison["n_without_prior"] == 2
    assert comparison["per_change"]["increased"]["support"] == 1 and comparison["per_change"]["new"]["support"] == 0


def test_known_partial_values():
    predictions = [
        _pred("2.1", "The right pleural effusion has decreased. Stable cardiomegaly."),  # 1 right, 1 wrong
        _pred("2.2", "Left lower lobe consolidation."),                                   # says nothing: 1 missed
        _pred("2.3", "Small left pleural effusion, unchanged from prior."),               # claims a comparison
        _pred("2.4", "Compared with no prior study. Lungs are clear."),                   # does not
    ]
    comparison = evaluate(predictions, REFS)["comparison"]
    # tp 1 (cardiomegaly unchanged); fp 1 (effusion decreased); fn 2 (effusion increased, consolidation resolved)
    assert (comparison["tp"], comparison["fp"], comparison["fn"]) == (1, 1, 2)
    assert comparison["micro_precision"] == pytest.approx(0.5)
    assert comparison["micro_recall"] == pytest.approx(1 / 3, abs=1e-6)
    assert comparison["micro_f1"] == pytest.approx(0.4)
    assert comparison["claims_without_prior"] == 1 and comparison["hallucinated"] == pytest.approx(0.5)
    assert comparison["per_change"]["decreased"]["fp"] == 1 and comparison["per_change"]["resolved"]["fn"] == 1


def test_a_moved_device_is_not_scored():
    refs = [_ref("3.1", "The ET tube has been advanced. The NG tube is unchanged in position.", "Tubes as described.",
                 {}, device_change={"endotracheal_tube": "moved", "nasogastric_tube": "unchanged"})]
    comparison = evaluate([_pred("3.1", "Stable position of the ET tube.")], refs)["comparison"]
    assert (comparison["tp"], comparison["fp"], comparison["fn"]) == (0, 0, 0)


def test_without_change_references_only_hallucination_is_measured():
    # an older manifest: no prior fields at all, so every study is one without a prior
    refs = [{"study_uid": "4.1", "report": {"findings": "Lungs are clear.", "impression": "Normal."}},
            {"study_uid": "4.2", "report": {"findings": "Small effusion.", "impression": "Effusion."}}]
    result = evaluate([_pred("4.1", "Lungs are clear. No interval change."), _pred("4.2", "Small effusion.")], refs)
    assert result["comparison"]["micro_f1"] is None
    assert result["comparison"]["hallucinated"] == pytest.approx(0.5)
    assert "hallucinated 0.500 (1 of 2 without a prior" in format_table(result)


def test_bad_change_labels_are_refused():
    refs = [_ref("5.1", "Effusion.", "Effusion.", {"pleural_effusion": "grew"})]
    with pytest.raises(MetricsError, match="change must be one of"):
        comparison_scores([(_pred("5.1", "Effusion."), refs[0])])


@pytest.mark.slow
def test_evaluate_command_on_a_longitudinal_manifest(tmp_path):
    generate_dataset(tmp_path / "data", 24, seed=31, config=PhantomConfig(image_size=32, workers=1), priors=True)
    records = read_manifest(tmp_path / "data" / "manifest.jsonl")
    # drafts: the references themselves, except that every study without a prior gets an invented comparison
    predictions = tmp_path / "predictions.jsonl"
    with predictions.open("w") as fh:
        for record in records:
            impression = record["report"]["impression"]
            if not record["prior_study_uid"]:
                impression += " Unchanged from prior."
            fh.write(json.dumps(_pred(record["study_uid"], record["report"]["findings"], impression)) + "\n")
    result = subprocess.run([sys.executable, "-m", "raddraft", "evaluate", "--predictions", str(predictions),
                             "--references", str(tmp_path / "data" / "manifest.jsonl")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    comparison = json.loads(result.stdout)["comparison"]
    assert comparison["n_without_prior"] == sum(1 for r in records if not r["prior_study_uid"]) >= 1
    assert comparison["hallucinated"] == 1.0
    assert comparison["micro_f1"] >= 0.9
    assert "comparison: micro F1" in result.stderr
