"""`raddraft user` and `raddraft server` run as an administrator runs them, for the tests that drive the site
server as its own process with Orthanc as the PACS (test_server_command, test_server_priors_command)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from peers.orthanc import find_orthanc
from tests.conftest import REQUIRE_PEERS

STARTED = re.compile(r"RadDraft site server (https://\S+) node \S+ listening on \S+:(\d+)")
STARTUP_TIMEOUT_S = 60.0


def raddraft(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raddraft", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


def add_users(database: str, *users: tuple[str, str, str]) -> None:
    """Each (name, role, password) added by `raddraft user add`, the password typed on its standard input."""
    for name, role, password in users:
        added = raddraft("user", "--database", database, "add", name, "--role", role, stdin=f"{password}\n")
        assert added.returncode == 0, added.stderr


def user_token(database: str, name: str) -> str:
    return raddraft("user", "--database", database, "token", name).stdout.strip()


def orthanc_binary():
    binary = find_orthanc()
    if binary is None:
        if REQUIRE_PEERS:
            pytest.fail("required peer missing: Orthanc (apt-get install orthanc)")
        pytest.skip("Orthanc is not installed (apt-get install orthanc)")
    return binary


def write_server_config(path: Path, pacs_port: int, database: str, **pacs: object) -> Path:
    """A configuration with Orthanc (AE PACS on `pacs_port`) as the PACS, the extra [pacs] keys given, and the
    index in `database`."""
    keys = {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port, "calling_ae": "RADDRAFT", **pacs}
    lines = ["[pacs]", *(f"{key} = {json.dumps(value)}" for key, value in keys.items()),
             "[server]", f"database = {json.dumps(database)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class ServerProcess:
    url: str
    dicom_port: int
    printed: list[str]  # its standard output up to where the test asked to wait
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()


@contextmanager
def running_server(folder: Path, config: Path, certificate: tuple[Path, Path], *,
                   until: str | None = None) -> Iterator[ServerProcess]:
    """`raddraft server` on ports of its own, its store and server.log in `folder`, read up to its first line
    holding `until` (or its start line); at the end it is sent SIGTERM, which it must answer by exiting 0."""
    cert, key = certificate
    log = folder / "server.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "raddraft", "server", "--config", str(config), "--store", str(folder / "store"),
             "--port", "0", "--http-port", "0", "--tls-cert", str(cert), "--tls-key", str(key),
             "--stable-after", "1"],
            stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            printed = _printed_until(process, until)
            match = next(filter(None, map(STARTED.search, printed)), None)
            assert match, log.read_text()
            yield ServerProcess(match.group(1), int(match.group(2)), printed, log)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, log.read_text()


def _printed_until(process: subprocess.Popen, until: str | None) -> list[str]:
    """Its standard output up to the line wanted, or up to its end or the start timeout, whichever is first."""
    def wanted(line: str) -> bool:
        return until in line if until is not None else STARTED.search(line) is not None

    printed: list[str] = []
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not (printed and wanted(printed[-1])) and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        printed.append(line)
    return printed
