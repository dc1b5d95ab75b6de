"""The DICOM node: Verification and Storage SCP over pynetdicom, bound to the store.

Run it with `DicomNode(settings, store, events).start()`; `stop()` stops accepting, lets in-flight
associations finish (up to `shutdown_grace_s`), then aborts the rest.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from pynetdicom import AE, _config, evt
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification, _STORAGE_CLASSES
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicom_node.events import NodeEvents
from dicom_node.handlers import handle_echo, handle_store
from dicom_node.reactor import make_event_driven
from dicom_node.settings import NodeSettings
from dicom_node.stability import StabilityTracker
from dicom_node.store import Store

log = logging.getLogger(__name__)

# Stored as received, never transcoded: every syntax here must be decodable by the engine.
ACCEPTED_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def storage_contexts() -> list[PresentationContext]:
    """One context per storage SOP class pynetdicom knows, plus Verification."""
    contexts = [build_context(Verification)]
    for uid in sorted(set(_STORAGE_CLASSES.values())):
        contexts.append(build_context(uid, list(ACCEPTED_TRANSFER_SYNTAXES)))
    return contexts


class _QuickAckSocket(socket.socket):
    """Re-arms TCP_QUICKACK after every read: Linux clears it, and senders that leave Nagle on
    otherwise wait for our delayed ACK (40 ms) before each PDU."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # type: ignore[override]
        data = super().recv(bufsize, flags)
        self._quickack()
        return data

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        n = super().recv_into(buffer, nbytes, flags)
        self._quickack()
        return n

    def _quickack(self) -> None:
        try:
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:
            pass


class _NodeAssociationSocket(AssociationSocket):
    """Reads a PDU with few large `recv_into` calls instead of pynetdicom's 4 KiB slices."""

    def recv(self, nr_bytes: int) -> bytearray:
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        sock = self.socket
        while received < nr_bytes:
            n = sock.recv_into(view[received:], nr_bytes - received)
            if n == 0:  # connection closed: return what arrived, as pynetdicom does
                view.release()
                del buffer[received:]
                break
            received += n
        return buffer


class _NodeRequestHandler(RequestHandler):
    def _create_association(self):
        assoc = super()._create_association()
        # A second AssociationSocket would queue a second "connection open" event; the subclass
        # adds no state, so switching the class of the one pynetdicom made is enough.
        assoc.dul.socket.__class__ = _NodeAssociationSocket
        make_event_driven(assoc)
        return assoc


class _NodeServer(ThreadedAssociationServer):
    quickack = False

    def get_request(self):
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.quickack and _TCP_QUICKACK is not None and not self.ssl_context:
            client = _QuickAckSocket(client.family, client.type, client.proto, fileno=client.detach())
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True)
        return client, address


def _tls_context(settings: NodeSettings) -> ssl.SSLContext | None:
    tls = settings.tls
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    if tls.ca_file:
        context.load_verify_locations(cafile=str(tls.ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class DicomNode:
    def __init__(self, settings: NodeSettings, store: Store, events: NodeEvents) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.tracker = StabilityTracker(store, events, settings.stable_after_s)
        self._ae: AE | None = None
        self._server: _NodeServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the node is not running")
        return int(self._server.server_address[1])

    def _build_ae(self) -> AE:
        # pynetdicom's "standard" log handlers run on every PDU; we log what we need ourselves.
        _config.LOG_HANDLER_LEVEL = "none"
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_associations = s.max_associations
        ae.maximum_pdu_size = s.max_pdu_bytes
        ae.acse_timeout = s.acse_timeout_s
        ae.dimse_timeout = s.dimse_timeout_s
        ae.network_timeout = s.network_timeout_s
        ae.require_called_aet = False
        if s.allowed_calling_aes:
            ae.require_calling_aet = list(s.allowed_calling_aes)
        return ae

    def start(self) -> None:
        """Reconcile the store, resume stability timers, and start listening."""
        report = self.store.reconcile()
        log.info("store at %s ready (%s)", self.store.root, report)
        self.tracker.start()
        ae = self._build_ae()
        handlers = [
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [self.store, self.tracker, self.events]),
            (evt.EVT_REJECTED, _log_rejection),
        ]
        server = ae.make_server(
            (self.settings.host, self.settings.port),
            ae_title=self.settings.ae_title,
            contexts=storage_contexts(),
            ssl_context=_tls_context(self.settings),
            evt_handlers=handlers,
            server_class=_NodeServer,
            request_handler=_NodeRequestHandler,
        )
        server.quickack = self.settings.tcp_quickack
        ae._servers.append(server)  # as AE.start_server does; server.shutdown() removes it
        self._ae, self._server = ae, server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="raddraft-dicom-accept", daemon=True)
        self._thread.start()
        log.info("DICOM node %s listening on %s:%d", self.settings.ae_title, self.settings.host, self.port)

    def active_associations(self) -> int:
        return len(self._server.active_associations) if self._server else 0

    def stop(self) -> None:
        """Stop accepting, let in-flight associations finish, then stop the stability tracker."""
        server = self._server
        if server is None:
            return
        server.shutdown()  # stops serve_forever and closes the listening socket
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in server.active_associations:
            log.warning("aborting association with %s at shutdown", assoc.requestor.ae_title)
            assoc.abort()
        if self._thread:
            self._thread.join(timeout=5)
        self.tracker.stop()
        self._server = None
        log.info("DICOM node stopped")


def _log_rejection(event) -> None:
    log.warning("association from %s rejected", event.assoc.requestor.address)
