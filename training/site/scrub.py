"""Scrub a signed report's text of identity: the identity found in its study and in the patient's other
studies (names, IDs, dates, institutions, addresses), and anything that looks like a date, a phone number,
an e-mail address, a URL, a street address, a UID or a long digit run.

Matching runs on folded text (`textfold.py`: case, diacritics, ü→ue, ß→ss, ø→o; full-width forms
narrowed) and maps back, so "MULLER", "Mueller", "Müller's" and "muller" all go for a patient MÜLLER;
Latin name parts also take common inflections (Dvořák → "Dvořákovi", Kowalski → "Kowalskiego"). Names in
CJK scripts are matched without word boundaries (no spaces between words there), each part and single-
character surnames included, so "山田太郎様" and "홍길동 님" lose the name and keep the honorific. A name
stored in a wrongly declared character set is also tried in the likely ones. IDs are matched with or
without their separators and, for their digit runs of five or more, inside other words ("MRN583920",
"ID_583920", "0583920"). The study's dates are matched in their written forms (numeric with two- or
four-digit years, month names in English, German, French, Spanish, Italian and Dutch, CJK forms), and so
is any other full date. With the patient's date offset, a date is shifted by it and written as an ISO date
when it can be read without doubt (one of the study's dates, year first, a month name, a day above 12);
otherwise, for the patient's birth date (removed from the images too), and without an offset, it
becomes [DATE].

Placeholders: [NAME], [ID], [DATE], [INSTITUTION], [ADDRESS], [PHONE], [EMAIL], [URL]. Over-scrubbing a
common word that is also the patient's name is accepted; a leak is not.

Why focused rules and not Presidio's pattern recognizers: they are US-centred (US phone and SSN forms),
fold neither diacritics nor CJK, and presidio-analyzer pulls in spaCy and tldextract (a suffix list
fetched online) for what a few expressions here do with the study's own identity in hand.

Not scrubbed on purpose: Latin name parts of one letter (initials would take every "a" with them),
identifiers shorter than 4 characters, or all digits and shorter than 5 (a Study ID "1" is also the "1"
of "1 cm").
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID_dictionary

from training.site.deidentify import PROFILE_ACTIONS
from training.site.textfold import fold, fold_with_map, is_cjk, variants

NAME, ID, DATE, INSTITUTION = "[NAME]", "[ID]", "[DATE]", "[INSTITUTION]"
ADDRESS, PHONE, EMAIL, URL = "[ADDRESS]", "[PHONE]", "[EMAIL]", "[URL]"
ID_KEYWORDS = frozenset({
    "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "AdmissionID", "MedicalRecordLocator",
    "RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID", "ServiceEpisodeID",
    "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest", "IssuerOfPatientID",
    "DeviceSerialNumber", "StationName", "DetectorID", "PlateID", "CassetteID",
})
PHONE_KEYWORDS = frozenset({"PatientTelephoneNumbers", "PersonTelephoneNumbers", "ReferringPhysicianTelephoneNumbers",
                            "OrderCallbackPhoneNumber"})
_ID_SUFFIXES = ("ID", "IDs", "Number", "Identifier")
# Titles written with plain-text names ("Dr. Reed Halloway"): not identifying, and common words of reports.
HONORIFICS = frozenset({"dr", "mr", "mrs", "ms", "miss", "mx", "prof", "md", "phd", "jr", "sr", "herr", "frau",
                        "mme", "mlle", "sig", "sra", "sr."})
INSTITUTION_KEYWORDS = frozenset({"InstitutionName", "InstitutionalDepartmentName"})
ADDRESS_KEYWORDS = frozenset({"PatientAddress", "InstitutionAddress", "ReferringPhysicianAddress", "PersonAddress",
                              "RegionOfResidence", "CountryOfResidence", "PatientInstitutionResidence"})
# Character sets a wrongly declared name may really be in.
_LIKELY_CODECS = ("utf-8", "cp1252", "iso8859_2", "shift_jis", "euc_jp", "iso2022_jp", "euc_kr", "gb18030", "big5")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
# Other languages' month names, folded (German, French, Spanish, Italian, Dutch).
_OTHER_MONTHS = (
    ("januar", "janvier", "enero", "gennaio", "januari", "janner", "jaenner"),
    ("februar", "fevrier", "febrero", "febbraio", "februari", "feber"),
    ("marz", "maerz", "mars", "marzo", "maart"),
    ("avril", "abril", "aprile"),
    ("mai", "mayo", "maggio", "mei"),
    ("juni", "juin", "junio", "giugno"),
    ("juli", "juillet", "julio", "luglio"),
    ("aout", "agosto", "augustus"),
    ("septembre", "septiembre", "settembre"),
    ("oktober", "octobre", "octubre", "ottobre"),
    ("novembre", "noviembre"),
    ("dezember", "decembre", "diciembre", "dicembre"),
)
_ORDINAL = r"(?:st|nd|rd|th|\.)?"
_YEAR = r"(?:(?:19|20)\d\d|'?\d\d)"
_INFLECTIONS = ("s", "es", "e", "en", "er", "ern", "ens", "a", "u", "y", "i", "ie", "em", "om", "ovi", "ove", "ova",
                "ovou", "ou", "ego", "emu", "ym", "ich", "ach", "ami", "ow", "owi", "ei")
_LATIN = r"0-9a-z\u00c0-\u024f\u0370-\u04ff"
_STREET_WORDS = ("street", "st", "road", "rd", "lane", "ln", "avenue", "ave", "close", "row", "terrace", "drive",
                 "court", "place", "square", "boulevard", "blvd", "crescent", "gardens", "grove", "way", "walk",
                 "mews", "hill", "park", "strasse", "str", "weg", "gasse", "platz", "allee", "rue", "via")


def _month(index: int) -> str:
    full = MONTHS[index]
    forms = [full, rf"{full[:3]}\.?", *_OTHER_MONTHS[index]] + (["sept\\.?"] if index == 8 else [])
    return "(?:" + "|".join(sorted(forms, key=len, reverse=True)) + ")"


_ANY_MONTH = "(?:" + "|".join(_month(i) for i in range(12)) + ")"
_CJK_DATES = (r"(?:(?:令和|平成|昭和)\s*)?\d{1,4}\s*年\s*\d{1,2}\s*月(?:\s*\d{1,2}\s*日)?|\d{1,2}\s*月\s*\d{1,2}\s*日"
              r"|\d{2,4}\s*년\s*\d{1,2}\s*월(?:\s*\d{1,2}\s*일)?|\d{1,2}\s*월\s*\d{1,2}\s*일")
# Full dates of any day (and month-year forms), for dates the study's attributes do not hold.
_ANY_DATE = re.compile(
    r"(?<![\w.])(?:"
    r"(?:19|20)\d\d\s?[-/.]\s?\d{1,2}\s?[-/.]\s?\d{1,2}"
    r"|\d{1,2}\s?[-/.]\s?\d{1,2}\s?[-/.]\s?(?:(?:19|20)\d\d|\d\d)"
    r"|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    rf"|\d{{1,2}}{_ORDINAL}\s*(?:of\s+)?[-/]?\s*{_ANY_MONTH}\s*[-/,]?\s*{_YEAR}"
    rf"|{_ANY_MONTH}\s+\d{{1,2}}{_ORDINAL}\s*,?\s+{_YEAR}"
    rf"|(?:19|20)\d\d\s*[-/]\s*{_ANY_MONTH}\s*[-/]\s*\d{{1,2}}"
    rf"|{_ANY_MONTH}\s+(?:19|20)\d\d"
    r"|(?:0?[1-9]|1[0-2])/(?:19|20)\d\d"
    r")(?![\w]|\.\d)"
    rf"|{_CJK_DATES}",
)
_URL_TAIL = r"[^\s<>\"')\]]*[^\s<>\"')\].,;:!?]"  # a sentence's full stop is not part of the URL
_URL = re.compile(rf"(?:https?|ftp|dicom|file)://{_URL_TAIL}|www\.{_URL_TAIL}"
                  r"|(?<![\w@.])[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|edu|gov|local|lan|intra|internal)\b"
                  rf"(?:/{_URL_TAIL})?")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w+])(?:(?:\+|00)\d{1,3}[\s./-]?)?(?:\(\d{1,5}\)[\s./-]?)?\d{2,8}(?:[\s./-]\d{2,8}){0,4}"
                    r"(?![\w])")
_PHONE_LABEL = re.compile(r"(?:tel|phone|fon|telefon|mobile|mobil|cell|fax|call|ruf|nr|no)\.?:?\s*$")
_UID = re.compile(r"(?<![\d.])\d+(?:\.\d+){4,}(?![\d.])")
_LONG_DIGITS = re.compile(r"(?<!\d)\d{5,}(?!\d)")
# Street addresses, in the original text: the street's name is capitalised ("5 mm nodule close to" is not one).
_CAPITALISED = r"[A-ZÀ-ÖØ-ÞĀ-Ž][^\W\d_]*[\w'’.-]*"
_STREET = re.compile(
    rf"(?<![\w])\d{{1,5}}[a-zA-Z]?\s*,?\s+(?:{_CAPITALISED}\s+){{1,3}}"
    r"(?:Street|St\.|Road|Rd\.?|Lane|Ln\.?|Avenue|Ave\.?|Close|Row|Terrace|Drive|Court|Ct\.|Place|Pl\.|Square"
    r"|Boulevard|Blvd\.?|Crescent|Gardens|Grove|Mews|Way|Walk|STREET|ROAD|LANE|AVENUE|CLOSE|ROW|DRIVE|WAY)(?![\w])"
    r"(?:,\s*" + _CAPITALISED + r")?"
    r"|(?<![\w])[A-ZÀ-Þ][\w-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|ufer)\s*\d{1,4}[a-z]?(?![\w])"
    r"|(?<![\w])(?:[Rr]ue|Via|Viale|Calle|[Uu]lica|ul\.|Plac)\s+(?:" + _CAPITALISED + r"\s*){1,3}\d{0,4}")
_ORIGINAL_CASE = (_STREET,)
# The value representations that can hold a name, an identifier, a date or a sequence of them.
_TEXT_VRS = frozenset({"PN", "DA", "DT", "UI", "LO", "SH", "LT", "ST", "UT", "UC", "SQ"})
_NAME_RUN = re.compile(r"\[NAME\](?:[\s,]*\[NAME\])+")


@dataclass(frozen=True)
class StudyIdentity:
    """The identifying values of one study (and the patient's other studies), as their attributes (and the
    signer) give them."""

    names: frozenset[str]
    ids: frozenset[str]
    dates: frozenset[dt.date]
    institutions: frozenset[str]
    addresses: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()
    birth_dates: frozenset[dt.date] = frozenset()  # also in `dates`; removed from images, so never shifted


def identity_of(datasets: Iterable[Dataset], extra_names: Iterable[str] = ()) -> StudyIdentity:
    """Collect names, identifiers, dates, institutions and addresses from the public attributes of
    `datasets` (sequences included) and `extra_names` (the signer: "Family^Given" or plain text)."""
    found: dict[str, set] = {"names": set(), "ids": set(), "dates": set(), "institutions": set(), "addresses": set(),
                             "phones": set(), "birth_dates": set()}
    for ds in datasets:
        _collect(ds, found)
    for name in extra_names:
        found["names"].update(_name_parts(name))
    return StudyIdentity(**{kind: frozenset(values) for kind, values in found.items()})


def _collect(ds: Dataset, found: dict[str, set]) -> None:
    for tag in list(ds.keys()):
        # Chosen by the dictionary before the value is touched: reading a deferred value (pixel data) would
        # pull it from the file. The dictionary's VR also decides for a name stored with another VR.
        vr = _dictionary_vr(tag)
        if tag.is_private or vr not in _TEXT_VRS:
            continue
        elem = ds[tag]
        if elem.value is None:
            continue
        if vr == "SQ" or elem.VR == "SQ":
            for item in elem.value if elem.VR == "SQ" else ():
                _collect(item, found)
            continue
        values = _values(elem.value)
        texts = [_text(v) for v in values]
        if vr == "PN":
            for value in values:
                for text in _decodings(value):
                    found["names"].update(_name_parts(text))
        elif vr in ("DA", "DT"):
            found["dates"].update(d for text in texts for d in _dates(text))
            if elem.keyword == "PatientBirthDate":
                found["birth_dates"].update(d for text in texts for d in _dates(text))
        elif vr == "UI":
            found["ids"].update(v.strip() for v in texts if v.strip() and v.strip() not in UID_dictionary)
        elif elem.keyword in INSTITUTION_KEYWORDS:
            found["institutions"].update(v.strip() for v in texts if len(v.strip()) >= 3)
        elif elem.keyword in PHONE_KEYWORDS:
            found["phones"].update(v.strip() for v in texts if sum(c.isdigit() for c in v) >= 5)
        elif elem.keyword in ADDRESS_KEYWORDS:
            found["addresses"].update(v.strip() for v in texts if len(v.strip()) >= 3)
        elif _is_identifier(elem.keyword, vr):
            found["ids"].update(v.strip() for v in texts if _long_enough(v.strip()))


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _values(value: object) -> list[object]:
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def _decodings(value: object) -> set[str]:
    """A name as decoded, and as its bytes read in the character sets it may really be in."""
    texts = {_text(value)}
    raw = value if isinstance(value, bytes) else getattr(value, "original_string", None)
    if isinstance(raw, bytes):
        for codec in _LIKELY_CODECS:
            try:
                texts.add(raw.decode(codec))
            except (UnicodeDecodeError, LookupError):
                continue
    return {t.strip("\x00 ") for t in texts if t.strip("\x00 ")}


def _is_identifier(keyword: str, vr: str) -> bool:
    if keyword in ID_KEYWORDS:
        return True
    return vr in ("LO", "SH") and keyword in PROFILE_ACTIONS and keyword.endswith(_ID_SUFFIXES)


def _long_enough(value: str) -> bool:
    return len(value) >= 5 if value.isdigit() else len(value) >= 4


def _name_parts(value: str) -> set[str]:
    """Family, given and middle names (each whole, and split at spaces, hyphens and apostrophes) of a
    DICOM person name or of plain text; prefixes and suffixes ("Dr", "Jr") are not identifying. A CJK name
    written without "^" is also split as surname + given name (one or two characters of surname)."""
    parts: set[str] = set()
    for group in value.split("="):
        split = "^" in group
        components = group.split("^")[:3] if split else [group]
        for component in components:
            component = component.strip()
            for piece in [component, *re.split(r"[\s\-'’.,]+", component)]:
                if is_cjk(piece):
                    parts.update({piece} if split else _cjk_parts(piece))
                elif len(piece) >= 2 and any(c.isalpha() for c in piece) and piece.lower() not in HONORIFICS:
                    parts.add(piece)
    return parts


def _cjk_parts(piece: str) -> set[str]:
    piece = "".join(piece.split())
    parts = {piece} if piece else set()
    if 2 <= len(piece) <= 4:  # surname + given name written together: either alone too
        parts.update({piece[:1], piece[1:]} | ({piece[:2], piece[2:]} if len(piece) == 4 else set()))
    return {p for p in parts if p}


def _dates(value: str) -> list[dt.date]:
    """The dates of a DA or DT value, both ends of a range included."""
    days = []
    for part in re.split(r"[-\\]", value.strip()) if len(value.strip()) >= 8 else ():
        try:
            days.append(dt.datetime.strptime(part.strip()[:8], "%Y%m%d").date())
        except ValueError:
            continue
    return days


# -- scrubbing -------------------------------------------------------------------------------------------
class ReportScrubber:
    """Scrubs texts of one study's identity; `counts` keeps what it replaced, by kind."""

    def __init__(self, identity: StudyIdentity, date_offset_days: int | None = None) -> None:
        """`date_offset_days`: the patient's date shift; dates written in the text are then shifted by it
        (as ISO dates), and only those that cannot be read whole become [DATE]. None: every date is [DATE]."""
        self._offset = date_offset_days
        self._birth_dates = identity.birth_dates
        self._known_dates = [(day, re.compile(r"(?<![\w.])" + _date_pattern(day) + r"(?![\w]|\.\d)"))
                             for day in sorted(identity.dates)]
        self._steps: list[tuple[str, re.Pattern | None, str]] = [
            ("urls", _URL, URL),
            ("emails", _EMAIL, EMAIL),
            ("dates", _alternation([_date_pattern(d) for d in identity.dates], r"(?<![\w.])", r"(?![\w]|\.\d)"), DATE),
            ("other_dates", _ANY_DATE, DATE),
            ("phones", _alternation([_phone_pattern(v) for v in identity.phones], r"(?<!\d)", r"(?!\d)"), PHONE),
            ("ids", _alternation([p for v in identity.ids for p in _id_patterns(v)], "", ""), ID),
            ("phones", _PHONE, PHONE),
            ("institutions", _alternation([_phrase(v) for v in identity.institutions]), INSTITUTION),
            ("addresses", _alternation([_phrase(v) for v in identity.addresses]), ADDRESS),
            ("addresses", _STREET, ADDRESS),  # matched in the original text (see `_ORIGINAL_CASE`)
            ("names", _name_alternation(identity.names | _address_words(identity.addresses)), NAME),
            ("ids", _UID, ID),
            ("numbers", _LONG_DIGITS, ID),
        ]

    def scrub(self, text: str) -> tuple[str, Counter]:
        folded, starts = fold_with_map(text)
        identity = list(range(len(text) + 1))
        taken: list[tuple[int, int, str, str]] = []
        for kind, pattern, placeholder in self._steps:
            if pattern is None:
                continue
            subject, positions = (text, identity) if pattern in _ORIGINAL_CASE else (folded, starts)
            for match in pattern.finditer(subject):
                if kind == "phones" and not _is_phone(match, folded):
                    continue
                start, end = positions[match.start()], positions[match.end()]
                if end > start and not any(start < e and s < end for s, e, _, _ in taken):
                    if kind in ("dates", "other_dates"):
                        placeholder = self._date_replacement(match.group(), kind)
                    taken.append((start, end, placeholder, kind))
        counts: Counter = Counter(kind for _, _, _, kind in taken)
        pieces, position = [], 0
        for start, end, placeholder, _ in sorted(taken):
            pieces += [text[position:start], placeholder]
            position = end
        pieces.append(text[position:])
        return _NAME_RUN.sub(NAME, "".join(pieces)), counts


    def _date_replacement(self, written: str, kind: str) -> str:
        """The shifted date (ISO) when the written date is known or reads unambiguously; else [DATE]."""
        if self._offset is None:
            return DATE
        if kind == "dates":
            day = next((d for d, pattern in self._known_dates if pattern.fullmatch(written)), None)
        else:
            day = read_date(written)
        if day is None or day in self._birth_dates:  # the images lose the birth date; so does the text
            return DATE
        return (day + dt.timedelta(days=self._offset)).isoformat()


def read_date(written: str) -> dt.date | None:
    """A written date, folded, when it names one day without doubt: year first, or a month name, or a day
    above 12; "03/04/2024" (March or April) and two-digit years are not read."""
    text = written.strip().lower()
    numeric = re.fullmatch(r"((?:19|20)\d\d)\s?[-/.]\s?(\d{1,2})\s?[-/.]\s?(\d{1,2})|((?:19|20)\d\d)(\d\d)(\d\d)", text)
    if numeric:
        year, month, day = (int(g) for g in (numeric.groups()[:3] if numeric.group(1) else numeric.groups()[3:]))
        return _day(year, month, day)
    cjk = re.fullmatch(r"((?:19|20)\d\d)\s*[年년]\s*(\d{1,2})\s*[月월]\s*(\d{1,2})\s*[日일]", text)
    if cjk:
        return _day(*(int(g) for g in cjk.groups()))
    month = next((i + 1 for i in range(12) if re.search(rf"(?<![^\W\d_]){_month(i)}(?![^\W\d_])", text)), None)
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    years = [n for n in numbers if 1900 <= n <= 2099]
    if month and len(years) == 1 and len(numbers) == 2:
        return _day(years[0], month, next(n for n in numbers if n != years[0] or numbers.count(n) > 1))
    little_endian = re.fullmatch(r"(\d{1,2})\s?[-/.]\s?(\d{1,2})\s?[-/.]\s?((?:19|20)\d\d)", text)
    if little_endian:
        first, second, year = (int(g) for g in little_endian.groups())
        if first > 12 >= second:
            return _day(year, second, first)
        if second > 12 >= first:
            return _day(year, first, second)
    return None


def _day(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _alternation(patterns: list[str], before: str = rf"(?<![{_LATIN}])", after: str = rf"(?![{_LATIN}])"
                 ) -> re.Pattern | None:
    """One pattern matching any of `patterns` (in folded text), longest first, between `before` and `after`."""
    if not patterns:
        return None
    ordered = sorted(set(patterns), key=lambda p: (-len(p), p))
    return re.compile(before + "(?:" + "|".join(ordered) + ")" + after)


def _name_alternation(names: Iterable[str]) -> re.Pattern | None:
    latin, cjk = set(), set()
    for name in names:
        for form in variants(name):
            (cjk if is_cjk(form) else latin).add(form)
    inflected = "(?:" + "|".join(_INFLECTIONS) + ")?"
    patterns = [rf"(?<![{_LATIN}]){_phrase(form)}{inflected if len(form) >= 4 else ''}(?![{_LATIN}])"
                for form in latin]
    patterns += [re.escape(form) for form in cjk]
    if not patterns:
        return None
    return re.compile("|".join(sorted(patterns, key=lambda p: (-len(p), p))))


def _phrase(value: str) -> str:
    return r"[\s,]+".join(re.escape(word) for word in fold(value).replace(",", " ").split())


def _address_words(addresses: Iterable[str]) -> set[str]:
    """The place words of known addresses (street and town names), scrubbed wherever they stand."""
    words = set()
    for address in addresses:
        for word in re.split(r"[\W\d_]+", address):
            if len(word) >= 4 and fold(word) not in _STREET_WORDS:
                words.add(word)
    return words


def _id_patterns(value: str) -> list[str]:
    """An ID with or without its separators, and its digit runs of five or more inside other words."""
    folded = fold(value.strip())
    if re.fullmatch(r"[\d.]+", folded) and "." in folded:  # a UID: as written
        return [rf"(?<![\d.]){re.escape(folded)}(?![\d.])"]
    characters = [c for c in folded if c.isalnum()]
    patterns = []
    if len(characters) >= 4:
        patterns.append(rf"(?<![{_LATIN}])" + r"[-_\s./]?".join(re.escape(c) for c in characters) + rf"(?![{_LATIN}])")
    patterns += [rf"(?<!\d)0*{run}(?!\d)" for run in re.findall(r"\d{5,}", folded)]
    return patterns


def _phone_pattern(value: str) -> str:
    """A known phone number by its last seven or more digits, whatever separates them."""
    digits = re.sub(r"\D", "", value)
    return r"[\s()./+-]*".join(digits[-max(7, min(len(digits), 9)):]) if len(digits) >= 7 else re.escape(digits)


def _is_phone(match: re.Match, folded: str) -> bool:
    digits = sum(c.isdigit() for c in match.group())
    if digits < 7 or digits > 15:
        return False
    text = match.group()
    labelled = bool(_PHONE_LABEL.search(folded[max(0, match.start() - 12):match.start()]))
    return labelled or text.startswith(("+", "00", "(", "0")) or "-" in text or "/" in text


def _date_pattern(day: dt.date) -> str:
    """The written forms of one date (see the module docstring), in folded text."""
    year, short = f"{day.year:04d}", f"{day.year % 100:02d}"
    dd = f"0?{day.day}" if day.day < 10 else f"{day.day}"
    mm = f"0?{day.month}" if day.month < 10 else f"{day.month}"
    years = f"(?:{year}|'?{short})"
    forms = [f"{year}{day.month:02d}{day.day:02d}", f"{day.day:02d}{day.month:02d}{year}",
             f"{short}{day.month:02d}{day.day:02d}", f"{day.day:02d}{day.month:02d}{short}",
             rf"{dd}\.\s?{mm}\.(?!\s?\d)"]
    for sep in (r"\s?" + re.escape(s) + r"\s?" for s in "-/."):
        forms += [f"{year}{sep}{mm}{sep}{dd}", f"{dd}{sep}{mm}{sep}{years}", f"{mm}{sep}{dd}{sep}{years}"]
    month = _month(day.month - 1)
    forms += [rf"{dd}{_ORDINAL}\s*(?:of\s+)?[-/]?\s*{month}(?:\s*[-/,]?\s*{years})?",
              rf"{month}\s+{dd}{_ORDINAL}(?:\s*,?\s+{years})?",
              rf"{year}\s*[-/]\s*{month}\s*[-/]\s*{dd}",
              rf"(?:{year}|{short})\s*年\s*{mm}\s*月\s*{dd}\s*日", rf"{mm}\s*月\s*{dd}\s*日",
              rf"(?:{year}|{short})\s*년\s*{mm}\s*월\s*{dd}\s*일", rf"{mm}\s*월\s*{dd}\s*일"]
    return "(?:" + "|".join(forms) + ")"
