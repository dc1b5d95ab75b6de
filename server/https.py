"""Serving the API with uvicorn, TLS from the settings; in the caller's thread or a background one."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from server.settings import ServerSettings


class ApiServer:
    """uvicorn on the configured address; `port` is the one bound (0 in the settings: the OS picks)."""

    def __init__(self, app: FastAPI, settings: ServerSettings) -> None:
        tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)} if settings.tls else {}
        config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="warning",
                                access_log=False, timeout_keep_alive=30, **tls)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the front door owns the signals
        self._thread: threading.Thread | None = None
        self.scheme = "https" if settings.tls else "http"

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._server.run, name="raddraft-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError("the API server did not start (is the port free?)")
            time.sleep(0.02)

    @property
    def port(self) -> int:
        (server,) = self._server.servers
        return int(server.sockets[0].getsockname()[1])

    def url(self, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15.0)
