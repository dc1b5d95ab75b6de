"""Priors latency: from a study being complete to its draft made with the prior ready, Orthanc holding 1,000
studies, split into C-FIND, C-MOVE (or C-GET) and drafting; side by side with priors off.

    python bench/priors.py [--studies 1000] [--runs 5] [--methods off,move,get] [--priors 1]

Orthanc (/usr/sbin/Orthanc on loopback, peers/orthanc.py) is filled over REST with `--studies` small CR
chest studies (64 x 64 pixels, one image each) of `--studies / 2` patients, two studies per patient (2023 and
2024), the newer with its report as a Basic Text SR. RadDraft runs in-process as the app hosts it
(raddraft/workstation.py: node, prior lookup, drafting queue with the embedded model), registered in Orthanc
as a modality; a fresh store per method. Each run sends one current study (PA + lateral) of a patient with
priors straight to RadDraft's node with storescu, and waits for its draft before the next.

Per study, from the index: complete (its "stable" event) -> C-FIND done (with the series-level C-FIND for the
body part) -> prior retrieved (C-MOVE/C-GET done, the prior's instances stored) -> prior ready (its report
read, recorded) -> draft saved (`drafting`: the queue and the model). Table: medians over the runs, and the
worst total.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RADDRAFT_AE, PACS_AE, ROUTE = "RADDRAFT", "ORTHANC", "raddraft"
METHODS = ("off", "move", "get")


@dataclass
class Timings:
    total: list[float] = field(default_factory=list)
    lookup: list[float] = field(default_factory=list)
    find: list[float] = field(default_factory=list)
    retrieve: list[float] = field(default_factory=list)
    drafting: list[float] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)


def patient_id(number: int) -> str:
    return f"BENCH{number:05d}"


def fill_orthanc(orthanc, out: Path, studies: int) -> float:
    """`studies` one-image CR studies, two per patient, the newer with its SR; the seconds it took."""
    from tests.dicom_node.priors_fixtures import write_cr_study, write_report_sr

    started = time.monotonic()
    files: list[Path] = []
    for number in range(studies // 2):
        folder = out / patient_id(number)
        older = write_cr_study(folder / "older", patient_id(number), "20230115", views=("PA",))
        newer = write_cr_study(folder / "newer", patient_id(number), "20240302", views=("PA",))
        sr = write_report_sr(folder / "newer", newer, "Small right pleural effusion.", "Right effusion.")
        files.extend([*older.paths, *newer.paths, sr])
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda path: orthanc.upload(path.read_bytes()), files))
    count = len(orthanc.get("/studies"))
    if count < studies // 2 * 2:
        raise SystemExit(f"Orthanc holds {count} studies, not {studies}")
    return time.monotonic() - started


def start_workstation(workdir: Path, orthanc, method: str, priors: int):
    from raddraft.config import load_config
    from raddraft.workstation import Workstation

    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "raddraft.toml"
    config_file.write_text("")
    overrides = {"store.root": str(workdir / "store"), "node.port": 0, "node.ae_title": RADDRAFT_AE,
                 "node.stable_after_s": 2.0, "pacs.ae_title": PACS_AE, "pacs.host": "127.0.0.1",
                 "pacs.port": orthanc.dicom_port, "pacs.calling_ae": RADDRAFT_AE,
                 "pacs.query_priors": method != "off", "pacs.retrieve": "get" if method == "get" else "move",
                 "pacs.priors": priors}
    workstation = Workstation.start(load_config(config_file, overrides), config_path=config_file, overrides=overrides)
    if workstation.problems or workstation.node is None or workstation.queue is None:
        raise SystemExit(f"the workstation did not start: {workstation.problems}")
    if not workstation.queue.warmed.wait(60):
        raise SystemExit("the drafting queue did not warm up")
    return workstation


def wait_drafted(workstation, study_uid: str, timeout: float = 120):
    from dicom_node.drafts import latest_draft

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        draft = latest_draft(workstation.store.index, study_uid)
        if draft is not None:
            return draft
        time.sleep(0.02)
    raise SystemExit(f"study {study_uid} was not drafted within {timeout:g} s")


def measure(method: str, orthanc, workdir: Path, runs: int, priors: int, first_patient: int) -> Timings:
    from dicom_node.priors import prior_status
    from peers.dcmtk import storescu_send
    from peers.orthanc import Modality
    from tests.dicom_node.priors_fixtures import write_cr_study

    workstation = start_workstation(workdir, orthanc, method, priors)
    timings = Timings()
    try:
        orthanc.add_modality(Modality(ROUTE, RADDRAFT_AE, "127.0.0.1", workstation.node.port))
        index = workstation.store.index
        for run in range(runs):
            current = write_cr_study(workdir / f"current{run}", patient_id(first_patient + run), "20250110")
            storescu_send(current.paths, workstation.node.port, RADDRAFT_AE)
            draft = wait_drafted(workstation, current.study_uid)
            complete = max(e.at for e in index.study_events(current.study_uid) if e.to_state == "stable")
            lookup = index.reader().execute("SELECT finished_at, find_s, retrieve_s FROM prior_lookups WHERE "
                                            "study_uid = ?", (current.study_uid,)).fetchone()
            finished_at, find_s, retrieve_s = (complete, 0.0, 0.0) if lookup is None else tuple(lookup)
            timings.total.append(draft.created_at - complete)
            timings.lookup.append(finished_at - complete)
            timings.find.append(find_s)
            timings.retrieve.append(retrieve_s)
            timings.drafting.append(draft.created_at - finished_at)
            timings.outcomes.append(prior_status(index, current.study_uid)[0])
    finally:
        workstation.stop()
    return timings


def print_table(results: dict[str, Timings], studies: int, priors: int) -> None:
    labels = {"off": "priors off", "move": f"C-MOVE, {priors} prior(s)", "get": f"C-GET, {priors} prior(s)"}
    print(f"\nOrthanc holding {studies} studies; complete -> draft ready, medians over {len(next(iter(results.values())).total)} runs")
    print("| lookup | C-FIND | C-MOVE / C-GET | complete -> prior ready | drafting | complete -> draft, median (worst) "
          "| outcomes |")
    print("|---|---|---|---|---|---|---|")
    for method, t in results.items():
        outcomes = ", ".join(f"{name} x{t.outcomes.count(name)}" for name in sorted(set(t.outcomes)))
        find = f"{statistics.median(t.find):.3f} s" if method != "off" else "-"
        retrieve = f"{statistics.median(t.retrieve):.3f} s" if method != "off" else "-"
        ready = f"{statistics.median(t.lookup):.3f} s" if method != "off" else "-"
        print(f"| {labels[method]} | {find} | {retrieve} | {ready} | {statistics.median(t.drafting):.3f} s | "
              f"**{statistics.median(t.total):.3f} s** ({max(t.total):.3f}) | {outcomes} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--priors", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if not set(methods) <= set(METHODS) or args.runs * len(methods) > args.studies // 2:
        parser.error(f"methods from {METHODS}; runs x methods at most studies / 2")
    logging.basicConfig(level=logging.WARNING)
    from peers.orthanc import find_orthanc, running_orthanc

    if find_orthanc() is None:
        raise SystemExit("Orthanc is not installed (apt-get install orthanc)")
    with tempfile.TemporaryDirectory(prefix="raddraft-bench-priors-") as tmp:
        work = Path(tmp)
        with running_orthanc(work / "orthanc", ae_title=PACS_AE) as orthanc:
            seconds = fill_orthanc(orthanc, work / "pacs-files", args.studies)
            print(f"Orthanc filled with {args.studies} studies in {seconds:.1f} s")
            results = {}
            for number, method in enumerate(methods):
                results[method] = measure(method, orthanc, work / method, args.runs, args.priors,
                                          first_patient=number * args.runs)
        print_table(results, args.studies, args.priors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
