"""`raddraft draft --findings-text FILE`: only the impression is drafted, from the findings given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "samples" / "phantom-effusion"


def run_draft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", "draft", *args], capture_output=True, text=True,
                          timeout=180, check=False)


def test_the_impression_is_drafted_from_the_given_findings_which_the_json_echoes(tmp_path: Path) -> None:
    from raddraft.resources import embedded_model_dir

    given = "Large right pneumothorax. No nodule. No lines."
    (tmp_path / "findings.txt").write_text(given + "\n", encoding="utf-8")
    result = run_draft("--model", str(embedded_model_dir()), "--provider", "cpu", "--max-new-tokens", "24",
                       "--findings-text", str(tmp_path / "findings.txt"), str(SAMPLE))
    assert result.returncode == 0, result.stderr
    draft = json.loads(result.stdout)
    assert draft["findings"] == given
    assert draft["prompts"] == {"findings": "given", "impression": "impression_from_findings"}
    assert draft["impression"].strip() and "findings" not in draft["timings"]
    assert draft["timings"]["impression"]["new_tokens"] <= 24


def test_an_empty_or_missing_findings_file_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n")
    for name, why in (("empty.txt", "holds no findings"), ("missing.txt", "cannot read the findings")):
        result = run_draft("--findings-text", str(tmp_path / name), str(SAMPLE))
        assert result.returncode == 2 and why in result.stderr and "Traceback" not in result.stderr


def test_the_embedded_models_impression_follows_the_findings_it_is_given_not_the_image() -> None:
    """Issue 15: the embedded model is trained so that given findings win over the image (another study's
    findings; findings typed in other words win less often, and are measured in bench/prior_quality.py)."""
    from bench.impression_follows_findings import follow_scores

    followed, from_image, _, _, studies = follow_scores(None, 24)
    assert studies == 24
    assert followed["micro_f1"] >= 0.85, followed
    assert followed["micro_f1"] - from_image["micro_f1"] >= 0.4  # the images alone do not explain it
    typed, typed_from_image, _, _, _ = follow_scores(None, 24, typed=True)
    assert typed["micro_f1"] > typed_from_image["micro_f1"]
