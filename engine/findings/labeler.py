"""The findings labeler: medspaCy's ConText algorithm over target rules per finding, on a blank spaCy pipeline.

`Labeler().label(text)` returns, for every key of `LABEL_KEYS`, one of "present", "absent", "uncertain" or
"not_mentioned"; `Labeler().mentions(text)` returns every mention with its status, sentence, section and
side, which the checks before signing and the critical findings read.

The pipeline: a sentence splitter (full stops, blank lines, numbered items), medspaCy's TargetMatcher with
the rules of `engine.findings.rules`, medspaCy's ConText (its default modifiers plus radiology's own) and
medspaCy's Sectionizer. Mentions in the indication, history or comparison sections are not the study's
findings and are left out. A mention's status:
- inherent ABSENT / UNCERTAIN (normal and equivocal statements) stands as it is;
- otherwise negated → absent; possible → uncertain; historical or hypothetical only ("CT to exclude a
  nodule") → not counted; one of two named alternatives ("atelectasis or scarring") → uncertain; else present.
An uncertain mention also says how sure it is (`Mention.hedge`: "probable" or "possible", the weakest of its
hedges); the labels do not, and MeSH's indexers code only the probable ones (training.evaluation.real_reports).
Per finding, the statuses aggregate present > uncertain > absent > not mentioned (as CheXpert).
`no_finding` is present when no pathology (support devices do not count) is present or uncertain and the
report says anything at all; absent otherwise; not_mentioned for an empty report.
"""

from __future__ import annotations

import functools
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.findings.rules import (
    ALTERNATIVE_AFTER,
    ALTERNATIVE_BEFORE,
    CRITICAL_TARGETS,
    DROPPED_DEFAULT_MODIFIERS,
    IGNORE,
    MODIFIERS,
    POSSIBLE,
    PROBABLE,
    PROBABLE_HEDGE,
    PROBABLE_TRAILING,
    TARGETS,
    TRAILING_HEDGE,
    Target,
)
from engine.findings.vocabulary import (
    ABSENT,
    FINDING_KEYS,
    LABEL_KEYS,
    NO_FINDING,
    NOT_MENTIONED,
    PATHOLOGY_KEYS,
    PRESENT,
    UNCERTAIN,
)


class LabelerError(ValueError):
    """The input cannot be labeled (not text)."""


NOT_FINDINGS_SECTIONS = frozenset({"indication", "history_of_present_illness", "past_medical_history",
                                   "comparison", "technique", "reason_for_exam", "patient_instructions",
                                   "family_history", "social_history", "medications", "allergies"})
_SIDES = (("bilateral", re.compile(r"\b(?:bilateral(?:ly)?|both|bibasilar|bibasal|biapical)\b")),
          ("left", re.compile(r"\bleft\b|\blt\b")), ("right", re.compile(r"\bright\b|\brt\b")))
# "left and right effusions", "left lower lobe and right perihilar airspace disease": both sides
_BOTH_SIDES = re.compile(r"\b(?:left|right)\b[\w\s-]{0,30}?\s(?:and|&)\s+(?:the\s+)?(?:left|right)\b(?:\s+[\w-]+){0,3}\s*$")
_NUMBERED_ITEM = re.compile(r"(?:(?<=\s)|^)\d{1,2}[.)]\s+(?=[A-Za-z])")
_BLANK_LINE = re.compile(r"\n\s*\n")
_DOUBLE_STOP = re.compile(r"\.\.(?=\s|$)")  # "effusion.. Left basilar atelectasis": a typed full stop twice
_ABBREVIATIONS = ((re.compile(r"\b[Ee]\.[Tt]\.(?=\s)"), "ET"), (re.compile(r"\b[Nn]\.[Gg]\.(?=\s)"), "NG"),
                  (re.compile(r"\bvs\.", re.IGNORECASE), "vs"), (re.compile(r"\bapprox\.", re.IGNORECASE), "approx"),
                  (re.compile(r"\b[Dd]r\."), "Dr"))


@dataclass(frozen=True)
class Mention:
    key: str  # a finding key, or a critical-finding key ("free_air", "malpositioned_tube")
    status: str  # present / absent / uncertain
    text: str  # the words that name it
    sentence: str
    section: str  # the section the sectionizer found ("" when the text has no headers)
    start: int  # character offsets of the mention in the labeled text
    end: int
    side: str  # "left", "right", "bilateral" or "" as the sentence says around the mention
    historical: bool = False
    hypothetical: bool = False  # a reason for more imaging ("CT to exclude a nodule"): no finding stated
    hedge: str = ""  # an uncertain mention's strength: "probable" or "possible" (engine.findings.rules); else ""


def _register_extensions() -> None:
    from spacy.tokens import Span

    if not Span.has_extension("inherent"):
        Span.set_extension("inherent", default=PRESENT)
    if not Span.has_extension("inherent_hedge"):
        Span.set_extension("inherent_hedge", default="")


class Labeler:
    """One spaCy pipeline, built on first use (importing spaCy takes about two seconds) and shared by threads."""

    def __init__(self) -> None:
        self._nlp: Any = None
        self._lock = threading.Lock()

    # -- the pipeline ------------------------------------------------------------------------------
    @property
    def nlp(self) -> Any:
        with self._lock:
            if self._nlp is None:
                self._nlp = _build_pipeline()
            return self._nlp

    def warm_up(self) -> None:
        """Build the pipeline now (on a worker thread), so the first label is fast."""
        _ = self.nlp

    # -- labeling ---------------------------------------------------------------------------------
    def mentions(self, text: str) -> list[Mention]:
        if not isinstance(text, str):
            raise LabelerError(f"report text must be a string, got {type(text).__name__}")
        doc = self.nlp(_normalise(text))
        return _mentions_of(doc)

    def label(self, text: str) -> dict[str, str]:
        """Labels for every key of `LABEL_KEYS`: "present", "absent", "uncertain" or "not_mentioned"."""
        return labels_from_mentions(self.mentions(text), said_anything=bool(re.search(r"\w", text or "")))

    def mentions_many(self, texts: list[str]) -> list[list[Mention]]:
        for text in texts:
            if not isinstance(text, str):
                raise LabelerError(f"report text must be a string, got {type(text).__name__}")
        return [_mentions_of(doc) for doc in self.nlp.pipe(_normalise(text) for text in texts)]

    def label_many(self, texts: list[str]) -> list[dict[str, str]]:
        return [labels_from_mentions(mentions, said_anything=bool(re.search(r"\w", text)))
                for mentions, text in zip(self.mentions_many(texts), texts)]


def labels_from_mentions(mentions: list[Mention], *, said_anything: bool) -> dict[str, str]:
    statuses: dict[str, list[str]] = {key: [] for key in FINDING_KEYS}
    for mention in mentions:
        if mention.key in statuses and not mention.historical and not mention.hypothetical:
            statuses[mention.key].append(mention.status)
    labels = {key: aggregate(statuses[key]) for key in FINDING_KEYS}
    if not said_anything:
        labels[NO_FINDING] = NOT_MENTIONED
    elif any(labels[key] in (PRESENT, UNCERTAIN) for key in PATHOLOGY_KEYS):
        labels[NO_FINDING] = ABSENT
    else:
        labels[NO_FINDING] = PRESENT
    return {key: labels[key] for key in LABEL_KEYS}


def aggregate(statuses: list[str]) -> str:
    for status in (PRESENT, UNCERTAIN, ABSENT):
        if status in statuses:
            return status
    return NOT_MENTIONED


# -- building the pipeline ---------------------------------------------------------------------------
def _label(target: Target) -> str:
    return f"{target.key}|{target.hides}".upper()


def _build_pipeline() -> Any:
    with warnings.catch_warnings():  # medspaCy warns about regex target rules and its QuickUMLS sample
        warnings.simplefilter("ignore")
        _import_spacy_without_torch()
        import spacy
        from medspacy.context import ConTextRule
        from medspacy.target_matcher import TargetRule

        _register_extensions()
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer", config={"punct_chars": [".", "!", "?", ";", "\n\n"]})
        matcher = nlp.add_pipe("medspacy_target_matcher", config={"result_type": "group", "prune": False})
        matcher.add([TargetRule(literal=target.key, category=_label(target), pattern=target.pattern,
                                attributes={"inherent": target.inherent,
                                            "inherent_hedge": target.hedge or POSSIBLE})
                     for target in TARGETS + CRITICAL_TARGETS])
        context = nlp.add_pipe("medspacy_context", config={"input_span_type": "group", "rules": None,
                                                           "span_attrs": "default"})
        defaults = ConTextRule.from_json(str(_default_context_rules()))
        context.add([rule for rule in defaults if rule.literal.lower() not in DROPPED_DEFAULT_MODIFIERS])
        context.add([ConTextRule(literal, category, direction=direction, pattern=pattern, max_scope=scope)
                     for literal, category, direction, pattern, *limit in MODIFIERS
                     for scope in [limit[0] if limit else None]])
        nlp.add_pipe("medspacy_sectionizer", config={"input_span_type": "group"})
    # A token matcher inside medspaCy with no patterns says so on every document.
    warnings.filterwarnings("ignore", message=r"\[W036\]", category=UserWarning)
    return nlp


def _import_spacy_without_torch() -> None:
    """Import spaCy and medspaCy without thinc's optional torch backend.

    thinc imports torch whenever it is installed (a developer's or a trainer's environment), which would load
    the training stack into the runtime for nothing: the labeler uses no neural component. While spaCy is
    first imported, `import torch` fails (a None entry in sys.modules); the entry is removed right after, so
    a process that needs torch later imports it as usual. Where torch is already loaded nothing is blocked.
    """
    import sys

    block = "torch" not in sys.modules
    if block:
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import medspacy  # noqa: F401 - registers the medspacy_* components
        import spacy  # noqa: F401
    finally:
        if block and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def _default_context_rules() -> Path:
    """medspaCy's own ConText rules for English (shipped beside the package, and in the installed app)."""
    import medspacy

    path = Path(medspacy.__file__).resolve().parents[1] / "resources" / "en" / "context_rules.json"
    if not path.is_file():
        raise LabelerError(f"medspaCy's ConText rules are missing ({path})")
    return path


def _normalise(text: str) -> str:
    """Blank lines and numbered items ("1. ...") end sentences; abbreviations with full stops ("E.T. tube",
    "vs.") do not. Offsets are kept: every replacement has the length of what it replaces."""
    for pattern, replacement in _ABBREVIATIONS:
        text = pattern.sub(lambda m, word=replacement: word.ljust(len(m.group())), text)
    text = _DOUBLE_STOP.sub(". ", text)
    text = _BLANK_LINE.sub(lambda m: " ." + m.group()[2:] if len(m.group()) > 2 else "\n\n", text)
    return _NUMBERED_ITEM.sub(lambda m: " . " + " " * (len(m.group()) - 3), text)


# -- reading the document -----------------------------------------------------------------------------
def _mentions_of(doc: Any) -> list[Mention]:
    spans = list(doc.spans.get("medspacy_spans", []))
    hiders = [span for span in spans if span.label_.startswith(IGNORE.upper() + "|")]
    found: list[Mention] = []
    taken: dict[str, list[tuple[int, int]]] = {}
    # longest first, so a normal statement ("heart size is normal") wins over the bare mention inside it
    for span in sorted(spans, key=lambda s: (-(s.end_char - s.start_char), s.start_char)):
        key = span.label_.split("|")[0].lower()
        if key == IGNORE:
            continue
        if any(h.label_.split("|")[1].lower() == key and _overlap(h, span) for h in hiders):
            continue
        if any(start < span.end_char and span.start_char < end for start, end in taken.get(key, [])):
            continue
        section = span._.section_category if span.has_extension("section_category") else None
        if section in NOT_FINDINGS_SECTIONS:
            continue
        taken.setdefault(key, []).append((span.start_char, span.end_char))
        status, hedge = _status(span), ""
        trailing = _hedge_after(span, spans) if status == PRESENT else None
        if trailing is not None:
            status = UNCERTAIN
            hedge = PROBABLE if PROBABLE_TRAILING.search(trailing) else POSSIBLE
        elif status == UNCERTAIN:
            hedge = _hedge_of(span)
        elif status == PRESENT and _named_as_alternative(span):
            status, hedge = UNCERTAIN, PROBABLE
        found.append(Mention(key=key, status=status, text=span.text, sentence=span.sent.text.strip(" .\n"),
                             section=section or "", start=span.start_char, end=span.end_char, side=_side(span, spans),
                             historical=bool(span._.is_historical) and not span._.is_negated,
                             hypothetical=bool(span._.is_hypothetical) and not span._.is_negated
                             and not span._.is_uncertain, hedge=hedge))
    return sorted(found, key=lambda m: (m.start, m.key))


def _overlap(a: Any, b: Any) -> bool:
    return a.start_char < b.end_char and b.start_char < a.end_char


def _hedge_after(span: Any, spans: list[Any]) -> str | None:
    """"Nodule, possibly a nipple shadow" hedges the nodule; "opacity, which may represent atelectasis" hedges
    atelectasis only: a hedge after a mention applies to it when no other finding follows the hedge. Returns
    the hedge's words, or None."""
    sentence = span.sent
    hedge = TRAILING_HEDGE.search(span.doc.text[span.end_char:sentence.end_char])
    if hedge is None:
        return None
    hedge_end = span.end_char + hedge.end()
    if any(other.start_char >= hedge_end and other.end_char <= sentence.end_char
           and not other.label_.startswith(IGNORE.upper() + "|") for other in spans):
        return None
    return hedge.group()


def _named_as_alternative(span: Any) -> bool:
    """"Atelectasis or scarring": the mention is one of two alternatives its sentence names."""
    sentence, text = span.sent, span.doc.text
    return bool(ALTERNATIVE_AFTER.match(text[span.end_char:sentence.end_char])
                or ALTERNATIVE_BEFORE.search(text[max(sentence.start_char, span.start_char - 40):span.start_char]))


def _hedge_of(span: Any) -> str:
    """An uncertain mention's strength: its inherent one (an equivocal phrase), else the weakest of the
    uncertainty modifiers on it."""
    if span._.inherent == UNCERTAIN:
        return span._.inherent_hedge
    cues = [span.doc[slice(*modifier.modifier_span)].text for modifier in _hedges_on(span)]
    return PROBABLE if cues and all(PROBABLE_HEDGE.match(cue) for cue in cues) else POSSIBLE


def _hedges_on(span: Any) -> list[Any]:
    """The uncertainty modifiers on a mention, with those whose scope ConText cut short at one of them: a hedge's
    scope ends where the next hedge begins ("may be related to rib lesions versus nodules": "may" reaches the
    nodules only through "versus")."""
    hedges = [m for m in span._.modifiers if m.category == "POSSIBLE_EXISTENCE"]
    others = [m for m in span.doc._.context_graph.modifiers if m.category == "POSSIBLE_EXISTENCE" and m not in hedges]
    grew = True
    while grew:
        starts = {h.modifier_span[0] for h in hedges}
        cut = [m for m in others if m.scope_span[1] in starts and m.direction.upper() != "BACKWARD"]
        hedges += cut
        others = [m for m in others if m not in cut]
        grew = bool(cut)
    return hedges


def _status(span: Any) -> str:
    inherent = span._.inherent
    if inherent != PRESENT:
        return inherent
    if span._.is_negated:
        return ABSENT
    if span._.is_uncertain or span._.is_hypothetical:  # hypothetical mentions are left out of the labels
        return UNCERTAIN
    return PRESENT


def _side(span: Any, spans: list[Any]) -> str:
    """The side a mention is on: named in its own words first, else the nearest side word before it in its
    sentence ("left" and "right" joined by "and" with no other finding between: both), else the first after
    it ("effusion on the left")."""
    doc, sentence = span.doc, span.sent
    own = {name for name, pattern in _SIDES if pattern.search(span.text.lower())}
    if own:
        return "bilateral" if "bilateral" in own or len(own) == 2 else own.pop()
    start = max(sentence.start_char, span.start_char - 60)
    before, after = doc.text[start:span.start_char].lower(), doc.text[span.end_char:sentence.end_char][:40].lower()
    both = _BOTH_SIDES.search(before)
    if both and not any(start + both.start() <= other.start_char < span.start_char and other.label_ != span.label_
                        and not other.label_.startswith(IGNORE.upper() + "|") for other in spans):
        return "bilateral"
    for piece, nearest in ((before, max), (after, min)):
        found = [(m.start(), name) for name, pattern in _SIDES for m in pattern.finditer(piece)]
        if found:
            return nearest(found)[1]
    return ""


@functools.cache
def shared_labeler() -> Labeler:
    """The process's labeler: its pipeline is built once and never changes afterwards."""
    return Labeler()


def label_report(text: str) -> dict[str, str]:
    """Labels for every key of `LABEL_KEYS` ("present", "absent", "uncertain", "not_mentioned")."""
    return shared_labeler().label(text)


def label_mentions(text: str) -> list[Mention]:
    """Every mention in the report with its status: the labeler's reasoning, for checks and debugging."""
    return shared_labeler().mentions(text)
