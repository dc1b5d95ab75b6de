"""Association event handlers: small functions that return a DICOM status and never raise.

Dependencies (the store, the stability tracker, the events) are bound explicitly when the server
is built, as pynetdicom's `evt_handlers` arguments.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from dicom_node.errors import InvalidInstanceError, StoreIndexError, StoreWriteError
from dicom_node.header import read_header_from_dataset
from dicom_node.part10 import file_meta_prefix
from dicom_node.events import InstanceStored, NodeEvents
from dicom_node.stability import StabilityTracker
from dicom_node.store import ReceivedInstance, Store

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # disk full or any other failure to write the instance durably
OUT_OF_RESOURCES_INDEX = 0xA701  # the index could not record it (the file was removed again)
CANNOT_UNDERSTAND = 0xC210  # the dataset does not decode
MISSING_OR_BAD_UID = 0xC212  # SOP Instance / Study / Series UID missing or malformed
UID_MISMATCH = 0xC213  # the dataset's SOP Instance UID is not the one announced in the request
PROCESSING_FAILURE = 0x0110


def failure(status: int, comment: str) -> Dataset:
    """A status dataset with an Error Comment (at most 64 characters) that the sender can log."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
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


def _store_instance(event, store: Store, tracker: StabilityTracker, events: NodeEvents) -> int | Dataset:
    request = event.request
    announced_uid = str(request.AffectedSOPInstanceUID or "")
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    transfer_syntax = str(event.context.transfer_syntax)
    # The dataset exactly as received; decoding and re-encoding it would cost time and fidelity.
    dataset = request.DataSet.getvalue()
    try:
        header = read_header_from_dataset(dataset, transfer_syntax)
        if header.sop_instance_uid != announced_uid:
            return failure(UID_MISMATCH, "SOP Instance UID differs from the request")
        prefix = file_meta_prefix(str(request.AffectedSOPClassUID), announced_uid, transfer_syntax, calling_ae)
        result = store.put(ReceivedInstance(prefix, dataset, transfer_syntax, header, calling_ae))
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
