"""Checks before signing: what a careful second reader would flag in a report before it leaves.

- a finding stated present in one section and absent in the other;
- a finding on one side in the Findings and on the other side in the Impression;
- a critical finding in the Findings that the Impression does not mention;
- an impression that compares with a prior study when the study has none.
Each problem names the sentences involved, so the sign dialog can show them. The radiologist fixes the
text or signs anyway with a reason (recorded with the report).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.findings.critical import CRITICAL_NAMES, DEFAULT_CRITICAL_FINDINGS, find_critical
from engine.findings.labeler import Labeler, Mention, labels_from_mentions, shared_labeler
from engine.findings.vocabulary import ABSENT, FINDING_KEYS, PRESENT, UNCERTAIN

SECTION_CONFLICT = "section_conflict"
LATERALITY_CONFLICT = "laterality_conflict"
CRITICAL_NOT_IN_IMPRESSION = "critical_not_in_impression"
COMPARISON_WITHOUT_PRIOR = "comparison_without_prior"

# Words that claim a comparison with an earlier study ("unchanged", "compared with 2024-03-02",
# "has increased"); "compared with no prior study" and "no prior" claim none.
_COMPARISON = re.compile(
    r"\b(?:compared\s+(?:with|to)|in\s+comparison\s+(?:with|to)|comparison\s+(?:is\s+made\s+)?(?:with|to))"
    r"(?!\s+(?:no|none)\b)"
    r"|\bunchanged\b|\bstable\b|\binterval(?:ly)?\b(?!\s+follow)|\bno\s+(?:significant\s+|interval\s+)?change\b"
    r"|\b(?:since|from|than\s+on|than)\s+(?:the\s+)?(?:prior|previous|last|earlier)\b"
    r"|\bprior\s+(?:study|exam|examination|radiograph|film|image|ct)\b(?<!no prior study)"
    r"|\bpreviously\b|\bagain\s+(?:seen|noted|demonstrated|identified)\b|\bredemonstrat\w*"
    r"|\bpersist\w*|\b(?:has|have)\s+(?:increased|decreased|improved|worsened|resolved|progressed)\b"
    r"|\b(?:improv|worsen|progress)(?:ed|ing)\b|\bnewly\b",
    re.IGNORECASE)
_NO_PRIOR = re.compile(r"\b(?:no|absence\s+of|without)\s+(?:a\s+|any\s+)?(?:prior|previous|comparison)\b"
                       r"|\bcompared\s+with\s+no\b", re.IGNORECASE)


@dataclass(frozen=True)
class SignProblem:
    kind: str
    message: str
    sentences: tuple[str, ...]


def check_report(findings: str, impression: str, *, has_prior: bool,
                 critical: Iterable[str] = DEFAULT_CRITICAL_FINDINGS,
                 labeler: Labeler | None = None) -> list[SignProblem]:
    labeler = labeler or shared_labeler()
    mentions = {"findings": labeler.mentions(findings or ""), "impression": labeler.mentions(impression or "")}
    problems = section_conflicts(mentions) + laterality_conflicts(mentions)
    problems += critical_missing_from_impression(findings, mentions["impression"], critical, labeler)
    if not has_prior:
        problems += comparison_without_prior(impression or "")
    return problems


def section_conflicts(mentions: dict[str, list[Mention]]) -> list[SignProblem]:
    labels = {name: labels_from_mentions(found, said_anything=True) for name, found in mentions.items()}
    problems = []
    for key in FINDING_KEYS:
        statuses = {name: labels[name][key] for name in labels}
        if set(statuses.values()) != {PRESENT, ABSENT}:
            continue
        present = next(name for name, status in statuses.items() if status == PRESENT)
        absent = next(name for name, status in statuses.items() if status == ABSENT)
        if _other_side_only(mentions[present], mentions[absent], key):
            continue  # "the left lung is clear" beside "right lower lobe consolidation": no conflict
        sentences = _sentences(mentions[present], key, PRESENT) + _sentences(mentions[absent], key, ABSENT)
        problems.append(SignProblem(SECTION_CONFLICT, f"{_name(key).capitalize()} is present in the "
                                    f"{present.capitalize()} but absent in the {absent.capitalize()}.", sentences))
    return problems


def laterality_conflicts(mentions: dict[str, list[Mention]]) -> list[SignProblem]:
    problems = []
    for key in FINDING_KEYS:
        sides = {name: {m.side for m in found if m.key == key and m.status in (PRESENT, UNCERTAIN) and m.side}
                 for name, found in mentions.items()}
        in_findings, in_impression = sides.get("findings", set()), sides.get("impression", set())
        if not in_findings or not in_impression or "bilateral" in in_findings | in_impression:
            continue
        if in_findings.isdisjoint(in_impression):
            sentences = tuple(m.sentence for name in ("findings", "impression") for m in mentions[name]
                              if m.key == key and m.side)
            problems.append(SignProblem(
                LATERALITY_CONFLICT, f"{_name(key).capitalize()}: {'/'.join(sorted(in_findings))} in the Findings, "
                f"{'/'.join(sorted(in_impression))} in the Impression.", tuple(dict.fromkeys(sentences))))
    return problems


def critical_missing_from_impression(findings: str, impression_mentions: list[Mention], critical: Iterable[str],
                                     labeler: Labeler) -> list[SignProblem]:
    mentioned = {m.key for m in impression_mentions}
    problems = []
    for found in find_critical({"findings": findings or ""}, critical, labeler=labeler):
        if found.key not in mentioned:
            problems.append(SignProblem(CRITICAL_NOT_IN_IMPRESSION,
                                        f"Critical finding in the Findings not mentioned in the Impression: "
                                        f"{found.title}.", (found.sentence,)))
    return problems


def comparison_without_prior(impression: str) -> list[SignProblem]:
    sentences = [s.strip() for s in re.split(r"(?<=[.!?;])\s+|\n+", impression) if s.strip()]
    claims = tuple(s for s in sentences if _COMPARISON.search(s) and not _NO_PRIOR.search(s))
    if not claims:
        return []
    return [SignProblem(COMPARISON_WITHOUT_PRIOR, "The Impression compares with a prior study, but this study "
                        "has none.", claims)]


def _other_side_only(present: list[Mention], absent: list[Mention], key: str) -> bool:
    """Every negative statement names a side, and none the side of a positive one."""
    present_sides = {m.side for m in present if m.key == key and m.status == PRESENT}
    absent_sides = {m.side for m in absent if m.key == key and m.status == ABSENT}
    if "" in absent_sides or "bilateral" in absent_sides | present_sides or "" in present_sides:
        return False
    return present_sides.isdisjoint(absent_sides)


def _sentences(found: list[Mention], key: str, status: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.sentence for m in found if m.key == key and m.status == status))


def _name(key: str) -> str:
    return CRITICAL_NAMES.get(key, key.replace("_", " "))



COMMUNICATION_METHODS = ("telephone", "in person", "secure message", "page", "other")


@dataclass(frozen=True)
class CriticalCommunication:
    """Who was told of a critical finding, when and how (ACR practice for actionable findings)."""

    recipient: str
    communicated_at: str  # local time as "YYYY-MM-DD HH:MM"
    method: str

    def problems(self) -> list[str]:
        found = []
        if not self.recipient.strip():
            found.append("name who was told of the critical finding")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", self.communicated_at.strip()):
            found.append("give when they were told as YYYY-MM-DD HH:MM")
        if self.method not in COMMUNICATION_METHODS:
            found.append(f"say how they were told ({', '.join(COMMUNICATION_METHODS)})")
        return found

    def as_text(self, findings: Iterable[str]) -> str:
        return (f"Critical finding ({'; '.join(findings)}) communicated to {self.recipient.strip()} "
                f"by {self.method} on {self.communicated_at.strip()}.")


@dataclass(frozen=True)
class SignReview:
    """What the radiologist answered in the sign dialog: why they sign despite the problems, and the
    communication of the critical findings."""

    override_reason: str = ""
    communication: CriticalCommunication | None = None


def review_problems(problems: list[SignProblem], critical: list, review: SignReview | None) -> list[str]:
    """What is still missing before a report with these problems and critical findings may be signed (the
    sign dialog shows it, and signing refuses until it is empty)."""
    review = review or SignReview()
    missing = []
    if problems and not review.override_reason.strip():
        missing.append("a reason to sign anyway (or fix the report)")
    if critical:
        if review.communication is None:
            missing.append("record who was told of the critical finding (" +
                           "; ".join(f.title for f in critical) + "), when and how")
        else:
            missing += review.communication.problems()
    return missing
