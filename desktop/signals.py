"""The bridge from the node's, the drafting queue's and the outbox's events (published on their own
threads) to Qt signals, which Qt delivers on the GUI thread (queued connections)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class EventBridge(QObject):
    instance_stored = Signal(str)  # study uid
    study_stable = Signal(str)
    draft_started = Signal(str, str)  # study uid, model
    draft_piece = Signal(str, str, str)  # study uid, section, text
    draft_finished = Signal(str, int)  # study uid, draft id
    draft_failed = Signal(str, str)  # study uid, reason
    report_sent = Signal(str, bool, str)  # study uid, ok, destination or error

    def __init__(self, workstation, parent: QObject | None = None) -> None:
        super().__init__(parent)
        node, drafts, outbox = workstation.node_events, workstation.draft_events, workstation.outbox.events
        self._unsubscribe = [
            node.instance_stored.subscribe(lambda e: self.instance_stored.emit(e.study_uid)),
            node.study_stable.subscribe(lambda e: self.study_stable.emit(e.study_uid)),
            drafts.started.subscribe(lambda e: self.draft_started.emit(e.study_uid, e.model)),
            drafts.piece.subscribe(lambda e: self.draft_piece.emit(e.study_uid, e.section, e.text)),
            drafts.finished.subscribe(lambda e: self.draft_finished.emit(e.study_uid, e.draft_id)),
            drafts.failed.subscribe(lambda e: self.draft_failed.emit(e.study_uid, e.reason)),
            outbox.sent.subscribe(lambda e: self.report_sent.emit(
                e.study_uid, e.ok, e.destination if e.ok else e.error)),
        ]

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
