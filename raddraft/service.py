"""Runs the headless node: store + DICOM node + drafting queue until SIGINT/SIGTERM, then a clean stop."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from dicom_node.errors import StoreWriteError
from dicom_node.events import NodeEvents
from dicom_node.host_lock import HostInfo, HostLock, current_host
from dicom_node.server import DicomNode
from dicom_node.store import Store
from raddraft.config import AppConfig
from raddraft.resources import model_dir

log = logging.getLogger("raddraft.service")


def start_drafting(config: AppConfig, store: Store, events: NodeEvents):
    """The drafting queue on the configured (or embedded) model, or None when drafting is off.

    A configured model that cannot be loaded stops the start: the administrator asked for it. A missing
    embedded model only disables drafting, with a warning.
    """
    if not config.engine.draft_on_stable:
        return None
    from engine.errors import EngineError
    from engine.queue import DraftingQueue
    from engine.runtime import load_model

    bundle = model_dir(config.engine.model)
    try:
        model = load_model(bundle, config.engine)
    except EngineError as error:
        if config.engine.model is not None:
            raise
        log.warning("drafting is off: the embedded model cannot be loaded (%s)", error)
        return None
    queue = DraftingQueue(store, model)
    queue.start(events)
    return queue


def run_service(config: AppConfig) -> int:
    from engine.errors import EngineError

    try:
        store = Store(config.store)
    except StoreWriteError as exc:
        print(f"raddraft: {exc}", file=sys.stderr)
        return 1
    lock = HostLock.acquire(store.root, HostInfo("service", os.getpid(), config.node.ae_title, config.node.host,
                                                   config.node.port))
    if lock is None:
        holder = current_host(store.root)
        print(f"raddraft: the store {store.root} is already served by "
              f"{holder.describe() if holder else 'another process'}", file=sys.stderr)
        store.close()
        return 1
    events = NodeEvents()
    try:
        queue = start_drafting(config, store, events)
    except EngineError as exc:
        print(f"raddraft: {exc}", file=sys.stderr)
        lock.release()
        store.close()
        return 1
    node = DicomNode(config.node, store, events)
    try:
        node.start()
    except OSError as exc:
        print(f"raddraft: cannot listen on {config.node.host}:{config.node.port}: {exc.strerror or exc}",
              file=sys.stderr)
        if queue:
            queue.stop()
        lock.release()
        store.close()
        return 1
    lock.update(HostInfo("service", os.getpid(), config.node.ae_title, config.node.host, node.port))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # One parseable line on stdout: tests and scripts wait for it; people read it.
    print(f"RadDraft node {config.node.ae_title} listening on {config.node.host}:{node.port}, "
          f"store {store.root}", flush=True)
    if queue:
        model = queue.model
        print(f"  drafting with {model.model_id} ({model.variant}) on {model.provider}", flush=True)
    else:
        print("  drafting is off", flush=True)
    print(f"  send a study: raddraft send {config.node.host} {node.port} PATH... "
          f"(or: storescu -aec {config.node.ae_title} {config.node.host} {node.port} FILES)", flush=True)
    stop.wait()
    log.info("stopping: finishing in-flight associations and the study being drafted")
    node.stop()
    if queue:
        queue.stop()
    lock.release()
    store.close()
    return 0
