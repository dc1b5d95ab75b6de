"""What the views read and write besides the workstation's own calls: the autosaved unsigned text, the images
changed after signing, the reading in progress, and whether fine-tuning runs here.

The main window talks to a `ReadingData`. `LocalReadingData` is the standalone workstation's, over its
store's index (the behaviour the app always had); `desktop.remote.SiteWorkstation` is its own, over the
site server's API. `reading_data_of(workstation)` picks the one that belongs to the workstation.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, Protocol

from desktop.finetune_run import training_unavailable
from dicom_node.drafts import WorkingDraft, save_working_draft, working_draft
from dicom_node.reports import changed_after_signing, close_readings

log = logging.getLogger(__name__)


class ReadingData(Protocol):
    def working_draft(self, study_uid: str) -> WorkingDraft | None: ...

    def save_working_draft(self, study_uid: str, sections: dict[str, Any]) -> WorkingDraft | None: ...

    def changed_after_signing(self, study_uid: str) -> list: ...

    def close_readings(self) -> None: ...

    def training_unavailable(self) -> str | None: ...

    def may_release_claims(self) -> bool: ...

    def release_claim(self, study_uid: str) -> None: ...


class LocalReadingData:
    """Over the workstation's own store (`raddraft.workstation.Workstation`)."""

    def __init__(self, workstation) -> None:
        self._ws = workstation

    def _reader(self) -> str:
        return self._ws.config.reading.radiologist

    def working_draft(self, study_uid: str) -> WorkingDraft | None:
        return working_draft(self._ws.store.index, study_uid)

    def save_working_draft(self, study_uid: str, sections: dict[str, Any]) -> WorkingDraft | None:
        return save_working_draft(self._ws.store.index, study_uid, sections, saved_by=self._reader())

    def changed_after_signing(self, study_uid: str) -> list:
        return changed_after_signing(self._ws.store.index, study_uid)

    def close_readings(self) -> None:
        """Closing: nothing is "in progress" here any more."""
        if not self._reader():
            return
        try:
            close_readings(self._ws.store.index, self._reader())
        except sqlite3.Error as error:  # the store closed first: the next opening replaces the reading
            log.warning("could not clear the reading in progress: %s", error)

    def training_unavailable(self) -> str | None:
        return training_unavailable()

    def may_release_claims(self) -> bool:
        return False  # one workstation: a reading in progress ends when its app closes

    def release_claim(self, study_uid: str) -> None:
        raise PermissionError("a standalone workstation has no claims to release")


def reading_data_of(workstation) -> ReadingData:
    """The workstation's own reading data when it brings one (the site server's), else its store's."""
    own = getattr(workstation, "reading_data", None)
    return own if own is not None else LocalReadingData(workstation)
