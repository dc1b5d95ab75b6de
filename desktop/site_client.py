"""The HTTP client of `raddraft app --server URL`: the site server's API (docs/site-api.md) over httpx,
its event streams (server-sent events, httpx-sse) and a local cache of the images it serves.

It knows nothing of Qt: `desktop.remote.SiteWorkstation` calls it from worker threads. Every answer the
API refuses becomes a typed exception (`NotAuthorized` for 401, `Forbidden` for 403, `StudyClaimed` for a
409 that names who holds the study, `SiteError` otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from dicom_node.durable import write_atomically


class SiteError(Exception):
    """The site server could not be reached, or refused a request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotAuthorized(SiteError):
    """401: wrong user name or password, or a bad or expired token."""


class Forbidden(SiteError):
    """403: the logged-in user's role may not do this."""


class StudyClaimed(SiteError):
    """409 on a claim: another radiologist is reading the study."""

    def __init__(self, study_uid: str, claimed_by: str) -> None:
        super().__init__(f"being read by {claimed_by}", 409)
        self.study_uid, self.claimed_by = study_uid, claimed_by


@dataclass(frozen=True)
class SiteSettings:
    """Where the site server is and how to trust it; built by the front door from flags and configuration."""

    url: str
    cache_dir: Path
    ca_file: Path | None = None  # a private CA or the server's self-signed certificate; None: the system's
    timeout_s: float = 30.0
    claim_renew_s: float = 20.0  # the server's claim lease is longer (60 s): two renewals may fail in a row
    cache_max_bytes: int = 20 * 1024**3  # the image cache is pruned to this, least recently read first
    reconnect_s: float = 2.0  # the event stream after it broke


@dataclass(frozen=True)
class Session:
    token: str
    expires_at: str
    user_name: str
    role: str


def _tls(settings: SiteSettings) -> ssl.SSLContext | bool:
    if settings.ca_file is not None:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    return True


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    return body.get("detail", body) if isinstance(body, dict) else body


def raise_for(response: httpx.Response, study_uid: str = "") -> None:
    """The API's refusal as a typed exception (nothing for a success)."""
    if response.is_success:
        return
    detail = _detail(response)
    status = response.status_code
    if status == 401:
        raise NotAuthorized("not logged in: wrong user name or password, or the session expired", 401)
    if status == 403:
        raise Forbidden(f"your role may not do this ({detail})", 403)
    claimed_by = detail.get("claimed_by") if isinstance(detail, dict) else None
    if status == 409 and claimed_by:
        raise StudyClaimed(study_uid, str(claimed_by))
    raise SiteError(f"the site server answered {status}: {detail}", status)


class SiteClient:
    """One logged-in connection to the site server (thread-safe: httpx.Client is)."""

    def __init__(self, settings: SiteSettings, session: Session | None = None) -> None:
        self.settings = settings
        self.session = session
        self._http = httpx.Client(base_url=settings.url.rstrip("/"), verify=_tls(settings),
                                  timeout=settings.timeout_s)

    def close(self) -> None:
        self._http.close()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.session.token}"} if self.session else {}

    def request(self, method: str, path: str, *, study_uid: str = "", **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, headers=self._headers(), **kwargs)
        except httpx.HTTPError as error:
            raise SiteError(f"cannot reach the site server at {self.settings.url}: {error}") from error
        if response.status_code == 401 and self.session is not None:
            raise NotAuthorized(f"your session on {self.settings.url} has ended (it expired or was revoked): "
                                "close RadDraft and log in again", 401)
        raise_for(response, study_uid)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def login(self, username: str, password: str) -> Session:
        """Exchange a user name and password for a token (NotAuthorized when they are wrong)."""
        body = self.json("POST", "/api/login", json={"username": username, "password": password})
        user = body.get("user") or {}
        self.session = Session(str(body["token"]), str(body.get("expires_at", "")),
                               str(user.get("name", username)), str(user.get("role", "")))
        return self.session

    def events(self, path: str, *, json_body: Any = None, method: str = "GET",
               on_open: Callable[[], None] = lambda: None) -> Iterator[tuple[str, Any]]:
        """The server-sent events of `path` as (event name, decoded data) until the server ends the stream;
        `on_open` is called once the server has accepted the stream (from then on no change is missed)."""
        try:
            with connect_sse(self._http, method, path, headers=self._headers(), json=json_body,
                             timeout=httpx.Timeout(self.settings.timeout_s, read=None)) as source:
                raise_for(source.response)
                on_open()
                for event in source.iter_sse():
                    yield event.event, _decoded(event.data)
        except httpx.HTTPError as error:
            raise SiteError(f"the event stream from {self.settings.url} broke: {error}") from error


def _decoded(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data


class ImageCache:
    """Instances fetched by WADO-RS, kept on the workstation's disk under a hash of their UIDs (the bytes of
    one SOP instance never change on the server: a re-sent instance keeps its bytes as first stored)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def prune(self, max_bytes: int) -> int:
        """Delete the least recently used instances until the cache holds at most `max_bytes`; bytes freed.
        A cached file is touched each time it is opened (`fetch`), so its mtime is its last use."""
        files = []
        for path in self.root.glob("*/*.dcm"):
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            files.append((info.st_mtime, info.st_size, path))
        total, freed = sum(size for _, size, _ in files), 0
        for _, size, path in sorted(files):
            if total - freed <= max_bytes:
                break
            path.unlink(missing_ok=True)
            freed += size
        return freed

    def path_of(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        digest = hashlib.sha256(f"{study_uid}/{series_uid}/{sop_uid}".encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.dcm"

    def fetch(self, client: SiteClient, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """The local copy of one instance, downloaded first when it is not cached yet."""
        path = self.path_of(study_uid, series_uid, sop_uid)
        try:
            os.utime(path)  # its last use, for prune()
            return path
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        response = client.request("GET", f"/api/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
                                  study_uid=study_uid)
        write_atomically(path, [response.content])
        return path
