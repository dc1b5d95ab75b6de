"""Assembles and runs a drafting worker: the model (by the runtime's one fallback policy), the API client,
the instance cache, and the loop, until SIGINT/SIGTERM (the batch in hand is finished and written first)."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
from pathlib import Path

import platformdirs

from raddraft.config import APP_NAME, AppConfig
from raddraft.runtime import load_drafting_model
from raddraft.worker.cache import InstanceCache
from raddraft.worker.client import Forbidden, NotAuthorized, WorkerClient
from raddraft.worker.drafting import DraftingWorker
from raddraft.worker.settings import WorkerSettings

log = logging.getLogger("raddraft.worker")


class WorkerSetupError(Exception):
    """The worker cannot start; the message says why."""


def worker_engine_config(config: AppConfig) -> AppConfig:
    """The configuration with `[worker]`'s model, providers, variant and batch in place of `[engine]`'s."""
    worker, engine = config.worker, config.engine
    return dataclasses.replace(config, engine=dataclasses.replace(
        engine, model=worker.model or engine.model, providers=worker.providers or engine.providers,
        variant=worker.variant or engine.variant, batch_size=worker.batch))


def worker_token(settings: WorkerSettings) -> str:
    if settings.token_file is not None:
        try:
            return settings.token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise WorkerSetupError(f"cannot read worker.token_file {settings.token_file}: {error}") from error
    return settings.token


def worker_id(settings: WorkerSettings) -> str:
    return settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"


def cache_folder(settings: WorkerSettings, name: str) -> Path:
    """This worker's own folder: a worker starts holding no study, so what a previous run left goes."""
    root = settings.cache_dir or Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)) / "worker"
    folder = root / re.sub(r"[^A-Za-z0-9._-]", "_", name)
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def run_worker(config: AppConfig, *, once: bool = False) -> int:
    settings = config.worker
    try:
        token = worker_token(settings)
        if not settings.server or not token:
            raise WorkerSetupError("a worker needs the server's URL and a token (--server URL --token TOKEN, "
                                   "or [worker] server and token / token_file)")
    except WorkerSetupError as error:
        print(f"raddraft worker: {error}", file=sys.stderr)
        return 2
    loaded = load_drafting_model(worker_engine_config(config))
    if loaded.model is None:
        print(f"raddraft worker: {' '.join(loaded.problems)}", file=sys.stderr)
        return 1
    model, name = loaded.model, worker_id(settings)
    client = WorkerClient(settings.server, token, ca_file=settings.ca_file, timeout_s=settings.timeout_s)
    worker = DraftingWorker(client, model, settings, InstanceCache(cache_folder(settings, name)), name,
                            config.engine.critical_findings)
    worker.warm_up()
    print(f"RadDraft worker {name} drafting with {model.model_id} ({model.variant}, {model.provider}, "
          f"batch {settings.batch}) for {settings.server}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if once:
            worker.run_once()
            worker.heartbeat()
        else:
            worker.run(stop)
    except (NotAuthorized, Forbidden) as error:
        print(f"raddraft worker: the server refused the token ({error})", file=sys.stderr)
        return 2
    finally:
        stop.set()
        client.close()
    log.info("worker %s stopped after %d drafts", name, worker.drafted)
    return 0
