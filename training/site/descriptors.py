"""Clean Descriptors and Clean Structured Content (DICOM PS3.15 E.3.5, E.3.3): what free text, coded
strings and codes may keep.

- Free text (LO, SH, ST, LT, UT, UC) that the profile table does not name keeps only the words of the
  allow-list (`vocabulary.py`); an attribute left with no word goes. A UID, a URL, a date or a digit run
  is never a word of the list.
- Coded strings keep the values whose every token is a listed word (or patient-orientation letters, or a
  number of at most three digits); Specific Character Set keeps what pydicom can decode.
- Codes (items with Code Value / Coding Scheme Designator / Code Meaning): a code of a known coding scheme
  that pydicom's code dictionary holds keeps its value and takes the dictionary's meaning (never the
  stored text); any other code keeps only a keyed stand-in value and the listed words of its meaning, and
  is removed when no word is left.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr._concepts_dict import concepts
from pydicom.sr._snomed_dict import mapping as snomed_mapping

from training.site.vocabulary import CODED_LETTERS, DESCRIPTOR_WORDS, ORIENTATION_LETTERS

FREE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
CODE_KEYWORDS = frozenset({"CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
                           "LongCodeValue", "URNCodeValue", "ContextIdentifier", "ContextUID", "MappingResource",
                           "MappingResourceUID", "MappingResourceName", "ContextGroupVersion",
                           "ContextGroupLocalVersion", "ContextGroupExtensionFlag", "ContextGroupExtensionCreatorUID",
                           "EquivalentCodeSequence"})
LOCAL_SCHEME = "99RADDRAFT"
_SCHEME_ALIASES = {"SNM3": "SCT", "SRT": "SCT", "99SDM": "SCT", "LOINC": "LN", "RADLEX": "RADLEX", "RID": "RADLEX"}
_WORD_SPLIT = re.compile(r"[\W_]+")
_CS_TOKEN_SPLIT = re.compile(r"[ _]+")


def values_of(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    return [str(value)]


def descriptor_words(value: object) -> str:
    """The listed words of a free-text value, upper case, in their order."""
    text = " ".join(values_of(value)).upper()
    return " ".join(word for word in _WORD_SPLIT.split(text) if len(word) >= 2 and word in DESCRIPTOR_WORDS)


def clean_coded_string(keyword: str, value: object) -> list[str]:
    """The values of a coded string that may stay (see the module docstring)."""
    values = values_of(value)
    if keyword == "SpecificCharacterSet":
        return [v for v in values if v.strip() in python_encoding or not v.strip()]
    return [v for v in values if _coded_value_is_listed(v.strip().upper())]


def _coded_value_is_listed(value: str) -> bool:
    if not value:
        return True
    if value in DESCRIPTOR_WORDS or value in CODED_LETTERS:
        return True
    tokens = [t for t in _CS_TOKEN_SPLIT.split(value) if t]
    return all(t in DESCRIPTOR_WORDS or (t.isdigit() and len(t) <= 3)
               or (len(t) <= 3 and set(t) <= ORIENTATION_LETTERS) for t in tokens)


# -- codes -----------------------------------------------------------------------------------------------
def is_code_item(item: Dataset) -> bool:
    return any(keyword in item for keyword in ("CodeValue", "LongCodeValue", "URNCodeValue", "CodeMeaning"))


@lru_cache(maxsize=1)
def _known_codes() -> dict[str, dict[str, str]]:
    """Coding scheme -> code value -> meaning, from pydicom's code dictionary."""
    known: dict[str, dict[str, str]] = {}
    for scheme, names in concepts.items():
        table = known.setdefault(scheme, {})
        for codes in names.values():
            for value, (meaning, _) in codes.items():
                table.setdefault(value, meaning)
    return known


def known_meaning(scheme: str, value: str) -> str | None:
    """The dictionary meaning of a code, or None when pydicom's dictionary does not hold it."""
    scheme = scheme.strip().upper()
    value = value.strip()
    canonical = _SCHEME_ALIASES.get(scheme, scheme)
    if scheme == "SRT":
        value = snomed_mapping["SRT"].get(value, value)
    table = _known_codes().get(canonical) or _known_codes().get(scheme.upper())
    if table is None:
        for name, codes in _known_codes().items():
            if name.upper() == canonical:
                table = codes
                break
    return table.get(value) if table else None


def clean_code_item(item: Dataset, stand_in: Callable[[str], str]) -> bool:
    """Clean one code item in place; False when nothing may stay (the caller removes the item).

    `stand_in` turns a code value that cannot be vouched for into a keyed, non-identifying one."""
    value = str(item.get("CodeValue", "") or item.get("LongCodeValue", "") or "")
    scheme = str(item.get("CodingSchemeDesignator", "") or "")
    meaning = known_meaning(scheme, value) if value and scheme else None
    for keyword in ("LongCodeValue", "URNCodeValue", "CodingSchemeVersion", "ContextGroupLocalVersion",
                    "ContextGroupExtensionCreatorUID", "MappingResourceName"):
        if keyword in item:
            del item[keyword]
    if meaning is not None:
        canonical = "SCT" if scheme.strip().upper() in ("SRT", "SNM3", "99SDM") else scheme.strip().upper()
        item.CodeValue = snomed_mapping["SRT"].get(value.strip(), value.strip()) if canonical == "SCT" else value.strip()
        item.CodingSchemeDesignator = canonical
        item.CodeMeaning = meaning
        return True
    words = descriptor_words(item.get("CodeMeaning", ""))
    if not words:
        return False
    item.CodeValue = stand_in(f"{scheme}\0{value}")
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodeMeaning = words
    return True
