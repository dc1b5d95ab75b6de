"""`raddraft app` stopped by SIGTERM / SIGINT while a study arrives: the same clean stop as closing the window.

The real app process (offscreen Qt) hosts the node; storescu sends a study; the signal comes once part of
it is stored. The app must exit 0 and every instance storescu saw acknowledged must be in the store.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicom_node.host_lock import current_host
from dicom_node.index import Index
from tests.conftest import copy_with_fresh_uids, peer_env, require_tool, sample_path

STUDY_SIZE = 150
_SENT = re.compile(r"Sending file: (.+?)\s*$")
_OK = re.compile(r"Received Store Response \(Success\)")


def make_study(folder: Path) -> dict[Path, str]:
    """`STUDY_SIZE` CT instances of one study: file -> SOP Instance UID."""
    folder.mkdir()
    source, study_uid, files = sample_path("CT_small.dcm"), None, {}
    for i in range(STUDY_SIZE):
        ds = copy_with_fresh_uids(source, folder / f"{i:04d}.dcm", study_uid)
        study_uid = str(ds.StudyInstanceUID)
        files[folder / f"{i:04d}.dcm"] = str(ds.SOPInstanceUID)
    return files


def start_app(store: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.Popen([sys.executable, "-m", "raddraft", "app", "--store", str(store), "--port", "0",
                             "--no-draft", "--stable-after", "30"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def wait_for_port(app: subprocess.Popen, store: Path, log: Path, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.poll() is not None:
            pytest.fail(f"the app exited with {app.returncode} before listening: {log.read_text()[-3000:]}")
        host = current_host(store) if (store / "index.sqlite3").exists() else None
        if host is not None and host.port:
            return host.port
        time.sleep(0.2)
    app.kill()
    pytest.fail(f"the app did not listen within {timeout} s: {log.read_text()[-3000:]}")


def stored_count(store: Path) -> int:
    index = Index(store / "index.sqlite3")
    try:
        return int(index.reader().execute("SELECT COUNT(*) FROM instances").fetchone()[0])
    finally:
        index.close()


def acknowledged(storescu_log: str) -> list[Path]:
    """The files storescu sent and saw a success response for (its -v log: one 'Sending file' each)."""
    done, current = [], None
    for line in storescu_log.splitlines():
        if match := _SENT.search(line):
            current = Path(match.group(1))
        elif _OK.search(line) and current is not None:
            done.append(current)
            current = None
    return done


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_a_study_arrives_stops_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    pytest.importorskip("PySide6")
    storescu = require_tool("storescu")
    files = make_study(tmp_path / "study")
    store, log = tmp_path / "store", tmp_path / "app.log"
    app = start_app(store, log)
    try:
        port = wait_for_port(app, store, log)
        sender = subprocess.Popen([storescu, "-v", "-aec", "RADDRAFT", "127.0.0.1", str(port), *map(str, files)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=peer_env())
        deadline = time.monotonic() + 60
        while stored_count(store) < 5 and time.monotonic() < deadline and sender.poll() is None:
            time.sleep(0.02)
        at_signal = stored_count(store)
        assert at_signal >= 5, "storescu stored nothing before the signal"
        app.send_signal(signum)
        returncode = app.wait(timeout=120)
        output, _ = sender.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
    assert returncode == 0, log.read_text()[-3000:]
    assert at_signal < STUDY_SIZE, "the study had arrived before the signal: nothing was in flight"
    acked = acknowledged(output)
    assert acked, output[-2000:]
    index = Index(store / "index.sqlite3")
    try:
        stored = {row[0] for row in index.reader().execute("SELECT sop_instance_uid FROM instances")}
    finally:
        index.close()
    missing = [path.name for path in acked if files[path] not in stored]
    assert not missing, f"acknowledged but not in the store: {missing[:5]}"
    assert current_host(store) is None, "the host lock was not released"
