"""Site server: what batched drafting and several workers gain over one workstation, and how fast the API's
worklist answers with 10,000 studies and 20 connected apps.

    python bench/site_server.py [--part engine,site,worklist] [--studies 24] [--batches 1,4,8]
                                [--workers 1,2,4] [--worklist-studies 10000] [--apps 20] [--rounds 2]

engine: the embedded model on this machine's CPU, in a child process each: one workstation (the
    drafting queue's way: `draft` one study at a time, variant auto = int8) beside `draft_batch` with
    batch 1/4/8 (variant auto = fp32 when batching; int8's dynamic quantization couples a batch's rows).
site: `raddraft server`'s API (uvicorn, TLS, PostgreSQL from a private cluster) with 1/2/4 `raddraft worker`
    processes of batch 1/4/8: the workers start and report, then `--studies` phantom studies become
    stable at once; studies/minute until every one has its draft (each checked to have exactly one).
    The workers share the machine's cores (intra-op threads = cores / workers).
worklist: `--worklist-studies` studies in the index; `GET /api/studies` timed from one app alone, then
    from `--apps` apps at once (each with its /api/events stream open); and the time from a state change
    to its event reaching every app.

Each part prints a table; figures are medians unless marked.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EMBEDDED = ROOT / "resources" / "models" / "raddraft-phantom-cxr"
PASSWORD = "bench password 1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="engine,site,worklist")
    parser.add_argument("--studies", type=int, default=24, help="phantom studies drafted per configuration")
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--worklist-studies", type=int, default=10000)
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5, help="worklist requests per app")
    parser.add_argument("--rounds", type=int, default=2, help="engine part: rounds, configurations in turn")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench-cache" / "site-server")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    studies = phantom_studies(args.cache, args.studies)
    if args.child:
        print(json.dumps(engine_child(args.child, studies, args.batch)))
        return 0
    parts = set(args.part.split(","))
    batches = [int(b) for b in args.batches.split(",")]
    if "engine" in parts:
        engine_part(studies, batches, args.rounds)
    if "site" in parts:
        site_part(studies, batches, [int(w) for w in args.workers.split(",")])
    if "worklist" in parts:
        worklist_part(args.worklist_studies, args.apps, args.requests)
    return 0


def phantom_studies(cache: Path, count: int) -> list[list[Path]]:
    """`count` phantom chest studies at the embedded model's size, generated once."""
    from training.data.phantoms import PhantomConfig, generate_dataset

    folder = cache / f"phantoms-{count}"
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        generate_dataset(folder, count, seed=20, config=PhantomConfig(image_size=128, workers=1))
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    return [[folder / image for image in record["images"]] for record in records]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# -- engine ------------------------------------------------------------------------------------------------
def engine_child(kind: str, studies: list[list[Path]], batch: int) -> dict:
    """workstation: `draft` one at a time, variant auto (int8); fp32-alone: the same in fp32 (what batching
    must reproduce); batch: `draft_batch` of `batch` studies at a time, variant auto."""
    from engine.findings.critical import DEFAULT_CRITICAL_FINDINGS, find_critical
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    settings = EngineSettings(providers=("cpu",), variant="fp32" if kind == "fp32-alone" else "auto",
                              batch_size=batch if kind == "batch" else 1)
    model = load_model(EMBEDDED, settings)
    model.draft(studies[0])  # warm
    find_critical({"findings": "No pneumothorax.", "impression": ""}, DEFAULT_CRITICAL_FINDINGS)
    started = time.perf_counter()
    texts = []
    if kind == "batch":
        for start in range(0, len(studies), batch):
            chunk = [model.prepare(paths) for paths in studies[start:start + batch]]
            for draft in model.draft_batch(chunk):  # the worker reads them too (raddraft.worker.drafting)
                find_critical({"findings": draft.findings, "impression": draft.impression}, DEFAULT_CRITICAL_FINDINGS)
                texts.append([draft.findings, draft.impression])
    else:  # as the workstation's queue: each draft's critical findings read before it is saved
        for paths in studies:
            draft = model.draft(paths)
            find_critical({"findings": draft.findings, "impression": draft.impression}, DEFAULT_CRITICAL_FINDINGS)
            texts.append([draft.findings, draft.impression])
    seconds = time.perf_counter() - started
    return {"variant": model.variant, "seconds": seconds, "texts": texts}


def run_child(kind: str, batch: int, count: int) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", kind, "--batch", str(batch), "--studies", str(count)],
                            check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def engine_part(studies: list[list[Path]], batches: list[int], rounds: int) -> None:
    """Each configuration once per round, in turn (the machine's load drifts: compare within rounds)."""
    count = len(studies)
    configs = [("workstation: `draft`, one at a time", "workstation", 1),
               ("`draft`, one at a time, fp32", "fp32-alone", 1),
               *((f"`draft_batch`, batch {batch}", "batch", batch) for batch in batches)]
    results: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    for _ in range(rounds):
        for name, kind, batch in configs:
            results[name].append(run_child(kind, batch, count))
    base, fp32 = results[configs[0][0]][0], results[configs[1][0]][0]
    base_s = statistics.median(r["seconds"] for r in results[configs[0][0]])
    print(f"\nEngine only: {count} phantom studies, embedded model, CPU ({cores()} cores), one process each, "
          f"{rounds} rounds (median; ratios of medians)")
    print("| drafting | variant | studies/min | x workstation | drafts equal to the same variant one at a time |")
    print("|---|---|---|---|---|")
    for name, _, _ in configs:
        runs = results[name]
        seconds = statistics.median(r["seconds"] for r in runs)
        reference = base if runs[0]["variant"] == base["variant"] else fp32
        same = sum(a == b for a, b in zip(runs[0]["texts"], reference["texts"]))
        print(f"| {name} | {runs[0]['variant']} | {60 * count / seconds:.1f} | {base_s / seconds:.2f}x | {same}/{count} |")


# -- a running site ----------------------------------------------------------------------------------------
@dataclass
class Site:
    url: str
    cert: Path
    store: object
    index: object

    def client(self, token: str | None = None):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, verify=_ssl_context(self.cert), headers=headers, timeout=120.0)

    def login(self, name: str) -> str:
        with self.client() as http:
            answer = http.post("/api/login", json={"username": name, "password": PASSWORD})
            answer.raise_for_status()
            return answer.json()["token"]


def _ssl_context(cert: Path):
    import ssl

    return ssl.create_default_context(cafile=str(cert))


@contextmanager
def postgres() -> Iterator[object]:
    from peers.postgres import running_postgres

    with running_postgres() as cluster:
        yield cluster


@contextmanager
def running_site(cluster, folder: Path) -> Iterator[Site]:
    from dicom_node.settings import StoreSettings
    from dicom_node.store import Store
    from server.app import Site as ApiSite
    from server.app import create_app
    from server.events import EventHub
    from server.https import ApiServer
    from server.schema import prepare_site_tables
    from server.settings import ServerSettings
    from server.users import add_user

    key, cert = folder / "server.key", folder / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    settings = ServerSettings(http_port=0, tls_cert=cert, tls_key=key, job_lease_s=120.0)
    store = Store(StoreSettings(folder / "store", database=cluster.new_database()))
    prepare_site_tables(store.index)
    for name, role in (("reader", "radiologist"), ("gpu", "worker"), ("root", "admin")):
        add_user(store.index, name, role, PASSWORD)
    hub = EventHub(store.index, settings.event_poll_s)
    hub.start()
    api = ApiServer(create_app(ApiSite(store, settings, hub=hub)), settings)
    api.start()
    try:
        yield Site(api.url(), cert, store, store.index)
    finally:
        api.stop()
        hub.stop()
        store.close()


def put_study(site: Site, paths: list[Path], folder: Path) -> str:
    """The phantom study under fresh UIDs, stored as the node stores it (still receiving)."""
    from bench.site_studies import store_as_new_study

    return store_as_new_study(site.store, paths, folder)


# -- site: workers x batches -------------------------------------------------------------------------------
def site_part(studies: list[list[Path]], batches: list[int], worker_counts: list[int]) -> None:
    count = len(studies)
    workstation = run_child("workstation", 1, count)
    base = 60 * count / workstation["seconds"]
    rows = []
    with postgres() as cluster:
        for workers in worker_counts:
            for batch in batches:
                with tempfile.TemporaryDirectory(prefix="raddraft-site-bench-") as tmp:
                    rows.append((workers, batch, *site_run(cluster, Path(tmp), studies, workers, batch)))
    print(f"\nSite: {count} phantom studies made stable at once; `raddraft worker` processes on this machine "
          f"({cores()} cores), embedded model, CPU; API over TLS, index on PostgreSQL")
    print("| workers | batch | studies/min | x one workstation | drafts per study | worker tokens/s (heartbeat) |")
    print("|---|---|---|---|---|---|")
    print(f"| one workstation (draft one at a time, {workstation['variant']}) | - | {base:.1f} | 1.00x | 1 | - |")
    for workers, batch, per_minute, drafts, tokens in rows:
        print(f"| {workers} | {batch} | {per_minute:.1f} | {per_minute / base:.2f}x | {drafts} | {tokens:.0f} |")


def site_run(cluster, folder: Path, studies: list[list[Path]], workers: int, batch: int) -> tuple[float, str, float]:
    from dicom_node.index import StudyState

    with running_site(cluster, folder) as site:
        uids = [put_study(site, paths, folder) for paths in studies]
        token = folder / "token"
        token.write_text(site.login("gpu"))
        config = folder / "worker.toml"
        config.write_text(f"[engine]\nintra_op_threads = {max(1, cores() // workers)}\n\n"
                          "[logging]\nlevel = \"WARNING\"\n\n[worker]\npoll_interval_s = 0.1\nheartbeat_s = 1.0\n")
        processes = [subprocess.Popen(
            [sys.executable, "-m", "raddraft", "--config", str(config), "worker", "--server", site.url, "--token-file",
             str(token), "--ca-file", str(site.cert), "--batch", str(batch), "--worker-id", f"w{n}", "--model",
             str(EMBEDDED), "--provider", "cpu", "--cache-dir", str(folder / "cache")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in range(workers)]
        try:
            with site.client(site.login("root")) as http:
                wait_for(lambda: len(http.get("/api/workers").json()) == workers, 180, "workers to report")
                started = time.perf_counter()
                for uid in uids:
                    site.index.transition(uid, StudyState.STABLE)
                wait_for(lambda: drafted_studies(site) == len(uids), 1800, "every study drafted")
                seconds = time.perf_counter() - started
                time.sleep(1.2)  # one more heartbeat with the last batch counted
                reports = http.get("/api/workers").json()
            per_study = {r[0] for r in site.index.reader().execute(
                "SELECT COUNT(*) FROM drafts GROUP BY study_uid").fetchall()}
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)
    drafts = ",".join(str(n) for n in sorted(per_study))
    tokens = sum(float(r.get("tokens_per_s") or 0) for r in reports)
    return 60 * len(uids) / seconds, drafts, tokens


def drafted_studies(site: Site) -> int:
    return int(site.index.reader().execute("SELECT COUNT(DISTINCT study_uid) FROM drafts").fetchone()[0])


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s} s for {what}")
        time.sleep(0.05)


# -- worklist latency ----------------------------------------------------------------------------------------
def fill_index(index, count: int) -> None:
    """`count` one-image studies, straight into the index (the worklist never opens the files)."""
    from pydicom.uid import generate_uid

    from dicom_node.header import InstanceHeader
    from dicom_node.index import Index, InstanceRow

    now = time.time()
    for start in range(0, count, 500):
        with index.transaction() as conn:
            for n in range(start, min(start + 500, count)):
                study, series, sop = generate_uid(), generate_uid(), generate_uid()
                header = InstanceHeader("1.2.840.10008.5.1.4.1.1.1.1", sop, study, series,
                                        patient_name=f"Phantom^{n:05d}", patient_id=f"P{n:05d}",
                                        accession_number=f"A{n:06d}", study_date="20261201",
                                        study_description="CHEST PA", modality="DX", view_position="PA")
                row = InstanceRow(sop, header.sop_class_uid, series, study, 1, "PA", "1.2.840.10008.1.2.1",
                                  f"data/bench/{sop}.dcm", 1000, now, "PACS")
                Index.add_instance(conn, header, row, now)


def timed_worklist(site: Site, token: str, requests: int) -> list[float]:
    times = []
    with site.client(token) as http:
        for _ in range(requests):
            started = time.perf_counter()
            answer = http.get("/api/studies")
            answer.raise_for_status()
            answer.json()
            times.append(time.perf_counter() - started)
    return times


def event_listener(site: Site, token: str, seen: dict, ready: threading.Event, stop: threading.Event) -> None:
    """An app's event stream: the arrival time of each study event it gets."""
    from httpx_sse import connect_sse

    with site.client(token) as http, connect_sse(http, "GET", "/api/events", timeout=None) as source:
        ready.set()
        for event in source.iter_sse():
            if stop.is_set():
                return
            try:
                data = json.loads(event.data)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("study_uid"):
                seen.setdefault(data["study_uid"], time.perf_counter())


def worklist_part(count: int, apps: int, requests: int) -> None:
    from dicom_node.index import StudyState

    with postgres() as cluster, tempfile.TemporaryDirectory(prefix="raddraft-worklist-bench-") as tmp, \
            running_site(cluster, Path(tmp)) as site:
        started = time.perf_counter()
        fill_index(site.index, count)
        filled = time.perf_counter() - started
        tokens = [site.login("reader") for _ in range(apps)]
        alone = timed_worklist(site, tokens[0], requests)
        stop = threading.Event()
        seen: list[dict] = [{} for _ in range(apps)]
        readies = [threading.Event() for _ in range(apps)]
        listeners = [threading.Thread(target=event_listener, args=(site, tokens[i], seen[i], readies[i], stop),
                                      daemon=True) for i in range(apps)]
        for thread in listeners:
            thread.start()
        for ready in readies:
            ready.wait(60)
        together: list[list[float]] = [[] for _ in range(apps)]
        fetchers = [threading.Thread(target=lambda i=i: together[i].extend(timed_worklist(site, tokens[i], requests)))
                    for i in range(apps)]
        wall = time.perf_counter()
        for thread in fetchers:
            thread.start()
        for thread in fetchers:
            thread.join()
        wall = time.perf_counter() - wall
        fanout = []
        for uid in [row.study_uid for row in site.index.studies()][:5]:
            changed = time.perf_counter()
            site.index.transition(uid, StudyState.STABLE)
            wait_for(lambda uid=uid: all(uid in s for s in seen), 30, "the event at every app")
            fanout.append(max(s[uid] for s in seen) - changed)
        stop.set()
        with site.client(tokens[0]) as http:
            size = len(http.get("/api/studies").content)
    flat = sorted(t for times in together for t in times)
    print(f"\nWorklist: {count} studies in the index (filled in {filled:.0f} s), GET /api/studies over TLS "
          f"({size / 1e6:.1f} MB of JSON), {cores()} cores")
    print("| apps | requests | median | p95 | worst | worklists/s |")
    print("|---|---|---|---|---|---|")
    print(f"| 1 alone | {len(alone)} | {statistics.median(alone):.2f} s | {_p95(alone):.2f} s | {max(alone):.2f} s | "
          f"{len(alone) / sum(alone):.1f} |")
    print(f"| {apps} at once, each with /api/events open | {len(flat)} | {statistics.median(flat):.2f} s | "
          f"{_p95(flat):.2f} s | {max(flat):.2f} s | {len(flat) / wall:.1f} |")
    print(f"\nA state change reaches all {apps} apps' event streams in {statistics.median(fanout):.2f} s "
          f"(median of {len(fanout)}; worst {max(fanout):.2f} s)")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


if __name__ == "__main__":
    sys.exit(main())
