"""The DICOM node: Verification and Storage SCP over pynetdicom, bound to the store.

Run it with `DicomNode(settings, store, events).start()`; `stop()` stops accepting, lets in-flight
associations finish (up to `shutdown_grace_s`), then aborts the rest.
"""

from __future__ import annotations

import functools
import logging
import socket
import ssl
import time
from collections.abc import Callable

from pynetdicom import AE, _config, evt
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import _STORAGE_CLASSES, Verification
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node.events import NodeEvents
from dicom_node.gate import AdmissionGate, GateLimits, Slots
from dicom_node.handlers import handle_echo, handle_store, open_incoming
from dicom_node.reactor import abort_now, make_event_driven
from dicom_node.settings import NodeSettings
from dicom_node.stability import StabilityTracker
from dicom_node.store import Store
from dicom_node.syntaxes import ACCEPTED_TRANSFER_SYNTAXES, is_storage_sop_class
from dicom_node.transport import NodeAssociationSocket

log = logging.getLogger(__name__)

_ACCEPTED_SET = frozenset(ACCEPTED_TRANSFER_SYNTAXES)
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_LISTEN_BACKLOG = 1024


def storage_contexts() -> list[PresentationContext]:
    """One context per storage SOP class pynetdicom knows, plus Verification; every transfer syntax each."""
    contexts = [build_context(Verification)]
    for uid in sorted(set(_STORAGE_CLASSES.values())):
        contexts.append(build_context(uid, list(ACCEPTED_TRANSFER_SYNTAXES)))
    return contexts


def contexts_for_request(base: list[PresentationContext], associate_rq: bytes) -> list[PresentationContext]:
    """`base` plus a storage context for each proposed abstract syntax that is storage by our rule but not in
    `base` (a private or newer storage class: syntaxes.is_storage_sop_class), so that it is accepted."""
    known = {str(cx.abstract_syntax) for cx in base}
    request = A_ASSOCIATE_RQ()
    request.decode(associate_rq)
    extra = []
    for item in request.presentation_context:
        uid = str(item.abstract_syntax or "")
        if not uid or uid in known or not is_storage_sop_class(uid):
            continue
        # Only the proposed syntaxes we accept: a request may carry 128 contexts, each built here.
        syntaxes = [str(ts) for ts in item.transfer_syntax if str(ts) in _ACCEPTED_SET]
        try:
            context = build_context(uid, syntaxes) if syntaxes else None
        except ValueError:  # not a valid UID: its context is rejected in negotiation
            context = None
        if context is not None:
            known.add(uid)
            extra.append(context)
    return _SharedContexts(base + extra) if extra else base


class _SharedContexts(list):
    """The server's supported contexts, shared by every association instead of deep-copied for each.

    pynetdicom deep-copies them per association (~150 contexts with their UIDs validated again:
    tens of ms of GIL on the gate thread per association); the acceptor only reads them, since
    negotiation builds new result contexts, so one list serves all."""

    def __deepcopy__(self, memo) -> list[PresentationContext]:
        return list(self)


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


class _NodeRequestHandler(RequestHandler):
    """pynetdicom's handler for one admitted connection: the A-ASSOCIATE-RQ the gate read is pushed
    back into the association's socket, and the slot is given back when the association ends."""

    def __init__(self, request, client_address, server, pushback: bytes, on_finished, sink_factory) -> None:
        self._pushback = pushback
        self._on_finished = on_finished
        self._sink_factory = sink_factory
        super().__init__(request, client_address, server)

    def _create_association(self):
        assoc = super()._create_association()
        # A second AssociationSocket would queue a second "connection open" event; the subclass
        # adds no state but the pushback, so switching the class of the one pynetdicom made is enough.
        assoc.dul.socket.__class__ = NodeAssociationSocket
        assoc.dul.socket.adopt_pushback(self._pushback)
        assoc.acceptor.supported_contexts = contexts_for_request(assoc.acceptor.supported_contexts, self._pushback)
        make_event_driven(assoc, self._sink_factory)
        assoc.on_finished = self._on_finished
        return assoc


def _prepare_socket(quickack: bool) -> Callable[[socket.socket], socket.socket]:
    def prepare(client: socket.socket) -> socket.socket:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if quickack and _TCP_QUICKACK is not None:
            client = _QuickAckSocket(client.family, client.type, client.proto, fileno=client.detach())
        return client
    return prepare


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
        self._server: ThreadedAssociationServer | None = None
        self._gate: AdmissionGate | None = None
        self._slots = Slots(settings.max_associations, settings.max_associations_per_peer)

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
        # The gate's slots are the limit; pynetdicom's own count (threads, which linger a moment after
        # their association ends) must never refuse an association the gate admitted.
        ae.maximum_associations = 2 * s.max_associations + 2
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
            evt_handlers=handlers,
            server_class=ThreadedAssociationServer,
        )
        ae._servers.append(server)  # as AE.start_server does
        server.contexts = _SharedContexts(server.contexts)
        # socketserver listens with a backlog of 5: a burst of connections (a scan, a flood) would leave
        # a real sender waiting on SYN retries for seconds before the gate ever sees it.
        server.socket.listen(_LISTEN_BACKLOG)
        s = self.settings
        limits = GateLimits(s.artim_timeout_s, s.max_pending_per_peer, s.max_pending_connections)
        tls = _tls_context(s)
        gate = AdmissionGate(server.socket, limits, self._admit,
                             prepare=_prepare_socket(s.tcp_quickack and tls is None), ssl_context=tls)
        self._ae, self._server, self._gate = ae, server, gate
        gate.start()
        log.info("DICOM node %s listening on %s:%d", s.ae_title, s.host, self.port)

    def _admit(self, client: socket.socket, address: tuple, associate_rq: bytes) -> bool:
        """Start an association for a connection whose A-ASSOCIATE-RQ has arrived; False if no slot is free."""
        host = str(address[0])
        if not self._slots.try_take(host):
            return False
        give_back = functools.partial(self._slots.give_back, host)
        try:
            client.setblocking(True)
            # The DUL reads only once select() saw bytes, so this bounds the waits inside a PDU (and each
            # send): a peer stuck in the middle of one ends its association. Idle time between PDUs is
            # the network timeout's.
            client.settimeout(self.settings.pdu_timeout_s)
            sink_factory = functools.partial(open_incoming, store=self.store,
                                             max_inflated_bytes=self.settings.max_inflated_bytes)
            _NodeRequestHandler(client, address, self._server, associate_rq, give_back, sink_factory)
        except BaseException:
            give_back()
            raise
        return True

    def active_associations(self) -> int:
        return len(self._server.active_associations) if self._server else 0

    @property
    def pending_connections(self) -> int:
        """Connections accepted but without a whole A-ASSOCIATE-RQ yet."""
        return self._gate.pending if self._gate else 0

    def stop(self) -> None:
        """Stop accepting, let in-flight associations finish (up to shutdown_grace_s), abort the rest,
        then stop the stability tracker. Always returns: a stuck peer cannot hold it."""
        server, gate = self._server, self._gate
        if server is None or gate is None:
            return
        gate.stop()
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        left = server.active_associations
        for assoc in left:
            log.warning("aborting association with %s at shutdown", assoc.requestor.ae_title)
            abort_now(assoc)
        for assoc in left:
            assoc.join(timeout=5)
        if self._ae is not None and server in self._ae._servers:
            self._ae._servers.remove(server)
        self.tracker.stop()
        self._server = self._gate = None
        log.info("DICOM node stopped")


def _log_rejection(event) -> None:
    log.warning("association from %s rejected", event.assoc.requestor.address)
