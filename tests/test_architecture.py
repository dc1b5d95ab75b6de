"""The runtime never loads the training stack or Qt where it does not need them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("code", [
    "import dicom_node.server, dicom_node.sender",
    "from raddraft.cli import build_parser; build_parser()",
    "import engine.runtime, engine.queue, engine.preprocess, raddraft.service",
    "import raddraft.workstation, engine.display, engine.provenance, dicom_node.outbox, dicom_node.worklist",
])
def test_runtime_imports_no_training_stack_and_no_qt(code):
    loaded = _modules_after(code)
    forbidden = {"torch", "transformers", "peft", "optimum", "PySide6", "training"}
    assert not forbidden & {name.split(".")[0] for name in loaded}


def test_labeling_loads_spacy_but_not_torch():
    """thinc imports torch whenever it is installed; the labeler keeps it out of the runtime."""
    loaded = _modules_after("from engine.findings.labeler import label_report\n"
                            "assert label_report('Large right pneumothorax.')['pneumothorax'] == 'present'")
    tops = {name.split(".")[0] for name in loaded}
    assert {"spacy", "medspacy"} <= tops and not {"torch", "training", "PySide6"} & tops


def test_import_contracts_hold():
    """import-linter's contracts in pyproject.toml (one-way arrows between packages)."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text().count(
        "[[tool.importlinter.contracts]]")
    assert contracts >= 7 and f"Contracts: {contracts} kept, 0 broken" in result.stdout
