"""The labeler's rules: target phrases per finding (the synonyms real chest reports use) and the ConText
modifiers that radiology adds to medspaCy's default ones.

Targets are regular expressions matched case-insensitively on the report text by medspaCy's TargetMatcher.
Each carries an inherent status:
- PRESENT: a mention whose status the ConText modifiers decide ("pleural effusion", "no pleural effusion");
- ABSENT: a normal statement ("heart size is normal", "lungs are clear", "costophrenic angles are sharp");
- UNCERTAIN: an equivocal phrase ("borderline heart size", "blunting of the costophrenic angle").
Targets labelled IGNORE look like a finding but mean something else ("pericardial effusion", "nodular
opacity"); they hide the finding's mention they overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.findings.vocabulary import ABSENT, PRESENT, UNCERTAIN

IGNORE = "ignore"
# How sure an uncertain mention is, on the scale radiologists read hedges by (Panicek & Hricak, "How sure are
# you, doctor?", AJR 2016): "probable" (likely, probably, suggestive of, concerning for, versus: the reader
# commits to it or to one named alternative) and "possible" (may, could, possible, question, cannot exclude,
# differential: the reader raises it). Both are "uncertain" labels; MeSH indexers code the first and not the
# second, which `training.evaluation.real_reports` scores as a convention of its own.
PROBABLE, POSSIBLE = "probable", "possible"


@dataclass(frozen=True)
class Target:
    key: str  # a finding key, a critical-finding key, or IGNORE (then `hides` names the key it hides)
    inherent: str
    pattern: str
    hides: str = ""
    hedge: str = ""  # for an UNCERTAIN target: how sure the phrase is: PROBABLE, else POSSIBLE


HEART = (r"(?:heart|cardiac silhouette|cardiac shadow|cardiac size|heart size|cardiomediastinal silhouette"
         r"|cardiac contours?|cardiomediastinal contours?|cardiac and mediastinal (?:contours?|silhouettes?)"
         r"|cardiomediastinal (?:structures|size))")
HEART_ONLY = r"(?:heart|cardiac silhouette|cardiac shadow|cardiac size|heart size|cardiac contours?)"
NORMAL_WORD = r"(?:normal|within|limits|with|without)\b"  # words an enlargement phrase never spans
CP_ANGLE = r"(?:costophrenic|cp)\s+(?:angles?|sulc(?:i|us)|recess(?:es)?)"
# "The lungs are clear" speaks for consolidation and edema; "clear of ..." is a negation, not this statement.
LUNGS_CLEAR = (r"\blungs?(?:\s+fields?|\s+parenchyma)?\s+(?:are|is|appear|appears|remain|remains)(?:\s+[\w,]+){0,3}?"
               r"\s+clear\b(?!\s+of)|\bclear\s+lungs?\b|\blungs?\s+(?:are\s+|is\s+)?clear\b(?!\s+of)")

TARGETS: tuple[Target, ...] = (
    # -- cardiomegaly
    # "upper limits of normal" is a normal size; "borderline" is equivocal
    Target("cardiomegaly", ABSENT,
           rf"\b{HEART}(?:\s+[\w,]+){{0,3}}?\s+(?:is\s+|are\s+|appears?\s+|remains?\s+)?(?:at\s+|in\s+|on\s+|near\s+)?"
           r"(?:the\s+)?(?:upper\s+limits?\s+(?:of\s+)?(?:\s*normal)|top[- ]normal|high[- ]normal|upper[- ]normal)"),
    Target("cardiomegaly", ABSENT,
           rf"\b(?:top[- ]normal|upper[- ]normal|high[- ]normal)\s+(?:\w+\s+)?(?:{HEART}|heart)"),
    Target("cardiomegaly", UNCERTAIN,
           rf"\b{HEART}(?:\s+[\w,]+){{0,3}}?\s+(?:is\s+|are\s+|appears?\s+|remains?\s+)?(?:at\s+|in\s+)?(?:the\s+)?"
           r"(?:borderline|mildly\s+prominent)", hedge=PROBABLE),
    Target("cardiomegaly", UNCERTAIN,
           rf"\bborderline\s+(?:\w+\s+)?(?:cardiomegaly|enlargement(?:\s+of\s+the\s+{HEART})?|{HEART}|heart)",
           hedge=PROBABLE),
    Target("cardiomegaly", ABSENT,
           rf"\b{HEART}(?:\s+(?:and|&)\s+(?:the\s+)?(?:mediastinal|mediastinum|hilar|pulmonary\s+vascular\w*|vascular\w*)"
           r"(?:\s+(?:contours?|silhouettes?|size|structures|vasculature))?)?"
           r"(?:\s+[\w,]+){0,2}?\s+(?:is\s+|are\s+|appears?\s+|remains?\s+|looks\s+|within\s+)?"
           r"(?:grossly\s+|otherwise\s+|again\s+|stable\s+and\s+)?"
           r"(?:normal|within\s+normal\s+limits|unremarkable|not\s+enlarged|normal\s+in\s+size|stable\s+and\s+normal"
           r"|normal\s+limits|negative|nonenlarged|non-enlarged)"),
    Target("cardiomegaly", ABSENT,
           r"\b(?:normal|unremarkable|stable\s+normal)\s+(?:\w+\s+)?(?:heart|cardiac|cardiomediastinal)"
           r"(?:\s+and\s+mediastinal)?\s+(?:size|silhouettes?|contours?|shadow)"),
    Target("cardiomegaly", ABSENT, r"\b(?:heart|cardiac)\s+size\s+(?:is\s+)?(?:normal|unremarkable)"),
    # An enlarged cardiomediastinal silhouette is CheXpert's "Enlarged Cardiomediastinum", not cardiomegaly.
    Target("cardiomegaly", PRESENT,
           rf"\bcardiomegaly|\bcardiac\s+enlargement|\b(?:enlarged|large|prominent)\s+(?:heart|{HEART_ONLY})"
           rf"|\benlargement\s+of\s+the\s+(?:heart|{HEART_ONLY})"
           rf"|\b{HEART_ONLY}(?:\s+(?!{NORMAL_WORD})[\w,]+){{0,2}}?\s+"
           r"(?:(?:is|are|appears?|remains?|has\s+become|has\s+been|was)\s+)?"
           rf"(?:(?!{NORMAL_WORD})\w+\s+){{0,2}}?(?:enlarged|increased|large|prominent)\b"
           rf"|\b(?:increase|increased|enlargement)\s+(?:\w+\s+)?(?:in|of)\s+(?:the\s+)?{HEART_ONLY}"),
    # -- pleural effusion
    Target("pleural_effusion", UNCERTAIN,
           rf"\bblunt(?:ing|ed)(?:\s+of)?(?:\s+the)?(?:\s+(?:right|left|bilateral|both|posterior|lateral))*\s+{CP_ANGLE}"
           rf"|\b{CP_ANGLE}(?:\s+\w+){{0,2}}?\s+(?:is\s+|are\s+)?blunt(?:ed|ing)|\b{CP_ANGLE}\s+blunting"),
    Target("pleural_effusion", ABSENT,
           rf"\b{CP_ANGLE}\s+(?:are\s+|is\s+|remain\s+|appear\s+)?(?:sharp|clear|preserved|normal)"
           rf"|\b(?:sharp|clear|preserved|normal)\s+{CP_ANGLE}"),
    Target(IGNORE, PRESENT, r"\b(?:pericardial|joint)\s+effusions?", hides="pleural_effusion"),
    Target("pleural_effusion", PRESENT,
           r"\beffusions?\b|\bpleural\s+fluid|\bhydrothorax|\bfluid\s+(?:in|within)\s+the\s+(?:pleural|fissure)"
           r"|\bhydropneumothora(?:x|ces)"),
    # -- pneumothorax
    Target("pneumothorax", PRESENT, r"\b(?:hydro)?pneumothora(?:x|ces)|\bptx\b|\bpleural\s+air\b"),
    # -- consolidation
    Target("consolidation", ABSENT, LUNGS_CLEAR),
    Target("edema", ABSENT, LUNGS_CLEAR),
    Target(IGNORE, PRESENT,
           r"\b(?:nodular|plate[- ]?like|band[- ]?like|reticular|reticulonodular|interstitial|curvilinear|calcified"
           r"|round(?:ed)?|mass[- ]?like|linear|streaky|strand-?like|discoid|subsegmental|scar(?:ring)?-?like)"
           r"(?:\s+\w+){0,2}?\s+(?:opacit(?:y|ies)|densit\w+)",
           hides="consolidation"),
    Target("consolidation", PRESENT,
           r"\bconsolidat\w*|\bair[- ]?space\s+(?:disease|process|consolidation)"
           r"|\b(?:broncho)?pneumonias?\b|\bpneumonic"),
    # -- nodule / mass
    Target(IGNORE, PRESENT,
           r"\bmass\s+effect|\bsoft\s+tissue\s+mass|\bcalcified\s+(?:\w+\s+)?granulomas?"
           r"|\bgranulomas?\b|\bnodular\s+(?:[\w-]+\s+)?(?:opacit\w+|densit\w+)|\bcalcific\s+(?:\w+\s+)?(?:nodul\w+|densit\w+)"
           r"|\bnodular\s+(?:soft\s+tissue|contour)|\bnodular\s+(?:opacit\w+|densit\w+)\s+(?:at|in)\s+the\s+(?:lung\s+)?bases?\s+likely",
           hides="nodule"),
    Target("nodule", PRESENT,
           r"\b(?:fibro|reticulo-?|reticular-)?nodul(?:e|es|ar|arity)\b|\bmass(?:es)?\b|\bmass-?like\b"
           r"|\b(?:lung|pulmonary|bronchogenic)\s+(?:cancer|carcinoma)|\bcarcinoma\b|\b(?:lung|pulmonary|lobe|spiculated|cavitary|hilar)\s+lesions?"
           r"|\bneoplasm|\bmalignan\w+|\btumou?rs?\b|\bcoin\s+lesion|\bmetasta\w+"),
    # -- edema
    Target("edema", UNCERTAIN, r"\bperihilar\s+haz\w+|\bvascular\s+indistinctness|\bindistinct\s+(?:pulmonary\s+)?vessels"),
    # Vascular congestion, cephalization and heart failure are observations of their own (MeSH indexes them
    # apart from edema): they are not edema.
    Target("edema", PRESENT, r"\bo?edema\b|\bkerley|\bfluid\s+overload"),
    # -- atelectasis
    # A linear or streaky opacity is an observation of shape (MeSH: Opacity/streaky), not atelectasis until the
    # report names it ("streaky opacity, likely atelectasis"); plate-like and discoid opacities are atelectasis.
    Target(IGNORE, PRESENT, r"\bcollapsed?\s+(?:lung\s+)?(?:vertebra\w*|vertebral)|\bcompression\s+deformit\w+",
           hides="atelectasis"),
    Target("atelectasis", PRESENT,
           r"\batelecta\w*|\bcollapsed?\b|\b(?:plate|band|disc)[- ]?like\s+(?:opacit\w+|densit\w+)"
           r"|\b(?:discoid|subsegmental)(?:\s+\w+){0,2}?\s+(?:opacit\w+|densit\w+)"),
    # -- support devices
    Target("support_device", PRESENT,
           r"\b(?:endotracheal|et|tracheostomy|trach|chest|nasogastric|ng|orogastric|og|enteric|feeding|dobhoff"
           r"|gastric|drainage|thoracostomy)\s+tubes?\b|\bett\b|\bpicc\b|\bcatheters?\b|\bswan[- ]ganz"
           r"|\b(?:central\s+venous|venous|central|picc|dialysis|hemodialysis|internal\s+jugular|ij|subclavian|midline"
           r"|port)\s+(?:catheter|line)s?\b|\bport-?a-?cath|\bpacemaker|\bpacer\b|\bdefibrillator|\baicd\b|\bicd\b"
           r"|\bpacing\s+(?:leads?|wires?)|\bsupport\s+devices?|\b(?:lines|tubes)\s+and\s+(?:lines|tubes)"
           r"|\bmonitoring\s+leads|\bchest\s+drain|\bpleural\s+drain|\bstents?\b"),
)

# Critical findings that are not one of the label keys (pneumothorax is both).
CRITICAL_TARGETS: tuple[Target, ...] = (
    Target("free_air", PRESENT,
           r"\bpneumoperitoneum|\bfree\s+(?:intraperitoneal\s+|intra-abdominal\s+|abdominal\s+|subdiaphragmatic\s+)?air"
           r"|\b(?:air|lucency)\s+(?:under|beneath|below)\s+the\s+(?:\w+\s+)?(?:hemi)?diaphragms?"
           r"|\bsubdiaphragmatic\s+(?:free\s+)?(?:air|gas|lucency)"),
    Target("malpositioned_tube", PRESENT,
           r"\b(?:endotracheal|et|nasogastric|ng|enteric|feeding|orogastric|og)\s+tube(?:\s+[\w,-]+){0,8}?\s+"
           r"(?:in|into|within|enters?|entering|terminat\w+\s+in|extends?\s+into|tip\s+in)\s+the\s+"
           r"(?:right|left)?\s*(?:mainstem|main\s+stem|main)\s+bronchus"
           r"|\b(?:endotracheal|et|nasogastric|ng|enteric|feeding|orogastric|og)\s+tube(?:\s+[\w,-]+){0,8}?\s+"
           r"(?:in|into|within)\s+the\s+(?:\w+\s+){0,3}?(?:bronch\w+|airway|trachea|lung)(?!\s+is\s+(?:clear|normal))"
           r"|\bett?\s+(?:tube\s+)?(?:is\s+)?(?:too\s+(?:low|deep|high)|malpositioned|in\s+the\s+(?:right|left)\s+mainstem)"
           r"|\b(?:endotracheal|nasogastric|enteric|feeding|orogastric|ng|og|et)\s+tube\s+(?:is\s+)?"
           r"(?:malpositioned|misplaced|coiled\s+in\s+the\s+(?:esophagus|pharynx|hypopharynx))"
           r"|\b(?:malpositioned|misplaced)\s+(?:endotracheal|nasogastric|enteric|feeding|orogastric|ng|og|et)\s+tube"
           r"|\b(?:right|left)\s+mainstem\s+intubation|\besophageal\s+intubation"),
)

# Words that upgrade a critical pneumothorax.
PNEUMOTHORAX_UPGRADE = r"\btension\b|\blarge\b|\bmediastinal\s+shift|\bshift\s+of\s+the\s+mediastinum"

# medspaCy's default modifiers that were written for clinical notes and misread radiology reports: "free"
# negates backward ("free air"), "secondary" ends a scope ("may be secondary to edema"), "evaluate for" and
# "to exclude" negate (in a report they hedge), the others speak of patients and visits.
DROPPED_DEFAULT_MODIFIERS = frozenset({
    "free", "secondary", "evaluate for", "to exclude", "decline", "deny", "family", "return", "as needed",
    "cause for", "source for", "origin for", "checked for", "test for", "prophylaxis", "presentation",
    "comes in with", "because", "risks of", "come back for", "trigger event for", "as a cause for",
    "other possibilities of", "doubt", "any other", "as well as any", "rather than", "history", "past history"})

# ConText modifiers radiology reports need beyond medspaCy's defaults: (literal, category, direction, pattern).
# Categories: NEGATED_EXISTENCE, POSSIBLE_EXISTENCE, HISTORICAL, HYPOTHETICAL, TERMINATE, PSEUDO.
_NEG, _POSS, _HIST, _HYPO, _TERM, _PSEUDO = ("NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HISTORICAL",
                                            "HYPOTHETICAL", "TERMINATE", "PSEUDO")
# An optional fifth value limits the modifier's scope to that many tokens.
MODIFIERS: tuple[tuple, ...] = (
    # negation, forward
    ("no definite", _NEG, "FORWARD", None),
    ("no convincing", _NEG, "FORWARD", None),
    ("no radiographic evidence of", _NEG, "FORWARD", None),
    ("no evidence of", _NEG, "FORWARD", None),
    ("negative for", _NEG, "FORWARD", None),
    ("free of", _NEG, "FORWARD", None),
    ("clear of", _NEG, "FORWARD", None),
    ("resolution of", _NEG, "FORWARD", None),
    ("resolving", _NEG, "FORWARD", None),
    ("removal of", _NEG, "FORWARD", None),
    ("removed", _NEG, "FORWARD", None),
    ("no longer", _NEG, "FORWARD", None),
    ("neither", _NEG, "FORWARD", None),
    ("nor", _NEG, "FORWARD", None),
    ("absent", _NEG, "FORWARD", None),
    ("failed to demonstrate", _NEG, "FORWARD", None),
    ("does not demonstrate", _NEG, "FORWARD", None),
    ("no residual", _NEG, "FORWARD", None),
    ("no new", _NEG, "FORWARD", None),
    ("no acute", _NEG, "FORWARD", None),
    # negation, backward (the mention's own predicate)
    # "not definitely seen"; "XXXX" is a word the IU de-identification removed ("not XXXX seen")
    ("not seen", _NEG, "BACKWARD",
     [{"LOWER": {"IN": ["is", "are", "was", "were"]}, "OP": "?"}, {"LOWER": "not"}, {"LOWER": "been", "OP": "?"},
      {"LOWER": {"IN": ["definitely", "convincingly", "clearly", "xxxx"]}, "OP": "?"},
      {"LOWER": {"IN": ["seen", "identified", "present", "visualized", "visible", "demonstrated", "evident",
                        "appreciated", "noted", "detected", "apparent", "definitely", "clearly"]}}]),
    ("no longer seen", _NEG, "BACKWARD",
     [{"LOWER": {"IN": ["is", "are", "was", "were"]}, "OP": "?"}, {"LOWER": "no"}, {"LOWER": "longer"},
      {"LOWER": {"IN": ["seen", "identified", "present", "visualized", "visible", "demonstrated", "evident",
                        "appreciated", "noted", "detected", "apparent", "definitely", "clearly"]}}]),
    ("has resolved", _NEG, "BACKWARD",
     [{"LOWER": {"IN": ["has", "have", "is", "are", "now"]}}, {"LOWER": "since", "OP": "?"}, {"LOWER": "been", "OP": "?"},
      {"LOWER": {"IN": ["resolved", "cleared", "removed", "withdrawn"]}}]),
    ("is absent", _NEG, "BACKWARD", [{"LOWER": {"IN": ["is", "are"]}}, {"LOWER": "absent"}]),
    ("not present", _NEG, "BACKWARD", None),
    # uncertainty
    ("possibly", _POSS, "FORWARD", None),
    ("borderline", _POSS, "FORWARD", None),
    ("possible", _POSS, "FORWARD", None),
    ("probable", _POSS, "FORWARD", None),
    ("probably", _POSS, "FORWARD", None),
    ("likely", _POSS, "FORWARD", None),
    ("questionable", _POSS, "FORWARD", None),
    ("questionably", _POSS, "FORWARD", None),
    ("question of", _POSS, "FORWARD", [{"LOWER": {"IN": ["question", "questioned"]}}, {"LOWER": "of", "OP": "?"}]),
    # a reason for more imaging states no finding: "CT to exclude a nodule", "overlap could obscure a nodule"
    ("to exclude", _HYPO, "FORWARD", [{"LOWER": "to"}, {"LOWER": {"IN": ["identify", "exclude", "evaluate",
                                                                         "assess", "rule", "rule-out", "ensure"]}}]),
    ("could obscure", _HYPO, "FORWARD", [{"LOWER": {"IN": ["could", "may", "might", "can", "would"]}, "OP": "?"},
                                         {"LOWER": {"IN": ["obscure", "obscures", "obscuring", "mask", "masks"]}}]),
    ("is a possibility", _POSS, "BACKWARD", [{"LOWER": {"IN": ["is", "are", "be"]}}, {"LOWER": "a"},
                                             {"LOWER": {"IN": ["possibility", "consideration", "concern"]}}]),
    ("than", _NEG, "FORWARD", [{"LOWER": {"IN": ["rather", "more", "other"]}, "OP": "?"}, {"LOWER": "than"}]),
    ("suspected", _POSS, "BIDIRECTIONAL", [{"LOWER": {"IN": ["suspected", "questioned"]}}]),  # before or after
    ("suspect", _POSS, "FORWARD", None),
    ("concern for", _POSS, "FORWARD", None),
    ("suspicion for", _POSS, "FORWARD", [{"LOWER": "suspicion"}, {"LOWER": {"IN": ["for", "of"]}}]),
    # "lungs are clear airspace disease": the "of" is often lost; "clear" still negates what follows closely
    ("clear", _NEG, "FORWARD", [{"LOWER": "clear"}], 3),
    ("concerning for", _POSS, "FORWARD", None),
    ("may", _POSS, "FORWARD", None),
    ("might", _POSS, "FORWARD", None),
    ("could", _POSS, "FORWARD", None),
    ("suggest", _POSS, "FORWARD", [{"LOWER": {"REGEX": "^suggest(s|ed|ing|ive)?$"}}]),
    ("consider", _POSS, "FORWARD", [{"LOWER": {"IN": ["consider", "considered", "consideration"]}}]),
    ("cannot exclude", _POSS, "FORWARD",
     [{"LOWER": {"IN": ["can", "could", "can't"]}}, {"LOWER": "not", "OP": "?"}, {"LOWER": "be", "OP": "?"},
      {"LOWER": "entirely", "OP": "?"}, {"LOWER": {"IN": ["exclude", "excluded", "rule", "ruled"]}},
      {"LOWER": "out", "OP": "?"}]),
    ("cannot be excluded", _POSS, "BACKWARD",
     [{"LOWER": {"IN": ["can", "could"]}}, {"LOWER": "not"}, {"LOWER": "be"}, {"LOWER": {"IN": ["entirely", "completely", "definitely"]}, "OP": "?"},
      {"LOWER": {"IN": ["excluded", "ruled"]}}, {"LOWER": "out", "OP": "?"}]),
    # longer than the default "is not" negation it overlaps, so it wins
    ("not excluded", _POSS, "BACKWARD",
     [{"LOWER": {"IN": ["is", "are", "was", "were", "be"]}, "OP": "?"}, {"LOWER": "not"}, {"LOWER": "be", "OP": "?"},
      {"LOWER": {"IN": ["entirely", "completely", "definitely"]}, "OP": "?"},
      {"LOWER": {"IN": ["excluded", "ruled"]}}, {"LOWER": "out", "OP": "?"}]),
    ("difficult to exclude", _POSS, "FORWARD", None),
    ("differential", _POSS, "FORWARD", None),
    ("versus", _POSS, "BIDIRECTIONAL", [{"LOWER": {"IN": ["versus", "vs", "vs."]}}]),
    ("or", _PSEUDO, "PSEUDO", None),
    ("equivocal", _POSS, "BIDIRECTIONAL", None),
    ("indeterminate", _POSS, "FORWARD", None),
    ("uncertain", _POSS, "FORWARD", None),
    ("presumed", _POSS, "FORWARD", None),
    ("potential", _POSS, "FORWARD", None),
    ("vague", _POSS, "FORWARD", None),
    ("faint", _POSS, "FORWARD", None),
    ("may represent", _POSS, "FORWARD", None),
    ("is possible", _POSS, "BACKWARD",
     [{"LOWER": {"IN": ["is", "are"]}}, {"LOWER": {"IN": ["possible", "suspected", "questioned", "likely",
                                                           "probable", "questionable"]}}]),
    ("may be present", _POSS, "BACKWARD", [{"LOWER": {"IN": ["may", "might", "could"]}}, {"LOWER": "be"},
                                           {"LOWER": "present"}]),
    ("evaluate for", _HYPO, "FORWARD", [{"LOWER": {"IN": ["evaluate", "evaluation", "assess", "assessment"]}},
                                        {"LOWER": {"IN": ["for", "of"]}}]),
    # history
    ("history of", _HIST, "FORWARD", [{"LOWER": {"IN": ["history", "hx", "h/o"]}}, {"LOWER": "of", "OP": "?"}]),
    # things that contain a cue word but are none
    ("no change", _PSEUDO, "PSEUDO",
     [{"LOWER": {"IN": ["no", "without"]}},
      {"LOWER": {"IN": ["significant", "substantial", "interval", "appreciable", "definite"]}, "OP": "?"},
      {"LOWER": {"IN": ["change", "changes", "increase", "decrease", "growth", "enlargement"]}}]),
    ("not changed", _PSEUDO, "PSEUDO", [{"LOWER": "not"}, {"LOWER": "significantly", "OP": "?"},
                                        {"LOWER": "changed"}]),
    ("no further change", _PSEUDO, "PSEUDO", None),
    ("not only", _PSEUDO, "PSEUDO", None),
    ("gram negative", _PSEUDO, "PSEUDO", None),
    ("no longer intubated", _PSEUDO, "PSEUDO", None),
    # scope terminators
    ("however", _TERM, "TERMINATE", None),
    ("although", _TERM, "TERMINATE", None),
    ("though", _TERM, "TERMINATE", None),
    ("except", _TERM, "TERMINATE", None),
    ("whereas", _TERM, "TERMINATE", None),
    ("otherwise", _TERM, "TERMINATE", None),
    ("which", _TERM, "TERMINATE", [{"LOWER": "which"}, {"LOWER": {"NOT_IN": ["may", "might", "could", "likely",
                                                                            "probably", "is", "are"]}}]),
    (", the", _TERM, "TERMINATE", [{"TEXT": ","}, {"LOWER": "and", "OP": "?"}, {"LOWER": {"IN": ["the", "there"]}}]),
    ("and the", _TERM, "TERMINATE", [{"LOWER": "and"}, {"LOWER": {"IN": ["the", "there"]}}]),
    ("with", _TERM, "TERMINATE", [{"LOWER": {"IN": ["with", "and"]}},
                                  {"LOWER": {"IN": ["adjacent", "associated", "new", "mild", "moderate", "small",
                                                    "large", "trace", "a"]}}]),
)

# The uncertainty modifiers' words (as matched: medspaCy's default "possible" rule also matches "likely") that
# say "probable"; every other uncertainty modifier says "possible". A mention under several hedges takes the
# weakest ("may represent atelectasis versus pneumonia" is possible).
PROBABLE_HEDGE = re.compile(r"^(?:(?:is|are|be)\s+)?(?:most\s+)?(?:probable|probably|likely|borderline|versus|vs\.?|suspected|suspect"
                            r"|suggest(?:s|ed|ing|ive)?(?:\s+of)?|concern(?:ing|ed)?\s+(?:for|about)"
                            r"|suspicio(?:n|us)\s+(?:for|of)|worrisome\s+for|vague|faint)$", re.IGNORECASE)
# A finding named as one of two alternatives ("atelectasis or scarring", "scarring or atelectasis") is
# uncertain: the reader commits to one of them (probable), as with "versus". Negated lists ("no effusion or
# pneumothorax") are absent before this applies.
ALTERNATIVE_AFTER = re.compile(r"^\s*(?:or|and/or)\s+\w", re.IGNORECASE)
ALTERNATIVE_BEFORE = re.compile(r"\w\s+(?:or|and/or)\s+(?:[\w-]+\s+){0,2}$", re.IGNORECASE)
# A trailing hedge's words that say "probable" (the rest say "possible").
PROBABLE_TRAILING = re.compile(r"\b(?:probably|likely|favou?r(?:ing|ed)?)\b", re.IGNORECASE)

# A hedge after a mention ("nodule, possibly a nipple shadow"), before the end of its sentence; it applies
# backward only when no finding follows it (the labeler checks that).
TRAILING_HEDGE = re.compile(r"^[\w\s/-]{0,40}?,\s*(?:possibly|probably|likely|questionably|perhaps|which\s+may"
                            r"|which\s+could|may\s+represent|could\s+represent|may\s+reflect|favou?r(?:ing|ed)?)\b",
                            re.IGNORECASE)
