"""Profile the node's receive path: the ingest corpus sent by storescu to a node run in this process.

    python bench/node_profile.py [--count 100] [--associations 1] [--top 25]

All threads are profiled with yappi (the DUL, association and gate threads); the summary lists the
functions by their own CPU time and the node's CPU time per image. Not a benchmark of speed against
peers (that is bench/node_ingest.py); a map of where the node's time goes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.corpus import write_ct_corpus  # noqa: E402
from dicom_node.events import NodeEvents  # noqa: E402
from dicom_node.server import DicomNode  # noqa: E402
from dicom_node.settings import NodeSettings, StoreSettings  # noqa: E402
from dicom_node.store import Store  # noqa: E402


def send_all(groups: list[list[Path]], port: int) -> float:
    started = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", "RADDRAFT", "127.0.0.1", str(port), *map(str, files)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for files in groups]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-400:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--associations", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true", help="only the CPU time per image")
    args = parser.parse_args()
    import yappi

    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        files = write_ct_corpus(Path(tmp) / "corpus", args.count, studies=args.associations)
        groups = [files[i::args.associations] for i in range(args.associations)]
        store = Store(StoreSettings(Path(tmp) / "store"))
        node = DicomNode(NodeSettings(port=0), store, NodeEvents())
        node.start()
        try:
            send_all([files[:5]], node.port)  # warm up (imports, first association)
            yappi.set_clock_type("cpu")
            if not args.no_profile:
                yappi.start(builtins=False)
            cpu0 = time.process_time()
            elapsed = send_all(groups, node.port)
            cpu = time.process_time() - cpu0
            yappi.stop()
        finally:
            node.stop()
            store.close()
    print(f"{args.count} images over {args.associations} association(s): {args.count / elapsed:.1f} img/s, "
          f"process CPU {1000 * cpu / args.count:.2f} ms/image")
    if not args.no_profile:
        stats = yappi.get_func_stats()
        stats.sort("tsub")
        print(f"{'own ms/img':>10s} {'total ms/img':>12s} {'calls/img':>9s}  function")
        for s in list(stats)[: args.top]:
            print(f"{1000 * s.tsub / args.count:10.3f} {1000 * s.ttot / args.count:12.3f} "
                  f"{s.ncall / args.count:9.1f}  {s.module.split('site-packages/')[-1]}:{s.lineno} {s.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
