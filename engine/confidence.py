"""Per-finding confidence of a draft, from the decoder's own token probabilities.

For each finding the draft states (present, absent or uncertain, as the labeler reads it), the confidence
is the lowest probability the model gave any token of the statement, from the start of its sentence (less
openers such as "The") to the end of the finding's name: "No pleural effusion" is decided at "No",
"Moderate right pleural effusion" at "Moderate" or "right". The weakest token is where the model hesitated; an average would hide it
among the many near-certain tokens of a templated sentence. A finding stated in both sections takes the
lower of the two. (The embedded model's stage-0 findings head is discarded after training, so no bundle
carries a classifier head today; this works for every bundle.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from engine.findings.vocabulary import FINDING_KEYS

_SENTENCE_END = re.compile(r"[.\n;]")
# Sentence openers that choose wording, not findings ("The lungs ..." vs "Lungs ..."): not part of a statement.
_OPENERS = frozenset({"", "the", "a", "an", "there", "is", "are", "."})


@dataclass(frozen=True)
class SectionTokens:
    text: str  # the section as drafted (stripped)
    token_ids: Sequence[int]
    token_probs: Sequence[float]


def token_spans(tokenizer: Tokenizer, token_ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """Character span in `text` (the stripped decode of `token_ids`) of each token."""
    ends = [len(tokenizer.decode(list(token_ids[: i + 1]), skip_special_tokens=True)) for i in range(len(token_ids))]
    full = tokenizer.decode(list(token_ids), skip_special_tokens=True)
    lead = len(full) - len(full.lstrip())
    spans, start = [], 0
    for end in ends:
        spans.append((max(start - lead, 0), max(end - lead, 0)))
        start = end
    return spans


def statement_start(text: str, position: int) -> int:
    boundaries = [match.end() for match in _SENTENCE_END.finditer(text, 0, position)]
    return boundaries[-1] if boundaries else 0


def section_confidence(tokenizer: Tokenizer, section: SectionTokens, mentions: Sequence) -> dict[str, float]:
    if not section.token_ids or len(section.token_probs) != len(section.token_ids):
        return {}
    spans = token_spans(tokenizer, section.token_ids, section.text)
    found: dict[str, float] = {}
    for mention in mentions:
        if mention.key not in FINDING_KEYS:
            continue
        begin = statement_start(section.text, mention.start)
        statement = [(section.text[start:end].strip().lower(), p) for (start, end), p
                     in zip(spans, section.token_probs) if start < mention.end and end > begin]
        while len(statement) > 1 and statement[0][0] in _OPENERS:
            statement.pop(0)
        probs = [p for _, p in statement]
        if probs:
            found[mention.key] = min(found.get(mention.key, 1.0), min(probs))
    return found


def finding_confidence(tokenizer: Tokenizer, sections: Mapping[str, SectionTokens]) -> dict[str, float]:
    """finding key -> confidence in [0, 1] for every finding the draft states, in FINDING_KEYS order."""
    from engine.findings.labeler import shared_labeler

    combined: dict[str, float] = {}
    for section in sections.values():
        if not section.text:
            continue
        for key, value in section_confidence(tokenizer, section, shared_labeler().mentions(section.text)).items():
            combined[key] = min(combined.get(key, 1.0), value)
    return {key: round(combined[key], 4) for key in FINDING_KEYS if key in combined}
