"""Typed settings of the site server, built by the front door from `[server]` and flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dicom_node.errors import SettingsError


@dataclass(frozen=True)
class ServerSettings:
    # The index's PostgreSQL URL (or [store] database; a --database flag sets that one).
    database: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Plain HTTP only when asked for in so many words (a TLS-terminating proxy in front, or a test).
    allow_plain_http: bool = False
    token_ttl_s: float = 12 * 3600.0
    claim_lease_s: float = 60.0  # a study claim the app stops renewing is free again after this
    job_lease_s: float = 120.0  # a worker's drafting lease
    draft_on_server: bool = False  # False: workers draft (they claim jobs through the API)
    event_poll_s: float = 0.5  # how often the index is looked at for changes to push to the apps

    def __post_init__(self) -> None:
        if self.database and not self.database.startswith(("postgresql://", "postgres://")):
            raise SettingsError("database", "must be a postgresql:// URL")
        if not 0 <= self.http_port <= 65535:
            raise SettingsError("http_port", f"must be between 0 and 65535, got {self.http_port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("tls_cert", "tls_cert and tls_key are set together")
        for name in ("token_ttl_s", "claim_lease_s", "job_lease_s", "event_poll_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(name, f"must be positive, got {getattr(self, name)}")

    def transport_problem(self) -> str | None:
        """Why the API cannot be served as configured (checked when the server starts, not when any other
        command reads the configuration)."""
        if self.tls_cert is None and not self.allow_plain_http:
            return ("the API needs [server] tls_cert and tls_key (or allow_plain_http = true behind a TLS "
                    "proxy)")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                return f"no such file: {path}"
        return None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None
