"""The signed report as a DICOM Basic Text SR: what pydicom reads back, and dicom3tools' verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node.index import StudyState
from dicom_node.reports import SignedReport, SigningError, sign_report
from dicom_node.settings import StoreSettings
from dicom_node.sr import BASIC_TEXT_SR, build_report_sr, clean_text, section_texts, write_report_sr
from dicom_node.store import ReceivedInstance, Store
from tests.conftest import copy_with_fresh_uids, require_tool, sample_path


@pytest.fixture
def signed(tmp_path: Path):
    store = Store(StoreSettings(tmp_path / "store"))
    study_uid, series = generate_uid(), [generate_uid(), generate_uid()]
    for i, name in enumerate(["CT_small.dcm", "MR_small.dcm", "CT_small.dcm"]):
        path = tmp_path / f"{i}.dcm"
        ds = pydicom.dcmread(sample_path(name))
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "Müller^Jörg", "P-77", "ACC-1"
        ds.save_as(path)
        copy_with_fresh_uids(path, path, study_uid=study_uid, series_uid=series[i % 2])
        store.put(ReceivedInstance.from_part10(path.read_bytes()))
    store.index.transition(study_uid, StudyState.STABLE)
    report = sign_report(store.index, SignedReport(
        study_uid, findings="Small left effusion.\nNo pneumothorax.", impression="Effusion \x0b(small).",
        signed_by="Smith^Anna"))
    yield store, report
    store.close()


def test_sr_content_patient_study_and_references(signed):
    store, report = signed
    study, instances = store.index.study(report.study_uid), store.index.instances_of(report.study_uid)
    ds = build_report_sr(report, study, instances, organization="General Hospital")
    assert ds.SOPClassUID == BASIC_TEXT_SR and ds.Modality == "SR"
    assert ds.SOPInstanceUID == report.sr_sop_instance_uid and ds.SeriesInstanceUID == report.sr_series_uid
    assert (ds.StudyInstanceUID, str(ds.PatientName), ds.PatientID, ds.AccessionNumber) == (
        study.study_uid, "Müller^Jörg", "P-77", "ACC-1")
    assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "VERIFIED"
    observer = ds.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == "Smith^Anna"
    assert observer.VerifyingOrganization == "General Hospital"
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == study.study_uid
    referenced = {(ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID)
                  for series in evidence.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert referenced == {(row.sop_class_uid, row.sop_instance_uid) for row in instances}
    assert len(evidence.ReferencedSeriesSequence) == 2
    assert section_texts(ds) == {"findings": "Small left effusion.\nNo pneumothorax.",
                                 "impression": "Effusion  (small)."}
    names = [item.ConceptNameCodeSequence[0].CodeValue for item in ds.ContentSequence]
    assert names == ["121049", "121005", "121008", "121070", "121072"]


def test_written_sr_reads_back_and_passes_dciodvfy(signed):
    store, report = signed
    path = write_report_sr(store.root, report, store.index.study(report.study_uid),
                           store.index.instances_of(report.study_uid))
    assert path.parent == store.root / "reports"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.MediaStorageSOPClassUID == BASIC_TEXT_SR
    assert section_texts(ds)["findings"] == "Small left effusion.\nNo pneumothorax."
    dciodvfy = require_tool("dciodvfy")
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
    verdict = result.stdout + result.stderr
    assert "BasicTextSR" in verdict
    assert "Error" not in verdict, verdict
    assert "Warning" not in verdict, verdict


def test_clean_text_drops_control_characters_only():
    assert clean_text("a\x00b\tc\r\nd\x7fe\ufffd ") == "a b\tc\nd e"


def test_critical_communication_is_a_text_item_of_the_impressions_and_passes_dciodvfy(tmp_path, signed):
    store, report = signed
    text = "Critical finding (pneumothorax (tension or large)) communicated to Dr Lee by telephone on 2026-12-01 10:05."
    report = SignedReport(**{**report.__dict__, "detail": {"critical_communication": {"text": text}}})
    ds = build_report_sr(report, store.index.study(report.study_uid), store.index.instances_of(report.study_uid))
    impressions = ds.ContentSequence[-1]
    assert [item.ConceptNameCodeSequence[0].CodeMeaning for item in impressions.ContentSequence] == [
        "Impression", "Comment"]
    texts = section_texts(ds)
    assert texts["critical_communication"] == text and texts["impression"] == "Effusion  (small)."
    path = tmp_path / "critical-sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    dciodvfy = require_tool("dciodvfy")
    verdict = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
    output = verdict.stdout + verdict.stderr
    assert "Error" not in output and "Warning" not in output, output


def test_amendment_refers_to_the_report_it_replaces_and_passes_dciodvfy(tmp_path, signed):
    from dicom_node.reports import latest_report, reports_of, sign_amendment
    from dicom_node.sr import section_texts as texts_of

    store, first = signed
    amended = sign_amendment(store.index, SignedReport(
        first.study_uid, findings="Small right effusion.\nNo pneumothorax.", impression="Effusion (small), right.",
        signed_by="Smith^Anna"), first, "Side corrected: the effusion is on the right.")
    assert store.index.study(first.study_uid).state == StudyState.SIGNED
    assert [r.id for r in reports_of(store.index, first.study_uid)] == [first.id, amended.id]
    assert latest_report(store.index, first.study_uid) == amended
    with pytest.raises(SigningError):  # the original is no longer the latest: amend the amendment
        sign_amendment(store.index, SignedReport(first.study_uid, "F.", "I.", "Smith^Anna"), first, "again")
    with pytest.raises(SigningError):
        sign_amendment(store.index, SignedReport(first.study_uid, "F.", "I.", "Smith^Anna"), amended, " ")
    path = write_report_sr(store.root, amended, store.index.study(first.study_uid),
                           store.index.instances_of(first.study_uid))
    ds = pydicom.dcmread(path)
    predecessor = ds.PredecessorDocumentsSequence[0]
    reference = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert (predecessor.StudyInstanceUID, reference.ReferencedSOPInstanceUID) == (
        first.study_uid, first.sr_sop_instance_uid)
    assert ds.SeriesInstanceUID == first.sr_series_uid and ds.SOPInstanceUID != first.sr_sop_instance_uid
    assert ds.InstanceNumber == 2 and ds.ContentSequence[-1].ConceptNameCodeSequence[0].CodeMeaning == "Addendum"
    assert texts_of(ds)["findings"] == "Small right effusion.\nNo pneumothorax."
    dciodvfy = require_tool("dciodvfy")
    verdict = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
    output = verdict.stdout + verdict.stderr
    assert "BasicTextSR" in output
    assert "Error" not in output and "Warning" not in output, output


def _ai_report(report: SignedReport, domain: dict | None) -> SignedReport:
    detail = {"model": "raddraft-phantom-cxr@1.0.0", "software": "RadDraft 0.1.0", "domain": domain}
    return SignedReport(**{**report.__dict__, "draft_id": 7, "ai_share_kept": 0.8234, "detail": detail})


def _ai_items(ds) -> dict[str, object]:
    """The device observer's items (after the person's) and the AI comments, by concept meaning."""
    found: dict[str, object] = {"comments": []}
    for item in ds.ContentSequence[3:]:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.RelationshipType == "HAS OBS CONTEXT":
            found[name] = (item.ConceptCodeSequence[0].CodeMeaning if item.ValueType == "CODE" else
                           item.UID if item.ValueType == "UIDREF" else str(item.TextValue))
        elif name == "Comment":
            found["comments"].append(str(item.TextValue))
    return found


@pytest.mark.parametrize("domain, words", [
    ({"in_domain": False, "score": 310.2, "threshold": 165.0}, "OUTSIDE the model's training domain"),
    ({"in_domain": True, "score": 120.0, "threshold": 165.0}, "within the model's training domain"),
    (None, "unknown"),
])
def test_ai_part_device_observer_share_and_domain_pass_dciodvfy(tmp_path, signed, domain, words):
    store, report = signed
    report = _ai_report(report, domain)
    ds = build_report_sr(report, store.index.study(report.study_uid), store.index.instances_of(report.study_uid))
    items = _ai_items(ds)
    assert items["Observer Type"] == "Device"
    assert items["Device Observer Name"] == "raddraft-phantom-cxr"
    assert items["Device Observer Model Name"] == "raddraft-phantom-cxr 1.0.0"
    assert items["Device Observer Manufacturer"] == "RadDraft"
    assert str(items["Device Observer UID"]).startswith("2.25.")
    drafted, share, state = items["comments"]
    assert drafted == "Drafted by AI: yes, by raddraft-phantom-cxr 1.0.0." and share == "Share of AI text kept: 82.3%."
    assert state.startswith("Study domain: ") and words in state
    assert ds.SoftwareVersions == "RadDraft 0.1.0"
    # the person who signed stays the report's observer; the device observes only the AI's subtree
    assert [item.ConceptNameCodeSequence[0].CodeValue for item in ds.ContentSequence][:3] == [
        "121049", "121005", "121008"]
    path = tmp_path / "ai-sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    dciodvfy = require_tool("dciodvfy")
    verdict = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
    output = verdict.stdout + verdict.stderr
    assert "BasicTextSR" in output
    assert "Error" not in output and "Warning" not in output, output


def test_a_report_written_without_a_draft_says_not_drafted_by_ai(signed):
    from dicom_node.sr import ai_contribution_line

    store, report = signed
    report = SignedReport(**{**report.__dict__, "detail": {"software": "RadDraft 0.1.0", "model": "m@1"}})
    ds = build_report_sr(report, store.index.study(report.study_uid), store.index.instances_of(report.study_uid))
    assert _ai_items(ds) == {"comments": ["Drafted by AI: no."]}
    assert ai_contribution_line(report) == "AI: not drafted by AI."
    drafted = _ai_report(report, {"in_domain": False, "score": 310.2, "threshold": 165.0})
    assert ai_contribution_line(drafted) == ("AI: drafted by raddraft-phantom-cxr 1.0.0; 82% of the AI text kept; "
                                             "study OUTSIDE the model's training domain (score 310.2 vs threshold "
                                             "165.0).")
