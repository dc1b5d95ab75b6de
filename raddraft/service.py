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
from dicom_node.server import DicomNode
from dicom_node.store import Store
from raddraft.config import AppConfig
from raddraft.resources import (
    CONFIGURED,
    REGISTRY,
    ModelChoice,
    embedded_choice,
    follow_registry,
    resolve_model,
)

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
    """The drafting queue on the pinned, the registry's current or the embedded model; None when drafting is
    off.

    A pinned model that cannot be loaded stops the start: the administrator asked for it. A registry model
    that cannot be loaded falls back to the embedded one, loudly; a missing embedded model only disables
    drafting, with a warning.
    """
    if not config.engine.draft_on_stable:
        return None
    from engine.queue import DraftingQueue

    choice = resolve_model(config)
    model, choice = _load_chosen(config, choice)
    if model is None:
        return None
    queue = DraftingQueue(store, model, critical_findings=config.engine.critical_findings)
    queue.start(events)

    def switch(installed, new_model) -> None:
        old = queue.model.model_id
        queue.swap_model(new_model)
        log.info("model switched: %s -> %s (%s); the study being drafted finishes on %s",
                 old, new_model.model_id, installed.how, old)

    def failed(what: str, error: Exception) -> None:
        log.error("%s: %s; still drafting with %s", what, error, queue.model.model_id)

    return Drafting(queue, follow_registry(config, choice, switch, failed))


def _load_chosen(config: AppConfig, choice: ModelChoice):
    from engine.errors import EngineError
    from engine.runtime import load_model

    try:
        return load_model(choice.path, config.engine), choice
    except EngineError as error:
        if choice.source == CONFIGURED:
            raise
        if choice.source == REGISTRY:
            log.error("the current model %s cannot be loaded (%s); drafting with the embedded model instead",
                      choice.path, error)
            return _load_chosen(config, embedded_choice(config, str(error), choice.pointer_token))
        log.warning("drafting is off: the embedded model cannot be loaded (%s)", error)
        return None, choice


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
        drafting = start_drafting(config, store, events)
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
