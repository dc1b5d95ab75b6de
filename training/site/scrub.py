"""Scrub a signed report's text of the identity found in its own study.

Names (every public person-name attribute: patient, other and birth names, referring, performing and
reading physicians, operators, ... and the signer), identifiers (Patient ID, Other Patient IDs, Accession
Number, Study ID, the instance UIDs, ...) and dates (birth date, study, series, acquisition and content
dates, ...) are replaced by [NAME], [ID] and [DATE], case-insensitively and as whole words. Dates are
found in the forms people write them: 20260311, 2026-03-11, 11/03/2026, 03/11/2026, 11.03.2026, 11/3/26,
"11 March 2026", "11th of Mar. 2026", "March 11, 2026", "March 11". Any other full date (a prior study,
say) becomes [DATE] too, and institution names [INSTITUTION].

What is not scrubbed on purpose: name parts of one letter (initials would take every "a" with them),
identifiers shorter than 4 characters, or all digits and shorter than 5 (a Study ID "1" is also the "1" of
"1 cm"). Names that are also words ("White", "Young") are scrubbed wherever they occur: the training text
loses a word, the patient keeps their privacy.
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

NAME, ID, DATE, INSTITUTION = "[NAME]", "[ID]", "[DATE]", "[INSTITUTION]"
ID_KEYWORDS = frozenset({
    "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "AdmissionID", "MedicalRecordLocator",
    "RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID", "ServiceEpisodeID",
    "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest", "IssuerOfPatientID",
    "DeviceSerialNumber", "StationName", "DetectorID", "PlateID", "CassetteID",
})
_ID_SUFFIXES = ("ID", "IDs", "Number", "Identifier")
# Titles written with plain-text names ("Dr. Reed Halloway"): not identifying, and common words of reports.
HONORIFICS = frozenset({"dr", "mr", "mrs", "ms", "miss", "mx", "prof", "md", "phd", "jr", "sr"})
INSTITUTION_KEYWORDS = frozenset({"InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName"})
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
_ORDINAL = r"(?:st|nd|rd|th)?"
_ANY_MONTH = "(?:" + "|".join(rf"{m[:3]}(?:{m[3:]}|\.)?" for m in MONTHS) + "|sept\\.?)"
# Full dates of any day (with a four-digit year), for dates the study's attributes do not hold.
_ANY_DATE = re.compile(
    r"(?<![\w.])(?:"
    r"(?:19|20)\d\d[-/.]\d{1,2}[-/.]\d{1,2}"
    r"|\d{1,2}[-/.]\d{1,2}[-/.](?:19|20)\d\d"
    r"|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    rf"|\d{{1,2}}{_ORDINAL}\s+(?:of\s+)?{_ANY_MONTH}\s*,?\s+(?:19|20)\d\d"
    rf"|{_ANY_MONTH}\s+\d{{1,2}}{_ORDINAL}\s*,?\s+(?:19|20)\d\d"
    r")(?!\w|\.\d)",
    re.IGNORECASE,
)
# The value representations that can hold a name, an identifier, a date or a sequence of them.
_TEXT_VRS = frozenset({"PN", "DA", "DT", "UI", "LO", "SH", "LT", "ST", "UT", "UC", "SQ"})
_NAME_RUN = re.compile(r"\[NAME\](?:[\s,]+\[NAME\])+")


@dataclass(frozen=True)
class StudyIdentity:
    """The identifying values of one study, as its own attributes (and its signer) give them."""

    names: frozenset[str]
    ids: frozenset[str]
    dates: frozenset[dt.date]
    institutions: frozenset[str]


def identity_of(datasets: Iterable[Dataset], extra_names: Iterable[str] = ()) -> StudyIdentity:
    """Collect names, identifiers, dates and institutions from the public attributes of `datasets`
    (sequences included) and `extra_names` (the signer: "Family^Given" or plain text)."""
    names: set[str] = set()
    ids: set[str] = set()
    dates: set[dt.date] = set()
    institutions: set[str] = set()
    for ds in datasets:
        _collect(ds, names, ids, dates, institutions)
    for name in extra_names:
        names.update(_name_parts(name))
    return StudyIdentity(frozenset(names), frozenset(ids), frozenset(dates), frozenset(institutions))


def _collect(ds: Dataset, names: set[str], ids: set[str], dates: set[dt.date], institutions: set[str]) -> None:
    for tag in list(ds.keys()):
        # Chosen by the dictionary before the value is touched: reading a deferred value (pixel data) would
        # pull it from the file.
        if tag.is_private or _dictionary_vr(tag) not in _TEXT_VRS:
            continue
        elem = ds[tag]
        if elem.value is None:
            continue
        if elem.VR == "SQ":
            for item in elem.value:
                _collect(item, names, ids, dates, institutions)
            continue
        values = [str(v) for v in _values(elem.value)]
        if elem.VR == "PN":
            for value in values:
                names.update(_name_parts(value))
        elif elem.VR in ("DA", "DT"):
            dates.update(d for d in (_date(v) for v in values) if d)
        elif elem.VR == "UI":
            ids.update(v.strip() for v in values if v.strip() and v.strip() not in UID_dictionary)
        elif elem.keyword in INSTITUTION_KEYWORDS:
            institutions.update(v.strip() for v in values if len(v.strip()) >= 3)
        elif _is_identifier(elem.keyword, elem.VR):
            ids.update(v.strip() for v in values if _long_enough(v.strip()))


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _values(value: object) -> list[object]:
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def _is_identifier(keyword: str, vr: str) -> bool:
    if keyword in ID_KEYWORDS:
        return True
    return vr in ("LO", "SH") and keyword in PROFILE_ACTIONS and keyword.endswith(_ID_SUFFIXES)


def _long_enough(value: str) -> bool:
    return len(value) >= 5 if value.isdigit() else len(value) >= 4


def _name_parts(value: str) -> set[str]:
    """Family, given and middle names (each whole, and split at spaces, hyphens and apostrophes) of a
    DICOM person name or of plain text; prefixes and suffixes ("Dr", "Jr") are not identifying."""
    parts: set[str] = set()
    for group in value.split("="):
        components = group.split("^")[:3] if "^" in group else [group]
        for component in components:
            component = component.strip()
            for piece in [component, *re.split(r"[\s\-'’.,]+", component)]:
                if len(piece) >= 2 and any(c.isalpha() for c in piece) and piece.lower() not in HONORIFICS:
                    parts.add(piece)
    return parts


def _date(value: str) -> dt.date | None:
    value = value.strip()
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date() if len(value) >= 8 else None
    except ValueError:
        return None


# -- scrubbing -------------------------------------------------------------------------------------------
class ReportScrubber:
    """Scrubs texts of one study's identity; `counts` keeps what it replaced, by kind."""

    def __init__(self, identity: StudyIdentity) -> None:
        self._steps = [
            ("dates", _alternation([_date_pattern(d) for d in identity.dates]), DATE),
            ("other_dates", _ANY_DATE, DATE),
            ("ids", _alternation([re.escape(v) for v in identity.ids]), ID),
            ("institutions", _alternation([_phrase(v) for v in identity.institutions]), INSTITUTION),
            ("names", _alternation([re.escape(v) for v in identity.names]), NAME),
        ]

    def scrub(self, text: str) -> tuple[str, Counter]:
        counts: Counter = Counter()
        for kind, pattern, placeholder in self._steps:
            if pattern is None:
                continue
            text, replaced = pattern.subn(placeholder, text)
            if replaced:
                counts[kind] += replaced
        return _NAME_RUN.sub(NAME, text), counts


def _alternation(patterns: list[str]) -> re.Pattern | None:
    """One pattern matching any of `patterns` as a whole word, longest first."""
    if not patterns:
        return None
    ordered = sorted(set(patterns), key=lambda p: (-len(p), p))
    return re.compile(r"(?<!\w)(?:" + "|".join(ordered) + r")(?!\w)", re.IGNORECASE)


def _phrase(value: str) -> str:
    return r"\s+".join(re.escape(word) for word in value.split())


def _date_pattern(day: dt.date) -> str:
    """The written forms of one date (see the module docstring)."""
    year, short = f"{day.year:04d}", f"{day.year % 100:02d}"
    dd = f"0?{day.day}" if day.day < 10 else f"{day.day}"
    mm = f"0?{day.month}" if day.month < 10 else f"{day.month}"
    forms = [f"{year}{day.month:02d}{day.day:02d}"]
    for sep in (re.escape(s) for s in "-/."):
        forms += [f"{year}{sep}{mm}{sep}{dd}", f"{dd}{sep}{mm}{sep}(?:{year}|{short})",
                  f"{mm}{sep}{dd}{sep}(?:{year}|{short})"]
    full = MONTHS[day.month - 1]
    month = f"(?:{full}|{full[:3]}\\.?" + ("|sept\\.?" if day.month == 9 else "") + ")"
    forms += [rf"{dd}{_ORDINAL}\s+(?:of\s+)?{month}(?:\s*,?\s+{year})?",
              rf"{month}\s+{dd}{_ORDINAL}(?:\s*,?\s+{year})?"]
    return "(?:" + "|".join(forms) + ")"
