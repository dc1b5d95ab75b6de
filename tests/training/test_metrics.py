"""Report metrics on small hand-made pairs with known values, and the evaluate command."""

from __future__ import annotations

import json

import pytest

from training.evaluation.metrics import MetricsError, bleu_scores, clinical_scores, evaluate, rouge_l
from training.vocabulary import LABEL_KEYS


def _ref(uid, findings, impression, labels=None):
    record = {"study_uid": uid, "report": {"findings": findings, "impression": impression}}
    if labels is not None:
        record["labels"] = labels
    return record


def _pred(uid, findings, impression):
    return {"study_uid": uid, "findings": findings, "impression": impression}


REFS = [
    _ref("1.1", "Moderate cardiomegaly. Small left pleural effusion. No pneumothorax.",
         "Cardiomegaly with a small left pleural effusion."),
    _ref("1.2", "Large right pneumothorax with a visible pleural line. The heart is not enlarged.",
         "Large right pneumothorax."),
]


def test_identical_reports_score_one():
    preds = [_pred(r["study_uid"], r["report"]["findings"], r["report"]["impression"]) for r in REFS]
    result = evaluate(preds, REFS)
    for n in range(1, 5):
        assert result[f"bleu{n}"] == pytest.approx(1.0)
        assert result["sections"]["findings"][f"bleu{n}"] == pytest.approx(1.0)
    assert result["rouge_l"] == pytest.approx(1.0)
    assert result["clinical"]["micro_f1"] == 1.0
    assert result["clinical"]["macro_f1"] == 1.0
    assert set(result["clinical"]["macro_keys"]) == {"cardiomegaly", "pleural_effusion", "pneumothorax"}


def test_disjoint_reports_score_zero():
    # no shared token, not even the full stop
    preds = [_pred("1.1", "Endotracheal tube terminates above carina", "Tube position satisfactory"),
             _pred("1.2", "Bibasilar atelectasis present", "Atelectasis")]
    result = evaluate(preds, REFS)
    assert result["bleu1"] == 0.0 and result["bleu4"] == 0.0
    assert result["rouge_l"] == 0.0
    assert result["clinical"]["micro_f1"] == 0.0
    assert result["clinical"]["macro_f1"] == 0.0


def test_known_partial_values():
    # unigram precision 5/6, no brevity penalty -> BLEU-1 = 5/6; LCS 5 of 6 tokens each -> ROUGE-L F = 5/6
    assert bleu_scores(["the cat sat on the mat"], ["the cat sat on a mat"])["bleu1"] == pytest.approx(5 / 6, abs=1e-4)
    assert rouge_l(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(5 / 6, abs=1e-6)
    # one finding found, one missed: precision 1, recall 1/2, F1 2/3
    preds = [_pred("1.1", "Moderate cardiomegaly. No pleural effusion.", "Cardiomegaly.")]
    clinical = evaluate(preds, REFS)["clinical"]
    assert clinical["micro_precision"] == 1.0
    assert clinical["micro_recall"] == 0.5
    assert clinical["micro_f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert clinical["per_finding"]["pleural_effusion"]["fn"] == 1
    assert clinical["macro_f1"] == pytest.approx(0.5)  # cardiomegaly 1.0, pleural effusion 0.0


def test_uncertain_is_counted_apart_from_positives():
    labels_p = [{k: "not_mentioned" for k in LABEL_KEYS} | {"pneumothorax": "uncertain"}]
    labels_r = [{k: "not_mentioned" for k in LABEL_KEYS} | {"pneumothorax": "present"}]
    clinical = clinical_scores(labels_p, labels_r)
    assert clinical["per_finding"]["pneumothorax"]["fn"] == 1
    assert clinical["per_finding"]["pneumothorax"]["predicted_uncertain"] == 1
    assert clinical["micro_f1"] == 0.0


def test_against_ground_truth_labels():
    truth = {k: "absent" for k in LABEL_KEYS} | {"pneumothorax": "present"}
    refs = [_ref("2.1", "Large right pneumothorax.", "Right pneumothorax.", truth)]
    result = evaluate([_pred("2.1", "Large right pneumothorax.", "Pneumothorax.")], refs)
    assert result["clinical_vs_ground_truth"]["micro_f1"] == 1.0
    assert result["reference_labeler_vs_ground_truth"]["micro_f1"] == 1.0
    assert "sacrebleu" in result["implementation"]["bleu"] and "rouge-score" in result["implementation"]["rouge_l"]


def test_unknown_study_is_a_typed_error():
    with pytest.raises(MetricsError, match="not among the references"):
        evaluate([_pred("9.9", "x", "y")], REFS)
    with pytest.raises(MetricsError, match="no study_uid"):
        evaluate([{"findings": "x"}], REFS)


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_cli_prints_json_and_writes_plot(tmp_path, capsys):
    from raddraft.cli import main

    refs = _write_jsonl(tmp_path / "refs.jsonl", REFS)
    preds = _write_jsonl(tmp_path / "preds.jsonl", [_pred("1.1", "Moderate cardiomegaly.", "Cardiomegaly.")])
    plot = tmp_path / "f1.png"
    code = main(["evaluate", "--predictions", str(preds), "--references", str(refs), "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert code == 0
    result = json.loads(out)
    assert {"bleu4", "rouge_l"} <= set(result)
    assert {"micro_f1", "macro_f1"} <= set(result["clinical"])
    assert "ROUGE-L" in err and "cardiomegaly" in err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_input_is_one_line_error(tmp_path, capsys):
    from raddraft.cli import main

    refs = _write_jsonl(tmp_path / "refs.jsonl", REFS)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n", encoding="utf-8")
    code = main(["evaluate", "--predictions", str(bad), "--references", str(refs)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "not JSON" in err and "Traceback" not in err
