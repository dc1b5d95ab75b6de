"""`raddraft draft ... --prior PATH... [--prior-report FILE]`: the JSON's `prior` names the prior study the
draft was compared with (`study_uid`, `date`), or is null."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom

from raddraft.commands.draft import split_report

SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "samples" / "phantom-effusion"
PRIOR_PROMPTS = {
    "findings": "<s><image>\n{prior}Findings:",
    "impression": "<s><image>\n{prior}Impression:",
    "impression_from_findings": "<s><image>\n{prior}Findings: {findings}\nImpression:",
}


def run_draft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", "draft", "--provider", "cpu", "--max-new-tokens", "6",
                           *args], capture_output=True, text=True, timeout=300, check=False)


def prior_bundle(tiny_bundle: Path, target: Path) -> Path:
    shutil.copytree(tiny_bundle, target)
    data = json.loads((target / "model.json").read_text())
    data.update(prior="report+image", prompts=PRIOR_PROMPTS)
    (target / "model.json").write_text(json.dumps(data))
    return target


def test_the_json_names_the_prior_the_draft_was_compared_with(tiny_bundle: Path, phantom_studies: list[dict],
                                                              tmp_path: Path) -> None:
    bundle = prior_bundle(tiny_bundle, tmp_path / "bundle")
    earlier = phantom_studies[0]
    (tmp_path / "prior.txt").write_text("FINDINGS: Small right effusion.\nIMPRESSION: Effusion.\n")
    header = pydicom.dcmread(earlier["paths"][0], stop_before_pixels=True)
    expected_date = f"{header.StudyDate[:4]}-{header.StudyDate[4:6]}-{header.StudyDate[6:]}"

    result = run_draft("--model", str(bundle), str(SAMPLE), "--prior", *map(str, earlier["paths"]),
                       "--prior-report", str(tmp_path / "prior.txt"))
    assert result.returncode == 0, result.stderr
    draft = json.loads(result.stdout)
    assert draft["prior"] == {"study_uid": earlier["study_uid"], "date": expected_date}
    assert draft["prompts"]["prior"] == "given"

    alone = json.loads(run_draft("--model", str(bundle), str(SAMPLE)).stdout)
    assert alone["prior"] is None and "prior" not in alone["prompts"]
    # the shared prefix of a draft with a prior holds the prior's image block too
    assert draft["timings"]["shared_prefix_tokens"] > alone["timings"]["shared_prefix_tokens"]


def test_the_impression_from_given_findings_takes_the_prior_too(tiny_bundle: Path, phantom_studies: list[dict],
                                                                tmp_path: Path) -> None:
    bundle = prior_bundle(tiny_bundle, tmp_path / "bundle")
    (tmp_path / "findings.txt").write_text("Large right pneumothorax.\n")
    result = run_draft("--model", str(bundle), str(SAMPLE), "--findings-text", str(tmp_path / "findings.txt"),
                       "--prior", str(phantom_studies[1]["paths"][0]))
    assert result.returncode == 0, result.stderr
    draft = json.loads(result.stdout)
    assert draft["prior"]["study_uid"] == phantom_studies[1]["study_uid"]
    assert draft["findings"] == "Large right pneumothorax."


def test_a_prior_report_without_a_prior_or_a_missing_prior_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "prior.txt").write_text("Clear lungs.")
    for args, why in ((("--prior-report", str(tmp_path / "prior.txt")), "--prior-report needs --prior"),
                      (("--prior", str(tmp_path / "missing")), "no such file or folder")):
        result = run_draft(str(SAMPLE), *args)
        assert result.returncode == 2 and why in result.stderr and "Traceback" not in result.stderr


def test_a_prior_report_is_split_at_its_headings() -> None:
    assert split_report("Findings: Small effusion.\n\nImpression:\nEffusion.") == ("Small effusion.", "Effusion.")
    assert split_report("IMPRESSION: Effusion. FINDINGS no heading colon") == ("", "Effusion. FINDINGS no heading colon")
    assert split_report("Clear lungs.\nNo effusion.") == ("Clear lungs. No effusion.", "")
