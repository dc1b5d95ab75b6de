"""Folding text for matching identity: case, diacritics and the usual transliterations, with a map back
to the original text so that a match in the folded text replaces the right characters.

"Müller", "MULLER", "Mueller" and "muller" fold to forms that meet: every name gets its plain fold
("muller") and its transliterated fold ("mueller", ü→ue, ß→ss, ø→oe/o, å→aa), and ASCII names written
with ae/oe/ue also get the form without the e. CJK, kana and Hangul pass through unchanged (only the
full-width Latin forms are narrowed), so names in those scripts are matched as written.
"""

from __future__ import annotations

import unicodedata

# Letters NFKD does not take apart.
_SPECIAL = {"ß": "ss", "ẞ": "ss", "ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th",
            "ı": "i", "ħ": "h", "ŋ": "ng", "ŧ": "t"}
# Transliterations of German and the Nordic languages (before folding).
_TRANSLITERATED = {"ä": "ae", "ö": "oe", "ü": "ue", "ø": "oe", "å": "aa", "æ": "ae", "ß": "ss"}
_ASCII_DIGRAPHS = (("ae", "a"), ("oe", "o"), ("ue", "u"), ("aa", "a"))


def fold_char(char: str) -> str:
    lower = char.lower()
    if lower in _SPECIAL:
        return _SPECIAL[lower]
    code = ord(char)
    if 0x2E80 <= code < 0xFF00 or code >= 0x10000:  # CJK, kana, Hangul: as written
        return lower
    decomposed = unicodedata.normalize("NFKD", lower)
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(_SPECIAL.get(c, c) for c in folded.casefold())


def fold(text: str) -> str:
    return "".join(fold_char(c) for c in text)


def fold_with_map(text: str) -> tuple[str, list[int]]:
    """The folded text and, for each folded character (and one past the end), its index in `text`."""
    pieces, starts = [], []
    for index, char in enumerate(text):
        folded = fold_char(char)
        pieces.append(folded)
        starts.extend([index] * len(folded))
    starts.append(len(text))
    return "".join(pieces), starts


def variants(text: str) -> set[str]:
    """The folded forms of `text` a writer may use (see the module docstring)."""
    plain = fold(text)
    transliterated = fold("".join(_TRANSLITERATED.get(c.lower(), c) for c in text))
    forms = {plain, transliterated}
    forms |= {_without_digraphs(form) for form in forms}
    return {f for f in forms if f}


def _without_digraphs(form: str) -> str:
    for digraph, single in _ASCII_DIGRAPHS:
        form = form.replace(digraph, single)
    return form


def is_cjk(text: str) -> bool:
    """True when `text` holds CJK ideographs, kana or Hangul (written without spaces between words)."""
    return any(0x2E80 <= ord(c) < 0xA000 or 0xAC00 <= ord(c) < 0xD7B0 or 0xF900 <= ord(c) < 0xFB00
               or 0x20000 <= ord(c) < 0x30000 for c in text)
