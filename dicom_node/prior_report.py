"""The report of a prior study read from a DICOM SR in it (Basic Text, Enhanced or Comprehensive SR).

Findings and Impression are found by concept name: DCM codes first (121070 Findings / 121071 Finding,
121072 Impressions / 121073 Impression), then the code meaning or a heading's words, since sites code their
report sections in their own schemes (LOINC 18782-3 / 19005-8, local codes). An SR whose content has no such
container still has text: all of its TEXT items go to the findings, so that the prior keeps its report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

SR_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
})
_FINDINGS_CODES = frozenset({"121070", "121071", "18782-3", "59776-5"})
_IMPRESSION_CODES = frozenset({"121072", "121073", "19005-8"})
_FINDINGS_WORDS = ("finding",)
_IMPRESSION_WORDS = ("impression", "conclusion", "assessment", "opinion")
_TEXT_TYPES = frozenset({"TEXT"})
# Comments beside a section's text (RadDraft's SR records the communication of a critical finding as one):
# not the report's words.
_COMMENT_CODES = frozenset({"121106"})


@dataclass(frozen=True)
class SrReport:
    findings: str
    impression: str
    completed: bool  # Completion Flag COMPLETE (a partial SR is a weaker source than a complete one)
    verified: bool  # Verification Flag VERIFIED


def is_sr(sop_class_uid: str) -> bool:
    return sop_class_uid in SR_SOP_CLASSES


def read_sr_report(path: Path) -> SrReport | None:
    """The SR's Findings and Impression; None when the file is no SR or holds no text at all."""
    try:
        ds = pydicom.dcmread(path, force=False)
    except (OSError, pydicom.errors.InvalidDicomError, ValueError, TypeError, AttributeError):
        return None
    return report_from_dataset(ds)


def report_from_dataset(ds: Dataset) -> SrReport | None:
    content = list(ds.get("ContentSequence", []))
    sections = {"findings": [], "impression": []}
    _collect_sections(content, None, sections)
    findings, impression = _join(sections["findings"]), _join(sections["impression"])
    if not findings and not impression:
        findings = _join(_texts(content))  # no coded sections: the whole text, so the report is not lost
    if not findings and not impression:
        return None
    return SrReport(findings, impression, str(ds.get("CompletionFlag", "")).upper() == "COMPLETE",
                    str(ds.get("VerificationFlag", "")).upper() == "VERIFIED")


def section_of(item: Dataset) -> str | None:
    """'findings', 'impression' or None, from a content item's concept name."""
    names = item.get("ConceptNameCodeSequence") or []
    if not names:
        return None
    name = names[0]
    code = str(name.get("CodeValue", "") or name.get("LongCodeValue", ""))
    if code in _IMPRESSION_CODES:
        return "impression"
    if code in _FINDINGS_CODES:
        return "findings"
    meaning = str(name.get("CodeMeaning", "")).lower()
    if any(word in meaning for word in _IMPRESSION_WORDS):
        return "impression"
    if any(word in meaning for word in _FINDINGS_WORDS):
        return "findings"
    return None


def _code_of(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].get("CodeValue", "")) if names else ""


def _collect_sections(items: Iterable[Dataset], inherited: str | None, out: dict[str, list[str]]) -> None:
    """Walk the content tree; a TEXT item belongs to the nearest named section above it (or its own name)."""
    for item in items:
        section = section_of(item) or inherited
        value_type = str(item.get("ValueType", ""))
        if value_type in _TEXT_TYPES and section is not None and _code_of(item) not in _COMMENT_CODES:
            text = str(item.get("TextValue", "")).strip()
            if text:
                out[section].append(text)
        children = item.get("ContentSequence")
        if children:
            _collect_sections(children, section, out)


def _texts(items: Iterable[Dataset]) -> list[str]:
    found: list[str] = []
    for item in items:
        if str(item.get("ValueType", "")) in _TEXT_TYPES:
            text = str(item.get("TextValue", "")).strip()
            if text:
                found.append(text)
        if item.get("ContentSequence"):
            found.extend(_texts(item.ContentSequence))
    return found


def _join(parts: list[str]) -> str:
    return "\n".join(parts)
