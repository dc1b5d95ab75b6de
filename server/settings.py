"""Typed settings of the site server, built by the front door from `[server]` and flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ServerSettingsError(ValueError):
    """A `[server]` setting is out of range or names a missing file."""


@dataclass(frozen=True)
class ServerSettings:
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
        if not 0 <= self.http_port <= 65535:
            raise ServerSettingsError(f"http_port must be between 0 and 65535, got {self.http_port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ServerSettingsError("tls_cert and tls_key are set together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise ServerSettingsError(f"no such file: {path}")
        if self.tls_cert is None and not self.allow_plain_http:
            raise ServerSettingsError("the API needs tls_cert and tls_key (or allow_plain_http = true behind a "
                                      "TLS proxy)")
        for name in ("token_ttl_s", "claim_lease_s", "job_lease_s", "event_poll_s"):
            if getattr(self, name) <= 0:
                raise ServerSettingsError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None
