"""The site server over real HTTPS: uvicorn with a self-signed certificate made here, on a store whose index
is a fresh database of the session's private PostgreSQL cluster."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dicom_node.index import StudyState
from dicom_node.settings import StoreSettings
from dicom_node.store import ReceivedInstance, Store
from server.app import Site, create_app
from server.events import EventHub
from server.https import ApiServer
from server.schema import prepare_site_tables
from server.settings import ServerSettings
from server.users import add_user
from tests.conftest import copy_with_fresh_uids, require_tool, sample_path

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "server.key", folder / "server.crt"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@dataclass
class RunningSite:
    site: Site
    api: ApiServer
    cert: Path
    outbox_wakes: list[int]

    @property
    def url(self) -> str:
        return self.api.url()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.cert)),
                            headers=headers, timeout=30.0)

    def login(self, name: str, password: str = PASSWORD) -> str:
        with self.client() as http:
            answer = http.post("/api/login", json={"username": name, "password": password})
        answer.raise_for_status()
        return answer.json()["token"]

    def add_study(self, folder: Path, images: int = 1, state: StudyState = StudyState.STABLE) -> str:
        from pydicom.uid import generate_uid

        study_uid = generate_uid()
        for number in range(images):
            path = folder / f"{study_uid}-{number}.dcm"
            copy_with_fresh_uids(sample_path("CT_small.dcm"), path, study_uid=study_uid)
            self.site.store.put(ReceivedInstance.from_part10(path.read_bytes()))
        if state != StudyState.RECEIVING:
            self.site.index.transition(study_uid, state)
        return study_uid


@pytest.fixture
def running_site(tmp_path: Path, postgres_url: str, certificate) -> Iterator[RunningSite]:
    cert, key = certificate
    settings = ServerSettings(http_port=0, tls_cert=cert, tls_key=key, claim_lease_s=60.0, job_lease_s=30.0,
                              event_poll_s=0.1)
    store = Store(StoreSettings(tmp_path / "store", database=postgres_url))
    prepare_site_tables(store.index)
    wakes: list[int] = []
    hub = EventHub(store.index, settings.event_poll_s)
    site = Site(store, settings, notify_outbox=lambda: wakes.append(1), hub=hub)
    for name, role in (("anna", "radiologist"), ("ben", "radiologist"), ("root", "admin"), ("gpu1", "worker")):
        add_user(store.index, name, role, PASSWORD)
    hub.start()
    api = ApiServer(create_app(site), settings)
    api.start()
    try:
        yield RunningSite(site, api, cert, wakes)
    finally:
        api.stop()
        hub.stop()
        store.close()
