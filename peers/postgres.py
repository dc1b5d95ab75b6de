"""A private PostgreSQL cluster (Debian's package) in a temporary folder on a free loopback port.

`running_postgres()` runs initdb and pg_ctl (as the `postgres` user when we are root: initdb refuses root),
yields the cluster, and stops it and removes its folder when the block ends. `cluster.new_database()`
creates an empty database and returns its URL, so each test gets its own. See shared/PEERS.md.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

POSTGRES_INSTALL_HINT = "apt-get install postgresql"


class PostgresError(RuntimeError):
    """The cluster did not initialise, start or stop; the message carries the end of its log."""


def find_postgres_bin() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_cluster_owner(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the package's `postgres` user."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@dataclass
class PostgresCluster:
    bin_dir: Path
    folder: Path
    port: int
    user: str = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        return self.folder / "log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "raddraft") -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _run(self, *args: str) -> None:
        result = subprocess.run(_as_cluster_owner([str(self.bin_dir / args[0]), *args[1:]]),
                                check=False, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise PostgresError(f"{args[0]} failed ({result.returncode}): {result.stderr[-1500:]}\n"
                                f"{self.log_tail()}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", self.user, "--no-sync")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                   "-c fsync=on")
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.log_file), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")


@contextmanager
def running_postgres() -> Iterator[PostgresCluster]:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise PostgresError(f"PostgreSQL is not installed ({POSTGRES_INSTALL_HINT})")
    # Not under pytest's tmp_path: its parents are private to root, and the cluster runs as `postgres`.
    folder = Path(tempfile.mkdtemp(prefix="raddraft-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    cluster = PostgresCluster(bin_dir, folder, _free_port())
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            if (cluster.data_dir / "postmaster.pid").exists():
                cluster.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
