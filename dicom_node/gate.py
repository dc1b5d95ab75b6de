"""The admission gate: one thread that accepts connections and holds them until a whole A-ASSOCIATE-RQ.

Only a connection that has sent a complete, decodable A-ASSOCIATE-RQ is handed to pynetdicom (two
threads per association) and takes one of the `max_associations` slots; until then it costs a
socket and its few received bytes, in one selector loop, whatever the number of connections. So:

- a port scan, a health check or a peer that connects and says nothing never holds a slot, and a
  closed connection is gone at once;
- a connection without a whole A-ASSOCIATE-RQ within `artim_timeout_s` is closed (ARTIM);
- the first bytes must be an A-ASSOCIATE-RQ header of a sane length (at most 1 MB, as Orthanc):
  anything else (HTTP, TLS to a plain port, garbage) gets an A-ABORT and is closed at once;
- each address may keep `max_pending_per_peer` such connections, all addresses together
  `max_pending_connections`; a new one beyond either closes the oldest, so a flood of idle
  connections cannot lock out a sender that speaks at once;
- when every slot is taken, or the peer's address already holds `max_associations_per_peer`
  associations, the request is answered A-ASSOCIATE-RJ (transient, local limit exceeded) by the
  gate itself.

TLS handshakes also run here, non-blocking, under the same ARTIM deadline.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from pynetdicom.pdu import A_ASSOCIATE_RQ

from dicom_node.reactor import MAX_CONTROL_PDU_BYTES
from dicom_node.transport import (
    ABORT_INVALID_PARAMETER_PDU,
    ABORT_UNRECOGNIZED_PDU,
    close_quietly,
    send_quietly,
)

log = logging.getLogger(__name__)

_ASSOCIATE_RQ = 0x01
_MIN_ASSOCIATE_RQ_LENGTH = 68  # the fixed fields of an A-ASSOCIATE-RQ (PS3.8 9.3.2)
# A-ASSOCIATE-RJ: result 2 (rejected-transient), source 3 (service-provider, presentation), reason 2
# (local-limit-exceeded): what storescu reports as "Local Limit Exceeded".
_REJECT_LOCAL_LIMIT = bytes((0x03, 0, 0, 0, 0, 4, 0, 0x02, 0x03, 0x02))
_RECV_BYTES = 64 << 10


@dataclass(frozen=True)
class GateLimits:
    artim_timeout_s: float
    max_pending_per_peer: int
    max_pending_connections: int
    max_associate_rq_bytes: int = MAX_CONTROL_PDU_BYTES


class Slots:
    """The association slots: taken by an admitted association, given back when its thread ends.

    One address holds at most `per_peer` of them, so peers that associate and then stall (inside a
    PDU, for up to `pdu_timeout_s`) from one address cannot take the slots of every other sender."""

    def __init__(self, size: int, per_peer: int | None = None) -> None:
        self.size = size
        self.per_peer = per_peer or size
        self._used = 0
        self._per_host: dict[str, int] = {}
        self._lock = threading.Lock()

    def try_take(self, host: str = "") -> bool:
        with self._lock:
            held = self._per_host.get(host, 0)
            if self._used >= self.size or held >= self.per_peer:
                return False
            self._used += 1
            self._per_host[host] = held + 1
            return True

    def give_back(self, host: str = "") -> None:
        with self._lock:
            self._used = max(0, self._used - 1)
            left = self._per_host.get(host, 0) - 1
            if left > 0:
                self._per_host[host] = left
            else:
                self._per_host.pop(host, None)

    def held_by(self, host: str) -> int:
        with self._lock:
            return self._per_host.get(host, 0)

    @property
    def used(self) -> int:
        with self._lock:
            return self._used


@dataclass(eq=False)
class _Pending:
    sock: socket.socket
    address: tuple
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    handshaking: bool = False

    @property
    def host(self) -> str:
        return str(self.address[0])


# admit(socket, address, A-ASSOCIATE-RQ bytes) -> False when no slot is free (the gate rejects).
AdmitFn = Callable[[socket.socket, tuple, bytes], bool]


class AdmissionGate:
    def __init__(self, listener: socket.socket, limits: GateLimits, admit: AdmitFn,
                 prepare: Callable[[socket.socket], socket.socket] = lambda s: s,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._listener = listener
        self._limits = limits
        self._admit = admit
        self._prepare = prepare
        self._ssl = ssl_context
        self._selector = selectors.DefaultSelector()
        self._pending: OrderedDict[socket.socket, _Pending] = OrderedDict()  # oldest first
        self._per_host: dict[str, int] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="raddraft-dicom-gate", daemon=True)
        self.refused = 0  # connections closed before admission (counted for tests and logs)

    def start(self) -> None:
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close every connection not yet admitted; the listener is closed too."""
        self._stopping = True
        send_quietly(self._wake_w, b"\0")
        self._thread.join(timeout=5)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, events in self._selector.select(self._next_timeout()):
                    if key.fileobj is self._listener:
                        self._accept_all()
                    elif key.fileobj is self._wake_r:
                        self._drain_wakeups()
                    else:
                        pending = self._pending.get(key.fileobj)
                        if pending is not None:
                            self._serve(pending)
                self._expire(time.monotonic())
        except Exception:
            log.exception("the DICOM admission gate failed")
        finally:
            for pending in list(self._pending.values()):
                self._drop(pending)
            self._selector.close()
            close_quietly(self._listener)
            close_quietly(self._wake_r)
            close_quietly(self._wake_w)

    def _next_timeout(self) -> float:
        if not self._pending:
            return 1.0
        oldest_deadline = min(p.deadline for p in self._pending.values())
        return max(0.0, min(1.0, oldest_deadline - time.monotonic()))

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(256):
                pass
        except OSError:
            pass

    def _accept_all(self) -> None:
        while True:
            try:
                client, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, or the listener closed
                log.warning("accept failed: %s", exc)
                return
            self._add(client, address)

    def _add(self, client: socket.socket, address: tuple) -> None:
        host = str(address[0])
        while self._per_host.get(host, 0) >= self._limits.max_pending_per_peer:
            self._drop_oldest(lambda p: p.host == host, "too many connections from %s without an association")
        while len(self._pending) >= self._limits.max_pending_connections:
            self._drop_oldest(lambda p: True, "too many connections without an association (oldest from %s)")
        try:
            client = self._prepare(client)
            client.setblocking(False)
            handshaking = False
            if self._ssl is not None:
                client = self._ssl.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
                handshaking = True
        except (OSError, ssl.SSLError) as exc:
            log.warning("could not set up the connection from %s: %s", host, exc)
            close_quietly(client)
            return
        pending = _Pending(client, address, time.monotonic() + self._limits.artim_timeout_s, handshaking=handshaking)
        self._pending[client] = pending
        self._per_host[host] = self._per_host.get(host, 0) + 1
        self._selector.register(client, selectors.EVENT_READ)
        if handshaking:
            self._serve(pending)

    def _drop_oldest(self, matches: Callable[[_Pending], bool], reason: str) -> None:
        oldest = next(p for p in self._pending.values() if matches(p))
        log.warning(reason, oldest.host)
        self._drop(oldest)

    def _expire(self, now: float) -> None:
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            log.warning("no A-ASSOCIATE-RQ from %s within %g s (ARTIM); closing", pending.host,
                        self._limits.artim_timeout_s)
            self._drop(pending)

    def _forget(self, pending: _Pending) -> None:
        self._pending.pop(pending.sock, None)
        try:
            self._selector.unregister(pending.sock)
        except (KeyError, ValueError, OSError):
            pass
        left = self._per_host.get(pending.host, 1) - 1
        if left > 0:
            self._per_host[pending.host] = left
        else:
            self._per_host.pop(pending.host, None)

    def _drop(self, pending: _Pending, last_words: bytes = b"") -> None:
        self._forget(pending)
        if last_words:
            send_quietly(pending.sock, last_words)
        close_quietly(pending.sock)
        self.refused += 1

    # -- one connection ---------------------------------------------------------------------------
    def _serve(self, pending: _Pending) -> None:
        if pending.handshaking and not self._handshake(pending):
            return
        try:
            while True:
                chunk = pending.sock.recv(_RECV_BYTES)
                if not chunk:  # closed by the peer: its slot-to-be is gone at once
                    self._drop(pending)
                    return
                pending.received += chunk
                verdict = self._check(pending)
                if verdict is not None:
                    verdict()
                    return
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (OSError, ssl.SSLError):
            self._drop(pending)

    def _handshake(self, pending: _Pending) -> bool:
        try:
            pending.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._selector.modify(pending.sock, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._selector.modify(pending.sock, selectors.EVENT_WRITE)
            return False
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS handshake with %s failed: %s", pending.host, exc)
            self._drop(pending)
            return False
        pending.handshaking = False
        self._selector.modify(pending.sock, selectors.EVENT_READ)
        return True

    def _check(self, pending: _Pending) -> Callable[[], None] | None:
        """What to do with what has arrived so far: None to wait for more, else the action."""
        data = pending.received
        if data[0] != _ASSOCIATE_RQ:
            log.warning("connection from %s does not start with an A-ASSOCIATE-RQ; closing", pending.host)
            return lambda: self._drop(pending, ABORT_UNRECOGNIZED_PDU)
        if len(data) < 6:
            return None
        (length,) = struct.unpack_from(">L", data, 2)
        if not _MIN_ASSOCIATE_RQ_LENGTH <= length <= self._limits.max_associate_rq_bytes:
            log.warning("A-ASSOCIATE-RQ of %d bytes from %s; closing", length, pending.host)
            return lambda: self._drop(pending, ABORT_INVALID_PARAMETER_PDU)
        if len(data) < 6 + length:
            return None
        if len(data) > 6 + length:
            # A requestor must wait for our answer before it sends anything else.
            return lambda: self._drop(pending, ABORT_UNRECOGNIZED_PDU)
        try:
            A_ASSOCIATE_RQ().decode(bytes(data))
        except Exception as exc:
            log.warning("undecodable A-ASSOCIATE-RQ from %s: %s", pending.host, exc)
            return lambda: self._drop(pending, ABORT_INVALID_PARAMETER_PDU)
        return lambda: self._hand_over(pending)

    def _hand_over(self, pending: _Pending) -> None:
        self._forget(pending)
        try:
            admitted = self._admit(pending.sock, pending.address, bytes(pending.received))
        except Exception:
            log.exception("could not start the association with %s", pending.host)
            admitted = False
            close_quietly(pending.sock)
            return
        if not admitted:
            log.warning("association from %s rejected: no association slot free (all busy, or its address holds "
                        "its share)", pending.host)
            pending.sock.setblocking(True)
            pending.sock.settimeout(1.0)
            send_quietly(pending.sock, _REJECT_LOCAL_LIMIT)
            close_quietly(pending.sock)
            self.refused += 1
