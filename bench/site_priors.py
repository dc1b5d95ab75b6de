"""Priors on the site server: what a prior costs a drafting worker, the API and the thin app.

    python bench/site_priors.py [--studies 8] [--rounds 1]

The site's API in this process (uvicorn, TLS, PostgreSQL from a private cluster), a fresh store per
configuration; `--studies` phantom chest studies become complete, each (where asked) with an earlier study of
the same patient signed here, found by the prior lookup (`dicom_node.priors`, the store; no PACS).
worker: one `raddraft.worker` DraftingWorker of batch `--studies` claims and drafts them all: the embedded
    model's weights behind prompts that take the prior's report and frontal image ("report+image", as in
    tests/engine), with and without priors, and the embedded model itself (it takes none) with priors.
    A study with a prior is drafted alone with it (`DraftModel.draft(prior=...)`), the others in one batch.
api: the claim of all the studies (their priors in the answer, or none); `GET /api/studies/{study}/priors`;
    the thin app's `loaded_priors` (the prior's images by WADO-RS into its cache), cold and warm.
lookup: a complete study's prior lookup in the store (what holds it back from the workers).
Figures are medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.site_server import EMBEDDED, cores, phantom_studies, postgres, running_site
from bench.site_studies import store_as_new_study

PRIOR_PROMPTS = {
    "findings": "<s><image>\n{prior}Findings:",
    "impression": "<s><image>\n{prior}Impression:",
    "impression_from_findings": "<s><image>\n{prior}Findings: {findings}\nImpression:",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench-cache" / "site-server")
    args = parser.parse_args()
    count = args.studies
    studies = phantom_studies(args.cache, 2 * count)  # the first half current, the second their priors
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    settings = EngineSettings(providers=("cpu",), batch_size=count)
    with tempfile.TemporaryDirectory(prefix="raddraft-site-priors-") as tmp:
        models = {"embedded (takes no prior)": load_model(EMBEDDED, settings),
                  "report+image prompts": load_model(prior_bundle(Path(tmp) / "bundle"), settings)}
        configs = [("report+image prompts", False), ("report+image prompts", True), ("embedded (takes no prior)", True)]
        rows: dict[tuple[str, bool], list[dict]] = {config: [] for config in configs}
        with postgres() as cluster:
            for _ in range(args.rounds):
                for name, with_priors in configs:
                    with tempfile.TemporaryDirectory(prefix="raddraft-site-priors-run-") as run:
                        rows[(name, with_priors)].append(
                            measure(cluster, Path(run), studies, count, models[name], with_priors))
    report(rows, count, args.rounds)
    return 0


def prior_bundle(target: Path) -> Path:
    shutil.copytree(EMBEDDED, target)
    data = json.loads((target / "model.json").read_text())
    data.update(prior="report+image", prompts=PRIOR_PROMPTS)
    (target / "model.json").write_text(json.dumps(data))
    return target


def stage(site, folder: Path, studies: list[list[Path]], count: int, with_priors: bool) -> tuple[list[str], list[float]]:
    """The current studies complete, their priors looked up; (their UIDs, each lookup's seconds)."""
    from dicom_node.index import StudyState
    from dicom_node.priors import PriorRetriever
    from dicom_node.reports import SignedReport, sign_report
    from dicom_node.settings import PacsSettings

    index = site.index
    retriever = PriorRetriever(PacsSettings(), index, site.store, move_destination="RADDRAFT")
    uids, lookups = [], []
    for n in range(count):
        patient = f"BENCH-PRIOR-{n:03d}"
        if with_priors:
            earlier = store_as_new_study(site.store, studies[count + n], folder, patient_id=patient,
                                         study_date="20230105")
            index.transition(earlier, StudyState.DRAFTED)
            sign_report(index, SignedReport(earlier, "Small right pleural effusion.", "Small right pleural effusion.",
                                            "Reader^A"))
        uid = store_as_new_study(site.store, studies[n], folder, patient_id=patient, study_date="20250110")
        index.transition(uid, StudyState.STABLE)
        started = time.perf_counter()
        assert retriever.retrieve_for(uid).has_prior == with_priors
        lookups.append(time.perf_counter() - started)
        uids.append(uid)
    return uids, lookups


def measure(cluster, folder: Path, studies: list[list[Path]], count: int, model, with_priors: bool) -> dict:
    from dicom_node.drafts import drafts_of
    from engine.findings.critical import DEFAULT_CRITICAL_FINDINGS
    from raddraft.worker.cache import InstanceCache
    from raddraft.worker.client import WorkerClient
    from raddraft.worker.drafting import DraftingWorker
    from raddraft.worker.settings import WorkerSettings

    with running_site(cluster, folder) as site:
        uids, lookups = stage(site, folder, studies, count, with_priors)
        with site.client(site.login("gpu")) as worker_http:
            started = time.perf_counter()  # a short lease: the worker below takes them again once it ran out
            jobs = worker_http.post("/api/worker/claim", json={"worker_id": "probe", "max": count, "lease_s": 1}).json()
            claim_s = time.perf_counter() - started
        assert len(jobs) == count and all((job["prior"] is not None) == with_priors for job in jobs)
        priors_s, cold_s, warm_s = api_reads(site, folder, uids[0])
        time.sleep(1.2)
        client = WorkerClient(site.url, site.login("gpu"), ca_file=site.cert)
        worker = DraftingWorker(client, model, WorkerSettings(server=site.url, batch=count, lease_s=600.0),
                                InstanceCache(folder / "worker-cache"), "bench", DEFAULT_CRITICAL_FINDINGS)
        worker.warm_up()
        model.draft(studies[0])  # warm
        try:
            started = time.perf_counter()
            drafted = worker.run_once()
            seconds = time.perf_counter() - started
        finally:
            client.close()
        given = sum(bool(draft.detail.get("prior")) for uid in uids for draft in drafts_of(site.index, uid))
    return {"drafted": drafted, "seconds": seconds, "given": given, "claim_s": claim_s,
            "lookup_s": statistics.median(lookups), "priors_s": priors_s, "cold_s": cold_s, "warm_s": warm_s}


def api_reads(site, folder: Path, study_uid: str) -> tuple[float, float, float]:
    """GET .../priors (median of 10), and the thin app's loaded_priors with a cold then a warm image cache."""
    from desktop.remote import SiteWorkstation
    from desktop.site_client import SiteClient, SiteSettings

    token = site.login("reader")
    with site.client(token) as http:
        times = []
        for _ in range(10):
            started = time.perf_counter()
            http.get(f"/api/studies/{study_uid}/priors").raise_for_status()
            times.append(time.perf_counter() - started)
    client = SiteClient(SiteSettings(url=site.url, cache_dir=folder / "app-cache", ca_file=site.cert))
    client.login("reader", "bench password 1")
    workstation = SiteWorkstation(client, None)
    try:
        started = time.perf_counter()
        workstation.loaded_priors(study_uid)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        workstation.loaded_priors(study_uid)
        warm = time.perf_counter() - started
    finally:
        client.close()
    return statistics.median(times), cold, warm


def report(rows: dict, count: int, rounds: int) -> None:
    def median(runs: list[dict], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    print(f"\nWorker: {count} phantom studies claimed at once (batch {count}), CPU ({cores()} cores), API over TLS, "
          f"index on PostgreSQL, {rounds} round(s)")
    print("| model | priors in the store | drafted | drafts given a prior | studies/min | claim of all (ms) |")
    print("|---|---|---|---|---|---|")
    for (name, with_priors), runs in rows.items():
        print(f"| {name} | {'one per study' if with_priors else 'none'} | {runs[0]['drafted']}/{count} | "
              f"{runs[0]['given']} | {60 * count / median(runs, 'seconds'):.1f} | {1000 * median(runs, 'claim_s'):.0f} |")
    with_priors = [run for (_, priors), runs in rows.items() if priors for run in runs]
    print("\n| read (a study with one prior of 2 images) | median |")
    print("|---|---|")
    print(f"| prior lookup in the store, before workers may claim | {1000 * median(with_priors, 'lookup_s'):.0f} ms |")
    print(f"| GET /api/studies/{{study}}/priors | {1000 * median(with_priors, 'priors_s'):.0f} ms |")
    print(f"| thin app `loaded_priors`, cold image cache (images by WADO-RS) | {1000 * median(with_priors, 'cold_s'):.0f} ms |")
    print(f"| thin app `loaded_priors`, warm image cache | {1000 * median(with_priors, 'warm_s'):.0f} ms |")


if __name__ == "__main__":
    sys.exit(main())
