"""Association event handlers: small functions that return a DICOM status and never raise.

Dependencies (the store, the stability tracker, the events) are bound explicitly when the server
is built, as pynetdicom's `evt_handlers` arguments.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from dicom_node.errors import (
    DatasetMismatchError,
    InflateLimitError,
    InvalidInstanceError,
    StoreIndexError,
    StoreWriteError,
)
from dicom_node.events import InstanceStored, NodeEvents
from dicom_node.header import is_valid_uid
from dicom_node.incoming import IncomingDataset
from dicom_node.part10 import file_meta_prefix
from dicom_node.stability import StabilityTracker
from dicom_node.store import Store, StreamedInstance
from dicom_node.syntaxes import is_storage_sop_class

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # disk full or any other failure to write the instance durably
OUT_OF_RESOURCES_INDEX = 0xA701  # the index could not record it (the file was removed again)
CANNOT_UNDERSTAND = 0xC210  # the dataset does not decode
MISSING_OR_BAD_UID = 0xC212  # SOP Instance / Study / Series UID missing or malformed
UID_MISMATCH = 0xC213  # the dataset's SOP Instance UID is not the one announced in the request
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122  # a C-STORE on a context that is not a storage SOP class
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900


def failure(status: int, comment: str) -> Dataset:
    """A status dataset with an Error Comment (at most 64 characters) that the sender can log."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment.replace("\\", "/")[:64]  # a backslash would split it into values
    return ds


def handle_echo(event: object) -> int:
    return SUCCESS


def handle_store(event, store: Store, tracker: StabilityTracker, events: NodeEvents) -> int | Dataset:
    """Store one received instance exactly as received; answer success only once it is durable."""
    try:
        return _store_instance(event, store, tracker, events)
    except Exception as exc:  # never raise into the network stack
        log.exception("unexpected error while storing an instance")
        return failure(PROCESSING_FAILURE, f"internal error: {type(exc).__name__}")


def open_incoming(assoc, context_id: int, command_set, *, store: Store, max_inflated_bytes: int) -> IncomingDataset:
    """The sink for the dataset of a C-STORE-RQ whose command set just arrived (on the DUL thread)."""
    try:
        context = assoc._accepted_cx.get(context_id)
        if context is None:
            return IncomingDataset.refused(InvalidInstanceError("no accepted presentation context"))
        sop_class = str(command_set.AffectedSOPClassUID or "")
        sop_instance = str(command_set.AffectedSOPInstanceUID or "")
        if not (is_valid_uid(sop_class) and is_valid_uid(sop_instance)):
            return IncomingDataset.refused(InvalidInstanceError("the request's SOP Class or Instance UID is malformed"))
        if not is_storage_sop_class(str(context.abstract_syntax)):
            return IncomingDataset.refused(InvalidInstanceError("not a storage context"))
        transfer_syntax = str(context.transfer_syntax[0])
        calling_ae = str(assoc.requestor.ae_title).strip()
        prefix = file_meta_prefix(sop_class, sop_instance, transfer_syntax, calling_ae)
        return IncomingDataset(store.incoming_folder, prefix, transfer_syntax, max_inflated_bytes)
    except Exception as exc:  # never raise into the network stack
        log.exception("could not open a sink for an incoming dataset")
        return IncomingDataset.refused(StoreWriteError(f"internal error: {type(exc).__name__}"))


def _store_instance(event, store: Store, tracker: StabilityTracker, events: NodeEvents) -> int | Dataset:
    request = event.request
    incoming: IncomingDataset | None = getattr(request, "_raddraft_incoming", None)
    try:
        return _check_and_store(event, request, incoming, store, tracker, events)
    finally:
        if incoming is not None:
            incoming.discard()


def _check_and_store(event, request, incoming: IncomingDataset | None, store: Store, tracker: StabilityTracker,
                     events: NodeEvents) -> int | Dataset:
    announced_uid = str(request.AffectedSOPInstanceUID or "")
    announced_class = str(request.AffectedSOPClassUID or "")
    context_class = str(event.context.abstract_syntax)
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    if not is_storage_sop_class(context_class):
        return failure(SOP_CLASS_NOT_SUPPORTED, "C-STORE on a context that is not a storage SOP class")
    if announced_class != context_class:
        return failure(DATASET_DOES_NOT_MATCH_SOP_CLASS, "the request's SOP Class differs from the context's")
    if incoming is None:
        return failure(PROCESSING_FAILURE, "internal error: the dataset was not streamed")
    try:
        header = incoming.complete()
        if header.sop_instance_uid != announced_uid:
            return failure(UID_MISMATCH, "SOP Instance UID differs from the request")
        if header.sop_class_uid != context_class:
            raise DatasetMismatchError("the dataset's SOP Class differs from the context's")
        result = store.put_streamed(StreamedInstance(incoming.take_file(), incoming.digest, incoming.size + incoming.prefix_size,
                                                     incoming.transfer_syntax, header, calling_ae))
    except InflateLimitError as exc:
        log.warning("refused instance %s from %s: %s", announced_uid, calling_ae, exc)
        return failure(OUT_OF_RESOURCES, str(exc))
    except DatasetMismatchError as exc:
        log.warning("rejected instance %s from %s: %s", announced_uid, calling_ae, exc)
        return failure(DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc))
    except InvalidInstanceError as exc:
        log.warning("rejected instance %s from %s: %s", announced_uid, calling_ae, exc)
        return failure(CANNOT_UNDERSTAND if exc.undecodable else MISSING_OR_BAD_UID, str(exc))
    except StoreIndexError as exc:
        log.error("could not index instance %s from %s: %s", announced_uid, calling_ae, exc)
        return failure(OUT_OF_RESOURCES_INDEX, str(exc))
    except StoreWriteError as exc:
        log.error("could not store instance %s from %s: %s", announced_uid, calling_ae, exc)
        return failure(OUT_OF_RESOURCES, str(exc))
    tracker.instance_received(header.study_uid)
    events.instance_stored.publish(
        InstanceStored(header.study_uid, header.series_uid, header.sop_instance_uid, result.outcome.value)
    )
    log.debug("instance %s of study %s: %s", header.sop_instance_uid, header.study_uid, result.outcome.value)
    return SUCCESS
