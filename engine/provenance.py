"""Where each character of a report section came from: the model, or the radiologist.

The desktop's editors keep one `SectionText` per section and tell it about every change; the editor only
paints what `spans()` says. Rules:
- Text the model writes (a draft loaded, or streamed by "Draft") is AI text, marked until reviewed.
- An edit reviews the sentence it touches: typing inside an AI sentence, or deleting part of it, turns that
  sentence's AI text into *accepted* AI text (still counted as the model's, no longer marked). Deleting a
  whole sentence, or writing a new one beside it, reviews nothing else.
- "Accept" turns all remaining AI text of the section into accepted text.
- Signing requires no unreviewed AI text (`validate_for_signing`); `signing_metrics` gives the share of the
  model's text kept and the edit distance from the model's text to the signed one.

Pure Python (no Qt): the same model is tested on its own and drives the editors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

SENTENCE_ENDS = ".!?"


class Origin(StrEnum):
    HUMAN = "human"
    AI = "ai"  # from the model, not yet reviewed: marked
    ACCEPTED = "accepted"  # from the model, reviewed (accepted, or edited in its sentence)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    origin: Origin


class SectionText:
    """The text of one section with the origin of every character."""

    def __init__(self, text: str = "", origin: Origin = Origin.HUMAN) -> None:
        self._text = ""
        self._origins: list[Origin] = []
        self.model_text = ""  # what the model last wrote for this section: the reference for metrics
        self.source = ""  # where that text came from, e.g. "draft 12 (tiny@1)" (recorded at signing)
        self.set_text(text, origin)

    @property
    def text(self) -> str:
        return self._text

    def set_text(self, text: str, origin: Origin = Origin.HUMAN, source: str = "") -> None:
        """Replace everything: a draft loaded (AI) or a signed report shown (HUMAN)."""
        self._text = text
        self._origins = [origin] * len(text)
        if origin != Origin.HUMAN:
            self.model_text, self.source = text, source

    def start_ai(self, source: str = "") -> None:
        """The model starts writing this section anew: the old text goes, pieces follow with `append_ai`."""
        self._text, self._origins = "", []
        self.model_text, self.source = "", source

    def append_ai(self, piece: str) -> None:
        self._text += piece
        self._origins.extend([Origin.AI] * len(piece))
        self.model_text += piece

    def accept_all(self) -> int:
        """Mark the remaining AI text reviewed; return how many characters that was."""
        count = 0
        for i, origin in enumerate(self._origins):
            if origin == Origin.AI:
                self._origins[i] = Origin.ACCEPTED
                count += 1
        return count

    def sync_to(self, new_text: str, cursor_hint: int | None = None) -> bool:
        """The editor now holds `new_text`: find the one changed region and apply it as a human edit.

        `cursor_hint` (where the change happened, e.g. the cursor) places an ambiguous insertion such as
        a doubled letter. Returns False when nothing changed (a format-only change, for instance).
        """
        old = self._text
        if new_text == old:
            return False
        limit = min(len(old), len(new_text))
        prefix = 0
        while prefix < limit and old[prefix] == new_text[prefix]:
            prefix += 1
        if cursor_hint is not None:
            prefix = min(prefix, max(cursor_hint, 0))
        suffix = 0
        while (suffix < limit - prefix and old[len(old) - 1 - suffix] == new_text[len(new_text) - 1 - suffix]):
            suffix += 1
        removed = len(old) - prefix - suffix
        added = new_text[prefix:len(new_text) - suffix]
        self.edit(prefix, removed, added)
        return True

    def edit(self, position: int, removed: int, added: str) -> None:
        """Replace `removed` characters at `position` by `added` (typed by the radiologist)."""
        if not 0 <= position <= len(self._text) or removed < 0 or position + removed > len(self._text):
            raise ValueError(f"edit {position}+{removed} outside a text of {len(self._text)} characters")
        self._text = self._text[:position] + added + self._text[position + removed:]
        self._origins[position:position + removed] = [Origin.HUMAN] * len(added)
        first = position + len(added) - len(added.lstrip())
        last = position + len(added.rstrip()) - 1
        if last >= first:  # words typed: review the sentences they are part of
            self._review(_sentence_around(self._text, first)[0], _sentence_around(self._text, last)[1])
        else:  # a deletion (or white space typed): review the sentence only if it happened inside one
            inside = _inside_sentence(self._text, position, position + len(added))
            if inside is not None:
                self._review(*_sentence_around(self._text, inside))

    def _review(self, start: int, end: int) -> None:
        for i in range(start, end):
            if self._origins[i] == Origin.AI:
                self._origins[i] = Origin.ACCEPTED

    def spans(self) -> list[Span]:
        """Runs of equal origin, in order."""
        runs: list[Span] = []
        start = 0
        for i in range(1, len(self._origins) + 1):
            if i == len(self._origins) or self._origins[i] != self._origins[start]:
                runs.append(Span(start, i, self._origins[start]))
                start = i
        return runs

    def unreviewed(self) -> list[Span]:
        return [span for span in self.spans() if span.origin == Origin.AI]

    def ai_characters(self) -> int:
        """Characters of the model's text still in the section (reviewed or not)."""
        return sum(1 for origin in self._origins if origin != Origin.HUMAN)


def _is_end(text: str, i: int) -> bool:
    """A sentence ends at character i: a newline, or . ! ? followed by white space or the end."""
    if text[i] == "\n":
        return True
    return text[i] in SENTENCE_ENDS and (i + 1 == len(text) or text[i + 1].isspace())


def _sentence_around(text: str, i: int) -> tuple[int, int]:
    """[start, end) of the sentence holding character i (its end mark included)."""
    if not text:
        return 0, 0
    i = min(max(i, 0), len(text) - 1)
    start = i
    while start > 0 and not _is_end(text, start - 1):
        start -= 1
    end = i
    while end < len(text) and not _is_end(text, end):
        end += 1
    return start, min(end + 1, len(text))


def _inside_sentence(text: str, start: int, end: int) -> int | None:
    """A character of the sentence that spans the gap [start, end), or None when the gap lies between
    sentences (or at the edge of the text)."""
    before = start - 1
    while before >= 0 and text[before].isspace():
        before -= 1
    after = end
    while after < len(text) and text[after].isspace():
        after += 1
    if before < 0 or after >= len(text) or any(_is_end(text, i) for i in range(before, after)):
        return None
    return after


# -- signing -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SigningMetrics:
    ai_characters_written: int  # the model's text of every section (the reference)
    ai_characters_kept: int  # of those, still in the signed text
    edit_distance: int  # Levenshtein distance, model text -> signed text, summed over sections
    sections: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def ai_share_kept(self) -> float:
        if not self.ai_characters_written:
            return 0.0
        return min(1.0, self.ai_characters_kept / self.ai_characters_written)


def validate_for_signing(sections: Mapping[str, SectionText]) -> list[str]:
    """What stops signing: empty sections, AI text nobody reviewed. Empty list: ready to sign."""
    problems = []
    for name, section in sections.items():
        if not section.text.strip():
            problems.append(f"{name.capitalize()} is empty.")
        elif section.unreviewed():
            count = len(section.unreviewed())
            problems.append(f"{name.capitalize()} has {count} AI-marked passage{'s' if count > 1 else ''} "
                            "not yet accepted or edited.")
    return problems


def signing_metrics(sections: Mapping[str, SectionText]) -> SigningMetrics:
    per_section: dict[str, dict[str, object]] = {}
    written = kept = distance = 0
    for name, section in sections.items():
        section_distance = levenshtein(section.model_text, section.text)
        per_section[name] = {"ai_characters_written": len(section.model_text),
                             "ai_characters_kept": section.ai_characters(), "edit_distance": section_distance,
                             "source": section.source, "model_text": section.model_text}
        written += len(section.model_text)
        kept += min(section.ai_characters(), len(section.model_text))
        distance += section_distance
    return SigningMetrics(written, kept, distance, per_section)


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insertions, deletions, substitutions), O(len(a) * len(b)) time, O(len(b)) memory."""
    prefix = 0  # most edits are local: skip what both share at the start and at the end
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    a, b = a[prefix:], b[prefix:]
    suffix = 0
    while suffix < min(len(a), len(b)) and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    a, b = a[:len(a) - suffix], b[:len(b) - suffix]
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
