"""`raddraft service --model BUNDLE` as a user runs it: a phantom study sent with storescu gets a draft."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from dicom_node.drafts import latest_draft
from dicom_node.index import Index, StudyState
from tests.conftest import peer_env, require_tool, start_service


def wait_for_state(index: Index, study_uid: str, state: StudyState, timeout: float) -> StudyState | None:
    deadline = time.monotonic() + timeout
    current = None
    while time.monotonic() < deadline:
        row = index.study(study_uid)
        current = row.state if row else None
        if current == state:
            return current
        time.sleep(0.2)
    return current


@pytest.mark.peers
@pytest.mark.slow
def test_study_sent_with_storescu_is_drafted_in_the_store(tmp_path: Path, tiny_bundle: Path,
                                                          phantom_studies) -> None:
    storescu = require_tool("storescu")
    running = start_service(tmp_path / "store", "--stable-after", "1", "--model", str(tiny_bundle),
                            "--provider", "cpu")
    try:
        study = phantom_studies[0]
        # -xs: propose the files' own (possibly compressed) transfer syntaxes as well.
        subprocess.run([storescu, "-aec", "RADDRAFT", "127.0.0.1", str(running.port),
                        *(str(p) for p in study["paths"])],
                       check=True, capture_output=True, env=peer_env(), timeout=60)
        index = Index(tmp_path / "store" / "index.sqlite3")
        try:
            state = wait_for_state(index, study["study_uid"], StudyState.DRAFTED, timeout=60)
            assert state == StudyState.DRAFTED, running.log
            draft = latest_draft(index, study["study_uid"])
        finally:
            index.close()
    finally:
        assert running.stop() == 0
    assert draft.model == "tiny-test@0.0.1"
    assert draft.findings and draft.impression
    assert draft.provider == "cpu"


def test_service_refuses_to_start_with_a_broken_model(tmp_path: Path) -> None:
    (tmp_path / "empty-bundle").mkdir()
    with pytest.raises(RuntimeError, match="model.json is missing"):
        start_service(tmp_path / "store", "--model", str(tmp_path / "empty-bundle"), timeout=20)
