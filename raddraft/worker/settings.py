"""Typed settings of a drafting worker, built by the front door from `[worker]` and the flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dicom_node.errors import SettingsError


@dataclass(frozen=True)
class WorkerSettings:
    """server: the site server's base URL (https://HOST:PORT).
    token: a worker's token (`raddraft user token NAME`); token_file reads it from a file instead.
    ca_file: the certificate (or CA) the server's TLS certificate is checked against; None: the system's.
    worker_id: how the server names this worker; empty: HOST-PID.
    batch: studies claimed and drafted at once (engine.batched; 1 drafts one at a time).
    lease_s: how long the server keeps a claimed study for this worker; renewed every lease_s / 3.
    poll_interval_s: the wait before asking again when nothing was waiting to be drafted.
    heartbeat_s: how often the worker reports its model, provider and throughput.
    cache_dir: where fetched instances are kept while their study is drafted; None: the user cache folder.
    model / providers / variant: the engine's, for this worker (empty: the `[engine]` ones).
    """

    server: str = ""
    token: str = ""
    token_file: Path | None = None
    ca_file: Path | None = None
    worker_id: str = ""
    batch: int = 4
    lease_s: float = 120.0
    poll_interval_s: float = 2.0
    heartbeat_s: float = 15.0
    timeout_s: float = 60.0
    cache_dir: Path | None = None
    model: Path | None = None
    providers: tuple[str, ...] = ()
    variant: str = ""

    def __post_init__(self) -> None:
        if self.server and not self.server.startswith(("https://", "http://")):
            raise SettingsError("server", f"must be an https:// (or http://) URL, got {self.server!r}")
        if not 1 <= self.batch <= 64:
            raise SettingsError("batch", f"must be between 1 and 64, got {self.batch}")
        if not 10.0 <= self.lease_s <= 3600.0:
            raise SettingsError("lease_s", f"must be between 10 and 3600 seconds, got {self.lease_s}")
        for name in ("poll_interval_s", "heartbeat_s", "timeout_s"):
            if not 0 < getattr(self, name) <= 3600:
                raise SettingsError(name, f"must be between 0 and 3600 seconds, got {getattr(self, name)}")

    @property
    def renew_every_s(self) -> float:
        """Two renewals can fail in a row and the lease still holds."""
        return self.lease_s / 3.0
