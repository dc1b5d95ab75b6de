"""The findings labeler on hand-written real-style sentences, on generated reports, and via the CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from labeler_cases import CASES, HEDGE_CASES

from training.data.findings import FindingSampling, sample_findings
from training.data.reports import ReportWriter
from engine.findings.labeler import LabelerError, label_mentions, label_report
from training.vocabulary import FINDING_KEYS, LABEL_KEYS


def test_the_table_is_large_enough():
    assert len(CASES) >= 60
    assert sum("uncertain" in expected.values() for _, expected in CASES) >= 10
    assert sum("absent" in expected.values() for _, expected in CASES) >= 15


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0][:48] for c in CASES])
def test_sentence(text, expected):
    labels = label_report(text)
    assert set(labels) == set(LABEL_KEYS)
    assert {k: labels[k] for k in FINDING_KEYS} == {k: expected.get(k, "not_mentioned") for k in FINDING_KEYS}


@pytest.mark.parametrize("text,key,hedge", HEDGE_CASES, ids=[c[0][:48] for c in HEDGE_CASES])
def test_hedge_strength(text, key, hedge):
    """An uncertain mention says how sure it is; the label stays "uncertain" either way."""
    mentions = [m for m in label_mentions(text) if m.key == key]
    assert mentions and {m.hedge for m in mentions} == {hedge}
    assert label_report(text)[key] == "uncertain"


def test_stated_mentions_carry_no_hedge():
    assert {m.hedge for m in label_mentions("Small left pleural effusion. No pneumothorax.")} == {""}


@pytest.mark.parametrize("text,no_finding", [
    ("No acute cardiopulmonary process.", "present"),
    ("Lungs are clear. Heart size is normal.", "present"),
    ("Endotracheal tube in satisfactory position. No pneumothorax.", "present"),
    ("Small left pleural effusion.", "absent"),
    ("Possible small left apical pneumothorax.", "absent"),
    ("", "not_mentioned"),
])
def test_no_finding(text, no_finding):
    assert label_report(text)["no_finding"] == no_finding


def test_multi_sentence_report_with_headers():
    text = ("FINDINGS: Endotracheal tube terminates 5 cm above the carina. There is no pneumothorax.\n\n"
            "IMPRESSION: 1. Moderate cardiomegaly. 2. Small bilateral pleural effusions.")
    labels = label_report(text)
    assert labels["support_device"] == "present"
    assert labels["pneumothorax"] == "absent"
    assert labels["cardiomegaly"] == "present"
    assert labels["pleural_effusion"] == "present"
    assert labels["no_finding"] == "absent"


def test_generated_reports_agree_with_their_ground_truth():
    for seed in range(400):
        rng = np.random.default_rng(seed)
        findings = sample_findings(rng, FindingSampling(), ap_view=seed % 3 == 0)
        report = ReportWriter(rng).write(findings)
        labels = label_report(report["findings"] + " " + report["impression"])
        for key in FINDING_KEYS:
            matching = [f for f in findings if f.kind == key]
            if not matching:
                assert labels[key] in ("absent", "not_mentioned"), (key, report)
            elif all(f.hedged for f in matching):
                assert labels[key] == "uncertain", (key, report)
            else:
                assert labels[key] == "present", (key, report)


def test_non_text_is_a_typed_error():
    with pytest.raises(LabelerError):
        label_report(None)  # type: ignore[arg-type]


def _run_cli(argv, stdin_text, monkeypatch, capsys):
    from raddraft.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin_text))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_jsonl(monkeypatch, capsys, tmp_path):
    lines = "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(
        ["No pneumothorax.", "Large right pneumothorax."])) + "\n"
    code, out, _ = _run_cli(["label"], lines, monkeypatch, capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["labels"]["pneumothorax"] for r in rows] == ["absent", "present"]
    assert [r["id"] for r in rows] == [0, 1]
    assert all(set(r["labels"]) == set(LABEL_KEYS) for r in rows)


def test_cli_plain_text(monkeypatch, capsys):
    code, out, _ = _run_cli(["label"], "The heart is mildly enlarged.\nLungs are clear.\n", monkeypatch, capsys)
    assert code == 0
    labels = json.loads(out)["labels"]
    assert labels["cardiomegaly"] == "present" and labels["consolidation"] == "absent"


def test_cli_bad_jsonl_is_one_line_error(monkeypatch, capsys):
    code, out, err = _run_cli(["label"], '{"text": "ok"}\n{"no_text": 1}\n', monkeypatch, capsys)
    assert code == 2
    assert out == ""
    assert err.strip().count("\n") == 0 and "line 2" in err and "Traceback" not in err
