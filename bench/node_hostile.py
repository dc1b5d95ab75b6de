"""Hostile-sender benchmark: broken and hostile peers against RadDraft's node and Orthanc, side by side.

    python bench/node_hostile.py [--big-mb 1536] [--skip-big]

Both receivers run with their default settings (RadDraft: `raddraft service --no-draft`; Orthanc 1.10
with the minimal configuration of peers/orthanc.py). For each case the table shows how the receiver
answered (a DIMSE status, an abort, a close and after how long), its peak RSS and thread count while
the case ran (sampled every 20 ms from /proc), whether anything was kept, and whether a normal sender
(storescu, three small CT instances) got through during the attack and after it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import pydicom  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from peers import hostile  # noqa: E402
from peers.dcmtk import StorescuError, storescu_send  # noqa: E402
from peers.hostile import CT_IMAGE_STORAGE, EXPLICIT, RawPeer  # noqa: E402
from peers.orthanc import find_orthanc, running_orthanc  # noqa: E402

_WAIT_FOR_CLOSE_S = 12.0


@dataclass
class Receiver:
    name: str
    pid: int
    port: int
    ae_title: str
    count_instances: Callable[[], int]


@contextmanager
def raddraft_receiver(workdir: Path) -> Iterator[Receiver]:
    store = workdir / "store"
    cmd = [sys.executable, "-m", "raddraft", "--log-level", "ERROR", "service", "--store", str(store), "--port", "0",
           "--no-draft"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=(workdir / "service.log").open("w"), text=True)
    try:
        port = None
        for line in process.stdout:
            match = re.search(r"listening on [\d.]+:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        if port is None:
            raise RuntimeError((workdir / "service.log").read_text()[-2000:])
        threading.Thread(target=lambda: process.stdout.read(), daemon=True).start()

        def count() -> int:
            with sqlite3.connect(f"file:{store / 'index.sqlite3'}?mode=ro", uri=True) as conn:
                return conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]

        yield Receiver("RadDraft", process.pid, port, "RADDRAFT", count)
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def orthanc_receiver(workdir: Path) -> Iterator[Receiver]:
    with running_orthanc(workdir / "orthanc") as orthanc:
        yield Receiver("Orthanc 1.10", orthanc.process.pid, orthanc.dicom_port, orthanc.ae_title,
                       lambda: int(orthanc.get("/statistics")["CountInstances"]))


class Sampler:
    """Peak RSS (MB) and thread count of a process while a case runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.rss_mb, self.threads = pid, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
            threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
            self.rss_mb, self.threads = max(self.rss_mb, rss), max(self.threads, threads)
            self._stop.wait(0.02)


def normal_sender(receiver: Receiver, folder: Path) -> str:
    study = generate_uid()
    paths = []
    for i in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path)
        paths.append(path)
    started = time.monotonic()
    try:
        storescu_send(paths, receiver.port, receiver.ae_title, timeout=60)
    except (StorescuError, subprocess.TimeoutExpired) as exc:
        return "refused" if "Limit" in str(exc) else "failed"
    return f"ok {time.monotonic() - started:.1f} s"


def how_it_ended(peer: RawPeer, wait_s: float) -> str:
    """Read what the receiver does next: a PDU, a close, or nothing within wait_s."""
    peer.sock.settimeout(wait_s)
    started = time.monotonic()
    try:
        pdu = peer.read_pdu()
    except TimeoutError:
        return f"open > {wait_s:g} s"
    took = time.monotonic() - started
    if pdu is None:
        return f"closed {took:.1f} s"
    return {0x07: "A-ABORT", 0x03: "A-ASSOCIATE-RJ"}.get(pdu[0], f"PDU 0x{pdu[0]:02x}") + f" {took:.1f} s"


def _summary(outcomes: list[str]) -> str:
    kinds: dict[str, int] = {}
    timed = re.compile(r"(?<!>) ([\d.]+) s$")  # "closed 0.1 s" has a time; "open > 2 s" is a kind of its own
    for outcome in outcomes:
        key = timed.sub("", outcome)
        kinds[key] = kinds.get(key, 0) + 1
    slowest = max((float(m.group(1)) for o in outcomes if (m := timed.search(o))), default=0.0)
    text = ", ".join(f"{n}x {k}" if n > 1 else k for k, n in kinds.items())
    return f"{text} (<= {slowest:.1f} s)" if slowest else text


def _ct(folder: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    return ds


def store_raw(receiver: Receiver, chunks, sop_instance: str, syntax: str = EXPLICIT,
              sop_class: str = CT_IMAGE_STORAGE, context_sop_class: str = CT_IMAGE_STORAGE,
              timeout: float = 300) -> str:
    try:
        with RawPeer("127.0.0.1", receiver.port, timeout=timeout) as peer:
            accepted = peer.associate([(1, context_sop_class, [syntax])], called=receiver.ae_title)
            if accepted.get(1) != 0:
                return "context refused"
            try:
                peer.send_store(1, hostile.c_store_command(sop_class, sop_instance), chunks)
            except (BrokenPipeError, ConnectionResetError):
                return "closed while sending"
            response = peer.read_response()
            if response.kind == "status":
                try:
                    peer.release()
                except OSError:
                    pass
                return f"0x{response.status:04X}"
            return response.kind
    except (ConnectionError, OSError) as exc:
        return f"error: {type(exc).__name__}"


# -- the cases: each returns what the receiver did, holding its connections open in `held` ----------------
def case_pdata_4gb(receiver: Receiver, held: ExitStack, folder: Path) -> str:
    outcomes = []
    for _ in range(10):
        peer = held.enter_context(RawPeer("127.0.0.1", receiver.port))
        peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])], called=receiver.ae_title)
        peer.send(hostile.pdu_header(0x04, 0xFFFFFFF0))
        outcomes.append(peer)
    time.sleep(1.0)
    return _summary([how_it_ended(p, 2.0) for p in outcomes])


def case_rq_4gb(receiver: Receiver, held: ExitStack, folder: Path) -> str:
    peers = []
    for _ in range(10):
        peer = held.enter_context(RawPeer("127.0.0.1", receiver.port))
        peer.send(hostile.pdu_header(0x01, 0xFFFFFFF0))
        peers.append(peer)
    return _summary([how_it_ended(p, 2.0) for p in peers])


def case_garbage(receiver: Receiver, held: ExitStack, folder: Path) -> str:
    peers = []
    for _ in range(10):
        peer = held.enter_context(RawPeer("127.0.0.1", receiver.port))
        peer.send(b"\x04" + os.urandom(4095))
        peers.append(peer)
    return _summary([how_it_ended(p, 2.0) for p in peers])


def case_big_rq(receiver: Receiver, held: ExitStack, folder: Path) -> str:
    peer = held.enter_context(RawPeer("127.0.0.1", receiver.port))
    peer.send(hostile.pdu_header(0x01, 16 << 20))
    sent = 0
    try:
        while sent < 16 << 20:
            peer.send(bytes(1 << 20))
            sent += 1 << 20
    except OSError:
        return f"closed after {sent >> 20} MB"
    return how_it_ended(peer, 5.0) + " (16 MB sent)"


def case_idle_flood(receiver: Receiver, held: ExitStack, folder: Path) -> str:
    connected = refused = 0
    for i in range(220):
        try:  # a receiver that stops accepting leaves connects hanging on SYN retries: bound them
            s = held.enter_context(socket.create_connection(("127.0.0.1", receiver.port), timeout=2))
        except OSError:
            refused += 1
            continue
        connected += 1
        if i >= 200:
            s.sendall(b"\x01\x00\x00")
    return f"{connected} connected" + (f", {refused} connects timed out" if refused else "")


def case_scan(receiver: Receiver, held: ExitStack, folder: Path) -> str:
    for _ in range(11):
        socket.create_connection(("127.0.0.1", receiver.port), timeout=5).close()
    return "11 closed"


def case_half_pdata(receiver: Receiver, held: ExitStack, folder: Path) -> str:
    """Stalled peers from one address (127.0.0.2); the normal sender (127.0.0.1) tries while they hold on."""
    peers, rejected = [], 0
    for _ in range(11):
        peer = held.enter_context(RawPeer("127.0.0.1", receiver.port, source_host="127.0.0.2"))
        try:
            peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])], called=receiver.ae_title)
        except ConnectionError:
            rejected += 1
            continue
        peer.send(hostile.pdu_header(0x04, 1000) + bytes(100))
        peers.append(peer)
    while_held = normal_sender(receiver, folder)
    ended = how_it_ended(peers[0], _WAIT_FOR_CLOSE_S) if peers else "-"
    return f"{len(peers)} associated ({rejected} rejected); sender meanwhile: {while_held}; first: {ended}"


def case_half_dataset(receiver: Receiver, held: ExitStack, folder: Path) -> str:
    ds = _ct(folder)
    encoded = hostile.encode_dataset(ds, implicit=False)
    peer = held.enter_context(RawPeer("127.0.0.1", receiver.port))
    peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])], called=receiver.ae_title)
    peer.send(hostile.p_data(1, 0x03, hostile.c_store_command(CT_IMAGE_STORAGE, ds.SOPInstanceUID)))
    peer.send(hostile.p_data(1, 0x00, encoded[: len(encoded) // 2]))
    return how_it_ended(peer, _WAIT_FOR_CLOSE_S)


def broken_case(name: str) -> Callable[[Receiver, ExitStack, Path], str]:
    def run(receiver: Receiver, held: ExitStack, folder: Path) -> str:
        ds = _ct(folder)
        broken = hostile.broken_stores(ds)[name]
        return store_raw(receiver, [broken.dataset], ds.SOPInstanceUID, broken.syntax, broken.command_sop_class,
                         broken.context_sop_class, timeout=20)
    return run


def case_nul_uid(receiver: Receiver, held: ExitStack, folder: Path) -> str:
    ds = _ct(folder)
    ds.StudyInstanceUID = "1.2.3.4"
    encoded = hostile.encode_dataset(ds, implicit=False).replace(b"1.2.3.4\0", b"1.2.3\x00.4", 1)
    return store_raw(receiver, [encoded], ds.SOPInstanceUID, timeout=20)


def big_instance(size_mb: int) -> tuple[Callable, Callable]:
    state: dict[str, object] = {}

    def chunks(ds: pydicom.Dataset):
        encoded = hostile.encode_dataset(ds, implicit=False)
        head = encoded[: encoded.index(b"\xe0\x7f\x10\x00OW")]
        pixels = size_mb << 20
        block = os.urandom(1 << 20)
        yield head + b"\xe0\x7f\x10\x00OW\x00\x00" + pixels.to_bytes(4, "little")
        for _ in range(size_mb):
            yield block

    def first(receiver: Receiver, held: ExitStack, folder: Path) -> str:
        ds = _ct(folder)
        state[receiver.name] = ds
        started = time.monotonic()
        status = store_raw(receiver, chunks(ds), ds.SOPInstanceUID)
        return f"{status} {time.monotonic() - started:.0f} s"

    def again(receiver: Receiver, held: ExitStack, folder: Path) -> str:
        ds = state[receiver.name]
        started = time.monotonic()
        status = store_raw(receiver, chunks(ds), ds.SOPInstanceUID)
        return f"{status} {time.monotonic() - started:.0f} s"

    return first, again


def case_deflate_bomb(receiver: Receiver, held: ExitStack, folder: Path) -> str:
    ds = _ct(folder)
    encoded = hostile.encode_dataset(ds, implicit=False)
    head = encoded[: encoded.index(b"\xe0\x7f\x10\x00OW")]
    pixels = 2 << 30
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [compressor.compress(head + b"\xe0\x7f\x10\x00OW\x00\x00" + pixels.to_bytes(4, "little"))]
    zeros = bytes(16 << 20)
    for _ in range(pixels // len(zeros)):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.flush())
    deflated = b"".join(parts)
    if len(deflated) % 2:
        deflated += b"\0"
    started = time.monotonic()
    status = store_raw(receiver, [deflated], ds.SOPInstanceUID, syntax=hostile.DEFLATED)
    return f"{status} ({len(deflated) >> 20} MB -> 2 GB) {time.monotonic() - started:.0f} s"


@dataclass
class Case:
    name: str
    run: Callable[[Receiver, ExitStack, Path], str]
    sender_during: bool = False


def cases(big_mb: int, skip_big: bool) -> list[Case]:
    listed = [
        Case("10 x P-DATA header claiming 4 GB", case_pdata_4gb, True),
        Case("10 x A-ASSOCIATE-RQ header claiming 4 GB", case_rq_4gb, True),
        Case("10 x 4 KB of random bytes", case_garbage, True),
        Case("A-ASSOCIATE-RQ of 16 MB", case_big_rq, True),
        Case("200 idle + 20 half-header connections", case_idle_flood, True),
        Case("11 x TCP connect + close (scan)", case_scan, True),
        Case("11 x half a P-DATA from one address, then silence", case_half_pdata, True),
        Case("half a dataset, then silence", case_half_dataset, True),
    ]
    listed += [Case(f"broken: {name}", broken_case(name)) for name in hostile.broken_stores(_ct(Path(".")))]
    listed.append(Case("Study UID with a NUL inside", case_nul_uid))
    if not skip_big:
        first, again = big_instance(big_mb)
        listed += [Case(f"{big_mb} MB instance", first), Case(f"{big_mb} MB instance again (duplicate)", again),
                   Case("deflated 2 GB of zeros", case_deflate_bomb)]
    return listed


@dataclass
class Result:
    outcome: str
    kept: int
    rss_mb: float
    threads: int
    during: str
    after: str


def run_case(receiver: Receiver, case: Case, folder: Path) -> Result:
    before = receiver.count_instances()
    with Sampler(receiver.pid) as sampler:
        with ExitStack() as held:
            try:
                outcome = case.run(receiver, held, folder)
            except Exception as exc:  # a receiver that breaks is a result too
                outcome = f"error: {type(exc).__name__}"
            during = normal_sender(receiver, folder) if case.sender_during else "-"
        time.sleep(0.3)
        after = normal_sender(receiver, folder)
    kept = receiver.count_instances() - before - (3 if after.startswith("ok") else 0) \
        - (3 if during.startswith("ok") else 0)
    return Result(outcome, kept, sampler.rss_mb, sampler.threads, during, after)


def print_table(listed: list[Case], results: dict[str, list[Result]]) -> None:
    names = list(results)
    print(f"\n| case | {' | '.join(f'{n}: answer | kept | peak RSS MB | threads | sender during / after' for n in names)} |")
    print("|---|" + "---|---|---|---|---|" * len(names))
    for i, case in enumerate(listed):
        cells = []
        for name in names:
            r = results[name][i]
            cells += [r.outcome, str(r.kept), f"{r.rss_mb:.0f}", str(r.threads), f"{r.during} / {r.after}"]
        print(f"| {case.name} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-mb", type=int, default=1536, help="size of the large instance (MB)")
    parser.add_argument("--skip-big", action="store_true", help="skip the large-instance and deflate cases")
    parser.add_argument("--only", choices=["raddraft", "orthanc"], help="run one receiver only")
    args = parser.parse_args()
    if not shutil.which("storescu") or find_orthanc() is None:
        print("storescu and Orthanc are needed: apt-get install dcmtk orthanc", file=sys.stderr)
        return 2
    listed = cases(args.big_mb, args.skip_big)
    receivers = {"RadDraft": raddraft_receiver, "Orthanc 1.10": orthanc_receiver}
    if args.only:
        receivers = {k: v for k, v in receivers.items() if k.lower().startswith(args.only)}
    results: dict[str, list[Result]] = {}
    print(f"{len(listed)} cases; {os.cpu_count()} CPUs; loopback; default settings on both receivers")
    for name, start in receivers.items():
        with tempfile.TemporaryDirectory(prefix="hostile-") as tmp, start(Path(tmp)) as receiver:
            results[name] = []
            for case in listed:
                result = run_case(receiver, case, Path(tmp))
                results[name].append(result)
                print(f"  {name}: {case.name}: {result}", flush=True)
    print_table(listed, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
