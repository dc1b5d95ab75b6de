"""Orthanc (Debian's package, /usr/sbin/Orthanc 1.10) run as a PACS on loopback for tests and benchmarks.

`running_orthanc(workdir, route_to="raddraft")` starts Orthanc on OS-assigned DICOM and HTTP ports with a
configuration written under `workdir` (storage, index, Lua script and log all live there) and stops it
when the block ends. With `route_to`, an auto-routing Lua script forwards every instance Orthanc stores to
that modality, the way a PACS forwards new studies to a reading workstation. The modality itself is
registered over REST once its port is known (`Orthanc.add_modality`): the workstation's node usually
listens on a port the OS picks, after Orthanc is already up.

The REST helpers use urllib only. See shared/PEERS.md for the measured behaviour of this Orthanc.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORTHANC_INSTALL_HINT = "apt-get install orthanc"
_DEBIAN_BINARY = Path("/usr/sbin/Orthanc")
# Names that go into the Lua script unquoted-safe: AE-title-like words only.
_LUA_SAFE = re.compile(r"^[A-Za-z0-9_.\- ]{1,16}$")


class OrthancError(RuntimeError):
    """Orthanc did not start, stop or answer as expected; the message carries the end of its log."""


def find_orthanc() -> Path | None:
    """The Orthanc binary: on PATH, else where Debian installs it (/usr/sbin is often not on PATH)."""
    found = shutil.which("Orthanc")
    if found:
        return Path(found)
    return _DEBIAN_BINARY if _DEBIAN_BINARY.is_file() and os.access(_DEBIAN_BINARY, os.X_OK) else None


def free_port() -> int:
    """A TCP port the OS has just handed out on loopback (free now; a peer binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Modality:
    """A DICOM peer as Orthanc knows it (`DicomModalities`): `name` is Orthanc's key for it."""

    name: str
    ae_title: str
    host: str
    port: int

    def as_rest(self) -> dict[str, Any]:
        return {"AET": self.ae_title, "Host": self.host, "Port": self.port}


def routing_lua(modality: str, never_from: Iterable[str] = ()) -> str:
    """An auto-routing rule: every stored instance goes on to `modality`, except those Orthanc made itself
    (Lua) and those sent by an AE in `never_from` (the workstation's own reports must not bounce back)."""
    skipped = list(never_from)
    for word in (modality, *skipped):
        if not _LUA_SAFE.match(word):
            raise ValueError(f"{word!r} is not a plain modality name or AE title")
    skip_table = ", ".join(f'["{aet}"] = true' for aet in skipped)
    return (
        f"local neverFrom = {{ {skip_table} }}\n"
        "function OnStoredInstance(instanceId, tags, metadata, origin)\n"
        '  if origin["RequestOrigin"] ~= "Lua" and not neverFrom[origin["RemoteAet"] or ""] then\n'
        f'    SendToModality(instanceId, "{modality}")\n'
        "  end\n"
        "end\n"
    )


def orthanc_config(workdir: Path, dicom_port: int, http_port: int, ae_title: str,
                   lua_scripts: Iterable[Path] = ()) -> dict[str, Any]:
    """A minimal configuration: everything under `workdir`, REST on loopback without authentication."""
    return {
        "Name": "RadDraftTestPACS", "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"), "DicomAet": ae_title, "DicomPort": dicom_port,
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False, "UnknownSopClassAccepted": True, "SyncStorageArea": True,
        # Without it a stopped Orthanc would resume old routing jobs at its next start.
        "SaveJobs": False, "Plugins": [], "DicomModalities": {},
        "LuaScripts": [str(p) for p in lua_scripts],
    }


class Orthanc:
    """A running Orthanc process and its REST API."""

    def __init__(self, process: subprocess.Popen, workdir: Path, ae_title: str, dicom_port: int,
                 http_port: int) -> None:
        self.process = process
        self.workdir = workdir
        self.ae_title = ae_title
        self.dicom_port = dicom_port
        self.http_port = http_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- REST ----------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                timeout: float = 30) -> Any:
        """Call the REST API; JSON in (`body`) or raw bytes in, JSON (or bytes when not JSON) out."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                payload = response.read()
                is_json = response.headers.get_content_type() == "application/json"
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise OrthancError(f"{method} {path}: HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise OrthancError(f"{method} {path}: {getattr(error, 'reason', error)}") from None
        return json.loads(payload) if is_json and payload else payload

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def add_modality(self, modality: Modality) -> None:
        """Register a DICOM peer. Orthanc lets a known modality query (C-FIND) and retrieve (C-MOVE, C-GET),
        and C-MOVEs to it by its AE title: RadDraft registered so fetches its priors."""
        self.request("PUT", f"/modalities/{modality.name}", modality.as_rest())

    def upload(self, part10: bytes) -> dict[str, Any]:
        """Store one Part 10 file over REST (faster than a C-STORE association per file for filling it)."""
        return self.request("POST", "/instances", raw=part10)

    def echo(self, modality: str) -> None:
        """C-ECHO from Orthanc to a registered modality; OrthancError when it does not answer."""
        self.post(f"/modalities/{modality}/echo", {"Timeout": 10})

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc's id of the study with this StudyInstanceUID, None while it has none."""
        found = self.request("POST", "/tools/lookup", raw=study_uid.encode())
        return next((item["ID"] for item in found if item.get("Type") == "Study"), None)

    def study_series(self, study_id: str) -> list[dict[str, Any]]:
        return self.get(f"/studies/{study_id}/series")

    def study_instances(self, study_id: str) -> list[dict[str, Any]]:
        return self.get(f"/studies/{study_id}/instances")

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """The instance's tags as Orthanc's "simplified" JSON (sequences are lists of dicts)."""
        return self.get(f"/instances/{instance_id}/simplified-tags")

    def instance_file(self, instance_id: str) -> bytes:
        return self.request("GET", f"/instances/{instance_id}/file")

    # -- lifecycle -----------------------------------------------------------------------------------
    def wait_ready(self, timeout: float) -> None:
        """Until the REST API answers. Orthanc opens its DICOM port before its HTTP server, so both are up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OrthancError(f"Orthanc exited with {self.process.returncode} at start:\n{self.log_tail()}")
            try:
                self.get("/system")
                return
            except OrthancError:
                time.sleep(0.1)
        raise OrthancError(f"Orthanc's REST API did not answer within {timeout:g} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int:
        """Ask Orthanc to stop (SIGTERM: it finishes its jobs and closes its index); kill it if it hangs.
        Returns its exit status (0 for a clean stop)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise OrthancError(f"Orthanc did not stop within {timeout:g} s and was killed:\n"
                                   f"{self.log_tail()}") from None
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def start_orthanc(workdir: Path, *, ae_title: str = "ORTHANC", route_to: str | None = None,
                  never_route_from: Iterable[str] = (), binary: Path | None = None, nodelay: bool = True,
                  timeout: float = 60, attempts: int = 3) -> Orthanc:
    """Start Orthanc with its files under `workdir` and wait until it answers.

    `nodelay` sets TCP_NODELAY=1 for it (Orthanc is built on dcmtk, which crawls on loopback otherwise).
    A port taken between `free_port()` and Orthanc's bind makes it exit at once; it is then started
    again on fresh ports, up to `attempts` times.
    """
    binary = binary or find_orthanc()
    if binary is None:
        raise OrthancError(f"Orthanc is not installed ({_DEBIAN_BINARY}; {ORTHANC_INSTALL_HINT})")
    workdir.mkdir(parents=True, exist_ok=True)
    scripts = []
    if route_to is not None:
        script = workdir / "route.lua"
        script.write_text(routing_lua(route_to, never_route_from))
        scripts.append(script)
    env = {**os.environ, "TCP_NODELAY": "1"} if nodelay else {k: v for k, v in os.environ.items()
                                                             if k != "TCP_NODELAY"}
    last_error: OrthancError | None = None
    for _ in range(attempts):
        dicom_port, http_port = free_port(), free_port()
        config = workdir / "orthanc.json"
        config.write_text(json.dumps(orthanc_config(workdir, dicom_port, http_port, ae_title, scripts), indent=2))
        with (workdir / "orthanc.log").open("ab") as log:
            process = subprocess.Popen([str(binary), str(config)], stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, cwd=workdir)
        orthanc = Orthanc(process, workdir, ae_title, dicom_port, http_port)
        try:
            orthanc.wait_ready(timeout)
            return orthanc
        except OrthancError as error:
            orthanc.kill()
            last_error = error
            if process.returncode == -signal.SIGKILL:
                break  # it hung rather than lost a port race: trying again will not help
    raise last_error or OrthancError("Orthanc did not start")


@contextmanager
def running_orthanc(workdir: Path, **options: Any) -> Iterator[Orthanc]:
    """`start_orthanc(workdir, **options)` for the duration of the block; stopped cleanly after it, killed
    if it does not stop."""
    orthanc = start_orthanc(workdir, **options)
    try:
        yield orthanc
    finally:
        try:
            orthanc.stop()
        finally:
            orthanc.kill()
