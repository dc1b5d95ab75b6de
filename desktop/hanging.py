"""The chest hanging protocol for reading against a prior, and the prior as the viewer loads it.

Without a prior the viewer hangs the study's frontal | lateral. With one it hangs current | prior, one view
at a time: first the frontals, then the laterals (the order a chest reader compares them in), each side
falling back to its frontal (or first series) when it has no lateral.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dicom_node.index import InstanceRow, SeriesRow
from dicom_node.reports import format_date

FRONTALS, LATERALS = "frontals", "laterals"


@dataclass(frozen=True)
class HangingStep:
    """One screen of the comparison: which stack of the current and of the prior study hangs."""

    name: str  # FRONTALS or LATERALS
    current: int
    prior: int


def _first(views: list[str], wanted: str) -> int | None:
    return next((i for i, view in enumerate(views) if view == wanted), None)


def chest_hanging(current_views: list[str], prior_views: list[str]) -> list[HangingStep]:
    """The steps for stacks of these views ("frontal", "lateral", "": as `desktop.viewer.stacks_of` orders
    them): current frontal | prior frontal, then current lateral | prior lateral when either has one; []
    when either study has no images."""
    if not current_views or not prior_views:
        return []
    front = (_first(current_views, "frontal") or 0, _first(prior_views, "frontal") or 0)
    steps = [HangingStep(FRONTALS, *front)]
    side = (_first(current_views, "lateral"), _first(prior_views, "lateral"))
    if side != (None, None):
        steps.append(HangingStep(LATERALS, front[0] if side[0] is None else side[0],
                                 front[1] if side[1] is None else side[1]))
    return steps


@dataclass(frozen=True)
class LoadedPrior:
    """A `dicom_node.priors.PriorStudy` with the paths of its images (what `desktop.viewer.stacks_of` reads)."""

    prior: object  # dicom_node.priors.PriorStudy
    paths: tuple[Path, ...]
    series: tuple[SeriesRow, ...] = ()

    @property
    def instances(self) -> tuple[InstanceRow, ...]:
        return tuple(self.prior.instances)

    @property
    def study_uid(self) -> str:
        return self.prior.study_uid

    @property
    def date(self) -> str:
        return format_date(self.prior.study_date) or "date unknown"

    @property
    def title(self) -> str:
        """"2024-03-02 · CR chest": what the selector lists."""
        described = " ".join(x for x in (self.prior.modality, self.prior.description) if x)
        return f"{self.date} · {described}" if described else self.date


@dataclass(frozen=True)
class PriorsOfStudy:
    """What the viewer and the prior report show for one study: its priors, newest first, and, when it has
    none, why (`dicom_node.priors.prior_status`)."""

    study_uid: str
    priors: tuple[LoadedPrior, ...]
    state: str = ""
    reason: str = ""


def load_priors(workstation, study_uid: str) -> PriorsOfStudy:
    """On a worker thread: the study's priors (`Workstation.priors`) with the paths of their images in the
    workstation's store, or the site server's with their images cached (desktop.remote `loaded_priors`)."""
    over_the_api = getattr(workstation, "loaded_priors", None)
    if over_the_api is not None:
        return over_the_api(study_uid)
    store = getattr(workstation, "store", None)
    if store is None or not hasattr(workstation, "priors"):
        return PriorsOfStudy(study_uid, (), "disabled", "this workstation has no priors to show")
    priors, (state, reason) = workstation.priors(study_uid)
    loaded = tuple(LoadedPrior(prior, tuple(store.path_of(row) for row in prior.instances),
                               tuple(store.index.series_of(prior.study_uid)))
                   for prior in priors)
    return PriorsOfStudy(study_uid, loaded, state, reason)
