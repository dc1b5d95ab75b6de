"""Signing over the API: the checks before signing run again on the server (the app's answers are not
trusted blindly), and the report records what the workstation's does: the problems signed over and why,
the critical findings and their communication, the model and domain of the draft it started from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dicom_node.drafts import drafts_of
from dicom_node.index import Index
from dicom_node.reports import SignedReport, SigningError


def _review(body: dict[str, Any] | None):
    from engine.findings.checks import CriticalCommunication, SignReview

    body = body or {}
    told = body.get("communication")
    communication = None
    if isinstance(told, dict):
        communication = CriticalCommunication(str(told.get("recipient", "")), str(told.get("communicated_at", "")),
                                              str(told.get("method", "")))
    return SignReview(str(body.get("override_reason", "")), communication)


def reviewed_detail(findings: str, impression: str, review_body: dict[str, Any] | None,
                    critical_names: Iterable[str] | None) -> dict[str, Any]:
    """The checks' record for the report; SigningError naming what the review still lacks."""
    from engine.findings.checks import check_report, review_problems
    from engine.findings.critical import DEFAULT_CRITICAL_FINDINGS, find_critical

    names = tuple(critical_names) if critical_names is not None else DEFAULT_CRITICAL_FINDINGS
    problems = check_report(findings, impression, has_prior=False, critical=names)
    critical = find_critical({"findings": findings, "impression": impression}, names)
    review = _review(review_body)
    missing = review_problems(list(problems), list(critical), review)
    if missing:
        found = " ".join(problem.message for problem in problems)
        raise SigningError("Not signed; needed: " + "; ".join(missing) + "." + (f" {found}" if found else ""))
    detail: dict[str, Any] = {}
    if problems:
        detail["sign_checks"] = {"problems": [{"kind": p.kind, "message": p.message, "sentences": list(p.sentences)}
                                              for p in problems],
                                 "override_reason": review.override_reason.strip()}
    if critical:
        told = review.communication
        detail["critical_findings"] = [finding.title for finding in critical]
        if told is not None:
            detail["critical_communication"] = {
                "recipient": told.recipient.strip(), "communicated_at": told.communicated_at.strip(),
                "method": told.method, "text": told.as_text(finding.title for finding in critical)}
    return detail


def report_to_sign(index: Index, study_uid: str, signer: str, body: Any, *, software: str,
                   critical_names: Iterable[str] | None) -> SignedReport:
    """The report `signer` signs from the API's body (findings, impression, provenance, review, metrics)."""
    detail = {"provenance": body.provenance, "signed_via": "site server", "software": software,
              **reviewed_detail(body.findings, body.impression, body.review, critical_names)}
    draft = next((d for d in drafts_of(index, study_uid) if d.id == body.draft_id), None)
    if draft is not None:
        detail.update(model=draft.model, domain=draft.detail.get("domain"))
    return SignedReport(study_uid, body.findings.strip(), body.impression.strip(), signer, draft_id=body.draft_id,
                        ai_share_kept=body.ai_share_kept, edit_distance=body.edit_distance, detail=detail)
