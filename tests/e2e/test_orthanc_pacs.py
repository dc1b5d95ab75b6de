"""A real PACS end to end: phantom studies stored into Orthanc with dcmtk's storescu are auto-routed by an
Orthanc Lua rule to RadDraft's node, drafted by the embedded model, signed through the Workstation API,
and the signed report comes back to Orthanc as an SR in the same study, as its REST API shows.

Orthanc and the workstation are set up as tests/e2e/orthanc_site.py says.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicom_node.index import StudyState
from dicom_node.sr import ai_model, ai_statements
from engine.findings.checks import CriticalCommunication, SignReview
from engine.findings.labeler import label_report
from engine.provenance import Origin, SectionText
from peers.dcmtk import storescu_send
from peers.orthanc import Orthanc
from raddraft.workstation import Workstation
from tests.conftest import wait_until
from tests.e2e.orthanc_site import PACS_AE, ROUTE, route_to, routing_orthanc, start_workstation
from training.data.findings import Finding
from training.data.phantoms import PhantomConfig, plan_study, write_study
from training.vocabulary import PRESENT

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
HUMAN_ADDITION = " No prior study for comparison."


@dataclass(frozen=True)
class PhantomCase:
    """A phantom study drawn with a chosen finding (or none), encoded in a chosen transfer syntax."""

    name: str
    findings: tuple[Finding, ...]
    transfer_syntax: str  # "explicit" | "jpeg2000" | "rle"
    lateral: bool = False


CASES = (
    # Two images (PA + lateral), JPEG 2000 lossless: Orthanc must forward them as it got them.
    PhantomCase("effusion", (Finding("pleural_effusion", side="right", severity="severe"),), "jpeg2000",
                lateral=True),
    PhantomCase("pneumothorax", (Finding("pneumothorax", side="left", severity="severe"),), "rle"),
    PhantomCase("normal", (), "explicit"),
)


@dataclass(frozen=True)
class Study:
    case: PhantomCase
    study_uid: str
    paths: tuple[Path, ...]


def write_phantoms(out: Path, seed: int = 2024) -> list[Study]:
    """128 px studies (the embedded model's input size) with the findings and encodings of CASES."""
    studies = []
    for index, case in enumerate(CASES):
        config = PhantomConfig(image_size=128, workers=1, ap_fraction=0.0,
                               lateral_fraction=1.0 if case.lateral else 0.0,
                               transfer_syntax_weights={case.transfer_syntax: 1.0})
        record = write_study(plan_study(seed, index, config, findings=case.findings), out, config)
        studies.append(Study(case, str(record["study_uid"]), tuple(out / p for p in record["images"])))
    return studies


def text_values(tags: Any) -> list[str]:
    """Every TextValue in an SR's content tree (Orthanc's simplified JSON)."""
    if isinstance(tags, list):
        return [text for item in tags for text in text_values(item)]
    if not isinstance(tags, dict):
        return []
    found = [tags["TextValue"]] if isinstance(tags.get("TextValue"), str) else []
    return found + text_values(tags.get("ContentSequence", []))


@dataclass
class Site:
    orthanc: Orthanc
    workstation: Workstation


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """Orthanc routing to RadDraft, and RadDraft's workstation sending its reports to Orthanc."""
    with routing_orthanc(tmp_path / "orthanc") as orthanc:
        workstation = start_workstation(tmp_path, orthanc.dicom_port, {"pacs.retry_initial_s": 1.0})
        try:
            route_to(orthanc, workstation)
            orthanc.echo(ROUTE)  # Orthanc reaches RadDraft's node before any study is routed
            yield Site(orthanc, workstation)
        finally:
            workstation.stop()
    assert orthanc.process.returncode == 0, orthanc.log_tail()


def sign_with_an_addition(workstation: Workstation, study_uid: str):
    """What a radiologist does in the app: open the draft, add a sentence, accept the rest, sign."""
    opened = workstation.open_study(study_uid)
    draft = opened.draft
    findings = SectionText(draft.findings, Origin.AI)
    findings.sync_to(draft.findings + HUMAN_ADDITION)
    impression = SectionText(draft.impression, Origin.AI)
    findings.accept_all()
    impression.accept_all()
    # as the sign dialog does: answer the checks before signing (a reason, and who was told of a critical finding)
    checks = workstation.sign_checks(study_uid, findings.text, impression.text)
    review = SignReview(override_reason="reviewed against the images" if checks.problems else "",
                        communication=CriticalCommunication("Dr Lee, ED", "2026-12-01 10:05", "telephone")
                        if checks.critical else None)
    return workstation.sign(study_uid, {"findings": findings, "impression": impression}, draft.id, review)


@pytest.mark.peers
@pytest.mark.slow
def test_orthanc_routes_studies_to_raddraft_and_gets_the_signed_sr_back(site: Site, tmp_path: Path) -> None:
    orthanc, workstation = site.orthanc, site.workstation
    index = workstation.store.index
    studies = write_phantoms(tmp_path / "phantoms")

    # A modality stores each study into the PACS; when storescu returns, Orthanc has indexed it.
    for study in studies:
        storescu_send(study.paths, orthanc.dicom_port, PACS_AE)
        orthanc_study = orthanc.study_id(study.study_uid)
        assert orthanc_study is not None
        assert len(orthanc.study_instances(orthanc_study)) == len(study.paths)

    # The Lua rule forwards them to RadDraft, which drafts each once it is stable.
    for study in studies:
        wait_until(lambda s=study: (row := index.study(s.study_uid)) and row.state == StudyState.DRAFTED,
                   timeout=60, what=f"study {study.case.name} to be drafted\n{orthanc.log_tail()}")
        rows = index.instances_of(study.study_uid)
        assert len(rows) == len(study.paths)
        sent_syntaxes = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
                         for p in study.paths}
        assert {row.transfer_syntax for row in rows} == sent_syntaxes  # forwarded as the modality sent it

    # The draft of each abnormal study names its finding, on the right side.
    for study in studies:
        draft = workstation.open_study(study.study_uid, mark=False).draft
        assert draft.model.startswith("raddraft-phantom-cxr")
        labels = label_report(f"{draft.findings}\n{draft.impression}")
        for finding in study.case.findings:
            assert labels[finding.kind] == PRESENT, (study.case.name, draft.findings, draft.impression)
            assert finding.side in draft.findings.lower(), (study.case.name, draft.findings)

    # Signed through the API: each report is queued for the PACS at signing and the outbox sends it.
    reports = {study.study_uid: sign_with_an_addition(workstation, study.study_uid) for study in studies}
    for study in studies:
        wait_until(lambda s=study: index.study(s.study_uid).state == StudyState.SENT, timeout=30,
                   what=f"the report of {study.case.name} to be sent\n{orthanc.log_tail()}")

    # Orthanc now holds the SR in the same study as the images, with the signed text.
    for study in studies:
        report = reports[study.study_uid]
        assert report.findings.endswith(HUMAN_ADDITION.strip())
        series = orthanc.study_series(orthanc.study_id(study.study_uid))
        sr_series = [s for s in series if s["MainDicomTags"].get("Modality") == "SR"]
        assert len(series) == len(sr_series) + len(study.paths) and len(sr_series) == 1
        (sr_instance,) = sr_series[0]["Instances"]
        tags = orthanc.instance_tags(sr_instance)
        assert tags["StudyInstanceUID"] == study.study_uid
        assert (tags["Modality"], tags["SOPClassUID"]) == ("SR", BASIC_TEXT_SR)
        assert tags["SOPInstanceUID"] == report.sr_sop_instance_uid
        assert (tags["VerificationFlag"], tags["CompletionFlag"]) == ("VERIFIED", "COMPLETE")
        communication = report.detail.get("critical_communication", {}).get("text")
        values = text_values(tags)
        signed_text = [report.findings, report.impression, *([communication] if communication else [])]
        assert [value for value in values if value in signed_text] == signed_text
        # the model that drafted it, as a device observer, and what it contributed (IHE AI Results practice)
        assert ai_statements(report) and all(statement in values for statement in ai_statements(report))
        assert ai_model(report)[0] in values
    assert workstation.status().outbox_pending == 0
