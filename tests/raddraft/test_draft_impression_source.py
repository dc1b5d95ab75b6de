"""`raddraft draft`: without --impression-from-findings the bundle's `impression_from` decides where the
impression comes from; --impression-from-findings / --no-impression-from-findings overrule it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.engine.test_priors_prompt import PRIOR_PROMPTS, prior_bundle


def drafted_impression_prompt(bundle: Path, study: Path, *flags: str) -> str:
    done = subprocess.run([sys.executable, "-m", "raddraft", "draft", "--provider", "cpu", "--max-new-tokens", "6",
                           "--model", str(bundle), str(study), *flags],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["prompts"]["impression"]


def test_the_bundle_decides_unless_the_flag_is_given(tiny_bundle: Path, phantom_studies: list[dict],
                                                     tmp_path: Path) -> None:
    study = phantom_studies[0]["paths"][0]
    from_findings = prior_bundle(tiny_bundle, tmp_path / "findings", "report", impression_from="findings",
                                 prompts={**PRIOR_PROMPTS, "findings": "<s><image>\nFindings:"})
    from_image = prior_bundle(tiny_bundle, tmp_path / "image", "report")
    assert drafted_impression_prompt(from_findings, study) == "impression_from_findings"
    assert drafted_impression_prompt(from_findings, study, "--no-impression-from-findings") == "impression"
    assert drafted_impression_prompt(from_image, study) == "impression"
    assert drafted_impression_prompt(from_image, study, "--impression-from-findings") == "impression_from_findings"
