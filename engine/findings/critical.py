"""Critical findings: the actionable findings that must be communicated to the referring clinician (ACR
practice parameter on communication), found in a draft as soon as it exists and in a report before signing.

The list is configurable (`[engine] critical_findings`); the default is pneumothorax (tension or large size
upgrade it), free intraperitoneal air, and a malpositioned endotracheal or nasogastric tube. A finding counts
when it is stated present or possible; a negated or historical mention does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.findings.labeler import Labeler, Mention, shared_labeler
from engine.findings.rules import PNEUMOTHORAX_UPGRADE
from engine.findings.vocabulary import FINDING_KEYS, PRESENT, UNCERTAIN

CRITICAL_NAMES: dict[str, str] = {
    "pneumothorax": "pneumothorax",
    "free_air": "free intraperitoneal air",
    "malpositioned_tube": "malpositioned endotracheal or nasogastric tube",
    **{key: key.replace("_", " ") for key in FINDING_KEYS if key != "pneumothorax"},
}
DEFAULT_CRITICAL_FINDINGS: tuple[str, ...] = ("pneumothorax", "free_air", "malpositioned_tube")
_UPGRADES: dict[str, re.Pattern[str]] = {"pneumothorax": re.compile(PNEUMOTHORAX_UPGRADE, re.IGNORECASE)}


class CriticalSettingsError(ValueError):
    """A critical-finding name that the labeler does not know."""


def check_critical_names(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [name for name in names if name not in CRITICAL_NAMES]
    if unknown:
        raise CriticalSettingsError(f"unknown critical finding {unknown[0]!r}; known: {', '.join(CRITICAL_NAMES)}")
    return names


@dataclass(frozen=True)
class CriticalFinding:
    key: str
    name: str  # what the radiologist reads: "pneumothorax", "free intraperitoneal air"
    upgraded: bool  # tension or large, for pneumothorax
    possible: bool  # stated as possible, not certain
    section: str  # "findings" or "impression"
    sentence: str

    @property
    def title(self) -> str:
        words = ("possible " if self.possible else "") + self.name
        return f"{words} (tension or large)" if self.upgraded else words


def find_critical(sections: dict[str, str], names: Iterable[str] = DEFAULT_CRITICAL_FINDINGS, *,
                  labeler: Labeler | None = None) -> list[CriticalFinding]:
    """The critical findings stated in `sections` ({"findings": ..., "impression": ...}), one per finding
    (its most certain, most severe mention), in the order of the configured list."""
    labeler = labeler or shared_labeler()
    wanted = check_critical_names(names)
    best: dict[str, CriticalFinding] = {}
    for section, text in sections.items():
        for mention in labeler.mentions(text or ""):
            if mention.key not in wanted or mention.historical or mention.hypothetical or mention.status not in (PRESENT, UNCERTAIN):
                continue
            found = _critical(mention, section)
            current = best.get(mention.key)
            if current is None or _rank(found) > _rank(current):
                best[mention.key] = found
    return [best[key] for key in wanted if key in best]


def _critical(mention: Mention, section: str) -> CriticalFinding:
    upgrade = _UPGRADES.get(mention.key)
    return CriticalFinding(key=mention.key, name=CRITICAL_NAMES[mention.key],
                           upgraded=bool(upgrade and upgrade.search(mention.sentence)),
                           possible=mention.status == UNCERTAIN, section=section, sentence=mention.sentence)


def _rank(finding: CriticalFinding) -> tuple[bool, bool]:
    return (not finding.possible, finding.upgraded)
