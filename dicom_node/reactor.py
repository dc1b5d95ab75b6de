"""Event-driven waits for pynetdicom's acceptor threads.

pynetdicom's DUL thread sleeps 1 ms whenever it finds nothing to do, and its association thread
sleeps 1 ms on every loop, so each C-STORE waits on a few of those naps before it is read,
handled and answered. Here the DUL thread instead blocks in `select` on its socket and a wake-up
socket that `send_pdu` pokes, and the association thread blocks on its DIMSE message queue: both
wake the moment there is work, and stay idle when there is none.

The DUL also reads each PDU against our own limits: a P-DATA-TF longer than the maximum we
advertised, or any other PDU longer than `MAX_CONTROL_PDU_BYTES`, is an A-ABORT (PS3.8 9.3.1), before
a byte of its body is read. Every way out of an association (release, abort, timeout, a vanished
peer) closes its socket, drops the temp files of datasets still arriving, and frees its slot.

The replacements are swapped onto pynetdicom's own objects (pinned to pynetdicom 3.x) right after
they are created; they add behaviour, not state, apart from the wake-up socket pair.
"""

from __future__ import annotations

import functools
import logging
import queue
import select
import socket
import ssl
import struct
from collections.abc import Callable

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.service_class import StorageServiceClass

from dicom_node.incoming import StreamingDIMSE, discard_pending_datasets
from dicom_node.transport import ABORT_INVALID_PARAMETER_PDU, ABORT_PDU, ABORT_UNRECOGNIZED_PDU, send_quietly

log = logging.getLogger(__name__)

# An A-ASSOCIATE-RQ is a few kilobytes; release and abort PDUs are 10 bytes (Orthanc caps at 1 MB too).
MAX_CONTROL_PDU_BYTES = 1 << 20
_P_DATA_TF = 0x04

_IDLE_WAIT_S = 0.05  # upper bound on a wait; timers (ARTIM, kill flags) are checked at least this often
_MESSAGE_WAIT_S = 0.01  # how long the association thread blocks before it checks release/abort


class EventDrivenDUL(DULServiceProvider):
    def prepare_wakeup(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def send_pdu(self, primitive) -> None:  # type: ignore[override]
        super().send_pdu(primitive)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or we are shutting down

    def _wait_for_work(self) -> None:
        assoc_socket = self.socket
        raw = getattr(assoc_socket, "socket", None) if assoc_socket is not None else None
        if raw is None or not getattr(assoc_socket, "_is_connected", False):
            readable = [self._wake_r]
        elif getattr(assoc_socket, "has_pushback", False):
            return
        elif isinstance(raw, ssl.SSLSocket) and raw.pending():
            return
        else:
            readable = [raw, self._wake_r]
        try:
            ready, _, _ = select.select(readable, [], [], _IDLE_WAIT_S)
        except (OSError, ValueError):
            return  # the socket closed under us: let the state machine see it
        if self._wake_r in ready:
            try:
                while self._wake_r.recv(256):
                    pass
            except (BlockingIOError, OSError):
                pass

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop with its idle sleep replaced by `_wait_for_work`."""
        self._idle_timer.start()
        idle = False
        try:
            while True:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                if idle:
                    self._wait_for_work()
                if self._kill_thread:
                    break
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception:
                    log.exception("DICOM upper layer failed; aborting the association")
                    self._abort_hard()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    idle = True
                    continue
                self.state_machine.do_action(event)
                idle = False
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def _read_pdu_data(self) -> None:
        """pynetdicom's PDU read, with the claimed length checked against our limits before the body is read."""
        sock = self.socket
        try:
            header = sock.recv(6)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")  # the peer went away, or stalled inside a PDU header
            return
        if len(header) < 6:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            log.warning("unknown PDU type 0x%02X from %s; aborting", pdu_type, self.assoc.requestor.address)
            self._abort_hard(ABORT_UNRECOGNIZED_PDU)
            return
        limit = self._limit_for(pdu_type)
        if limit and length > limit:
            log.warning("PDU of type 0x%02X claims %d bytes, over our limit of %d; aborting",
                        pdu_type, length, limit)
            self._abort_hard(ABORT_INVALID_PARAMETER_PDU)
            return
        try:
            body = sock.recv(length)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")
            return
        if len(body) != length:
            self.event_queue.put("Evt17")
            return
        try:
            pdu, event = self._decode_pdu(header + body)
        except Exception:
            log.warning("undecodable PDU from %s", self.assoc.requestor.address)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _limit_for(self, pdu_type: int) -> int:
        if pdu_type == _P_DATA_TF:
            return int(self.assoc.acceptor.maximum_length or 0)  # 0: no limit was advertised
        return MAX_CONTROL_PDU_BYTES

    def _abort_hard(self, pdu: bytes = ABORT_PDU) -> None:
        raw = getattr(self.socket, "socket", None)
        if raw is not None:
            send_quietly(raw, pdu)
        mark_dead(self.assoc)
        self.socket.close()


def mark_dead(assoc: Association) -> None:
    assoc.is_aborted = True
    assoc.is_established = False
    assoc._kill = True
    assoc.dul._kill_thread = True
    assoc._reactor_checkpoint.set()


def abort_now(assoc: Association) -> None:
    """Abort without waiting on the peer or on pynetdicom's state machine: send an A-ABORT, shut the
    socket (which wakes a read blocked on it) and let both threads run out."""
    raw = getattr(assoc.dul.socket, "socket", None)
    if raw is not None:
        try:
            raw.settimeout(1.0)
        except OSError:
            pass
        send_quietly(raw, ABORT_PDU)
        try:
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    mark_dead(assoc)


class EventDrivenAssociation(Association):
    on_finished: Callable[[], None] | None = None

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._release_resources()

    def _release_resources(self) -> None:
        if self.dul.is_alive():
            mark_dead(self)
            self.dul.join(timeout=2.0)
        discard_pending_datasets(self.dimse)
        if self.dul.socket is not None:
            self.dul.socket._shutdown_socket()
        if self.on_finished is not None:
            self.on_finished()

    def _serve_request(self, msg, context_id: int) -> None:  # type: ignore[override]
        """pynetdicom's dispatch, with every C-STORE request served by the Storage SCP (whose handler refuses
        one on a context that is not storage). pynetdicom picks the service by the request's own SOP Class:
        for a class it does not know (a private or newer one, accepted by syntaxes.is_storage_sop_class) it
        aborts, and for the Verification class it answered a C-STORE with a C-ECHO success."""
        context = self._accepted_cx.get(context_id)
        if isinstance(msg, C_STORE) and msg.is_valid_request and context is not None and not self._sent_release:
            self.dimse.cancel_req = {}
            self._is_paused = True
            StorageServiceClass(self).SCP(msg, context)
            self._is_paused = False
            self.dimse.cancel_req = {}
            return
        super()._serve_request(msg, context_id)

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor loop without its 1 ms nap: `dimse.get_msg` blocks briefly instead."""
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)
            if self._stop_if_finished():
                return

    def _stop_if_finished(self) -> bool:
        """The release/abort/timeout checks of pynetdicom's loop; True when the association ended."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires for subscribers
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            log.error("network timeout reached; aborting the association")
            abort_now(self)
            return True
        return False


def _blocking_get_msg(msg_queue: queue.Queue, block: bool = False):
    try:
        return msg_queue.get(timeout=_MESSAGE_WAIT_S)
    except queue.Empty:
        return None, None


def make_event_driven(assoc, sink_factory) -> None:
    """Swap the waits of a freshly created acceptor association (before its threads start), and
    stream its C-STORE datasets through `sink_factory` (see incoming.StreamingDIMSE)."""
    assoc.dul.__class__ = EventDrivenDUL
    assoc.dimse.__class__ = StreamingDIMSE
    assoc.dimse.sink_factory = sink_factory
    assoc.dul.prepare_wakeup()
    # Thread.__init__ captured the old bound method as the thread's target.
    assoc.dul._target = assoc.dul.run_reactor
    assoc.dimse.get_msg = functools.partial(_blocking_get_msg, assoc.dimse.msg_queue)
    assoc.__class__ = EventDrivenAssociation
    assoc._target = assoc.run_reactor  # as for the DUL: the thread captured the old bound method
