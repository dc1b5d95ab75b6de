"""Query/retrieve SCU for priors: C-FIND (Study Root) of a patient's studies, C-MOVE or C-GET of one study.

Every call opens its own association and gives up at its deadline (the PACS may be down, slow or
black-holed): `PacsUnreachable` when no association could be made (refused, rejected, no common context),
`PacsTimeout` when the deadline passed, `PacsRefused` when the PACS answered the request with a failure.
A C-GET stores what arrives straight into the store (as the node stores a C-STORE), so it needs no
registration of RadDraft at the PACS; a C-MOVE asks the PACS to send the study to our own AE title,
which the node receives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom_node.errors import NodeError, StoreWriteError
from dicom_node.settings import PacsSettings
from dicom_node.store import ReceivedInstance, Store

log = logging.getLogger(__name__)

# What a prior can hold: radiographs (and what a chest prior may be, CT), secondary captures, the SRs.
RETRIEVED_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
)
# The transfer syntaxes a C-GET offers for them: the uncompressed ones and those radiographs are archived in.
# Not all that the node accepts: Orthanc 1.10 (dcmtk) leaves an A-ASSOCIATE-RQ with all 60 per context unanswered.
RETRIEVED_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.5",
)
_PENDING = frozenset({0xFF00, 0xFF01})
_CANCELLED = 0xFE00


class QueryRetrieveError(NodeError):
    """Base of the SCU's errors; `state` is the prior lookup's outcome it stands for."""

    state = "failed"


class PacsUnreachable(QueryRetrieveError):
    state = "pacs-unreachable"


class PacsTimeout(QueryRetrieveError):
    state = "timeout"


class PacsRefused(QueryRetrieveError):
    state = "failed"


@dataclass(frozen=True)
class FoundStudy:
    """One C-FIND answer at study level."""

    study_uid: str
    study_date: str
    study_time: str
    modalities: tuple[str, ...]
    description: str
    num_instances: int | None
    patient_id: str = ""


@dataclass(frozen=True)
class RetrieveResult:
    completed: int
    failed: int
    warning: int
    status: int


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def found_study(identifier: Dataset) -> FoundStudy:
    modalities = identifier.get("ModalitiesInStudy", "") or ""
    if isinstance(modalities, str):
        modalities = [m for m in modalities.split("\\") if m]
    count = identifier.get("NumberOfStudyRelatedInstances", None)
    try:
        num = int(count) if count not in (None, "") else None
    except (TypeError, ValueError):
        num = None
    return FoundStudy(_text(identifier, "StudyInstanceUID"), _text(identifier, "StudyDate"),
                      _text(identifier, "StudyTime"), tuple(str(m).upper() for m in modalities),
                      _text(identifier, "StudyDescription"), num, _text(identifier, "PatientID"))


class QueryRetrieveClient:
    """The SCU against `settings`' PACS; `move_destination` is our own AE title (C-MOVE's destination)."""

    def __init__(self, settings: PacsSettings, *, move_destination: str, store: Store | None = None) -> None:
        self._settings = settings
        self._destination = move_destination
        self._store = store

    # -- C-FIND ------------------------------------------------------------------------------------
    def find_studies(self, patient_id: str, before_date: str = "") -> list[FoundStudy]:
        """The patient's studies (on or before `before_date` when given, as DICOM range matching). Only answers
        for exactly this Patient ID: '*' or '?' in an ID are wildcards to the PACS, and match other patients."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = patient_id
        query.StudyInstanceUID = ""
        query.StudyDate = f"-{before_date}" if before_date else ""
        query.StudyTime = ""
        query.ModalitiesInStudy = ""
        query.StudyDescription = ""
        query.NumberOfStudyRelatedInstances = ""
        found = [found_study(ds) for ds in self._find(query)]
        wildcards = bool(set("*?") & set(patient_id))
        return [study for study in found if study.patient_id.strip() == patient_id.strip()
                or (not study.patient_id and not wildcards)]

    def series_body_parts(self, study_uid: str) -> set[str]:
        """Body Part Examined of the study's series, upper case ('' where a series has none)."""
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = ""
        query.Modality = ""
        query.BodyPartExamined = ""
        return {_text(ds, "BodyPartExamined").strip().upper() for ds in self._find(query)}

    def _find(self, query: Dataset) -> list[Dataset]:
        timeout = self._settings.find_timeout_s
        deadline = time.monotonic() + timeout
        answers: list[Dataset] = []
        with self._association(StudyRootQueryRetrieveInformationModelFind, timeout, "C-FIND") as assoc:
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                _check_deadline(assoc, deadline, timeout, "C-FIND")
                code = _status_code(status, assoc, "C-FIND")
                if code in _PENDING:
                    if identifier is not None:
                        answers.append(identifier)
                elif code != 0x0000:
                    raise PacsRefused(f"C-FIND failed with status 0x{code:04X}")
        return answers

    # -- C-MOVE / C-GET ----------------------------------------------------------------------------
    def retrieve(self, study_uid: str) -> RetrieveResult:
        """The whole study, by the configured method; returns once the PACS reports it sent."""
        if self._settings.retrieve == "get":
            return self._get(study_uid)
        return self._move(study_uid)

    def _move(self, study_uid: str) -> RetrieveResult:
        timeout = self._settings.move_timeout_s
        deadline = time.monotonic() + timeout
        with self._association(StudyRootQueryRetrieveInformationModelMove, timeout, "C-MOVE") as assoc:
            responses = assoc.send_c_move(_study_identifier(study_uid), self._destination,
                                          StudyRootQueryRetrieveInformationModelMove)
            return _final_result(assoc, responses, deadline, timeout, "C-MOVE")

    def _get(self, study_uid: str) -> RetrieveResult:
        if self._store is None:
            raise QueryRetrieveError("C-GET needs the store to write into")
        timeout = self._settings.move_timeout_s
        deadline = time.monotonic() + timeout
        with self._association(StudyRootQueryRetrieveInformationModelGet, timeout, "C-GET",
                               storage=True) as assoc:
            responses = assoc.send_c_get(_study_identifier(study_uid), StudyRootQueryRetrieveInformationModelGet)
            return _final_result(assoc, responses, deadline, timeout, "C-GET")

    def _store_instance(self, event: evt.Event) -> int:
        """A C-STORE sub-operation of our C-GET: stored as received, like any instance."""
        try:
            part10 = bytes(event.encoded_dataset(include_meta=True))
            self._store.put(ReceivedInstance.from_part10(part10, calling_ae=self._settings.ae_title))  # type: ignore[union-attr]
        except StoreWriteError:
            log.exception("an instance retrieved by C-GET could not be stored")
            return 0xA700
        except Exception:  # a dataset we cannot read: refuse it, keep the rest of the retrieval
            log.exception("an instance retrieved by C-GET could not be read")
            return 0xC210
        return 0x0000

    # -- associations ------------------------------------------------------------------------------
    @contextmanager
    def _association(self, model: str, timeout: float, what: str, *, storage: bool = False
                     ) -> Iterator[Association]:
        ae = AE(ae_title=self._settings.calling_ae)
        for name in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, name, timeout)
        ae.add_requested_context(model)
        roles, handlers = [], []
        if storage:
            for uid in RETRIEVED_STORAGE_CLASSES:
                ae.add_requested_context(uid, list(RETRIEVED_TRANSFER_SYNTAXES))
                roles.append(build_role(uid, scp_role=True))
            handlers = [(evt.EVT_C_STORE, self._store_instance)]
        settings = self._settings
        started = time.monotonic()
        assoc = ae.associate(settings.host, settings.port, ae_title=settings.ae_title, ext_neg=roles,
                             evt_handlers=handlers)
        if not assoc.is_established:
            elapsed = time.monotonic() - started
            where = settings.describe()
            if assoc.is_rejected:
                raise PacsUnreachable(f"{where} rejected the association for {what}")
            if elapsed >= timeout * 0.9:
                raise PacsTimeout(f"{where} did not accept an association for {what} within {timeout:g} s")
            raise PacsUnreachable(f"{where} cannot be reached for {what}")
        try:
            if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
                raise PacsUnreachable(f"{settings.describe()} does not offer {what} (Study Root)")
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()


def _study_identifier(study_uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    return identifier


def _status_code(status: Dataset, assoc: Association, what: str) -> int:
    """The response's status; an empty one means the association was lost or a DIMSE wait timed out."""
    if status is None or "Status" not in status:
        if assoc.is_aborted or not assoc.is_established:
            raise PacsTimeout(f"{what}: no answer from the PACS (association ended)")
        raise PacsTimeout(f"{what}: no answer from the PACS in time")
    return int(status.Status)


def _check_deadline(assoc: Association, deadline: float, timeout: float, what: str) -> None:
    if time.monotonic() > deadline:
        assoc.abort()
        raise PacsTimeout(f"{what} took longer than {timeout:g} s")


def _final_result(assoc: Association, responses, deadline: float, timeout: float, what: str) -> RetrieveResult:
    last: Dataset | None = None
    for status, _identifier in responses:
        _check_deadline(assoc, deadline, timeout, what)
        code = _status_code(status, assoc, what)
        last = status
        if code in _PENDING:
            continue
        result = RetrieveResult(int(status.get("NumberOfCompletedSuboperations", 0) or 0),
                                int(status.get("NumberOfFailedSuboperations", 0) or 0),
                                int(status.get("NumberOfWarningSuboperations", 0) or 0), code)
        if code == 0x0000 or code == 0xB000:
            return result
        if code == _CANCELLED:
            raise PacsTimeout(f"{what} was cancelled")
        raise PacsRefused(f"{what} failed with status 0x{code:04X} ({result.completed} sent, "
                          f"{result.failed} failed)")
    raise PacsTimeout(f"{what}: no final answer from the PACS" + ("" if last is None else " after pending ones"))
