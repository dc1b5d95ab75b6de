"""The comparison study in the signed report: the text's comparison line, and the SR's TID 2000 comparison
(Prior Procedure Descriptions with the prior's UID, date and frontal image, Previous Findings, the prior's
instances in the Pertinent Other Evidence Sequence), with dicom3tools' verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node.index import StudyState
from dicom_node.priors import PriorRetriever, priors_of
from dicom_node.reports import (
    ComparisonStudy,
    SignedReport,
    comparison_detail,
    comparison_line,
    comparison_of,
    report_as_text,
    sign_amendment,
    sign_report,
)
from dicom_node.settings import PacsSettings, StoreSettings
from dicom_node.sr import build_report_sr, comparison_reference, section_texts, write_report_sr
from dicom_node.store import ReceivedInstance, Store
from tests.conftest import copy_with_fresh_uids, require_tool, sample_path
from tests.dicom_node.priors_fixtures import put_all, write_cr_study

PRIOR_IMPRESSION = "Small right pleural effusion."


def _put_study(store: Store, tmp_path: Path, study_uid: str, date: str, names: list[str]) -> None:
    series = generate_uid()
    for i, name in enumerate(names):
        path = tmp_path / f"{study_uid[-8:]}-{i}.dcm"
        ds = pydicom.dcmread(sample_path(name))
        ds.PatientName, ds.PatientID, ds.StudyDate = "Doe^Jane", "P-18", date
        ds.save_as(path)
        copy_with_fresh_uids(path, path, study_uid=study_uid, series_uid=series)
        store.put(ReceivedInstance.from_part10(path.read_bytes()))


@pytest.fixture
def studies(tmp_path: Path):
    """A current study and an earlier one of the same patient, in a real store."""
    store = Store(StoreSettings(tmp_path / "store"))
    current, prior = generate_uid(), generate_uid()
    _put_study(store, tmp_path, prior, "20240302", ["CT_small.dcm", "CT_small.dcm"])
    _put_study(store, tmp_path, current, "20250115", ["CT_small.dcm"])
    store.index.transition(current, StudyState.STABLE)
    yield store, current, prior
    store.close()


def _comparison(store: Store, prior: str) -> ComparisonStudy:
    rows = store.index.instances_of(prior)
    return ComparisonStudy(prior, "20240302", "CR", "chest",
                           tuple((r.series_uid, r.sop_class_uid, r.sop_instance_uid) for r in rows), PRIOR_IMPRESSION)


def _sign(store: Store, study_uid: str, comparison: ComparisonStudy | None) -> SignedReport:
    return sign_report(store.index, SignedReport(
        study_uid, findings="Right effusion, larger than before.", impression="Increased right effusion.",
        signed_by="Smith^Anna", detail=comparison_detail(comparison)))


def _dciodvfy(path: Path) -> str:
    result = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    return result.stdout + result.stderr


def test_the_comparison_line_names_the_prior_or_says_none(studies):
    store, current, prior = studies
    report = _sign(store, current, _comparison(store, prior))
    text = report_as_text(report, store.index.study(current))
    assert "Comparison: CR chest 2024-03-02.\n\nFINDINGS" in text
    assert comparison_of(report).study_uid == prior
    assert comparison_line(SignedReport(current, "F.", "I.", "X", detail=comparison_detail(None))) == "Comparison: none."
    assert comparison_line(SignedReport(current, "F.", "I.", "X")) == "Comparison: none."  # signed before priors


def test_the_sr_references_the_prior_per_tid_2000(studies):
    store, current, prior = studies
    comparison = _comparison(store, prior)
    report = _sign(store, current, comparison)
    ds = build_report_sr(report, store.index.study(current), store.index.instances_of(current))
    names = [item.ConceptNameCodeSequence[0].CodeValue for item in ds.ContentSequence]
    assert names == ["121049", "121005", "121008", "121066", "121068", "121070", "121072"]
    assert comparison_reference(ds) == {"description": "CR chest 2024-03-02", "study_uid": prior,
                                        "date": "20240302", "baseline": comparison.instances[0][2],
                                        "previous_findings": PRIOR_IMPRESSION}
    (other,) = ds.PertinentOtherEvidenceSequence
    referenced = {ref.ReferencedSOPInstanceUID for series in other.ReferencedSeriesSequence
                  for ref in series.ReferencedSOPSequence}
    assert other.StudyInstanceUID == prior
    assert referenced == {row.sop_instance_uid for row in store.index.instances_of(prior)}
    current_evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert current_evidence.StudyInstanceUID == current  # the prior is not the study reported on
    assert section_texts(ds) == {"findings": report.findings, "impression": report.impression}


def test_an_sr_with_a_comparison_passes_dciodvfy(studies):
    store, current, prior = studies
    report = _sign(store, current, _comparison(store, prior))
    path = write_report_sr(store.root, report, store.index.study(current), store.index.instances_of(current))
    assert comparison_reference(pydicom.dcmread(path))["study_uid"] == prior
    verdict = _dciodvfy(path)
    assert "BasicTextSR" in verdict
    assert "Error" not in verdict and "Warning" not in verdict, verdict


def test_an_sr_read_without_a_prior_says_none_and_passes_dciodvfy(studies):
    store, current, _ = studies
    report = _sign(store, current, None)
    path = write_report_sr(store.root, report, store.index.study(current), store.index.instances_of(current))
    ds = pydicom.dcmread(path)
    assert comparison_reference(ds) == {"description": "None."}
    assert "PertinentOtherEvidenceSequence" not in ds
    verdict = _dciodvfy(path)
    assert "Error" not in verdict and "Warning" not in verdict, verdict


def test_the_prior_found_by_the_priors_lookup_is_the_srs_comparison(tmp_path):
    """The real path: priors_of() gives the prior (signed here), the report records it, the SR refers to it."""
    store = Store(StoreSettings(tmp_path / "store"))
    try:
        earlier = write_cr_study(tmp_path / "earlier", "PRI-18", "20231105")
        current = write_cr_study(tmp_path / "current", "PRI-18", "20250110")
        put_all(store, earlier.paths + current.paths)
        store.index.transition(earlier.study_uid, StudyState.DRAFTED)
        sign_report(store.index, SignedReport(earlier.study_uid, "Small right effusion.", PRIOR_IMPRESSION, "R^A"))
        PriorRetriever(PacsSettings(), store.index, store, move_destination="RADDRAFT").retrieve_for(current.study_uid)
        store.index.transition(current.study_uid, StudyState.STABLE)
        (prior,) = priors_of(store.index, current.study_uid)
        report = _sign(store, current.study_uid, ComparisonStudy.of_prior(prior))
        assert comparison_line(report) == "Comparison: CR CHEST PA AND LATERAL 2023-11-05."
        path = write_report_sr(store.root, report, store.index.study(current.study_uid),
                               store.index.instances_of(current.study_uid))
        reference = comparison_reference(pydicom.dcmread(path))
        assert reference["baseline"] == prior.instances[0].sop_instance_uid  # the frontal (PA)
        assert prior.instances[0].view_position == "PA"
        assert reference["previous_findings"] == PRIOR_IMPRESSION
        verdict = _dciodvfy(path)
        assert "Error" not in verdict and "Warning" not in verdict, verdict
    finally:
        store.close()


def test_an_amendment_keeps_its_comparison_beside_the_predecessor_and_passes_dciodvfy(studies):
    store, current, prior = studies
    first = _sign(store, current, _comparison(store, prior))
    amended = sign_amendment(store.index, SignedReport(
        current, findings=first.findings, impression="Increased right effusion; no pneumothorax.",
        signed_by="Smith^Anna", detail=comparison_detail(_comparison(store, prior))), first, "Pneumothorax excluded.")
    path = write_report_sr(store.root, amended, store.index.study(current), store.index.instances_of(current))
    ds = pydicom.dcmread(path)
    assert ds.PredecessorDocumentsSequence[0].StudyInstanceUID == current
    assert comparison_reference(ds)["study_uid"] == prior
    assert "Comparison: CR chest 2024-03-02." in report_as_text(amended, store.index.study(current))
    verdict = _dciodvfy(path)
    assert "Error" not in verdict and "Warning" not in verdict, verdict
