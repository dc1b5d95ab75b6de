"""Runs the headless node: store + DICOM node + drafting queue until SIGINT/SIGTERM, then a clean stop."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dicom_node.errors import StoreWriteError
from dicom_node.events import NodeEvents
from dicom_node.host_lock import HostInfo, HostLock, current_host
from dicom_node.outbox import OutboxWorker
from dicom_node.store import Store
from raddraft.config import AppConfig
from raddraft.resources import follow_registry
from raddraft.runtime import load_drafting_model, start_drafting_queue, start_node

if TYPE_CHECKING:
    from engine.model_switch import ModelFollower
    from engine.queue import DraftingQueue

log = logging.getLogger("raddraft.service")


@dataclass
class Drafting:
    """The drafting queue and, unless the configuration pins the model, what keeps it on the registry's
    current model."""

    queue: DraftingQueue
    follower: ModelFollower | None = None

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        self.queue.stop()


def start_drafting(config: AppConfig, store: Store, events: NodeEvents) -> Drafting | None:
    """The drafting queue on the model `raddraft.runtime.load_drafting_model` chose; None when drafting is
    off. A pinned model that cannot be loaded stops the start (`ModelRefused`): the administrator asked
    for it."""
    if not config.engine.draft_on_stable:
        return None
    loaded = load_drafting_model(config)
    if loaded.refused:
        raise ModelRefused(" ".join(loaded.problems))
    if loaded.model is None:
        return None
    queue = start_drafting_queue(config, store, loaded.model, events)

    def switch(installed, new_model) -> None:
        old = queue.model.model_id
        queue.swap_model(new_model)
        log.info("model switched: %s -> %s (%s); the study being drafted finishes on %s",
                 old, new_model.model_id, installed.how, old)

    def failed(what: str, error: Exception) -> None:
        log.error("%s: %s; still drafting with %s", what, error, queue.model.model_id)

    return Drafting(queue, follow_registry(config, loaded.choice, switch, failed))


class ModelRefused(Exception):
    """The bundle the configuration pins cannot be loaded."""


def run_service(config: AppConfig) -> int:
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
        drafting = start_drafting(config, store, events)
    except ModelRefused as exc:
        print(f"raddraft: {exc}", file=sys.stderr)
        lock.release()
        store.close()
        return 1
    try:
        node = start_node(config.node, store, events)
    except OSError as exc:
        print(f"raddraft: cannot listen on {config.node.host}:{config.node.port}: {exc.strerror or exc}",
              file=sys.stderr)
        if drafting:
            drafting.stop()
        lock.release()
        store.close()
        return 1
    lock.update(HostInfo("service", os.getpid(), config.node.ae_title, config.node.host, node.port))
    # Reports signed in an app attached to this service are sent from here (see Workstation.start).
    outbox = OutboxWorker(store, config.pacs, config.reading)
    outbox.start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # One parseable line on stdout: tests and scripts wait for it; people read it.
    print(f"RadDraft node {config.node.ae_title} listening on {config.node.host}:{node.port}, "
          f"store {store.root}", flush=True)
    if drafting:
        model = drafting.queue.model
        print(f"  drafting with {model.model_id} ({model.variant}) on {model.provider}", flush=True)
        if drafting.follower:
            print(f"  following the current model of {drafting.follower.registry.models_dir} "
                  "(raddraft model use VERSION switches it)", flush=True)
    else:
        print("  drafting is off", flush=True)
    print(f"  signed reports go to {config.pacs.describe()}", flush=True)
    print(f"  send a study: raddraft send {config.node.host} {node.port} PATH... "
          f"(or: storescu -aec {config.node.ae_title} {config.node.host} {node.port} FILES)", flush=True)
    stop.wait()
    log.info("stopping: finishing in-flight associations and the study being drafted")
    node.stop()
    if drafting:
        drafting.stop()
    outbox.stop()
    lock.release()
    store.close()
    return 0
