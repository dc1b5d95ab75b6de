"""Routing latency: phantom studies stored into Orthanc with dcmtk's storescu and auto-routed by an Orthanc
Lua rule to RadDraft, against storescu sending the same studies straight to RadDraft (the peer baseline).

    python bench/orthanc_routing.py [--studies 20] [--runs 3] [--size 256] [--stable-after 10]
                                    [--speculative-after 1] [--compare-quiet-only] [--nagle]

RadDraft runs in-process as the app hosts it (raddraft/workstation.py) with the embedded model; Orthanc is
/usr/sbin/Orthanc on loopback (peers/orthanc.py), a fresh one and a fresh RadDraft store in every run. The
studies are sent one after another, one storescu per study (one association per transfer syntax).

Measured per study, from storescu returning, i.e. its receiver (Orthanc, or RadDraft directly) has
acknowledged the last instance, which both do only once it is stored and indexed, to the draft saved in
RadDraft's store. A study is complete (and drafted) after the stability quiet period
(`node.stable_after_s`), or sooner: speculatively once a frontal image is there and no instance came for
`node.speculative_after_s` (a later instance reopens it and it is drafted again), or at the sender's Number
of Study Related Instances. Both settings are printed with the table; `--compare-quiet-only` adds the same
runs with speculation off (the quiet period alone). Breakdown: forward (acknowledged by Orthanc -> last instance in RadDraft's store;
the routing hop; storescu's return also covers its association release, so Orthanc may already have
forwarded the instance: it reads as 0 or slightly below), quiet (-> study stable), queued (-> taken by the drafting queue, which drafts one study
at a time), drafting (-> draft saved: reading the images and running the model).
Table: median of the per-run medians, and the worst study over all runs. `--nagle` repeats everything with
TCP_NODELAY unset for storescu and Orthanc, as many PACS run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RADDRAFT_AE, PACS_AE, ROUTE = "RADDRAFT", "ORTHANC", "raddraft"
ROUTES = ("storescu -> Orthanc -> RadDraft", "storescu -> RadDraft (direct)")


@dataclass(frozen=True)
class PhantomStudy:
    study_uid: str
    paths: tuple[Path, ...]


@dataclass
class StudyClock:
    """Monotonic times of one study's milestones."""

    acknowledged: float = 0.0
    arrived: float = 0.0  # its last instance stored in RadDraft's store
    stable: float = 0.0
    started: float = 0.0  # taken off the drafting queue
    drafted: float = 0.0


@dataclass
class Timeline:
    """Milestones recorded from RadDraft's own events (node and drafting queue)."""

    clocks: dict[str, StudyClock] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    done: threading.Condition = field(default_factory=threading.Condition)

    def clock(self, study_uid: str) -> StudyClock:
        return self.clocks.setdefault(study_uid, StudyClock())

    def on_instance(self, event) -> None:
        with self.done:
            self.clock(event.study_uid).arrived = time.monotonic()

    def on_stable(self, event) -> None:
        with self.done:
            self.clock(event.study_uid).stable = time.monotonic()

    def on_started(self, event) -> None:
        with self.done:
            self.clock(event.study_uid).started = time.monotonic()

    def on_drafted(self, event) -> None:
        with self.done:
            self.clock(event.study_uid).drafted = time.monotonic()
            self.done.notify_all()

    def on_failed(self, event) -> None:
        with self.done:
            self.failures.append(f"{event.study_uid}: {event.reason}")
            self.done.notify_all()

    def wait_drafted(self, study_uids: list[str], timeout: float) -> None:
        def finished() -> bool:
            return bool(self.failures) or all(self.clock(uid).drafted for uid in study_uids)

        with self.done:
            if not self.done.wait_for(finished, timeout):
                missing = sum(1 for uid in study_uids if not self.clock(uid).drafted)
                raise RuntimeError(f"{missing} studies not drafted within {timeout:g} s")
        if self.failures:
            raise RuntimeError(f"drafting failed: {self.failures[0]}")


@dataclass(frozen=True)
class StudyLatency:
    total: float
    forward: float
    quiet: float
    queued: float
    drafting: float


def write_phantoms(out: Path, count: int, size: int, seed: int) -> list[PhantomStudy]:
    from training.data.phantoms import PhantomConfig, generate_dataset, read_manifest

    summary = generate_dataset(out, count, seed, config=PhantomConfig(image_size=size, workers=1))
    return [PhantomStudy(str(r["study_uid"]), tuple(out / p for p in r["images"]))
            for r in read_manifest(summary.manifest)]


@contextmanager
def raddraft(workdir: Path, stable_after_s: float, speculative_after_s: float,
             timeline: Timeline) -> Iterator[object]:
    from raddraft.config import load_config
    from raddraft.workstation import Workstation

    config_file = workdir / "raddraft.toml"
    config_file.write_text("")  # never the user's own configuration
    overrides = {"store.root": str(workdir / "store"), "node.port": 0, "node.ae_title": RADDRAFT_AE,
                 "node.stable_after_s": stable_after_s, "node.speculative_after_s": speculative_after_s}
    ws = Workstation.start(load_config(config_file, overrides), config_path=config_file, overrides=overrides)
    try:
        if ws.problems or ws.node is None or ws.queue is None:
            raise RuntimeError(f"RadDraft did not start drafting: {ws.problems}")
        ws.queue.warmed.wait(30)  # started, as a workstation is before the day's first study
        ws.node_events.instance_stored.subscribe(timeline.on_instance)
        ws.node_events.study_stable.subscribe(timeline.on_stable)
        ws.draft_events.started.subscribe(timeline.on_started)
        ws.draft_events.finished.subscribe(timeline.on_drafted)
        ws.draft_events.failed.subscribe(timeline.on_failed)
        yield ws
    finally:
        ws.stop()


def run_once(route: str, studies: list[PhantomStudy], stable_after_s: float, speculative_after_s: float,
             nodelay: bool, interval_s: float = 0.0) -> tuple[list[StudyLatency], float]:
    from peers.dcmtk import storescu_send
    from peers.orthanc import Modality, running_orthanc

    timeline = Timeline()
    via_orthanc = route == ROUTES[0]
    with tempfile.TemporaryDirectory(prefix="routing-") as tmp, \
            raddraft(Path(tmp), stable_after_s, speculative_after_s, timeline) as ws:
        pacs = (running_orthanc(Path(tmp) / "orthanc", ae_title=PACS_AE, route_to=ROUTE,
                                never_route_from=[RADDRAFT_AE], nodelay=nodelay)
                if via_orthanc else nullcontext())
        with pacs as orthanc:
            if orthanc is not None:
                orthanc.add_modality(Modality(ROUTE, RADDRAFT_AE, "127.0.0.1", ws.node.port))
                orthanc.echo(ROUTE)
                port, called = orthanc.dicom_port, PACS_AE
            else:
                port, called = ws.node.port, RADDRAFT_AE
            for study in studies:
                storescu_send(study.paths, port, called, nodelay=nodelay)
                with timeline.done:
                    timeline.clock(study.study_uid).acknowledged = time.monotonic()
                time.sleep(interval_s)
            if orthanc is not None:
                held = orthanc.get("/statistics")["CountInstances"]
                if held != sum(len(s.paths) for s in studies):
                    raise RuntimeError(f"Orthanc holds {held} instances after storescu returned")
            timeline.wait_drafted([s.study_uid for s in studies], timeout=stable_after_s + 60 + 5 * len(studies))
            settle_redrafts(ws, studies, timeout=stable_after_s + 30)
            check_complete(ws, studies)
            drafts = drafts_per_study(ws, studies)
    latencies = []
    for study in studies:
        c = timeline.clocks[study.study_uid]
        latencies.append(StudyLatency(total=c.drafted - c.acknowledged,
                                      forward=c.arrived - c.acknowledged if via_orthanc else 0.0,
                                      quiet=c.stable - c.arrived, queued=c.started - c.stable,
                                      drafting=c.drafted - c.started))
    return latencies, drafts


def settle_redrafts(ws, studies: list[PhantomStudy], timeout: float) -> None:
    """Wait until no study is receiving or queued: a speculative draft that more images overtook is
    drafted again, and the table's "draft ready" is that last draft."""
    from dicom_node.index import StudyState

    deadline = time.monotonic() + timeout
    busy = frozenset({StudyState.RECEIVING, StudyState.STABLE, StudyState.DRAFTING})
    while time.monotonic() < deadline:
        if all(ws.store.index.study(s.study_uid).state not in busy for s in studies):
            return
        time.sleep(0.05)


def drafts_per_study(ws, studies: list[PhantomStudy]) -> float:
    from dicom_node.drafts import drafts_of

    return statistics.mean(len(drafts_of(ws.store.index, s.study_uid)) for s in studies)


def check_complete(ws, studies: list[PhantomStudy]) -> None:
    """Every study was drafted once, with all its images (a draft made before the last image would time
    the wrong thing)."""
    from dicom_node.index import StudyState

    for study in studies:
        row = ws.store.index.study(study.study_uid)
        if row is None or row.state != StudyState.DRAFTED or row.num_instances != len(study.paths):
            raise RuntimeError(f"study {study.study_uid}: {row.state if row else 'absent'} with "
                               f"{row.num_instances if row else 0} of {len(study.paths)} images")


@dataclass
class RouteResult:
    runs: list[list[StudyLatency]] = field(default_factory=list)
    drafts: list[float] = field(default_factory=list)  # drafts per study, per run (above 1: redrafted)

    def median(self, part: str) -> float:
        return statistics.median(statistics.median(getattr(s, part) for s in run) for run in self.runs)

    def worst(self, part: str) -> float:
        return max(getattr(s, part) for run in self.runs for s in run)

    def run_medians(self) -> str:
        return " ".join(f"{statistics.median(s.total for s in run):.2f}" for run in self.runs)


def measure(studies: list[PhantomStudy], runs: int, stable_after_s: float, speculative_after_s: float,
            nodelay: bool, interval_s: float = 0.0) -> dict[str, RouteResult]:
    from tqdm import tqdm

    results = {route: RouteResult() for route in ROUTES}
    label = "TCP_NODELAY=1" if nodelay else "TCP_NODELAY unset"
    with tqdm(total=runs * len(ROUTES), desc=f"runs ({label})", unit="run", file=sys.stderr, disable=None) as bar:
        for _ in range(runs):
            for route in ROUTES:  # alternate routes within each round
                latencies, drafts = run_once(route, studies, stable_after_s, speculative_after_s, nodelay,
                                             interval_s)
                results[route].runs.append(latencies)
                results[route].drafts.append(drafts)
                bar.update(1)
    return results


def print_table(title: str, results: dict[str, RouteResult], stable_after_s: float,
                speculative_after_s: float) -> None:
    print(f"\n{title}")
    print(f"completion: node.stable_after_s = {stable_after_s:g} s (upper bound), node.speculative_after_s = "
          f"{speculative_after_s:g} s ({'off' if not speculative_after_s else 'after a frontal image'})")
    print(f"{'route':32s} {'acknowledged -> draft ready (s)':>31s} {'forward (s)':>14s} {'quiet (s)':>10s} "
          f"{'queued (s)':>11s} {'drafting (s)':>13s} {'drafts/study':>12s}  run medians (s)")
    print(f"{'':32s} {'median':>15s} {'worst':>15s} {'median':>7s} {'worst':>6s} {'median':>10s} "
          f"{'median':>11s} {'median':>13s} {'mean':>12s}")
    for route, result in results.items():
        print(f"{route:32s} {result.median('total'):15.2f} {result.worst('total'):15.2f} "
              f"{result.median('forward'):7.2f} {result.worst('forward'):6.2f} {result.median('quiet'):10.2f} "
              f"{result.median('queued'):11.3f} {result.median('drafting'):13.3f} "
              f"{statistics.mean(result.drafts):12.2f}  {result.run_medians()}")
    routed, direct = results[ROUTES[0]], results[ROUTES[1]]
    print(f"{'routing through Orthanc adds':32s} {routed.median('total') - direct.median('total'):+15.2f} "
          f"{routed.worst('total') - direct.worst('total'):+15.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="runs per route, alternating")
    parser.add_argument("--size", type=int, default=256, help="phantom image size in pixels")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--stable-after", type=float, default=None,
                        help="RadDraft's quiet period in seconds (default: the product's default)")
    parser.add_argument("--speculative-after", type=float, default=None,
                        help="RadDraft's speculative quiet in seconds, 0: off (default: the product's default)")
    parser.add_argument("--compare-quiet-only", action="store_true",
                        help="also run with speculation off, the quiet period alone")
    parser.add_argument("--nagle", action="store_true", help="also run with TCP_NODELAY unset")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between one study's last acknowledgement and the next study's send "
                             "(0: back to back, a burst that queues behind the one-at-a-time drafting)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from dicom_node.settings import NodeSettings
    from peers.orthanc import find_orthanc

    if find_orthanc() is None:
        print("Orthanc not found (/usr/sbin/Orthanc): apt-get install orthanc dcmtk", file=sys.stderr)
        return 2
    stable_after_s = args.stable_after if args.stable_after is not None else NodeSettings().stable_after_s
    speculative = (args.speculative_after if args.speculative_after is not None
                   else NodeSettings().speculative_after_s)
    settings = [speculative, 0.0] if args.compare_quiet_only and speculative else [speculative]
    with tempfile.TemporaryDirectory(prefix="routing-phantoms-") as tmp:
        studies = write_phantoms(Path(tmp), args.studies, args.size, args.seed)
        images = sum(len(s.paths) for s in studies)
        model = describe_model()
        for nodelay in (True, False) if args.nagle else (True,):
            for speculative_after_s in settings:
                results = measure(studies, args.runs, stable_after_s, speculative_after_s, nodelay, args.interval)
                print_table(f"{len(studies)} phantom studies ({images} images, {args.size} px), {args.runs} runs "
                            f"per route, {'TCP_NODELAY=1' if nodelay else 'TCP_NODELAY unset'} on storescu and "
                            f"Orthanc, {_pace(args.interval)}; drafted by {model}", results, stable_after_s, speculative_after_s)
    return 0


def _pace(interval_s: float) -> str:
    return f"studies {interval_s:g} s apart" if interval_s else "studies back to back"


def describe_model() -> str:
    from engine.runtime import load_model
    from engine.settings import EngineSettings
    from raddraft.resources import model_dir

    model = load_model(model_dir(None), EngineSettings())
    return f"{model.model_id} ({model.variant}, {model.provider})"


if __name__ == "__main__":
    sys.exit(main())
