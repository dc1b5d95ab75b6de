"""Train / validation / test split of the site dataset, by patient.

Each patient draws a number in [0, 1) from a keyed hash of their original Patient ID
(`Deidentifier.patient`): below the test share they are a test patient, below test + validation a
validation patient, else a training patient. A patient's split thus stays the same when the dataset grows,
so a later, larger dataset never trains on an earlier test patient, and all studies of a patient share one
split. Small sets are then evened out: there is always a training patient, and from 3 patients on a test
and a validation patient as well (where their share is not 0), moved from the largest split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SPLITS = ("train", "validation", "test")
MIN_PATIENTS_FOR_EVERY_SPLIT = 3


class SplitError(ValueError):
    """Unusable split shares."""


@dataclass(frozen=True)
class SplitShares:
    validation: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        for name in ("validation", "test"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise SplitError(f"the {name} share must lie in [0, 1), got {getattr(self, name)}")
        if self.validation + self.test >= 1.0:
            raise SplitError(f"validation + test shares must leave some training data, got "
                             f"{self.validation} + {self.test}")


def split_of(draw: float, shares: SplitShares) -> str:
    if draw < shares.test:
        return "test"
    return "validation" if draw < shares.test + shares.validation else "train"


def assign_splits(draws: Mapping[str, float], shares: SplitShares) -> dict[str, str]:
    """The split of each patient, given each patient's draw in [0, 1)."""
    splits = {patient: split_of(draw, shares) for patient, draw in draws.items()}
    if not draws:
        return splits
    members = {name: sorted((p for p, s in splits.items() if s == name), key=lambda p: (draws[p], p))
               for name in SPLITS}
    if not members["train"]:
        _move(members, splits, draws, "train")
    if len(draws) >= MIN_PATIENTS_FOR_EVERY_SPLIT:
        for name, share in (("test", shares.test), ("validation", shares.validation)):
            if share > 0 and not members[name]:
                _move(members, splits, draws, name)
    return splits


def _move(members: dict[str, list[str]], splits: dict[str, str], draws: Mapping[str, float], to: str) -> None:
    """Move one patient into the empty split `to` from the largest split that keeps one; from train the
    patient with the lowest draw (nearest the test and validation bands), else the highest (nearest train)."""
    donors = [name for name in SPLITS if name != to and len(members[name]) > 1] \
        or [name for name in SPLITS if name != to and members[name] and to == "train"]
    if not donors:
        return
    donor = max(donors, key=lambda name: (len(members[name]), name == "train"))
    patient = members[donor].pop(0 if donor == "train" else -1)
    members[to].append(patient)
    members[to].sort(key=lambda p: (draws[p], p))
    splits[patient] = to
