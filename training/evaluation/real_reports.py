"""The labeler on real report language: IU X-ray reports scored against their MeSH indexing.

A report is positive for a finding when its MeSH terms name it (any qualifier, "Cardiomegaly/borderline"
included). Findings + Impression are labeled together, as the MeSH indexers read them. The labeler's call is
positive in one of two ways:
- `score`, the issue's mapping: the finding is present or uncertain;
- `score_probable`, MeSH's own convention for hedges: the finding is present or *probable* ("likely",
  "suggestive of", "versus", "borderline"). The IU indexers code probable findings and leave possible ones
  ("may represent", "could", "cannot exclude", "question of", "differential") to the observation they explain
  (Opacity, Markings, Costophrenic Angle/blunted). The labels stay "uncertain" for both strengths.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.findings.labeler import Mention
from engine.findings.rules import PROBABLE
from engine.findings.vocabulary import PRESENT, UNCERTAIN

# Our key -> the MeSH main headings that index it.
MESH_MAPPING: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "pleural_effusion": ("Pleural Effusion",),
    "pneumothorax": ("Pneumothorax",),
    "consolidation": ("Consolidation", "Pneumonia", "Airspace Disease"),
    "nodule": ("Nodule", "Mass"),
    "edema": ("Pulmonary Edema",),
    "atelectasis": ("Pulmonary Atelectasis",),
}
SCORED_KEYS: tuple[str, ...] = tuple(MESH_MAPPING)


class RealReportsError(ValueError):
    """The CSV of real reports cannot be read (missing columns)."""


@dataclass(frozen=True)
class RealReport:
    uid: str
    text: str
    truth: frozenset[str]  # scored keys its MeSH terms name


@dataclass(frozen=True)
class Scores:
    per_key: dict[str, tuple[float, int, int, int]]  # key -> (F1, true positives, false positives, false negatives)

    @property
    def macro_f1(self) -> float:
        return sum(f1 for f1, *_ in self.per_key.values()) / len(self.per_key)


def mesh_keys(mesh: str) -> frozenset[str]:
    headings = {term.split("/")[0].strip().lower() for term in mesh.split(";")}
    return frozenset(key for key, names in MESH_MAPPING.items() if any(n.lower() in headings for n in names))


def read_reports(path: Path) -> list[RealReport]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"uid", "MeSH", "findings", "impression"} - set(rows[0] if rows else {})
    if missing:
        raise RealReportsError(f"{path}: missing columns {', '.join(sorted(missing))}")
    return [RealReport(row["uid"], f"{row['findings'].strip()}\n\n{row['impression'].strip()}".strip(),
                       mesh_keys(row["MeSH"])) for row in rows]


def score(reports: Iterable[RealReport], predict: Callable[[list[str]], list[dict[str, str]]]) -> Scores:
    """The issue's mapping: a present or uncertain label is positive."""
    reports = list(reports)
    labels = predict([r.text for r in reports])
    return _scores(reports, [frozenset(k for k in SCORED_KEYS if label.get(k) in (PRESENT, UNCERTAIN))
                             for label in labels])


def probable_positives(mentions: list[Mention]) -> frozenset[str]:
    """The findings a MeSH indexer would code: stated present, or uncertain at the "probable" strength."""
    return frozenset(m.key for m in mentions if m.key in MESH_MAPPING and not m.historical and not m.hypothetical
                     and (m.status == PRESENT or (m.status == UNCERTAIN and m.hedge == PROBABLE)))


def score_probable(reports: Iterable[RealReport], mentions_many: Callable[[list[str]], list[list[Mention]]]) -> Scores:
    """MeSH's convention for hedges: a present or probable finding is positive, a possible one is not."""
    reports = list(reports)
    return _scores(reports, [probable_positives(m) for m in mentions_many([r.text for r in reports])])


def _scores(reports: list[RealReport], calls: list[frozenset[str]]) -> Scores:
    per_key = {}
    for key in SCORED_KEYS:
        tp = fp = fn = 0
        for report, positives in zip(reports, calls):
            called = key in positives
            true = key in report.truth
            tp += called and true
            fp += called and not true
            fn += true and not called
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        per_key[key] = (f1, tp, fp, fn)
    return Scores(per_key)
