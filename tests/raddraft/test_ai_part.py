"""Signing at the workstation records the AI's part: the drafting model, the software and the draft's domain
state reach the SR (device observer, comments) and the text export's last line."""

from __future__ import annotations

import subprocess

import pydicom

from dicom_node.drafts import DraftRecord, save_draft
from dicom_node.index import StudyState
from engine.provenance import Origin, SectionText
from raddraft import __version__
from tests.conftest import require_tool
from tests.raddraft.test_workstation import put_stable_study, workstation  # noqa: F401 - the fixture

OUT = {"in_domain": False, "score": 412.5, "threshold": 172.5}


def test_the_sr_and_the_text_say_what_the_ai_did(workstation, tmp_path):  # noqa: F811
    ws = workstation('[reading]\nradiologist = "Smith^Anna"\n')
    uid = put_stable_study(ws, tmp_path)
    ws.store.index.transition(uid, StudyState.DRAFTING)
    draft = save_draft(ws.store.index, DraftRecord(uid, "raddraft-phantom-cxr@1.0.0", "cpu", "No effusion.",
                                                   "Normal.", detail={"domain": OUT, "critical": []}))
    findings, impression = SectionText(draft.findings, Origin.AI), SectionText(draft.impression, Origin.AI)
    findings.sync_to("No effusion. Heart mildly enlarged.")
    findings.accept_all()
    impression.accept_all()
    report = ws.sign(uid, {"findings": findings, "impression": impression}, draft.id)
    assert report.detail["domain"] == OUT and report.detail["software"] == f"RadDraft {__version__}"
    assert report.detail["model"] == "raddraft-phantom-cxr@1.0.0"  # the model that drafted, not the one loaded
    path = ws.sr_file(report.id)
    ds = pydicom.dcmread(path)
    observers = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in ds.ContentSequence
                 if item.RelationshipType == "HAS OBS CONTEXT"}
    assert observers["Device Observer Name"].TextValue == "raddraft-phantom-cxr"
    comments = [str(item.TextValue) for item in ds.ContentSequence
                if item.ConceptNameCodeSequence[0].CodeMeaning == "Comment"]
    assert comments[0] == "Drafted by AI: yes, by raddraft-phantom-cxr 1.0.0."
    assert comments[1] == f"Share of AI text kept: {report.ai_share_kept:.1%}."
    assert "OUTSIDE the model's training domain (score 412.5 vs threshold 172.5)" in comments[2]
    assert ds.SoftwareVersions == f"RadDraft {__version__}"
    last = ws.report_text(report.id).rstrip("\n").splitlines()[-1]
    assert last.startswith("AI: drafted by raddraft-phantom-cxr 1.0.0;") and "OUTSIDE" in last
    dciodvfy = require_tool("dciodvfy")
    verdict = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
    output = verdict.stdout + verdict.stderr
    assert "Error" not in output and "Warning" not in output, output
