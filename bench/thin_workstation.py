"""The thin workstation (`raddraft app --server`) beside the standalone one: what reading over the API costs.

    python bench/thin_workstation.py [--studies 10] [--size 1024] [--rounds 3]

The same phantom chest studies (PA + lateral, `--size` px, uncompressed) are put into a standalone
workstation's store (SQLite, files on this disk) and into a site server's (in-process uvicorn with TLS,
PostgreSQL from a private cluster, as bench/site_server.py runs it). Timed, per study, on the calls the main
window makes on its worker threads:

- open a study: `Workstation.open_study` / `SiteWorkstation.open_study` (claim, metadata, drafts, reports; the
  thin one also fetches every instance by WADO-RS into its image cache, cold the first time, warm after);
- the worklist: `worklist()` with the studies listed.

Medians over studies and rounds, with the worst beside them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def phantoms(folder: Path, count: int, size: int) -> list[list[Path]]:
    from training.data.phantoms import PhantomConfig, plan_study, write_study

    config = PhantomConfig(image_size=size, workers=1, ap_fraction=0.0, lateral_fraction=1.0,
                           transfer_syntax_weights={"explicit": 1.0})
    studies = []
    for index in range(count):
        record = write_study(plan_study(7, index, config), folder, config)
        studies.append([folder / image for image in record["images"]])
    return studies


def standalone(folder: Path):
    from raddraft.config import load_config
    from raddraft.workstation import Workstation

    (folder / "no-model").mkdir(parents=True)
    (folder / "raddraft.toml").write_text("")
    overrides = {"store.root": str(folder / "store"), "node.port": 0, "engine.draft_on_stable": False,
                 "engine.model": str(folder / "no-model"), "reading.radiologist": "reader"}
    return Workstation.start(load_config(folder / "raddraft.toml", overrides), config_path=folder / "raddraft.toml",
                             overrides=overrides)


def put_local(store, paths: list[Path]) -> str:
    from pydicom import dcmread

    from dicom_node.store import ReceivedInstance

    for path in paths:
        store.put(ReceivedInstance.from_part10(path.read_bytes()))
    return str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def row(name: str, values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms ({max(values) * 1000:.1f})" if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from bench.site_server import PASSWORD, postgres, put_study, running_site
    from desktop.remote import SiteWorkstation
    from desktop.site_client import SiteClient, SiteSettings
    from raddraft.config import load_config
    from raddraft.site_app import as_user

    with tempfile.TemporaryDirectory(prefix="raddraft-thin-") as tmp:
        folder = Path(tmp)
        studies = phantoms(folder / "phantoms", args.studies, args.size)
        megabytes = sum(p.stat().st_size for paths in studies for p in paths) / len(studies) / 1e6
        local = standalone(folder / "local")
        local_uids = [put_local(local.store, paths) for paths in studies]
        results: dict[str, list[float]] = {k: [] for k in ("local open", "local list", "cold open", "warm open",
                                                            "remote list")}
        (folder / "site").mkdir()
        with postgres() as cluster, running_site(cluster, folder / "site") as site:
            remote_uids = [put_study(site, paths, folder) for paths in studies]
            for round_ in range(args.rounds):
                settings = SiteSettings(url=site.url, cache_dir=folder / f"cache-{round_}", ca_file=site.cert)
                client = SiteClient(settings)
                session = client.login("reader", PASSWORD)
                (folder / "app.toml").write_text("")
                remote = SiteWorkstation(client, as_user(load_config(folder / "app.toml", {}), session.user_name))
                for local_uid, remote_uid in zip(local_uids, remote_uids):
                    results["local open"].append(timed(lambda u=local_uid: local.open_study(u)))
                    results["cold open"].append(timed(lambda u=remote_uid, r=remote: r.open_study(u)))
                    results["warm open"].append(timed(lambda u=remote_uid, r=remote: r.open_study(u)))
                results["local list"].append(timed(local.worklist))
                results["remote list"].append(timed(remote.worklist))
                remote.stop()
        local.stop()

    print(f"\n{args.studies} studies x 2 images of {args.size} px ({megabytes:.1f} MB per study), "
          f"{args.rounds} rounds; median (worst)\n")
    print("| call | standalone (SQLite, local files) | thin, cold image cache | thin, warm image cache |")
    print("|---|---|---|---|")
    print(f"| open a study | {row('', results['local open'])} | {row('', results['cold open'])} | "
          f"{row('', results['warm open'])} |")
    print(f"| worklist ({args.studies} studies) | {row('', results['local list'])} | "
          f"{row('', results['remote list'])} | {row('', results['remote list'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
