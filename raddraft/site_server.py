"""`raddraft server`: the site's one DICOM node, store (index in PostgreSQL), outbox to PACS and HTTPS API,
assembled through the same runtime functions as the service; drafting is left to `raddraft worker`s unless
`[server] draft_on_server` is set."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading

from dicom_node.errors import StoreWriteError
from dicom_node.events import NodeEvents
from dicom_node.host_lock import HostInfo, HostLock, current_host
from dicom_node.outbox import OutboxWorker
from dicom_node.store import Store
from raddraft import __version__
from raddraft.config import AppConfig
from raddraft.resources import model_registry
from raddraft.runtime import load_drafting_model, prior_lookups, prior_retriever, start_node
from raddraft.service import ModelRefused, start_drafting

log = logging.getLogger("raddraft.server")


def site_database(config: AppConfig) -> str:
    """The site's PostgreSQL URL: --database / [store] database, else [server] database."""
    return config.store.database or config.server.database


def _refuse(message: str) -> int:
    print(f"raddraft: {message}", file=sys.stderr)
    return 1


def run_server(config: AppConfig) -> int:
    from server.app import Site, create_app
    from server.events import EventHub
    from server.generation import OnDemandDrafter
    from server.https import ApiServer
    from server.priors import PriorGate
    from server.schema import prepare_site_tables

    settings = config.server
    database = site_database(config)
    if not database:
        return _refuse("raddraft server keeps its index in PostgreSQL: give --database postgresql://... "
                       "(or [server] database)")
    if problem := settings.transport_problem():
        return _refuse(problem)
    try:
        store = Store(dataclasses.replace(config.store, database=database))
        prepare_site_tables(store.index)
    except StoreWriteError as exc:
        return _refuse(str(exc))
    lock = HostLock.acquire(store.root, HostInfo("server", os.getpid(), config.node.ae_title, config.node.host,
                                                   config.node.port))
    if lock is None:
        holder = current_host(store.root)
        store.close()
        return _refuse(f"the store {store.root} is already served by {holder.describe() if holder else 'another'}")
    events = NodeEvents()
    stack: list = []
    try:
        drafting = start_drafting(config, store, events) if settings.draft_on_server else None
        if drafting:
            stack.append(drafting.stop)
        # Without the server's own queue (which looks them up itself), priors are looked up here before a
        # worker may claim the study, as the workstation's queue does before drafting it.
        lookups = None if drafting else prior_lookups(config, store)
        gate = PriorGate(lookups) if lookups is not None else None
        if gate is not None:
            gate.start(store.index, events)
            stack.append(gate.stop)
        node = start_node(config.node, store, events)
        stack.append(node.stop)
        outbox = OutboxWorker(store, config.pacs, config.reading)
        outbox.start()
        stack.append(outbox.stop)
        hub = EventHub(store.index, settings.event_poll_s)
        hub.start()
        stack.append(hub.stop)
        # Drafting on request uses the queue's model when the server drafts, else its own, loaded on first use.
        drafter = OnDemandDrafter(lambda: drafting.queue.model if drafting else load_drafting_model(config).model)
        site = Site(store, settings, registry=model_registry(config),
                    send_on_sign=config.pacs.configured and config.pacs.send_on_sign,
                    notify_outbox=outbox.notify, hub=hub, drafter=drafter, software=f"RadDraft {__version__}",
                    critical_findings=tuple(config.engine.critical_findings), prior_gate=gate,
                    look_for_priors=lambda study_uid: prior_retriever(config, store).retrieve_for(study_uid, again=True),
                    on_model_switch=lambda installed: drafter.swap(None) if not drafting else None)
        api = ApiServer(create_app(site), settings)
        api.start()
        stack.append(api.stop)
    except (ModelRefused, OSError) as exc:
        for stop in reversed(stack):
            stop()
        lock.release()
        store.close()
        return _refuse(f"cannot start the site server: {exc}")
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    # Parseable lines on stdout: tests and scripts wait for the first one.
    print(f"RadDraft site server {api.url(settings.http_host)} node {config.node.ae_title} listening on "
          f"{config.node.host}:{node.port}, store {store.root}, index {store.index.db.describe()}", flush=True)
    print("  drafting: " + ("on the server" if drafting else "by workers (raddraft worker --server URL --token T)"),
          flush=True)
    if not drafting:
        print("  priors: " + ("looked up before a worker drafts the study" if gate
                              else "not looked up ([pacs] query_priors is off or priors = 0)"), flush=True)
    print(f"  signed reports go to {config.pacs.describe()}", flush=True)
    stop_requested.wait()
    log.info("stopping the site server")
    for stop in reversed(stack):
        stop()
    lock.release()
    store.close()
    return 0
