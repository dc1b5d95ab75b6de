"""`raddraft draft` as scripts call it: one JSON object on stdout, or one line and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom


def run_draft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", "draft", *args], capture_output=True, text=True,
                          timeout=120)


def test_draft_prints_one_json_object_for_a_study_folder(tiny_bundle: Path, phantom_studies) -> None:
    folder = phantom_studies[0]["paths"][0].parent
    result = run_draft("--model", str(tiny_bundle), "--provider", "cpu", "--max-new-tokens", "10", str(folder))
    assert result.returncode == 0, result.stderr
    draft = json.loads(result.stdout)
    assert {"findings", "impression", "model", "provider", "timings"} <= set(draft)
    assert draft["model"] == "tiny-test@0.0.1" and draft["provider"] == "cpu"
    assert draft["timings"]["findings"]["new_tokens"] <= 10


def test_streaming_writes_the_text_to_stderr(tiny_bundle: Path, phantom_studies) -> None:
    result = run_draft("--model", str(tiny_bundle), "--max-new-tokens", "6", "--stream",
                       *(str(p) for p in phantom_studies[1]["paths"]))
    assert result.returncode == 0, result.stderr
    draft = json.loads(result.stdout)
    assert draft["findings"] in result.stderr


def test_a_study_without_images_fails_with_one_line(tiny_bundle: Path, phantom_studies, tmp_path: Path) -> None:
    ds = pydicom.dcmread(phantom_studies[0]["paths"][0])
    del ds.PixelData
    ds.save_as(tmp_path / "no-pixels.dcm", enforce_file_format=True)
    result = run_draft("--model", str(tiny_bundle), str(tmp_path / "no-pixels.dcm"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("raddraft draft:")


def test_a_broken_bundle_and_a_missing_path_fail_with_one_line(tmp_path: Path, phantom_studies) -> None:
    (tmp_path / "bundle").mkdir()
    broken = run_draft("--model", str(tmp_path / "bundle"), str(phantom_studies[0]["paths"][0]))
    assert broken.returncode != 0 and "model.json is missing" in broken.stderr
    assert "Traceback" not in broken.stderr
    missing = run_draft("--model", str(tmp_path / "bundle"), str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def _embedded() -> Path:
    from raddraft.resources import embedded_model_dir

    return embedded_model_dir()


def test_draft_json_carries_domain_and_confidence(phantom_studies) -> None:
    from engine.findings.vocabulary import FINDING_KEYS

    sample = Path(__file__).resolve().parents[2] / "resources" / "samples" / "phantom-effusion"
    result = run_draft("--model", str(_embedded()), "--provider", "cpu", str(sample))
    assert result.returncode == 0, result.stderr
    draft = json.loads(result.stdout)
    domain = draft["domain"]
    assert domain["in_domain"] is True and 0 < domain["score"] <= domain["threshold"]
    assert draft["confidence"] and set(draft["confidence"]) <= set(FINDING_KEYS)
    assert "pleural_effusion" in draft["confidence"]  # the sample's finding, stated by the draft
    assert all(0.0 < value <= 1.0 for value in draft["confidence"].values())


def test_a_real_ct_image_is_out_of_domain_and_a_bundle_without_signature_says_null(tiny_bundle: Path) -> None:
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    real = run_draft("--model", str(_embedded()), "--provider", "cpu", "--max-new-tokens", "8", ct)
    assert real.returncode == 0, real.stderr
    domain = json.loads(real.stdout)["domain"]
    assert domain["in_domain"] is False and domain["score"] > domain["threshold"]
    unknown = run_draft("--model", str(tiny_bundle), "--provider", "cpu", "--max-new-tokens", "8", ct)
    assert unknown.returncode == 0, unknown.stderr
    assert json.loads(unknown.stdout)["domain"] == {"in_domain": None, "score": None, "threshold": None}
