"""Change statements in a report: how each finding changed since the prior study, and whether the report
compares with a prior at all.

`read_changes(text)` maps finding keys to "new", "increased", "decreased", "unchanged" or "resolved";
`claims_comparison(text)` says whether the text compares with an earlier study.

The findings are the labeler's mentions (`engine.findings.labeler`: the same targets, sections and statuses
as the finding labels); the change words are cues found in each sentence. A cue belongs to the mention it
stands before with nothing but the finding's own words between ("Increased moderate right pleural effusion",
"Interval resolution of the left effusion"); otherwise to the mention before it in its sentence, when no
other noun follows the cue ("The right effusion has increased", "Cardiomegaly, unchanged"; not "cardiomegaly
with increased interstitial markings"). Mentions joined by "and" / "or" share a cue ("Stable cardiomegaly
and bibasilar atelectasis"). A cue after "no", "not" or "without" says nothing ("no new effusion"), unless
the negation is part of the cue ("no significant change in the effusion"); a cue in a reason for follow-up
("to document resolution") says nothing either. A mention the labeler reads as absent takes only "resolved"
and "no change" cues ("the previously seen effusion has resolved"). Where one finding gets several labels,
the most frequent wins, ties going to the later statement (the impression sums up).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from engine.findings.checks import comparison_without_prior
from engine.findings.labeler import Mention, label_mentions
from engine.findings.vocabulary import ABSENT

NEW, INCREASED, DECREASED, UNCHANGED, RESOLVED = "new", "increased", "decreased", "unchanged", "resolved"
CHANGES = (NEW, INCREASED, DECREASED, UNCHANGED, RESOLVED)

# (label, pattern, negation is part of the cue); longer cues first, so "no significant change" wins over "no"
_CUES: tuple[tuple[str, str, bool], ...] = (
    (UNCHANGED, r"\b(?:no|without)\s+(?:\w+\s+){0,2}?(?:interval\s+)?change\b", True),
    (UNCHANGED, r"\bnot\s+(?:\w+\s+)?changed\b", True),
    (NEW, r"\bnot\s+(?:present|seen|visible|visualized)\s+(?:on|in)\s+the\s+(?:prior|previous)\b", True),
    (RESOLVED, r"\bno\s+longer\s+(?:seen|visible|visualized|present|identified|evident|demonstrated|noted)\b", True),
    (UNCHANGED, (r"\bunchanged\b|\bstable\b|\bagain\s+(?:seen|noted|demonstrated|visualized|identified)\b"
                r"|\bredemonstrat\w*|\bsimilar\s+(?:to|compared|in\s+(?:size|appearance|position))\b"
                r"|\bpersist(?:s|ent|ently|ence|ing|ed)?\b|\bremains?\b"), False),
    (NEW, (r"\bnew(?:ly)?\b|\binterval\s+(?:development|appearance|placement|insertion)\b"
          r"|\bhas\s+(?:developed|appeared|been\s+placed|been\s+inserted)\b|\bbeen\s+placed\s+since\b"), False),
    (RESOLVED, (r"\b(?:interval\s+)?resolution\b|\bresolved\b|\b(?:interval\s+)?removal\b|\bremoved\b"
               r"|\bcleared\b|\bhas\s+cleared\b"), False),
    (INCREASED, (r"\bincreas(?:e|ed|es|ing)\b|\benlarging\b|\bworse(?:ning|ned)?\b|\blarger\b"
                r"|\bprogress(?:ion|ed|ing)\b|\bgr[eo]wn?\b|\bmore\s+(?:prominent|conspicuous|extensive|pronounced)\b"),
     False),
    (DECREASED, (r"\bdecreas(?:e|ed|es|ing)\b|\bimprov(?:ed|es|ing|ement)\b|\bsmaller\b|\bresolving\b"
                r"|\bless\s+(?:prominent|conspicuous|extensive|pronounced)\b|\bdiminish\w*|\bregress\w*"
                r"|\bclearing\b"), False),
)
_CUE_PATTERNS = tuple((label, re.compile(pattern, re.IGNORECASE), own) for label, pattern, own in _CUES)
_NEGATED_BEFORE = re.compile(r"\b(?:no|not|without|negative\s+for)\s+(?:[\w-]+\s+){0,2}$", re.IGNORECASE)
_REASON_BEFORE = re.compile(r"\b(?:to\s+(?:document|ensure|confirm|assess|evaluate|exclude)|until|follow[- ]?up\s+to)"
                            r"\s+(?:[\w-]+\s+){0,3}$", re.IGNORECASE)
_SEPARATOR = re.compile(r"[,;:()]|\b(?:and|or|but|with|which|while|that|due|from|versus|vs)\b", re.IGNORECASE)
_COORDINATION = re.compile(r"^\s*,?\s*(?:and|or|&)\s+[\w\s/-]{0,40}$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.;!?](?=\s|$)|\n\s*\n|(?:(?<=\s)|^)\d{1,2}[.)]\s+(?=[A-Za-z])")
# After a finding, a cue says how it changed when nothing it would describe follows ("has increased.",
# "unchanged from", "stable in appearance"), not when it names another thing ("increased interstitial opacities")
_SUFFIX_FOLLOWER = re.compile(r"^\s*(?:$|[,.;:)]|(?:since|from|compared|in|on|to|when|relative|as|now|and|or|but|"
                              r"with|at|over|than|the|prior|previous|position|appearance|alignment|size|slightly|"
                              r"mildly|markedly|significantly|somewhat|overall|allowing|xxxx)\b)", re.IGNORECASE)
_PREFIX_REACH = 60  # characters between a cue and the finding it stands before ("increased moderate right pleural")

# Comparison language: a report that uses it compares with an earlier study.
_NO_COMPARISON = re.compile(
    r"\b(?:no|without)\s+(?:\w+\s+){0,2}?(?:prior|previous|old|outside|comparison)\b[^.;\n]*"
    r"|\bcompared\s+(?:with|to)\s+no\b[^.;\n]*"
    r"|\bcomparison\s*(?:study|studies|exam)?\s*:?\s*(?:none|n/?a|not\s+available|unavailable)\b[^.;\n]*"
    r"|\bnone\s+available\b", re.IGNORECASE)
_COMPARISON = re.compile(
    r"\bcompar(?:ed|ison|ing)\b|\b(?:prior|previous|preceding|earlier|last)\s+(?:\w+\s+)?(?:study|studies|exam\w*|"
    r"radiograph\w*|films?|images?|imaging|x-?rays?|cxr|ct)\b|\bprevious(?:ly)?\s+(?:seen|noted|described|"
    r"demonstrated|identified|visualized|present)\b|\binterval(?!\s*follow)\b|\bsince\s+(?:the\s+)?(?:prior|previous|"
    r"last|earlier|\d)|\bagain\s+(?:seen|noted|demonstrated|visualized|identified)\b|\bredemonstrat\w*|\bunchanged\b"
    r"|\bstable\b|\bnew(?:ly)?\b|\bno\s+longer\b|\bresolved\b|\bpersist(?:s|ent|ently|ence)?\b|\bimproved\b"
    r"|\bimproving\b|\bworsen(?:ed|ing)\b|\b(?:increased|decreased)\s+in\s+(?:size|extent)\b"
    r"|\bhas\s+(?:increased|decreased|improved|worsened|resolved|developed|been\s+removed)\b", re.IGNORECASE)


@dataclass(frozen=True)
class ChangeStatement:
    key: str      # the finding key of the mention
    change: str   # one of CHANGES
    cue: str      # the words that say so
    sentence: str


def read_changes(text: str, mentions: Callable[[str], list[Mention]] = label_mentions) -> dict[str, str]:
    """{finding key: change} for every finding the text states a change of (others are left out)."""
    return aggregate_changes(change_statements(text, mentions))


def aggregate_changes(statements: list[ChangeStatement]) -> dict[str, str]:
    by_key: dict[str, list[str]] = {}
    for statement in statements:
        by_key.setdefault(statement.key, []).append(statement.change)
    result = {}
    for key, labels in by_key.items():
        counts = Counter(labels)
        top = max(counts.values())
        result[key] = next(label for label in reversed(labels) if counts[label] == top)
    return result


def change_statements(text: str, mentions: Callable[[str], list[Mention]] = label_mentions) -> list[ChangeStatement]:
    """Every (finding, change) the text states, in text order."""
    found = [m for m in mentions(text) if not m.hypothetical]
    statements: list[ChangeStatement] = []
    for start, end in _sentences(text):
        inside = [m for m in found if start <= m.start < end]
        if inside:
            statements += _statements_in(text, start, end, inside)
    return statements


def claims_comparison(text: str, mentions: Callable[[str], list[Mention]] = label_mentions) -> bool:
    """Whether the text compares with an earlier study ("No prior for comparison" does not): whatever the check
    before signing flags as a comparison without a prior (`engine.findings.checks`), and more ("new", "no
    longer seen", a change statement)."""
    if comparison_without_prior(text):
        return True
    cleaned = _NO_COMPARISON.sub(" ", text)
    if _COMPARISON.search(cleaned):
        return True
    return bool(read_changes(cleaned, mentions))


# ------------------------------------------------------------------------------------------ internals
def _sentences(text: str) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        bounds.append((start, match.end()))
        start = match.end()
    bounds.append((start, len(text)))
    return [(s, e) for s, e in bounds if text[s:e].strip()]


def _cues_in(text: str, start: int, end: int) -> list[tuple[int, int, str, bool]]:
    """(start, end, label, negation is its own) of each cue in text[start:end], without overlaps."""
    taken: list[tuple[int, int, str, bool]] = []
    sentence = text[start:end]
    for label, pattern, own in _CUE_PATTERNS:
        for match in pattern.finditer(sentence):
            s, e = start + match.start(), start + match.end()
            if not any(s < te and ts < e for ts, te, _, _ in taken):
                taken.append((s, e, label, own))
    return sorted(taken)


def _statements_in(text: str, start: int, end: int, mentions: list[Mention]) -> list[ChangeStatement]:
    statements = []
    sentence = text[start:end].strip()
    mentions = sorted(mentions, key=lambda m: m.start)
    for cue_start, cue_end, label, own in _cues_in(text, start, end):
        before = text[start:cue_start]
        if not own and _NEGATED_BEFORE.search(before):
            continue
        if _REASON_BEFORE.search(before):
            continue
        around = [m for m in mentions if m.start < cue_end and cue_start < m.end]  # "heart remains enlarged"
        for mention in around or _owners(text, cue_start, cue_end, mentions):
            if mention.status == ABSENT and not own and label != RESOLVED:
                continue
            statements.append(ChangeStatement(mention.key, label, text[cue_start:cue_end], sentence))
    return statements


def _owners(text: str, cue_start: int, cue_end: int, mentions: list[Mention]) -> list[Mention]:
    after = [m for m in mentions if m.start >= cue_end]
    before = [m for m in mentions if m.end <= cue_start]
    if after:
        gap = text[cue_end:after[0].start]
        if len(gap) <= _PREFIX_REACH and not _SEPARATOR.search(gap):
            return _coordinated(text, after)
    if before and _SUFFIX_FOLLOWER.match(text[cue_end:]):
        return _coordinated(text, list(reversed(before)))
    return []


def _coordinated(text: str, ordered: list[Mention]) -> list[Mention]:
    """The first mention, and those joined to it by "and" / "or" (in `ordered`'s direction)."""
    chosen = [ordered[0]]
    for previous, mention in itertools.pairwise(ordered):
        lo, hi = sorted((previous, mention), key=lambda m: m.start)
        if lo.key == hi.key and lo.end >= hi.start - 1:  # one finding named twice ("nodule/mass")
            chosen.append(mention)
            continue
        gap = text[lo.end:hi.start]
        if not _COORDINATION.match(gap) or any(p.search(gap) for _, p, _ in _CUE_PATTERNS):
            break
        chosen.append(mention)
    return chosen
