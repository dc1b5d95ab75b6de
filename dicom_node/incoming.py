"""C-STORE datasets streamed to disk while they arrive, checked and hashed on the way.

pynetdicom gathers a dataset in memory (or, with STORE_RECV_CHUNKED_DATASET, in the system temp
folder through pydicom's writer). Here every dataset fragment goes straight into a temp file in the
store's `incoming/` folder, behind the Part 10 prefix we write ourselves, while

- a SHA-256 of the dataset is computed (the duplicate check compares digests, not bytes in memory);
- the element structure is walked (`structure.py`), after inflating a deflated dataset in bounded
  steps and only up to `max_inflated_bytes`;
- the attributes the index needs (everything up to (0020,0013)) are kept in a small buffer.

So an instance of any size costs a bounded buffer, and once a dataset is known to be broken the
rest of it is dropped as it arrives. `complete()` (on the association's thread) gives the header or
raises; `discard()` removes whatever is left. `StreamingDIMSE` is pynetdicom's DIMSE provider with
its fragment decoding routed through these sinks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import ssl
import struct
import threading
import zlib
from io import BytesIO
from pathlib import Path
from typing import Callable

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_CANCEL, N_EVENT_REPORT
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.utils import make_target

from dicom_node.dimse_fast import encode_store_response
from dicom_node.durable import TEMP_SUFFIX, _sync_file
from dicom_node.errors import (
    DatasetStructureError,
    InflateLimitError,
    InvalidInstanceError,
    NodeError,
    StoreWriteError,
)
from dicom_node.header import EXPLICIT_VR_LITTLE_ENDIAN, InstanceHeader, read_header_from_dataset
from dicom_node.structure import StructureWalker
from dicom_node.syntaxes import traits_of

log = logging.getLogger(__name__)

# Attributes before (0020,0013) are small in real objects; a dataset whose header runs past this
# is refused rather than buffered.
_HEADER_BUFFER_CAP = 8 << 20
_INFLATE_STEP = 1 << 20
# A command set is a few hundred bytes, and the only datasets kept in memory (those of requests
# other than C-STORE, which this node answers without reading them) are small; beyond these caps a
# message is an attack on memory.
_COMMAND_SET_CAP = 64 << 10
_OTHER_DATASET_CAP = 1 << 20


def describe_os_error(action: str, exc: OSError) -> str:
    import errno

    if exc.errno == errno.ENOSPC:
        return f"disk full during {action}: {exc}"
    return f"{action} failed: {exc}"


class IncomingDataset:
    """One dataset on its way from the wire to a synced temp file."""

    def __init__(self, folder: Path, prefix: bytes, transfer_syntax: str, max_inflated_bytes: int) -> None:
        self.transfer_syntax = transfer_syntax
        self.temp_path: Path | None = folder / f".{secrets.token_hex(8)}{TEMP_SUFFIX}"
        self.size = 0
        self.failure: NodeError | None = None
        self._lock = threading.Lock()
        self._hash = hashlib.sha256()
        traits = traits_of(transfer_syntax)
        self._walker = StructureWalker(explicit_vr=traits.explicit_vr, encapsulated=traits.encapsulated,
                                       little_endian=traits.little_endian)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS) if traits.deflated else None
        self._max_inflated = max_inflated_bytes
        self._inflated = 0
        self._trailing = 0
        self._head = bytearray()
        self._head_done = False
        self._sealed = False
        self._fd: int | None = None
        try:
            self._fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o640)
            self._write_all(prefix)
        except OSError as exc:
            self._fail(StoreWriteError(describe_os_error("write", exc)))
        self.prefix_size = len(prefix)

    @classmethod
    def refused(cls, failure: NodeError) -> IncomingDataset:
        """A sink that drops everything: the request was refused before its dataset arrived."""
        sink = cls.__new__(cls)
        sink.transfer_syntax, sink.temp_path, sink.size, sink.failure = "", None, 0, failure
        sink._lock, sink._fd, sink._sealed = threading.Lock(), None, True
        return sink

    @property
    def digest(self) -> bytes:
        return self._hash.digest()

    # -- on the DUL thread, per fragment ----------------------------------------------------------
    def write(self, data: memoryview) -> None:
        with self._lock:
            if self.failure is not None or self._fd is None:
                return
            try:
                self._write_all(data)
            except OSError as exc:
                self._fail(StoreWriteError(describe_os_error("write", exc)))
                return
            self.size += len(data)
            self._hash.update(data)
            try:
                if self._inflater is None:
                    self._inspect(data)
                else:
                    self._inflate(data)
            except InvalidInstanceError as exc:
                self._fail(exc)

    def _write_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def _inflate(self, data: bytes | memoryview) -> None:
        inflater = self._inflater
        pending = bytes(data)
        if inflater.eof:
            self._trailing += len(pending)
        while pending and not inflater.eof:
            plain = inflater.decompress(pending, _INFLATE_STEP)
            self._count_inflated(len(plain))
            self._inspect(plain)
            pending = inflater.unconsumed_tail
            if inflater.eof:
                self._trailing += len(inflater.unused_data)
        # One byte pads the deflated stream to an even length (PS3.5 A.5); more is not a dataset.
        if self._trailing > 1:
            raise DatasetStructureError("data after the end of the deflate stream")

    def _count_inflated(self, n: int) -> None:
        self._inflated += n
        if self._inflated > self._max_inflated:
            raise InflateLimitError(f"the deflated dataset inflates to more than {self._max_inflated} bytes")

    def _inspect(self, plain: bytes | memoryview) -> None:
        if not self._head_done:
            self._head += plain
        self._walker.feed(plain)
        if self._walker.error is not None:
            raise self._walker.error
        if not self._head_done:
            if self._walker.header_end is not None:
                del self._head[self._walker.header_end:]
                self._head_done = True
            elif len(self._head) > _HEADER_BUFFER_CAP:
                raise DatasetStructureError(f"the attributes before (0020,0013) exceed {_HEADER_BUFFER_CAP} bytes")

    def _fail(self, failure: NodeError) -> None:
        """Remember the first failure and drop the file at once: the rest of the dataset is not kept."""
        if self.failure is None:
            self.failure = failure
        self._close_and_remove()

    def _close_and_remove(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.temp_path is not None:
            self.temp_path.unlink(missing_ok=True)
            self.temp_path = None

    def seal(self) -> None:
        """The last fragment has arrived: check the end and sync the file. Called on the DUL thread right
        after the request is queued, so the sync overlaps the hand-over to the association thread;
        `complete()` does it instead if it gets there first."""
        with self._lock:
            self._seal_locked()

    def _seal_locked(self) -> None:
        if self._sealed:
            return
        self._sealed = True
        if self.failure is None:
            self._check_end()
        if self.failure is None and self._fd is not None:
            try:
                _sync_file(self._fd)
            except OSError as exc:
                self._fail(StoreWriteError(describe_os_error("sync", exc)))

    # -- on the association thread ----------------------------------------------------------------
    def complete(self) -> InstanceHeader:
        """The dataset is whole: check its end, sync the file, return its header; else raise and drop it."""
        with self._lock:
            try:
                self._seal_locked()
                if self.failure is not None:
                    raise self.failure
                header = read_header_from_dataset(
                    self._head, EXPLICIT_VR_LITTLE_ENDIAN if self._inflater else self.transfer_syntax)
                self._head = bytearray()
                try:
                    os.close(self._fd)
                    self._fd = None
                except OSError as exc:
                    raise StoreWriteError(describe_os_error("close", exc)) from exc
                return header
            except BaseException:
                self._close_and_remove()
                raise

    def _check_end(self) -> None:
        try:
            if self._inflater is not None:
                plain = self._inflater.flush()
                self._count_inflated(len(plain))
                self._inspect(plain)
                if not self._inflater.eof:
                    raise DatasetStructureError("the deflate stream is cut short")
            self._walker.finish()
        except InvalidInstanceError as exc:
            self._fail(exc)

    def take_file(self) -> Path:
        """Hand the synced temp file to the store (which renames it); discard() no longer removes it."""
        with self._lock:
            if self.temp_path is None or self._fd is not None:
                raise StoreWriteError("the dataset file is not complete")
            path, self.temp_path = self.temp_path, None
            return path

    def discard(self) -> None:
        with self._lock:
            self._close_and_remove()


SinkFactory = Callable[[object, int, object], IncomingDataset]


class StreamingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with C-STORE datasets written to an `IncomingDataset` as they arrive.

    `sink_factory(assoc, context_id, command_set)` opens the sink when a C-STORE-RQ command set is
    complete; the request primitive then carries it as `_raddraft_incoming`.
    """

    sink_factory: SinkFactory

    def send_msg(self, primitive, context_id: int) -> None:  # type: ignore[override]
        """pynetdicom's send, with a plain C-STORE-RSP encoded by hand (dimse_fast) and, on a plain TCP
        socket, written by this (the association's) thread itself: handing it to the DUL thread costs one
        more thread wake-up per instance, milliseconds on a loaded machine. Safe because the peer sends
        its next request only once it has this response (no asynchronous operations are negotiated), so
        the DUL thread has nothing of ours left to send; over TLS the DUL thread sends, as the SSL object
        must not be read and written by two threads at once."""
        encoded = encode_store_response(primitive)
        if encoded is None or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)
            return
        value = b"\x03" + encoded
        raw = getattr(self.dul.socket, "socket", None)
        if raw is not None and not isinstance(raw, ssl.SSLSocket) and not self.assoc.get_handlers(evt.EVT_PDU_SENT):
            pdv = struct.pack(">LB", len(value) + 1, context_id) + value
            try:
                raw.sendall(struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv)
            except OSError as exc:  # the DUL thread sees the broken connection on its next read
                log.warning("could not send a C-STORE response to %s: %s", self.assoc.requestor.address, exc)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, value))
        self.dul.send_pdu(pdata)

    def receive_primitive(self, primitive) -> None:  # type: ignore[override]
        if self.message is None:
            self.message = DIMSEMessage()
            self.message._raddraft_incoming = None
        try:
            complete = self._decode(self.message, primitive)
        except InvalidInstanceError as exc:
            log.warning("invalid DIMSE message from %s: %s", self.assoc.requestor.address, exc)
            self.dul.event_queue.put("Evt19")
            return
        if not complete:
            return
        message = self.message
        evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": message})
        try:
            d_primitive = message.message_to_primitive()
        except Exception:
            log.exception("received an invalid DIMSE message")
            self.dul.event_queue.put("Evt19")
            return
        d_primitive._raddraft_incoming = getattr(message, "_raddraft_incoming", None)
        context_id = message.context_id
        if isinstance(d_primitive, C_CANCEL) and len(self.cancel_req) < 10:
            self.cancel_req[d_primitive.MessageIDBeingRespondedTo] = d_primitive
        elif isinstance(d_primitive, N_EVENT_REPORT) and d_primitive.is_valid_request:
            threading.Thread(target=make_target(self.assoc._serve_request), args=(d_primitive, context_id)).start()
        else:
            self.msg_queue.put((context_id, d_primitive))
            if d_primitive._raddraft_incoming is not None:
                d_primitive._raddraft_incoming.seal()
        self.message = None

    def _decode(self, message: DIMSEMessage, primitive) -> bool:
        """pynetdicom's `DIMSEMessage.decode_msg`, with dataset fragments of a C-STORE-RQ streamed to a sink."""
        for context_id, data in primitive.presentation_data_value_list:
            control = data[0]
            payload = memoryview(data)[1:]
            if control & 1:
                message.encoded_command_set.write(payload)
                if message.encoded_command_set.tell() > _COMMAND_SET_CAP:
                    raise InvalidInstanceError(f"a command set longer than {_COMMAND_SET_CAP} bytes")
                if control & 2:
                    message.context_id = context_id
                    message.command_set = decode(message.encoded_command_set, True, True)
                    message.__class__ = _MESSAGE_TYPES[message.command_set.CommandField][1]
                    if message.command_set.CommandDataSetType == 0x0101:
                        return True
                    if isinstance(message, C_STORE_RQ):
                        message._raddraft_incoming = self.sink_factory(self.assoc, context_id, message.command_set)
                        message.data_set = BytesIO()
                continue
            sink = getattr(message, "_raddraft_incoming", None)
            if sink is not None:
                sink.write(payload)
            else:
                message.data_set.write(payload)
                if message.data_set.tell() > _OTHER_DATASET_CAP:
                    raise InvalidInstanceError(f"a non-C-STORE dataset longer than {_OTHER_DATASET_CAP} bytes")
            if control & 2:
                return True
        return False


def discard_pending_datasets(dimse: DIMSEServiceProvider) -> None:
    """Remove the temp files of datasets that will never be handled (the association ended)."""
    sinks = [getattr(dimse.message, "_raddraft_incoming", None)] if dimse.message is not None else []
    sinks += [getattr(item[1], "_raddraft_incoming", None) for item in list(dimse.msg_queue.queue)]
    for sink in sinks:
        if sink is not None:
            sink.discard()
