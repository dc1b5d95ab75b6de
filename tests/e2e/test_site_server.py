"""A department end to end: `raddraft server` (its PostgreSQL index in a private cluster, HTTPS with a
certificate made here, SRs to Orthanc as the PACS) + two `raddraft worker` processes + two reading windows of
`raddraft app --server` (pytest-qt, offscreen, in this process through the same `open_site` the command uses).

- 20 phantom studies sent by storescu are each drafted exactly once, although one worker is SIGKILLed while it
  holds leases on studies it drafts (they are claimed again after the lease);
- radiologist A opens a study and B sees it "being read by" A; A signs, the SR reaches Orthanc, and the audit
  log has the signature;
- a wrong password, a bad token and an expired token get 401 and no data.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from peers.dcmtk import storescu_send
from peers.orthanc import free_port, running_orthanc
from raddraft.cli import COMMAND_MODULES
from tests.conftest import require_orthanc, require_tool, wait_until

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the reading windows, as in tests/desktop

pytest.importorskip("fastapi", reason="the site server's extra is not installed (pip install '.[server]')")
psycopg = pytest.importorskip("psycopg", reason="the site server's extra is not installed (pip install '.[server]')")
site_fixtures = pytest.importorskip("tests.server.conftest", reason="the site server is not in this tree")
certificate = site_fixtures.certificate
pytestmark = [pytest.mark.slow, pytest.mark.peers]
if not {"server", "user", "worker"} <= set(COMMAND_MODULES):
    pytest.skip("raddraft server, user and worker are not all in this tree", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "resources" / "models" / "raddraft-phantom-cxr"
STUDIES, PASSWORD = 20, "correct horse battery"
JOB_LEASE_S = 15.0
POLL_S = 0.2  # each poll opens an HTTPS connection or SQL session: slower leaves the CPUs to server and workers
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def raddraft(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", *args], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}, **kwargs)


def start(*args: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "raddraft", *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(REPO)})


def stop(process: subprocess.Popen) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


@dataclass
class Department:
    url: str
    cert: Path
    database: str
    node_port: int
    orthanc: Any
    config: Path
    logs: Path
    workers: dict[str, subprocess.Popen]

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.cert)),
                            headers=headers, timeout=30.0)

    def login(self, name: str, password: str = PASSWORD) -> str:
        with self.http() as http:
            answer = http.post("/api/login", json={"username": name, "password": password})
        answer.raise_for_status()
        return answer.json()["token"]

    def get(self, path: str, token: str, **params: Any) -> Any:
        with self.http(token) as http:
            answer = http.get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    def sql(self, query: str, *args: Any) -> list[tuple]:
        with psycopg.connect(self.database) as conn:
            return conn.execute(query, args).fetchall()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@pytest.fixture(scope="module")
def department(tmp_path_factory, postgres_cluster, certificate) -> Iterator[Department]:
    """The server, its users and two workers, once for this module's tests (starting them takes a minute)."""
    require_tool("storescu")
    tmp_path, postgres_url = tmp_path_factory.mktemp("department"), postgres_cluster.new_database()
    cert, key = certificate
    logs = tmp_path / "logs"
    logs.mkdir()
    with running_orthanc(tmp_path / "orthanc", binary=require_orthanc(), ae_title="ORTHANC") as orthanc:
        node_port, http_port = free_port(), free_port()
        config = tmp_path / "site.toml"
        config.write_text(f"""
[node]
stable_after_s = 2.0

[pacs]
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {orthanc.dicom_port}
calling_ae = "RADDRAFT"
retry_initial_s = 1.0

[server]
tls_cert = "{cert}"
tls_key = "{key}"
job_lease_s = {JOB_LEASE_S}
event_poll_s = 0.2
""")
        common = ("--config", str(config))
        for name, role in (("anna", "radiologist"), ("ben", "radiologist"), ("root", "admin"), ("gpu", "worker")):
            added = raddraft("user", *common, "--database", postgres_url, "add", name, "--role", role,
                             input=PASSWORD + "\n")
            assert added.returncode == 0, added.stderr
        server = start("server", *common, "--database", postgres_url, "--store", str(tmp_path / "store"),
                       "--port", str(node_port), "--ae-title", "RADDRAFT", "--http-port", str(http_port),
                       log=logs / "server.log")
        site = Department(f"https://127.0.0.1:{http_port}", cert, postgres_url, node_port, orthanc, config, logs, {})
        try:
            wait_until(lambda: server.poll() is not None or _answers(site), 60, "the API", POLL_S)
            assert server.poll() is None, site.log_tail("server")
            token_file = tmp_path / "worker.token"
            token = raddraft("user", *common, "--database", postgres_url, "token", "gpu")
            assert token.returncode == 0, token.stderr
            token_file.write_text(token.stdout.strip())
            token_file.chmod(0o600)
            for worker in ("w1", "w2"):
                site.workers[worker] = start(
                    "worker", "--server", site.url, "--token-file", str(token_file), "--ca-file", str(cert),
                    "--worker-id", worker, "--batch", "2", "--lease", str(JOB_LEASE_S), "--model", str(EMBEDDED),
                    "--provider", "cpu", "--cache-dir", str(tmp_path / f"cache-{worker}"), log=logs / f"{worker}.log")
            yield site
        finally:
            for worker in site.workers.values():
                stop(worker)
            assert stop(server) == 0, site.log_tail("server")


def _answers(site: Department) -> bool:
    try:
        with site.http() as http:
            return http.get("/api/me").status_code == 401
    except httpx.HTTPError:
        return False


def phantom_studies(out: Path) -> list[tuple[str, list[Path]]]:
    """20 one-image chest phantoms at the embedded model's input size, the first without findings."""
    from training.data.phantoms import PhantomConfig, plan_study, write_study

    config = PhantomConfig(image_size=128, workers=1, ap_fraction=0.0, lateral_fraction=0.0,
                           transfer_syntax_weights={"explicit": 1.0})
    studies = []
    for index in range(STUDIES):
        record = write_study(plan_study(2026, index, config, findings=() if index == 0 else None), out, config)
        studies.append((str(record["study_uid"]), [out / p for p in record["images"]]))
    return studies


def kill_mid_draft(site: Department, worker: str) -> dict[str, float]:
    """SIGKILL `worker` as soon as it holds a lease on a study it drafts (a lease is gone once its draft is
    written); the studies it held, with the end of their leases."""
    query = "SELECT study_uid, expires_at FROM draft_leases WHERE worker_id = %s"
    wait_until(lambda: site.sql(query, worker), 180, f"{worker} to claim a study\n{site.log_tail(worker)}", POLL_S)
    site.workers[worker].send_signal(signal.SIGKILL)
    site.workers[worker].wait(10)
    return dict(site.sql(query, worker))


@pytest.fixture
def reader(department: Department, tmp_path: Path, open_window) -> Callable[[str], Any]:
    """`reader(name)` -> a shown main window of `raddraft app --server` logged in as `name`."""
    from desktop.site_client import SiteClient, SiteSettings
    from raddraft.config import load_config
    from raddraft.site_app import open_site

    (tmp_path / "app.toml").write_text("")
    config = load_config(tmp_path / "app.toml", {})

    def make(name: str):
        settings = SiteSettings(url=department.url, cache_dir=tmp_path / f"images-{name}", ca_file=department.cert)
        login = SiteClient(settings)
        session = login.login(name, PASSWORD)
        login.close()
        return open_window(open_site(settings, config, session))

    return make


def sign_answering_checks(window, qtbot) -> None:
    """Accept the AI text and sign; the sign dialog, should the checks ask, is answered as a reader would."""
    from PySide6.QtCore import QTimer

    def answer() -> None:
        dialog = window.sign_dialog
        if dialog is not None and dialog.isVisible():
            dialog.reason.setText("Reviewed against the images.")
            dialog.recipient.setText("Dr Lee, ED")
            dialog.sign_button.click()

    timer = QTimer(window, interval=50)
    timer.timeout.connect(answer)
    timer.start()
    window.panel.accept_ai()
    window.sign()
    qtbot.waitUntil(lambda: window.panel.signed, timeout=30_000)
    timer.stop()


def test_a_department_drafts_each_study_once_reads_claims_signs_to_pacs_and_audits(department, reader, tmp_path,
                                                                                   qtbot):
    site = department
    studies = phantom_studies(tmp_path / "phantoms")
    storescu_send([path for _, paths in studies for path in paths], site.node_port, "RADDRAFT")
    held = kill_mid_draft(site, "w1")
    assert held, "w1 was killed while it held a study"
    anna_token = site.login("anna")

    def drafts() -> dict[str, int]:
        return {row["study_uid"]: row["drafts"] for row in site.get("/api/studies", anna_token)}

    wait_until(lambda: all(drafts().get(uid) for uid, _ in studies), 300,
               f"all {STUDIES} studies drafted\n{site.log_tail('w2')}\n{site.log_tail('server')}", POLL_S)
    time.sleep(1.0)  # a second draft of any study would show now
    assert [drafts()[uid] for uid, _ in studies] == [1] * STUDIES
    for uid, lease_end in held.items():  # w1's studies waited for its lease to run out, then w2 drafted them
        (draft,) = site.get(f"/api/studies/{uid}/drafts", anna_token)
        assert draft["created_at"] >= lease_end
    workers = {w["worker_id"]: w for w in site.get("/api/workers", anna_token)}
    assert workers["w2"]["model"] and workers["w2"]["provider"]

    anna, ben = reader("anna"), reader("ben")
    uid = studies[0][0]
    qtbot.waitUntil(lambda: anna.worklist.model.row_of(uid) is not None, timeout=15_000)
    anna.open_study(uid)
    qtbot.waitUntil(lambda: anna.opened is not None and anna.opened.study.study_uid == uid, timeout=30_000)
    assert anna.viewer.stacks and anna.panel.findings.section.text
    model = ben.worklist.model

    def ben_sees() -> str:
        row = model.row_of(uid)
        return model.index(model._rows.index(row), 8).data() if row else ""

    qtbot.waitUntil(lambda: "being read by anna" in ben_sees(), timeout=15_000)

    # Drafting the findings again on request: the server's model streams them into anna's editor.
    assert anna.ws.model is not None, "the server's current model"
    pieces: list[str] = []
    anna.section_piece.connect(lambda _uid, section, text: pieces.append(text))
    anna.draft_section("findings", asked=True)
    qtbot.waitUntil(lambda: "findings" not in anna.generating, timeout=120_000)
    assert len(pieces) > 1 and "".join(pieces).strip() in anna.panel.findings.section.text
    assert anna.panel.findings.section.unreviewed(), "the model's text, marked until accepted"

    sign_answering_checks(anna, qtbot)
    (report,) = site.get(f"/api/studies/{uid}", anna_token)["reports"]
    assert report["signed_by"] == "anna"

    def sr_in_orthanc() -> bool:
        study_id = site.orthanc.study_id(uid)
        return bool(study_id) and any(series["MainDicomTags"].get("Modality") == "SR"
                                      for series in site.orthanc.study_series(study_id))

    wait_until(sr_in_orthanc, 60, f"the SR in Orthanc\n{site.log_tail('server')}", POLL_S)
    audit = site.get("/api/audit", site.login("root"), action="sign")
    assert [(row["user_name"], row["study_uid"]) for row in audit] == [("anna", uid)]


def test_a_wrong_password_a_bad_or_expired_token_get_401_and_no_data(department):
    site = department
    with site.http() as http:
        refused = http.post("/api/login", json={"username": "anna", "password": "wrong"})
    assert refused.status_code == 401 and "token" not in refused.text
    for token in ("not-a-token", expired_token(site)):
        with site.http(token) as http:
            answer = http.get("/api/studies")
        assert answer.status_code == 401 and "study_uid" not in answer.text


def expired_token(site: Department) -> str:
    """A token issued for under a second by `raddraft user token`, used after it ran out."""
    made = raddraft("user", "--config", str(site.config), "--database", site.database, "token", "anna",
                    "--days", "0.00001")
    assert made.returncode == 0, made.stderr
    time.sleep(1.5)
    return made.stdout.strip()
