"""The worker's side of the site server's API (docs/site-api.md, "Workers"), over httpx.

Every refusal becomes a typed exception: `NotAuthorized` (401: the token is wrong or expired),
`Forbidden` (403: the user may not), `LeaseLost` (409: the study was drafted or taken again by another
worker), `WorkerApiError` otherwise;
`ServerUnreachable` when no answer came at all.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


class WorkerApiError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachable(WorkerApiError):
    """No answer: the server is down, restarting or out of reach."""


class NotAuthorized(WorkerApiError):
    """401: the token is wrong or has expired."""


class Forbidden(WorkerApiError):
    """403: the token's user is not a worker (or the server does not let workers read images)."""


class LeaseLost(WorkerApiError):
    """409: this worker no longer holds the study (its lease expired and another took it, or it was drafted)."""


@dataclass(frozen=True)
class InstanceRef:
    series_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class JobPrior:
    """The study's most recent prior as the server hands it out with the job (the shape of
    `dicom_node.priors.PriorStudy` that `engine.prompts.prior_input` reads): its report, and its image
    instances, frontal first, to fetch by WADO-RS when the model takes the prior's image."""

    study_uid: str
    study_date: str  # YYYYMMDD
    modality: str = ""
    description: str = ""
    instances: tuple[InstanceRef, ...] = ()
    findings: str = ""
    impression: str = ""
    report_source: str = ""


@dataclass(frozen=True)
class Job:
    """A study this worker holds under a lease until `lease_expires` (server time, Unix seconds)."""

    study_uid: str
    lease_id: str
    lease_expires: float
    instances: tuple[InstanceRef, ...] = field(default=())
    prior: JobPrior | None = None


class WorkerClient:
    def __init__(self, server: str, token: str, *, ca_file: Path | None = None, timeout_s: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self._http = httpx.Client(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
                                  verify=verify, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def claim(self, worker_id: str, count: int, lease_s: float) -> list[Job]:
        answer = self._call("POST", "/api/worker/claim", json={"worker_id": worker_id, "max": count, "lease_s": lease_s})
        return [job_from(item) for item in answer]

    def study_instances(self, study_uid: str) -> tuple[InstanceRef, ...]:
        """The study's instances from its metadata (for a claim that did not list them)."""
        study = self._call("GET", f"/api/studies/{study_uid}")
        listed = study.get("instances") or [i for s in study.get("series", []) for i in s.get("instances", [])]
        return tuple(InstanceRef(str(i["series_uid"]), str(i["sop_instance_uid"])) for i in listed)

    def renew(self, job: Job) -> float:
        answer = self._call("POST", f"/api/worker/jobs/{job.study_uid}/renew", json={"lease_id": job.lease_id})
        return float(answer.get("lease_expires", 0.0)) if isinstance(answer, dict) else 0.0

    def submit_draft(self, job: Job, draft: dict[str, Any]) -> None:
        self._call("POST", f"/api/worker/jobs/{job.study_uid}/draft", json={"lease_id": job.lease_id, **draft})

    def fail(self, job: Job, reason: str) -> None:
        self._call("POST", f"/api/worker/jobs/{job.study_uid}/fail", json={"lease_id": job.lease_id,
                                                                           "reason": reason[:500]})

    def heartbeat(self, report: dict[str, Any]) -> None:
        self._call("POST", "/api/worker/heartbeat", json=report)

    @contextmanager
    def instance_stream(self, study_uid: str, instance: InstanceRef) -> Iterator[Iterator[bytes]]:
        """The instance's bytes as stored (WADO-RS), in chunks, without holding the file in memory."""
        path = f"/api/studies/{study_uid}/series/{instance.series_uid}/instances/{instance.sop_instance_uid}"
        try:
            with self._http.stream("GET", path, headers={"Accept": "application/dicom"}) as response:
                if response.status_code != 200:
                    response.read()
                    raise _refusal(response)
                yield response.iter_bytes(1 << 16)
        except httpx.TransportError as error:
            raise ServerUnreachable(f"{self._http.base_url}: {error}") from error

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ServerUnreachable(f"{self._http.base_url}: {error}") from error
        if response.status_code >= 400:
            raise _refusal(response)
        return response.json() if response.content else None


def job_from(item: dict[str, Any]) -> Job:
    return Job(str(item["study_uid"]), str(item["lease_id"]), float(item.get("lease_expires") or 0.0),
               _refs(item.get("instances")), prior_from(item.get("prior")))


def prior_from(item: dict[str, Any] | None) -> JobPrior | None:
    if not item:
        return None
    return JobPrior(str(item["study_uid"]), str(item.get("study_date") or ""), str(item.get("modality") or ""),
                    str(item.get("description") or ""), _refs(item.get("instances")), str(item.get("findings") or ""),
                    str(item.get("impression") or ""), str(item.get("report_source") or ""))


def _refs(items: Any) -> tuple[InstanceRef, ...]:
    return tuple(InstanceRef(str(i["series_uid"]), str(i["sop_instance_uid"])) for i in items or ())


def _refusal(response: httpx.Response) -> WorkerApiError:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    message = f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}"
    kind = {401: NotAuthorized, 403: Forbidden, 409: LeaseLost}.get(response.status_code, WorkerApiError)
    return kind(message, response.status_code)
