"""The socket side of an admitted association: reads that allocate only what arrives, and that time out.

The admission gate (`gate.py`) has already read the peer's A-ASSOCIATE-RQ; those bytes are handed
over as `pushback` and served before anything else is read from the socket. Every read then runs
under the socket's timeout (the network timeout), so a peer that stops in the middle of a PDU ends
its own association instead of holding a thread forever.
"""

from __future__ import annotations

import socket
import ssl

from pynetdicom.transport import AssociationSocket

# A read allocates at most this much ahead of the bytes that have actually arrived.
_READ_AHEAD_BYTES = 1 << 20

ABORT_PDU = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x00))  # A-ABORT, source: service provider
ABORT_INVALID_PARAMETER_PDU = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06))  # reason: invalid PDU parameter
ABORT_UNRECOGNIZED_PDU = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x01))


class NodeAssociationSocket(AssociationSocket):
    """pynetdicom's association socket with pushback, bounded reads and a close that always closes."""

    pushback: bytearray

    def adopt_pushback(self, data: bytes | bytearray) -> None:
        self.pushback = bytearray(data)

    @property
    def has_pushback(self) -> bool:
        return bool(getattr(self, "pushback", None))

    @property
    def ready(self) -> bool:  # type: ignore[override]
        if self.has_pushback and self.socket is not None:
            return True
        return super().ready

    def recv(self, nr_bytes: int) -> bytearray:
        buffer = bytearray()
        if self.has_pushback:
            buffer += self.pushback[:nr_bytes]
            del self.pushback[:nr_bytes]
        sock = self.socket
        if sock is None:
            return buffer
        while len(buffer) < nr_bytes:
            received = len(buffer)
            # Grow with what arrives: a claimed length costs nothing until the bytes are here.
            buffer.extend(bytes(min(nr_bytes - received, max(_READ_AHEAD_BYTES, received))))
            with memoryview(buffer) as view:
                while received < len(buffer):
                    n = sock.recv_into(view[received:], len(buffer) - received)
                    if n == 0:  # connection closed: return what arrived, as pynetdicom does
                        break
                    received += n
            if received < len(buffer):
                del buffer[received:]
                break
        return buffer

    def _shutdown_socket(self) -> None:
        sock = self.socket
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ssl.SSLError):
            pass  # already reset by the peer: closing still frees the descriptor
        try:
            sock.close()
        except OSError:
            pass


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Best-effort send of a short PDU (an abort or reject) to a peer we are about to drop."""
    try:
        sock.send(data)
    except (OSError, ssl.SSLError, ValueError):
        pass


def close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
