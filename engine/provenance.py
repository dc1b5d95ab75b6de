"""Where each character of a report section came from: the model, or the radiologist.

The origin is a property of each character, not of how the text was reached: the desktop's editors keep it
in the document itself (so undo, redo, paste and drag carry it with the text) and build a `SectionText`
from the document whenever they are asked (`SectionText.from_runs`). Rules:
- Text the model writes (a draft loaded, or streamed by "Draft") is AI text, marked until accepted.
- Characters the radiologist types or pastes from outside are HUMAN; nothing else changes origin with them.
  Editing next to or inside AI text leaves the rest of it AI: a one-character edit (or an edit undone)
  reviews nothing.
- "Accept AI text" is the only way AI text becomes ACCEPTED (the model's, unchanged, reviewed).
- Signing requires no unaccepted AI text (`validate_for_signing`); `signing_metrics` gives, from the
  origins, the share of the model's text kept, how much of it was accepted unchanged, and the edit
  distance from the model's text to the signed one.

Pure Python (no Qt): the same model is tested on its own and is what the editors hand to signing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Origin(StrEnum):
    HUMAN = "human"
    AI = "ai"  # from the model, not yet reviewed: marked
    ACCEPTED = "accepted"  # from the model, unchanged, accepted by the explicit "Accept AI text" action


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

    @classmethod
    def from_runs(cls, runs: Sequence[tuple[str, Origin]], model_text: str = "", source: str = "") -> SectionText:
        """The section as an editor's document holds it: runs of (text, origin), and the model's text it is
        measured against."""
        section = cls()
        section._text = "".join(text for text, _ in runs)
        section._origins = [Origin(origin) for text, origin in runs for _ in text]
        section.model_text, section.source = model_text, source
        return section

    @property
    def text(self) -> str:
        return self._text

    def origins(self) -> list[Origin]:
        return list(self._origins)

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
        """Replace `removed` characters at `position` by `added` (typed by the radiologist): the added
        characters are HUMAN, every other character keeps its origin."""
        if not 0 <= position <= len(self._text) or removed < 0 or position + removed > len(self._text):
            raise ValueError(f"edit {position}+{removed} outside a text of {len(self._text)} characters")
        self._text = self._text[:position] + added + self._text[position + removed:]
        self._origins[position:position + removed] = [Origin.HUMAN] * len(added)

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
        """Characters of the model's text still in the section (accepted or not)."""
        return sum(1 for origin in self._origins if origin != Origin.HUMAN)

    def accepted_characters(self) -> int:
        """Characters of the model's text accepted unchanged by "Accept AI text"."""
        return sum(1 for origin in self._origins if origin == Origin.ACCEPTED)


# -- signing -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SigningMetrics:
    ai_characters_written: int  # the model's text of every section (the reference)
    ai_characters_kept: int  # of those, still in the signed text (by origin)
    edit_distance: int  # Levenshtein distance, model text -> signed text, summed over sections
    sections: dict[str, dict[str, object]] = field(default_factory=dict)
    ai_characters_accepted: int = 0  # of the kept ones, accepted unchanged by "Accept AI text"

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
                            "not yet accepted (edit it, or press Accept AI text).")
    return problems


def signing_metrics(sections: Mapping[str, SectionText]) -> SigningMetrics:
    per_section: dict[str, dict[str, object]] = {}
    written = kept = accepted = distance = 0
    for name, section in sections.items():
        section_distance = levenshtein(section.model_text, section.text)
        section_kept = min(section.ai_characters(), len(section.model_text))
        per_section[name] = {"ai_characters_written": len(section.model_text), "ai_characters_kept": section_kept,
                             "ai_characters_accepted": min(section.accepted_characters(), section_kept),
                             "human_characters": len(section.text) - section.ai_characters(),
                             "edit_distance": section_distance, "source": section.source,
                             "model_text": section.model_text}
        written += len(section.model_text)
        kept += section_kept
        accepted += min(section.accepted_characters(), section_kept)
        distance += section_distance
    return SigningMetrics(written, kept, distance, per_section, accepted)


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
