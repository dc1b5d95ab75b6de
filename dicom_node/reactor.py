"""Event-driven waits for pynetdicom's acceptor threads.

pynetdicom's DUL thread sleeps 1 ms whenever it finds nothing to do, and its association thread
sleeps 1 ms on every loop, so each C-STORE waits on a few of those naps before it is read,
handled and answered. Here the DUL thread instead blocks in `select` on its socket and a wake-up
socket that `send_pdu` pokes, and the association thread blocks on its DIMSE message queue: both
wake the moment there is work, and stay idle when there is none.

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

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

log = logging.getLogger(__name__)

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

    def _abort_hard(self) -> None:
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        try:
            self.socket.send(abort_pdu.encode())
        except Exception:
            pass
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class EventDrivenAssociation(Association):
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
            self.abort()
            self.kill()
            return True
        return False


def _blocking_get_msg(msg_queue: queue.Queue, block: bool = False):
    try:
        return msg_queue.get(timeout=_MESSAGE_WAIT_S)
    except queue.Empty:
        return None, None


def make_event_driven(assoc) -> None:
    """Swap the waits of a freshly created acceptor association (before its threads start)."""
    assoc.dul.__class__ = EventDrivenDUL
    assoc.dul.prepare_wakeup()
    # Thread.__init__ captured the old bound method as the thread's target.
    assoc.dul._target = assoc.dul.run_reactor
    assoc.dimse.get_msg = functools.partial(_blocking_get_msg, assoc.dimse.msg_queue)
    assoc.__class__ = EventDrivenAssociation
