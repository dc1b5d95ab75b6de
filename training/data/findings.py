"""Structured ground truth of a phantom study: which findings, where, how severe; and their sampling.

A `Finding` is what the renderer draws and what the report writer describes. `sample_findings` draws a
plausible combination for one study from a `FindingSampling` (all probabilities are options); callers that
need a specific picture (tests, the montage) build `Finding`s directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from training.vocabulary import ABSENT, FINDING_KEYS, NO_FINDING, PATHOLOGY_KEYS, PRESENT

SIDES = ("right", "left", "bilateral")
ZONES = ("upper", "middle", "lower")
SEVERITIES = ("mild", "moderate", "severe")
DEVICES = ("endotracheal_tube", "central_venous_catheter", "nasogastric_tube", "pacemaker")
# Kinds that sit in one lung (or both): they need a side.
SIDED = ("pleural_effusion", "pneumothorax", "consolidation", "nodule", "atelectasis")
ZONED = ("consolidation", "nodule", "atelectasis")


class FindingError(ValueError):
    """A finding specification is not valid (unknown kind, side, zone, severity, device...)."""


@dataclass(frozen=True)
class Finding:
    """One finding in one study.

    kind: one of `training.vocabulary.FINDING_KEYS`.
    side: "right" | "left" | "bilateral" (patient side) for lung/pleural findings, else None.
    zone: "upper" | "middle" | "lower" for consolidation, nodule and atelectasis, else None.
    severity: "mild" | "moderate" | "severe" (for a nodule: mild/moderate = nodule, severe = mass).
    size_mm: the diameter of a nodule or mass.
    ctr: the cardiothoracic ratio drawn for cardiomegaly.
    device: for support_device, one of `DEVICES`.
    hedged: the reference report states it with uncertainty ("possible ...", "may represent ...").
    """

    kind: str
    side: str | None = None
    zone: str | None = None
    severity: str = "moderate"
    size_mm: float | None = None
    ctr: float | None = None
    device: str | None = None
    hedged: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KEYS:
            raise FindingError(f"unknown finding kind {self.kind!r}; known: {', '.join(FINDING_KEYS)}")
        if self.severity not in SEVERITIES:
            raise FindingError(f"{self.kind}: severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.kind in SIDED and self.side not in SIDES:
            raise FindingError(f"{self.kind}: side must be one of {SIDES}, got {self.side!r}")
        if self.kind in ZONED and self.zone not in ZONES:
            raise FindingError(f"{self.kind}: zone must be one of {ZONES}, got {self.zone!r}")
        if self.kind == "support_device" and self.device not in DEVICES:
            raise FindingError(f"support_device: device must be one of {DEVICES}, got {self.device!r}")
        if self.kind == "nodule" and self.side == "bilateral":
            raise FindingError("nodule: side must be right or left")
        if self.size_mm is not None and not 3.0 <= self.size_mm <= 120.0:
            raise FindingError(f"{self.kind}: size_mm must lie in 3..120, got {self.size_mm}")
        if self.ctr is not None and not 0.3 <= self.ctr <= 0.8:
            raise FindingError(f"{self.kind}: ctr must lie in 0.3..0.8, got {self.ctr}")

    def sides(self) -> tuple[str, ...]:
        return ("right", "left") if self.side == "bilateral" else ((self.side,) if self.side else ())

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v is not False}


def labels_from_findings(findings: tuple[Finding, ...] | list[Finding]) -> dict[str, str]:
    """Ground-truth labels: every key of `LABEL_KEYS`, "present" or "absent"."""
    kinds = {f.kind for f in findings}
    labels = {key: PRESENT if key in kinds else ABSENT for key in FINDING_KEYS}
    labels[NO_FINDING] = ABSENT if kinds & set(PATHOLOGY_KEYS) else PRESENT
    return labels


@dataclass(frozen=True)
class FindingSampling:
    """How `sample_findings` draws the findings of one study.

    normal_fraction: share of studies with no pathology (they may still carry a device).
    weights: relative frequency of each pathology among abnormal studies.
    max_pathologies: an abnormal study has 1..max_pathologies findings (fewer are likelier).
    device_probability: chance of at least one support device (higher in AP, i.e. bedside, studies).
    hedge_probability: chance that a mild finding is reported with uncertainty.
    """

    normal_fraction: float = 0.3
    weights: dict[str, float] = field(default_factory=lambda: {
        "cardiomegaly": 1.0, "pleural_effusion": 1.0, "pneumothorax": 0.7, "consolidation": 1.0,
        "nodule": 0.8, "edema": 0.7, "atelectasis": 0.9,
    })
    max_pathologies: int = 3
    device_probability: float = 0.15
    device_probability_ap: float = 0.6
    hedge_probability: float = 0.25

    def __post_init__(self) -> None:
        for name in ("normal_fraction", "device_probability", "device_probability_ap", "hedge_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FindingError(f"{name} must lie in 0..1, got {value}")
        unknown = set(self.weights) - set(PATHOLOGY_KEYS)
        if unknown:
            raise FindingError(f"weights: unknown pathology {sorted(unknown)[0]!r}")
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise FindingError("weights must be non-negative with a positive sum")
        if self.max_pathologies < 1:
            raise FindingError(f"max_pathologies must be >= 1, got {self.max_pathologies}")


def sample_findings(rng: np.random.Generator, sampling: FindingSampling, *, ap_view: bool) -> tuple[Finding, ...]:
    """Draw the findings of one study; pathologies first, then devices."""
    findings: list[Finding] = []
    if rng.random() >= sampling.normal_fraction:
        kinds = [k for k, w in sampling.weights.items() if w > 0]
        p = np.array([sampling.weights[k] for k in kinds], dtype=float)
        count = 1 + int(rng.choice(sampling.max_pathologies, p=_decreasing(sampling.max_pathologies)))
        chosen = rng.choice(len(kinds), size=min(count, len(kinds)), replace=False, p=p / p.sum())
        for i in sorted(chosen):
            findings.append(_sample_one(rng, kinds[int(i)], sampling))
        findings = _make_compatible(findings)
    device_p = sampling.device_probability_ap if ap_view else sampling.device_probability
    if rng.random() < device_p:
        n_devices = 1 + int(rng.random() < 0.35)
        for device in rng.choice(len(DEVICES), size=n_devices, replace=False, p=[0.4, 0.3, 0.2, 0.1]):
            findings.append(Finding("support_device", device=DEVICES[int(device)], severity="mild"))
    return tuple(findings)


def sample_pathology(rng: np.random.Generator, kind: str, sampling: FindingSampling) -> Finding:
    """One finding of `kind` drawn as `sample_findings` draws it (severity, side, zone, size, hedge)."""
    return _sample_one(rng, kind, sampling)


def compatible(findings: list[Finding]) -> list[Finding]:
    """The findings a report would describe as they are (see `_make_compatible`)."""
    return _make_compatible(findings)


def _decreasing(n: int) -> np.ndarray:
    w = 0.5 ** np.arange(n)
    return w / w.sum()


def _sample_one(rng: np.random.Generator, kind: str, sampling: FindingSampling) -> Finding:
    severity = str(rng.choice(SEVERITIES, p=[0.4, 0.4, 0.2]))
    hedged = severity == "mild" and rng.random() < sampling.hedge_probability
    side = str(rng.choice(("right", "left")))
    if kind == "cardiomegaly":
        ctr = {"mild": (0.53, 0.57), "moderate": (0.58, 0.63), "severe": (0.64, 0.70)}[severity]
        return Finding(kind, severity=severity, ctr=round(float(rng.uniform(*ctr)), 3), hedged=hedged)
    if kind == "edema":
        return Finding(kind, side="bilateral", severity=severity, hedged=hedged)
    if kind == "pleural_effusion":
        if rng.random() < 0.3:
            side = "bilateral"
        return Finding(kind, side=side, severity=severity, hedged=hedged)
    if kind == "pneumothorax":
        return Finding(kind, side=side, severity=severity, hedged=hedged)
    if kind == "consolidation":
        zone = str(rng.choice(ZONES, p=[0.25, 0.3, 0.45]))
        if severity == "severe" and rng.random() < 0.3:
            side = "bilateral"
        return Finding(kind, side=side, zone=zone, severity=severity, hedged=hedged)
    if kind == "nodule":
        zone = str(rng.choice(ZONES, p=[0.45, 0.35, 0.2]))
        size = {"mild": (12, 18), "moderate": (18, 29), "severe": (35, 70)}[severity]
        return Finding(kind, side=side, zone=zone, severity=severity,
                       size_mm=float(int(rng.uniform(*size))), hedged=hedged)
    if kind == "atelectasis":
        zone = str(rng.choice(ZONES, p=[0.15, 0.15, 0.7]))
        return Finding(kind, side=side, zone=zone, severity=severity, hedged=hedged)
    raise FindingError(f"cannot sample {kind!r}")


def _make_compatible(findings: list[Finding]) -> list[Finding]:
    """Drop combinations a report would describe differently (a pneumothorax and an effusion on the same
    side are a hydropneumothorax): keep the first of each clash."""
    kept: list[Finding] = []
    for f in findings:
        clash = any(
            {f.kind, k.kind} == {"pleural_effusion", "pneumothorax"} and set(f.sides()) & set(k.sides())
            for k in kept
        )
        if not clash:
            kept.append(f)
    return kept
