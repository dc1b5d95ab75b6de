"""Signing over the API: the checks before signing run again on the server (the app's answers are not
trusted blindly), and the report records what the workstation's does: the problems signed over and why,
the critical findings and their communication, the model and domain of the draft it started from, and the
prior it was compared with (the one named by the app, else the study's newest: the one the viewer hangs
first), so that the checks take a stated comparison as a claim only when the study has no prior."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dicom_node.drafts import drafts_of
from dicom_node.index import Index
from dicom_node.priors import newest_prior_comparison, priors_of
from dicom_node.reports import NO_PRIOR, ComparisonStudy, SignedReport, SigningError, comparison_detail
from server.errors import SiteError

NEWEST_PRIOR = object()  # the app named no comparison: the newest prior, as on its screen by default


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
                    critical_names: Iterable[str] | None, *, has_prior: bool = False) -> dict[str, Any]:
    """The checks' record for the report; SigningError naming what the review still lacks. has_prior: the
    report is read against a prior (a comparison it states is then no claim without one)."""
    from engine.findings.checks import check_report, review_problems
    from engine.findings.critical import DEFAULT_CRITICAL_FINDINGS, find_critical

    names = tuple(critical_names) if critical_names is not None else DEFAULT_CRITICAL_FINDINGS
    problems = check_report(findings, impression, has_prior=has_prior, critical=names)
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


def compared_with(index: Index, study_uid: str, named: object) -> ComparisonStudy:
    """The prior the report is compared with: `named` (a prior's Study Instance UID; None or "": read
    without one) or NEWEST_PRIOR (the workstation's rule for a report signed without naming one,
    `dicom_node.priors.newest_prior_comparison`); SiteError (400) for a study that is no prior of this one."""
    if named is NEWEST_PRIOR:
        return newest_prior_comparison(index, study_uid)
    if not named:
        return NO_PRIOR
    chosen = next((prior for prior in priors_of(index, study_uid) if prior.study_uid == named), None)
    if chosen is None:
        raise SiteError(f"study {named} is not a prior of study {study_uid}")
    return ComparisonStudy.of_prior(chosen)


def report_to_sign(index: Index, study_uid: str, signer: str, body: Any, *, software: str,
                   critical_names: Iterable[str] | None, comparison: object = NEWEST_PRIOR) -> SignedReport:
    """The report `signer` signs from the API's body (findings, impression, provenance, review, metrics);
    `comparison` as `compared_with` takes it."""
    compared = compared_with(index, study_uid, comparison)
    detail = {"provenance": body.provenance, "signed_via": "site server", "software": software,
              **reviewed_detail(body.findings, body.impression, body.review, critical_names,
                                has_prior=bool(priors_of(index, study_uid))),  # as the workstation's checks
              **comparison_detail(compared)}
    draft = next((d for d in drafts_of(index, study_uid) if d.id == body.draft_id), None)
    if draft is not None:
        detail.update(model=draft.model, domain=draft.detail.get("domain"))
    return SignedReport(study_uid, body.findings.strip(), body.impression.strip(), signer, draft_id=body.draft_id,
                        ai_share_kept=body.ai_share_kept, edit_distance=body.edit_distance, detail=detail)
