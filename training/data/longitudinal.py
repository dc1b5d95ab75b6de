"""Longitudinal phantoms: the same patient at an earlier date, and how each finding changed since.

`plan_prior(current, config, sampling)` derives the prior study of a planned study, or None (a share of
studies has no prior). The prior has the patient's identity and anatomy (`render_prior` draws it with the
current study's anatomy stream) at a date `days_before` earlier, its own StudyInstanceUID and accession,
and findings that explain the current ones: each current pathology is new, increased, decreased or
unchanged since the prior; a pathology only the prior has is resolved; devices stay, move, are newly
placed or are removed. `PriorSpec.change` maps finding keys to those five words; a device that only moved
leaves `support_device` out of it (the five words do not describe a move) and is told by `device_change`.

All random draws come from streams of (seed, index) that the study without priors never uses, so asking for
priors leaves every current study's images as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from training.data.dicom_writer import ImageEncoding, StudyIdentity, deterministic_uid
from training.data.findings import SEVERITIES, Finding, FindingSampling, compatible, sample_pathology
from training.data.render import Anatomy, render_frontal, render_lateral

NEW, INCREASED, DECREASED, UNCHANGED, RESOLVED = "new", "increased", "decreased", "unchanged", "resolved"
CHANGES = (NEW, INCREASED, DECREASED, UNCHANGED, RESOLVED)
MOVED, REMOVED, PLACED, STAYED = "moved", "removed", "new", "unchanged"
MOVABLE_DEVICES = ("endotracheal_tube", "central_venous_catheter", "nasogastric_tube")
NODULE_SIZES = {"mild": (12, 18), "moderate": (18, 29), "severe": (35, 70)}
CTR_RANGES = {"mild": (0.53, 0.57), "moderate": (0.58, 0.63), "severe": (0.64, 0.70)}
WORDINGS = ("varied", "house")
_PRIOR_SALT = 0x5052494F52  # "PRIOR": keeps these streams apart from the study's own


class PriorError(ValueError):
    """Bad options for the longitudinal phantoms."""


def check_wording(wording: str) -> None:
    if wording not in WORDINGS:
        raise PriorError(f"wording must be one of {', '.join(WORDINGS)}, got {wording!r}")


@dataclass(frozen=True)
class PriorSampling:
    """How priors are drawn.

    no_prior_fraction: share of studies without a prior.
    min_days / max_days: how much earlier the prior was taken.
    change_weights: relative frequency of new / increased / decreased / unchanged for a current pathology
        (increased needs a current severity above mild, decreased one below severe).
    resolved_probability: chance that the prior had one more pathology, resolved since.
    device_weights: for a study with devices, how they changed: unchanged, moved, new (all placed since).
    removed_device_probability: chance that a study without devices had one on the prior, removed since.
    wording: how the comparison reports say it (`training.data.comparison_reports`): "varied" (radiologists'
        phrasing, the references a model is scored against) or "house" (every finding first, its change after
        it, in one wording per change: training targets for a model that compares with the prior).
    """

    no_prior_fraction: float = 0.28
    min_days: int = 1
    max_days: int = 3 * 365
    change_weights: dict[str, float] = dataclasses.field(default_factory=lambda: {
        NEW: 0.25, INCREASED: 0.2, DECREASED: 0.2, UNCHANGED: 0.35})
    resolved_probability: float = 0.3
    device_weights: dict[str, float] = dataclasses.field(default_factory=lambda: {
        STAYED: 0.5, MOVED: 0.25, PLACED: 0.25})
    removed_device_probability: float = 0.2
    wording: str = "varied"

    def __post_init__(self) -> None:
        check_wording(self.wording)
        for name in ("no_prior_fraction", "resolved_probability", "removed_device_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise PriorError(f"{name} must lie in 0..1, got {getattr(self, name)}")
        if not 1 <= self.min_days <= self.max_days:
            raise PriorError(f"need 1 <= min_days <= max_days, got {self.min_days}, {self.max_days}")
        for name, allowed in (("change_weights", {NEW, INCREASED, DECREASED, UNCHANGED}),
                              ("device_weights", {STAYED, MOVED, PLACED})):
            weights = getattr(self, name)
            if set(weights) - allowed or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise PriorError(f"{name}: keys among {sorted(allowed)}, non-negative, positive sum")


@dataclass(frozen=True)
class PriorSpec:
    """The prior study of one study and what changed since."""

    findings: tuple[Finding, ...]
    change: tuple[tuple[str, str], ...]          # (finding key, one of CHANGES), in report order
    device_change: tuple[tuple[str, str], ...]   # (device, moved | removed | new | unchanged)
    days_before: int
    frontal_view: str
    lateral: bool
    encodings: tuple[ImageEncoding, ...]
    identity: StudyIdentity

    @property
    def date_text(self) -> str:
        """The prior's date as reports and the manifest write it (YYYY-MM-DD)."""
        return datetime.strptime(self.identity.study_date, "%Y%m%d").date().isoformat()

    def change_of(self, kind: str) -> str | None:
        return dict(self.change).get(kind)

    def prior_of(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind and kind != "support_device"), None)


def prior_streams(seed: int, index: int) -> dict[str, np.random.Generator]:
    names = ("plan", "change", "frontal", "lateral", "report")
    children = np.random.SeedSequence([int(seed), int(index), _PRIOR_SALT]).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def plan_prior(seed: int, index: int, current_findings: tuple[Finding, ...], identity: StudyIdentity,
               modality: str, config_sampling: FindingSampling, sampling: PriorSampling,
               lateral_fraction: float, monochrome1_fraction: float) -> PriorSpec | None:
    """The prior of study (seed, index) with `current_findings`, or None for a study without one."""
    streams = prior_streams(seed, index)
    rng = streams["plan"]
    if rng.random() < sampling.no_prior_fraction:
        return None
    days = int(rng.integers(sampling.min_days, sampling.max_days + 1))
    frontal = "AP" if rng.random() < 0.3 else "PA"
    lateral = frontal == "PA" and bool(rng.random() < lateral_fraction)
    encodings = tuple(ImageEncoding(modality=modality,
                                    photometric="MONOCHROME1" if rng.random() < monochrome1_fraction
                                    else "MONOCHROME2",
                                    bits_stored=int(rng.choice([12, 12, 14, 15, 16])), transfer_syntax="explicit")
                      for _ in range(2 if lateral else 1))
    prior_identity = _prior_identity(rng, seed, index, identity, days, frontal, lateral)
    findings, change, device_change = derive_prior_findings(streams["change"], current_findings,
                                                            config_sampling, sampling)
    return PriorSpec(findings=findings, change=change, device_change=device_change, days_before=days,
                     frontal_view=frontal, lateral=lateral, encodings=encodings, identity=prior_identity)


def _prior_identity(rng: np.random.Generator, seed: int, index: int, current: StudyIdentity, days: int,
                    frontal: str, lateral: bool) -> StudyIdentity:
    day = datetime.strptime(current.study_date, "%Y%m%d").date() - timedelta(days=days)
    seconds = int(rng.integers(7 * 3600, 22 * 3600))
    views = f"{frontal} AND LATERAL" if lateral else frontal
    return dataclasses.replace(
        current,
        study_uid=deterministic_uid("raddraft-phantom-prior-study", seed, index),
        study_date=day.strftime("%Y%m%d"),
        study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        accession=f"P{seed % 1000:03d}{index:07d}",
        study_id=f"{index + 1}P",
        description=f"XR CHEST {views}",
    )


def derive_prior_findings(rng: np.random.Generator, current: tuple[Finding, ...], config_sampling: FindingSampling,
                          sampling: PriorSampling
                          ) -> tuple[tuple[Finding, ...], tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """The prior's findings, the change of each finding key, and what each device did."""
    prior: list[Finding] = []
    change: list[tuple[str, str]] = []
    for finding in (f for f in current if f.kind != "support_device"):
        how = _pick_change(rng, finding, sampling)
        change.append((finding.kind, how))
        if how != NEW:
            prior.append(_earlier(rng, finding, how))
    resolved = _resolved_finding(rng, current, prior, config_sampling, sampling)
    if resolved is not None:
        prior.append(resolved)
        change.append((resolved.kind, RESOLVED))
    devices, device_change, device_label = _prior_devices(rng, current, sampling)
    prior += devices
    if device_label is not None:
        change.append(("support_device", device_label))
    return tuple(prior), tuple(change), tuple(device_change)


def _pick_change(rng: np.random.Generator, finding: Finding, sampling: PriorSampling) -> str:
    allowed = [NEW, UNCHANGED] if finding.hedged else [NEW, UNCHANGED, INCREASED, DECREASED]
    if finding.severity == "mild":
        allowed = [c for c in allowed if c != INCREASED]
    if finding.severity == "severe":
        allowed = [c for c in allowed if c != DECREASED]
    weights = np.array([sampling.change_weights.get(c, 0.0) for c in allowed])
    if weights.sum() <= 0:
        return allowed[0]
    return allowed[int(rng.choice(len(allowed), p=weights / weights.sum()))]


def _earlier(rng: np.random.Generator, finding: Finding, how: str) -> Finding:
    """The finding as the prior showed it: the same, one severity step smaller (increased since) or larger."""
    if how == UNCHANGED:
        return finding
    step = -1 if how == INCREASED else 1
    severity = SEVERITIES[SEVERITIES.index(finding.severity) + step]
    replaced: dict[str, object] = {"severity": severity}
    if finding.kind == "nodule" and finding.size_mm is not None:
        low, high = NODULE_SIZES[severity]
        replaced["size_mm"] = float(int(rng.uniform(low, high)))
    if finding.kind == "cardiomegaly" and finding.ctr is not None:
        replaced["ctr"] = round(float(rng.uniform(*CTR_RANGES[severity])), 3)
    return dataclasses.replace(finding, **replaced)


def _resolved_finding(rng: np.random.Generator, current: tuple[Finding, ...], prior: list[Finding],
                      config_sampling: FindingSampling, sampling: PriorSampling) -> Finding | None:
    if rng.random() >= sampling.resolved_probability:
        return None
    kinds = {f.kind for f in current} | {f.kind for f in prior}
    # a heart does not shrink to normal between radiographs, nor does a mass vanish: those are not resolved
    candidates = [k for k in ("pleural_effusion", "pneumothorax", "consolidation", "edema", "atelectasis")
                  if k not in kinds and config_sampling.weights.get(k, 0) > 0]
    if not candidates:
        return None
    kind = candidates[int(rng.integers(len(candidates)))]
    finding = dataclasses.replace(sample_pathology(rng, kind, config_sampling), hedged=False)
    clash_free = compatible([*prior, *(f for f in current if f.kind != "support_device"), finding])
    return finding if finding in clash_free else None


def _prior_devices(rng: np.random.Generator, current: tuple[Finding, ...], sampling: PriorSampling
                   ) -> tuple[list[Finding], list[tuple[str, str]], str | None]:
    devices = [f for f in current if f.kind == "support_device"]
    if not devices:
        if rng.random() >= sampling.removed_device_probability:
            return [], [], None
        removable = ("endotracheal_tube", "central_venous_catheter", "nasogastric_tube")
        device = removable[int(rng.integers(len(removable)))]
        return [Finding("support_device", device=device, severity="mild")], [(device, REMOVED)], RESOLVED
    options = [c for c in (STAYED, MOVED, PLACED)
               if c != MOVED or any(d.device in MOVABLE_DEVICES for d in devices)]
    weights = np.array([sampling.device_weights.get(c, 0.0) for c in options])
    how = options[int(rng.choice(len(options), p=weights / weights.sum()))] if weights.sum() > 0 else STAYED
    if how == PLACED:
        return [], [(str(d.device), PLACED) for d in devices], NEW
    if how == STAYED:
        return list(devices), [(str(d.device), STAYED) for d in devices], UNCHANGED
    moved = next(d for d in devices if d.device in MOVABLE_DEVICES)
    return list(devices), [(str(d.device), MOVED if d is moved else STAYED) for d in devices], None


def render_prior(prior: PriorSpec, seed: int, index: int, anatomy: Anatomy, size: int
                 ) -> list[tuple[str, np.ndarray]]:
    """The (view, 0..1 image) pairs of the prior, frontal first, drawn on the patient's own anatomy."""
    streams = prior_streams(seed, index)
    views = [(prior.frontal_view, render_frontal(anatomy, prior.findings, size, streams["frontal"]))]
    if prior.lateral:
        views.append(("LL", render_lateral(anatomy, prior.findings, size, streams["lateral"])))
    return views
