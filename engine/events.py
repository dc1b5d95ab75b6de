"""Events of the drafting queue; the desktop subscribes to show progress and streamed text."""

from __future__ import annotations

from dataclasses import dataclass

from dicom_node.events import Topic


@dataclass(frozen=True)
class DraftStarted:
    study_uid: str
    model: str


@dataclass(frozen=True)
class DraftPiece:
    study_uid: str
    section: str
    text: str


@dataclass(frozen=True)
class DraftFinished:
    study_uid: str
    draft_id: int
    model: str
    total_s: float
    stale: bool


@dataclass(frozen=True)
class DraftFailed:
    study_uid: str
    reason: str


class DraftEvents:
    def __init__(self) -> None:
        self.started: Topic[DraftStarted] = Topic("draft_started")
        self.piece: Topic[DraftPiece] = Topic("draft_piece")
        self.finished: Topic[DraftFinished] = Topic("draft_finished")
        self.failed: Topic[DraftFailed] = Topic("draft_failed")
