"""A rule-based findings labeler for chest radiograph reports, in the spirit of the CheXpert labeler.

`label_report(text)` returns, for every key of `training.vocabulary.LABEL_KEYS`, one of "present",
"absent", "uncertain" or "not_mentioned".

How it reads a report:

1. Sentences: the text is split at . ; ! ? and at blank lines; each sentence is split further into
   clauses at scope terminators ("but", "however", "although", ", the ...", "and there ..."), so a
   negation never crosses "No pneumothorax, but there is a small effusion".
2. Mentions: per finding, phrase patterns ("pleural effusion", "heart is mildly enlarged", "PICC line").
   Some phrases carry their own status: normal statements are absent ("heart size is normal", "lungs are
   clear", "costophrenic angles are sharp") and equivocal ones uncertain ("borderline heart size",
   "blunting of the costophrenic angle"). Phrases that belong to another meaning are masked first
   ("pericardial effusion", "nodular opacity" is not consolidation, "no change in" is not a negation).
3. Classification of a mention: a cue right after it decides if there is one ("... is not seen",
   "... has resolved" → absent; "... cannot be excluded", "... versus ..." → uncertain); otherwise the
   nearest cue before it in its clause ("no", "without", "free of", "negative for", "resolved" → absent;
   "possible", "may represent", "cannot exclude", "suspicious for", "likely" → uncertain); no cue → present.
4. Aggregation per finding across mentions: present > uncertain > absent > not mentioned (as CheXpert).
   `no_finding` is present when no pathology (support devices do not count) is present or uncertain and
   the report says anything at all; absent otherwise; not_mentioned for an empty report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from training.vocabulary import (
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


@dataclass(frozen=True)
class Mention:
    key: str
    start: int
    end: int
    inherent: str  # PRESENT (decided by cues), ABSENT or UNCERTAIN (decided by the phrase itself)


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


HEART = r"(?:heart|cardiac silhouette|cardiac shadow|cardiac size|heart size|cardiomediastinal silhouette|cardiac contour)"
CP_ANGLE = r"(?:costophrenic|cp)\s+(?:angles?|sulc(?:i|us)|recess(?:es)?)"

# (key, inherent status, pattern). Checked in this order; a matched span is masked for later patterns.
PHRASES: list[tuple[str, str, re.Pattern[str]]] = [
    # equivocal by themselves
    ("cardiomegaly", UNCERTAIN, _c(rf"{HEART}(?: \w+){{0,2}}? (?:is |are |appears |remains )?(?:at |in )?(?:the )?"
                                   r"(?:upper limits? of normal|top[- ]normal|borderline(?: \w+)?|high[- ]normal)")),
    ("cardiomegaly", UNCERTAIN, _c(rf"(?:borderline|top[- ]normal|upper normal|high[- ]normal) (?:cardiomegaly|"
                                   rf"enlargement(?: of the {HEART})?|{HEART}|heart)")),
    ("pleural_effusion", UNCERTAIN, _c(rf"blunt(?:ing|ed)(?: of)?(?: the)?(?: (?:right|left|bilateral|both))? {CP_ANGLE}"
                                       rf"|{CP_ANGLE}(?: \w+){{0,2}}? (?:is |are )?blunt(?:ed|ing)"
                                       rf"|{CP_ANGLE} blunting")),
    # normal statements
    ("cardiomegaly", ABSENT, _c(rf"{HEART}(?: \w+){{0,2}}? (?:is |are |appears? |remains? |looks )?(?:grossly |otherwise |again )?"
                                r"(?:normal|within normal limits|unremarkable|not enlarged|normal in size|stable and normal)")),
    ("cardiomegaly", ABSENT, _c(r"(?:normal|unremarkable) (?:\w+ )?(?:heart|cardiac|cardiomediastinal) "
                                r"(?:size|silhouette|contours?|shadow)")),
    ("pleural_effusion", ABSENT, _c(rf"{CP_ANGLE} (?:are |is |remain |appear )?(?:sharp|clear|preserved|normal)"
                                    rf"|(?:sharp|clear|preserved|normal) {CP_ANGLE}")),
    ("consolidation", ABSENT, _c(r"\blungs?(?: fields?| parenchyma)? (?:are|is|appear|appears|remain|remains)"
                                 r"(?: \w+){0,3}? clear\b|\bclear lungs?\b|\blungs? (?:are |is )?clear\b")),
    # mentions decided by cues
    ("cardiomegaly", PRESENT, _c(rf"cardiomegaly|cardiac enlargement|(?:enlarged|large|prominent) (?:heart|{HEART})"
                                 rf"|enlargement of the (?:heart|{HEART})"
                                 rf"|{HEART}(?: \w+){{0,2}}? (?:is|are|appears?|remains?|has become|has been|was)"
                                 r"(?: \w+){0,2}? (?:enlarged|increased|large|prominent)")),
    ("pleural_effusion", PRESENT, _c(r"effusions?\b|pleural fluid|hydrothorax|fluid (?:in|within) the (?:pleural|fissure)")),
    ("pneumothorax", PRESENT, _c(r"pneumothora(?:x|ces)|\bptx\b|pleural air\b")),
    ("consolidation", PRESENT, _c(r"consolidat\w*|air[- ]?space (?:disease|opacit\w+|process|opacification)"
                                  r"|opacit(?:y|ies)|opacification|infiltrat\w*|(?:broncho)?pneumonia|pneumonic")),
    ("nodule", PRESENT, _c(r"nodul(?:e|es|ar)\b|\bmass(?:es)?\b|(?:lung|pulmonary|lobe|spiculated|cavitary|hilar) lesions?|neoplasm|malignan\w+"
                           r"|tumou?rs?\b|\bcoin lesion")),
    ("edema", UNCERTAIN, _c(r"perihilar haz\w+|vascular indistinctness|indistinct (?:pulmonary )?vessels")),
    ("edema", PRESENT, _c(r"o?edema\b|(?:vascular|venous|pulmonary) congestion|kerley|cephali[sz]ation"
                          r"|heart failure|\bchf\b|fluid overload")),
    ("atelectasis", UNCERTAIN, _c(r"(?:linear|streaky|strand-?like)(?: \w+){0,2}? (?:opacit\w+|densit\w+)")),
    ("atelectasis", PRESENT, _c(r"atelecta\w*|\bcollapsed?\b|volume loss|(?:plate|band|disc)[- ]?like (?:opacit\w+|densit\w+)"
                                r"|(?:discoid|subsegmental)(?: \w+){0,2}? (?:opacit\w+|densit\w+)")),
    ("support_device", PRESENT, _c(
        r"(?:endotracheal|\bet|tracheostomy|\btrach|chest|nasogastric|\bng|orogastric|\bog|enteric|feeding|dobhoff"
        r"|gastric|drainage|thoracostomy) tubes?\b|\bett\b|\bpicc\b|\bcatheters?\b|swan[- ]ganz"
        r"|(?:central venous|venous|central|picc|dialysis|hemodialysis|internal jugular|\bij|subclavian|midline"
        r"|port) (?:catheter|line)s?\b|port-?a-?cath|pacemaker|\bpacer\b|defibrillator|\baicd\b|\bicd\b"
        r"|pacing (?:leads?|wires?)|sternotomy wires|support devices?|(?:lines|tubes) and (?:lines|tubes)"
        r"|monitoring leads|\bchest drain|pleural drain|\bstents?\b")),
]
HYDROPNEUMOTHORAX = _c(r"hydropneumothora(?:x|ces)")

# Masked before a finding's phrases are searched: they look like its mention but mean something else.
EXCLUSIONS: dict[str, re.Pattern[str]] = {
    "pleural_effusion": _c(r"pericardial effusions?|joint effusions?"),
    "consolidation": _c(r"(?:nodular|plate[- ]?like|band[- ]?like|reticular|reticulonodular|"
                        r"interstitial|curvilinear|calcified|round(?:ed)?|mass[- ]?like) (?:opacit(?:y|ies)|densit\w+)"
                        r"|(?:linear|streaky|strand-?like|discoid|subsegmental)(?: \w+){0,2}? (?:opacit\w+|densit\w+)"),
    "nodule": _c(r"mass effect|soft tissue mass|nodular opacit\w+ (?:at|in) the (?:lung )?bases? likely atelectasis"),
    "atelectasis": _c(r"collapsed? (?:lung|vertebra\w*|vertebral)"),
}
# Phrases that contain a cue word but are no cue.
PSEUDO_CUES = _c(r"no (?:significant |substantial |interval |appreciable |definite )?(?:change|increase|decrease|growth)"
                 r"|not (?:significantly )?changed|without (?:significant |interval )?change|no further change"
                 r"|not only|to suggest|to indicate|gram[- ]negative|no longer intubated")

NEGATION_PRE = _c(r"\bno\b|\bnot\b|\bwithout\b|\bfree of\b|\bnegative for\b|\babsence of\b|\babsent\b|\bresolved\b"
                  r"|\bresolution of\b|\bremoval of\b|\bremoved\b|\bclear of\b|\bneither\b|\bnor\b|\bruled out\b"
                  r"|\bresolving\b(?= of)|\bno longer\b|\bfailed to demonstrate\b|\bdoes not demonstrate\b")
UNCERTAIN_PRE = _c(r"\bpossibl[ey]\b|\bprobabl[ey]\b|\blikely\b|\bquestionabl[ey]\b|\bquestion of\b|\bsuspicious for\b"
                   r"|\bsuspect(?:ed)?\b|\bconcern(?:ing)? for\b|\bmay\b|\bmight\b|\bcould\b"
                   r"|\bsuggest\w*\b|\bconsider(?:ed)?\b|\bcannot (?:be )?(?:exclude|excluded|rule out)\b"
                   r"|\bcan ?not (?:be )?(?:exclude|excluded|rule out)\b|\bnot (?:be )?(?:entirely )?excluded\b"
                   r"|\bdifferential\b|\bversus\b|\bvs\b|\bequivocal\b|\bindeterminate\b|\buncertain\b"
                   r"|\brule out\b|\br/o\b|\bevaluate for\b|\bassess for\b|\bdifficult to exclude\b|\bpresumed\b"
                   r"|\bno definite\b|\bnot definitely\b|\bpotential\b|\bvague\b|\bfaint\b|\bsubtle\b(?= (?:\w+ )?opacit)")
# A cue right after the mention, before any full stop: the mention's own predicate.
_TAIL = r"^[\w\s,/-]{0,40}?"
NEGATION_POST = _c(_TAIL + r"\b(?:(?:is|are|was|were|has|have)\s+)?(?:not|no longer)\s+(?:been\s+)?"
                   r"(?:seen|identified|present|visualized|visible|demonstrated|evident|appreciated|noted|detected)\b"
                   r"|" + _TAIL + r"\b(?:has|have)\s+(?:resolved|cleared|been removed)\b"
                   r"|^\s*(?:resolved|removed)\b|" + _TAIL + r"\b(?:is|are)\s+absent\b"
                   r"|" + _TAIL + r"\b(?:was|were)\s+removed\b")
UNCERTAIN_POST = _c(_TAIL + r"\b(?:cannot|can not|could not|can't)\s+be\s+(?:entirely\s+)?(?:excluded|ruled out)\b"
                    r"|" + _TAIL + r"\bnot\s+(?:be\s+)?(?:entirely\s+)?(?:excluded|ruled out)\b"
                    r"|" + _TAIL + r"\b(?:is|are)\s+(?:possible|suspected|questioned|likely|probable|a consideration)\b"
                    r"|^\s*(?:versus|vs)\b|" + _TAIL + r"\b(?:may|might|could)\s+be\s+present\b")
# A hedge after the mention ("nodular opacity, possibly a nipple shadow") makes it uncertain unless the
# hedge is about another finding ("opacity, which may represent atelectasis").
HEDGE_POST = _c(r"^[\w\s/-]{0,40}?,?\s*\b(?:possibly|probably|likely|questionably|which may|which could|may represent"
                r"|could represent|may reflect|may be due to|favou?r(?:ing)?)\b")
# Scope terminators: a new clause starts at these.
TERMINATORS = _c(r"\bbut\b(?! (?:otherwise )?clear)|\bhowever\b|\balthough\b|\bthough\b|\bexcept\b|\baside from\b|\bapart from\b"
                 r"|\bwhereas\b|\botherwise\b|,\s*(?=(?:and\s+)?(?:the|there)\b)|\band\s+(?=(?:there|the)\b)"
                 r"|\bwhich\b(?! may| might| could| likely| probably| is likely| are likely)")
NORMAL_STUDY = _c(r"\w")

ABBREVIATIONS = [(re.compile(r"\be\.t\.(?=\s)"), "et"), (re.compile(r"\bvs\."), "vs"),
                 (re.compile(r"\bapprox\."), "approx"), (re.compile(r"\bdr\."), "dr"), (re.compile(r"\bn\.g\."), "ng")]


def split_sentences(text: str) -> list[str]:
    """Lower-cased sentences of a report (section headers stay in the first sentence of their section)."""
    text = text.lower()
    for pattern, replacement in ABBREVIATIONS:
        text = pattern.sub(replacement, text)
    pieces = re.split(r"(?<=[.;!?])\s+|\n\s*\n|\n(?=\s*[a-z ]{3,20}:)", text)
    return [re.sub(r"\s+", " ", p).strip(" .;!?") for p in pieces if p and p.strip(" .;!?\n\t")]


def split_clauses(sentence: str) -> list[str]:
    parts, start = [], 0
    for match in TERMINATORS.finditer(sentence):
        parts.append(sentence[start:match.start()])
        start = match.end()
    parts.append(sentence[start:])
    return [p.strip(" ,") for p in parts if p.strip(" ,")]


def find_mentions(clause: str) -> list[Mention]:
    """All finding mentions in one clause, most specific phrases first, without overlaps per finding."""
    mentions: list[Mention] = []
    masked: dict[str, str] = {}
    for key, inherent, pattern in PHRASES:
        text = masked.get(key)
        if text is None:
            exclusion = EXCLUSIONS.get(key)
            text = exclusion.sub(lambda m: " " * len(m.group()), clause) if exclusion else clause
        for match in pattern.finditer(text):
            mentions.append(Mention(key, match.start(), match.end(), inherent))
            text = text[:match.start()] + " " * (match.end() - match.start()) + text[match.end():]
        masked[key] = text
    for match in HYDROPNEUMOTHORAX.finditer(clause):
        mentions.append(Mention("pleural_effusion", match.start(), match.end(), PRESENT))
    # "lungs are clear" speaks for edema as well as consolidation
    mentions += [Mention("edema", m.start, m.end, ABSENT) for m in mentions
                 if m.key == "consolidation" and m.inherent == ABSENT]
    return sorted(mentions, key=lambda m: (m.start, m.key))


def classify(clause: str, mention: Mention, others: list[Mention] = ()) -> str:
    """present / absent / uncertain for one mention in its clause (`others`: the clause's mentions)."""
    if mention.inherent == ABSENT:
        return ABSENT
    after = clause[mention.end:]
    if UNCERTAIN_POST.search(after):
        return UNCERTAIN
    hedge = HEDGE_POST.search(after)
    if hedge and not any(m.start >= mention.end + hedge.end() for m in others):
        return UNCERTAIN
    if NEGATION_POST.search(after):
        return ABSENT
    before = PSEUDO_CUES.sub(lambda m: "_" * len(m.group()), clause[:mention.end])
    nearest_negation = max((m.end() for m in NEGATION_PRE.finditer(before)), default=-1)
    nearest_uncertain = max((m.end() for m in UNCERTAIN_PRE.finditer(before)), default=-1)
    if nearest_negation < 0 and nearest_uncertain < 0:
        return mention.inherent
    # "cannot exclude" and "not excluded" contain a negation word: an uncertainty cue ending at or after
    # the negation wins
    if nearest_uncertain >= nearest_negation:
        return UNCERTAIN
    return ABSENT


def aggregate(statuses: list[str]) -> str:
    for status in (PRESENT, UNCERTAIN, ABSENT):
        if status in statuses:
            return status
    return NOT_MENTIONED


def label_mentions(text: str) -> list[tuple[str, str, str]]:
    """(key, status, clause) for every mention in the report: the labeler's reasoning, for debugging."""
    if not isinstance(text, str):
        raise LabelerError(f"report text must be a string, got {type(text).__name__}")
    found = []
    for sentence in split_sentences(text):
        for clause in split_clauses(sentence):
            mentions = find_mentions(clause)
            for mention in mentions:
                found.append((mention.key, classify(clause, mention, mentions), clause))
    return found


def label_report(text: str) -> dict[str, str]:
    """Labels for every key of `LABEL_KEYS`: "present", "absent", "uncertain" or "not_mentioned"."""
    statuses: dict[str, list[str]] = {key: [] for key in FINDING_KEYS}
    for key, status, _clause in label_mentions(text):
        statuses[key].append(status)
    labels = {key: aggregate(statuses[key]) for key in FINDING_KEYS}
    if not NORMAL_STUDY.search(text):
        labels[NO_FINDING] = NOT_MENTIONED
    elif any(labels[key] in (PRESENT, UNCERTAIN) for key in PATHOLOGY_KEYS):
        labels[NO_FINDING] = ABSENT
    else:
        labels[NO_FINDING] = PRESENT
    return {key: labels[key] for key in LABEL_KEYS}
