"""Ingest benchmark: one corpus sent with dcmtk's storescu over loopback to RadDraft's node,
dcmtk's storescp and Orthanc, alternately, several runs each; prints medians and ratios.

    python bench/node_ingest.py [--count 200] [--size 512] [--runs 3] [--nagle-count 40]
                                [--associations 4] [--per-association 60]

RadDraft keeps fsync on (every instance is durable before it is acknowledged); storescp does not
fsync; Orthanc runs with SyncStorageArea true. Each run starts the receiver on an empty store.
The second table sends `--associations` studies at once, one storescu (one association) each, as a
PACS that forwards several studies; the time is from the first connect to the last acknowledgement.
A last table repeats the single-association runs with TCP_NODELAY unset on the sender (as many PACS
leave it). Ratios are of medians over runs made in the same rounds, the receivers alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.corpus import write_ct_corpus  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def receiver_env(nodelay: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    return env


@contextmanager
def _running(cmd: list[str], port: int, aet: str, env: dict[str, str] | None = None,
             timeout: float = 30) -> Iterator[tuple[int, str]]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout)
        yield port, aet
    finally:
        proc.terminate()
        proc.wait(30)


def raddraft(workdir: Path):
    port = free_port()
    return _running([sys.executable, "-m", "raddraft", "--log-level", "WARNING", "service", "--store",
                     str(workdir / "store"), "--port", str(port), "--ae-title", "RADDRAFT"], port, "RADDRAFT")


def storescp(workdir: Path):
    port = free_port()
    (workdir / "scp").mkdir()
    return _running(["storescp", "-od", str(workdir / "scp"), str(port)], port, "STORESCP", receiver_env(True))


def orthanc(workdir: Path):
    port, http = free_port(), free_port()
    config = {
        "Name": "BenchOrthanc", "StorageDirectory": str(workdir / "o-store"), "IndexDirectory": str(workdir / "o-db"),
        "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "SyncStorageArea": True, "Plugins": [],
    }
    (workdir / "orthanc.json").write_text(json.dumps(config))
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    return _running([binary, str(workdir / "orthanc.json")], port, "ORTHANC", receiver_env(True), timeout=60)


RECEIVERS: dict[str, Callable] = {"RadDraft node (fsync)": raddraft, "dcmtk storescp": storescp,
                                  "Orthanc (SyncStorageArea)": orthanc}


def send(groups: list[list[Path]], port: int, aet: str, nodelay: bool) -> float:
    """Each group on its own association, all at once; seconds until the last one is acknowledged."""
    started = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
                              env=receiver_env(nodelay), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for files in groups]
    errors = [proc.communicate()[1] for proc in procs]
    elapsed = time.perf_counter() - started
    for proc, err in zip(procs, errors):
        if proc.returncode != 0:
            raise RuntimeError(f"storescu to {aet} failed: {err[-500:]}")
    return elapsed


@dataclass
class Row:
    name: str
    images_s: float
    mb_s: float
    runs: list[float]


def measure(groups: list[list[Path]], runs: int, nodelay: bool) -> list[Row]:
    files = [path for group in groups for path in group]
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    times: dict[str, list[float]] = {name: [] for name in RECEIVERS}
    for _ in range(runs):
        for name, receiver in RECEIVERS.items():  # alternate receivers within each round
            with tempfile.TemporaryDirectory(prefix="ingest-") as tmp, receiver(Path(tmp)) as (port, aet):
                times[name].append(send(groups, port, aet, nodelay))
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(Row(name, len(files) / median, total_mb / median, values))
    return rows


def print_table(title: str, rows: list[Row]) -> None:
    ours = rows[0]
    print(f"\n{title}")
    print(f"{'receiver':28s} {'images/s':>9s} {'MB/s':>7s} {'RadDraft ratio':>15s}  runs (s)")
    for row in rows:
        ratio = ours.images_s / row.images_s
        runs = " ".join(f"{t:.2f}" for t in row.runs)
        print(f"{row.name:28s} {row.images_s:9.1f} {row.mb_s:7.1f} {ratio:14.2f}x  {runs}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nagle-count", type=int, default=40, help="corpus size for the TCP_NODELAY-unset runs (0: skip)")
    parser.add_argument("--associations", type=int, default=4, help="concurrent associations of the second table (0: skip)")
    parser.add_argument("--per-association", type=int, default=60, help="instances each concurrent association sends")
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "Orthanc"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} not found: apt-get install dcmtk orthanc", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
        files = write_ct_corpus(Path(tmp), args.count, size=args.size)
        mb = sum(p.stat().st_size for p in files) / len(files) / 1e6
        print(f"corpus: {len(files)} CT instances, {args.size}x{args.size}x16 bit, {mb:.2f} MB each; "
              f"{args.runs} runs per receiver, median shown; {os.cpu_count()} CPUs")
        print_table("one association, storescu with TCP_NODELAY=1", measure([files], args.runs, nodelay=True))
        if args.associations:
            studies = write_ct_corpus(Path(tmp) / "studies", args.associations * args.per_association,
                                      size=args.size, studies=args.associations)
            groups = [studies[k::args.associations] for k in range(args.associations)]
            print_table(f"{args.associations} concurrent associations (one study of {args.per_association} "
                        f"instances each), TCP_NODELAY=1", measure(groups, args.runs, nodelay=True))
        if args.nagle_count:
            print_table(f"storescu with TCP_NODELAY unset (Nagle on), first {args.nagle_count} instances",
                        measure([files[: args.nagle_count]], args.runs, nodelay=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
