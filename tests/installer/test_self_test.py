"""`raddraft self-test` from source: the node, C-STORE, the drafting queue and the embedded model for real,
on the bundled phantom study; and `raddraft app --exit-when-ready`, offscreen."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom

from raddraft.config import load_config
from raddraft.self_test import GROUND_TRUTH_NAME, STEPS, default_sample_dir, format_summary, run_self_test
from tests.embedded_model import EMBEDDED_ID, EMBEDDED_NAME, EMBEDDED_VERSION

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path) -> Path:
    """A configuration of its own, so neither the user's settings nor their model registry leak in."""
    path = tmp_path / "raddraft.toml"
    path.write_text(f'[store]\nroot = "{tmp_path / "store"}"\n\n[engine]\nproviders = ["cpu"]\n')
    return path


def raddraft(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def test_the_sample_study_matches_its_ground_truth() -> None:
    folder = default_sample_dir()
    truth = json.loads((folder / GROUND_TRUTH_NAME).read_text())
    assert truth["labels"]["pleural_effusion"] == "present"
    assert [key for key, value in truth["labels"].items() if value == "present"] == ["pleural_effusion"]
    for name in truth["images"]:
        ds = pydicom.dcmread(folder / name)
        assert ds.StudyInstanceUID == truth["study_uid"]
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
        assert ds.pixel_array.shape == (128, 128)
    assert sum(path.stat().st_size for path in folder.iterdir()) < 100_000


def test_self_test_passes_on_the_embedded_model(tmp_path: Path) -> None:
    steps: list[str] = []
    config = load_config(write_config(tmp_path))
    report = run_self_test(config, on_step=lambda number, name, seconds: steps.append(name))
    assert report.ok, report.error
    assert steps == list(STEPS) == [step.name for step in report.steps]
    assert all(step.seconds >= 0 for step in report.steps)
    assert (report.model_name, report.model_version) == (EMBEDDED_NAME, EMBEDDED_VERSION)
    assert report.model_source == "embedded"
    assert (report.provider, report.ort_provider) == ("cpu", "CPUExecutionProvider")
    assert report.variant == "int8"  # "auto" on CPU
    assert report.findings.strip() and report.impression.strip()
    assert report.draft_labels["pleural_effusion"] == "present" and report.mismatches == []
    assert re.fullmatch(r"RADDRAFT@127\.0\.0\.1:\d+", report.node)
    summary = format_summary(report)
    assert summary.startswith("RadDraft self-test: PASSED")
    for name in STEPS:
        assert re.search(rf"^  {name} +\d+\.\d\d$", summary, re.MULTILINE), name
    assert "CPUExecutionProvider" in summary and f"{EMBEDDED_NAME} {EMBEDDED_VERSION} (variant int8)" in summary


def test_a_draft_that_contradicts_the_ground_truth_fails_the_check_step(tmp_path: Path) -> None:
    # The same image, with ground truth that says cardiomegaly and no effusion: the model's (correct) draft
    # must now be reported as missing the one and contradicting the other.
    sample = tmp_path / "sample"
    shutil.copytree(default_sample_dir(), sample)
    truth = json.loads((sample / GROUND_TRUTH_NAME).read_text())
    truth["labels"].update(cardiomegaly="present", pleural_effusion="absent")
    (sample / GROUND_TRUTH_NAME).write_text(json.dumps(truth))
    report = run_self_test(load_config(write_config(tmp_path)), sample_dir=sample)
    assert not report.ok
    assert report.failed_step == "check draft"
    assert [step.name for step in report.steps] == list(STEPS[:-1])
    assert any(m.startswith("cardiomegaly: present in the study, the draft says") for m in report.mismatches)
    assert "pleural_effusion: absent in the study, the draft says present" in report.mismatches
    assert "MISMATCH    cardiomegaly" in format_summary(report)


def test_cli_prints_json_and_exits_0(tmp_path: Path) -> None:
    result = raddraft("self-test", "--json", "--config", str(write_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["failed_step"] == ""
    assert [step["name"] for step in report["steps"]] == list(STEPS)
    assert report["ort_provider"] == "CPUExecutionProvider"
    assert report["model"] == EMBEDDED_ID
    assert report["total_s"] > 0


def test_cli_failure_exits_1_with_one_line_naming_the_step(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-bundle"
    result = raddraft("self-test", "--config", str(write_config(tmp_path)), "--model", str(missing))
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert len(failures) == 1
    assert failures[0].startswith("raddraft self-test: FAILED at step 'load model': ")
    assert str(missing) in failures[0]
    assert "RadDraft self-test: FAILED at step 'load model'" in result.stdout


def test_app_exits_when_ready_and_prints_the_ready_time(tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = raddraft("app", "--config", str(write_config(tmp_path)), "--port", "0", "--exit-when-ready",
                      env=env)
    assert result.returncode == 0, result.stderr
    match = re.search(r"^RadDraft window ready in (\d+\.\d+) s$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    assert 0 < float(match.group(1)) < 60
