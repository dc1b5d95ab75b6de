"""Signing outside the app (Workstation.sign / amend called without `comparison`): the report is compared
with the study's newest prior as `dicom_node.priors.priors_of` gives it, the same comparison line and TID 2000
comparison section the app writes; an explicit NO_PRIOR or another study still wins; dciodvfy passes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from dicom_node.index import StudyState
from dicom_node.priors import newest_prior_comparison, priors_of
from dicom_node.reports import NO_PRIOR, ComparisonStudy, SignedReport, comparison_line, sign_report
from dicom_node.sr import comparison_reference
from engine.provenance import Origin, SectionText
from raddraft.config import load_config
from raddraft.workstation import Workstation
from tests.conftest import require_tool
from tests.dicom_node.priors_fixtures import put_all, write_cr_study

PATIENT = "CMP-27"
PRIOR_IMPRESSION = "Small right pleural effusion."
NEWEST_LINE = "Comparison: CR CHEST PA AND LATERAL 2024-06-20."


@pytest.fixture
def ws(tmp_path: Path):
    """A workstation without a model over a real store holding a current CR study and two earlier ones of
    the same patient (the newer signed here), looked up as priors from the store (no PACS)."""
    (tmp_path / "no-model").mkdir()
    config_file = tmp_path / "raddraft.toml"
    config_file.write_text('[reading]\nradiologist = "Smith^Anna"\n')
    overrides = {"store.root": str(tmp_path / "store"), "node.port": 0, "engine.draft_on_stable": False,
                 "engine.model": str(tmp_path / "no-model")}
    station = Workstation.start(load_config(config_file, overrides), config_path=config_file, overrides=overrides)
    try:
        yield station
    finally:
        station.stop()


def _studies(ws: Workstation, tmp_path: Path) -> tuple[str, str, str]:
    """(current, newest prior, oldest prior) study UIDs; the current study's priors looked up."""
    store = ws.store
    oldest = write_cr_study(tmp_path / "oldest", PATIENT, "20221003")
    newest = write_cr_study(tmp_path / "newest", PATIENT, "20240620")
    put_all(store, oldest.paths + newest.paths)
    for earlier in (oldest, newest):
        store.index.transition(earlier.study_uid, StudyState.DRAFTED)
    sign_report(store.index, SignedReport(newest.study_uid, "Small right effusion.", PRIOR_IMPRESSION, "Reader^A"))
    return _current(ws, tmp_path, "current"), newest.study_uid, oldest.study_uid


def _current(ws: Workstation, tmp_path: Path, name: str, patient: str = PATIENT) -> str:
    """A further stable study of `patient` (2025), its priors looked up as on arrival."""
    current = write_cr_study(tmp_path / name, patient, "20250110")
    put_all(ws.store, current.paths)
    ws.store.index.transition(current.study_uid, StudyState.STABLE)
    ws.look_for_priors(current.study_uid)
    return current.study_uid


def _sections(findings: str = "Right pleural effusion, larger than before.",
              impression: str = "Increased right pleural effusion.") -> dict[str, SectionText]:
    return {"findings": SectionText(findings, Origin.HUMAN), "impression": SectionText(impression, Origin.HUMAN)}


def _dciodvfy_clean(path: Path) -> None:
    result = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    verdict = result.stdout + result.stderr
    assert "Error" not in verdict and "Warning" not in verdict, verdict


def test_a_report_signed_without_a_comparison_is_compared_with_the_newest_prior(ws, tmp_path):
    current, newest, _ = _studies(ws, tmp_path)
    assert priors_of(ws.store.index, current)[0].study_uid == newest

    report = ws.sign(current, _sections(), None)

    assert report.detail["comparison"]["study_uid"] == newest
    assert comparison_line(report) == NEWEST_LINE
    assert NEWEST_LINE in ws.report_text(report.id)
    sr_path = ws.sr_file(report.id)
    reference = comparison_reference(pydicom.dcmread(sr_path))
    prior = priors_of(ws.store.index, current)[0]
    assert (reference["study_uid"], reference["date"]) == (newest, "20240620")
    assert reference["baseline"] == prior.instances[0].sop_instance_uid  # the frontal (PA)
    assert reference["previous_findings"] == PRIOR_IMPRESSION
    evidence = pydicom.dcmread(sr_path).PertinentOtherEvidenceSequence
    assert [item.StudyInstanceUID for item in evidence] == [newest]
    _dciodvfy_clean(sr_path)


def test_an_explicit_no_prior_or_another_prior_wins_over_the_newest(ws, tmp_path):
    current, _, oldest = _studies(ws, tmp_path)

    alone = ws.sign(current, _sections(impression="Right pleural effusion."), None, comparison=NO_PRIOR)
    assert alone.detail["comparison"] is None
    assert "Comparison: none.\n" in ws.report_text(alone.id)
    assert comparison_reference(pydicom.dcmread(ws.sr_file(alone.id))) == {"description": "None."}

    chosen = ComparisonStudy(oldest, "20221003", "CR", "CHEST PA AND LATERAL")
    against_oldest = ws.sign(_current(ws, tmp_path, "another"), _sections(), None, comparison=chosen)
    assert comparison_line(against_oldest) == "Comparison: CR CHEST PA AND LATERAL 2022-10-03."
    assert comparison_reference(pydicom.dcmread(ws.sr_file(against_oldest.id)))["study_uid"] == oldest


def test_an_amendment_keeps_the_comparison_of_the_report_it_amends(ws, tmp_path):
    current, newest, _ = _studies(ws, tmp_path)
    read_alone = ws.sign(current, _sections(impression="Right pleural effusion."), None, comparison=NO_PRIOR)

    addendum = ws.amend(current, _sections(impression="Right pleural effusion; no pneumothorax."), read_alone.id,
                        "Pneumothorax excluded.")
    assert addendum.detail["comparison"] is None  # amended as it was read: without the prior
    assert "Comparison: none.\n" in ws.report_text(addendum.id)

    another = _current(ws, tmp_path, "another")
    compared = ws.sign(another, _sections(), None)
    second = ws.amend(another, _sections(impression="Increased right pleural effusion; no pneumothorax."),
                      compared.id, "Pneumothorax excluded.")
    assert second.detail["comparison"]["study_uid"] == newest
    sr_path = ws.sr_file(second.id)
    assert comparison_reference(pydicom.dcmread(sr_path))["study_uid"] == newest
    _dciodvfy_clean(sr_path)


def test_a_study_without_priors_is_signed_as_read_without_one(ws, tmp_path):
    current = _current(ws, tmp_path, "alone", patient="CMP-ALONE")
    assert newest_prior_comparison(ws.store.index, current) == NO_PRIOR

    report = ws.sign(current, _sections("No pleural effusion.", "Normal chest."), None)

    assert report.detail["comparison"] is None
    sr_path = ws.sr_file(report.id)
    assert comparison_reference(pydicom.dcmread(sr_path)) == {"description": "None."}
    _dciodvfy_clean(sr_path)
