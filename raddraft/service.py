"""Runs the headless node: store + DICOM node until SIGINT/SIGTERM, then a clean stop."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from dicom_node.errors import StoreWriteError
from dicom_node.events import NodeEvents
from dicom_node.server import DicomNode
from dicom_node.store import Store
from raddraft.config import AppConfig

log = logging.getLogger("raddraft.service")


def run_service(config: AppConfig) -> int:
    try:
        store = Store(config.store)
    except StoreWriteError as exc:
        print(f"raddraft: {exc}", file=sys.stderr)
        return 1
    node = DicomNode(config.node, store, NodeEvents())
    try:
        node.start()
    except OSError as exc:
        print(f"raddraft: cannot listen on {config.node.host}:{config.node.port}: {exc.strerror or exc}",
              file=sys.stderr)
        store.close()
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # One parseable line on stdout: tests and scripts wait for it; people read it.
    print(f"RadDraft node {config.node.ae_title} listening on {config.node.host}:{node.port}, "
          f"store {store.root}", flush=True)
    print(f"  send a study: raddraft send {config.node.host} {node.port} PATH... "
          f"(or: storescu -aec {config.node.ae_title} {config.node.host} {node.port} FILES)", flush=True)
    stop.wait()
    log.info("stopping: finishing in-flight associations")
    node.stop()
    store.close()
    return 0
