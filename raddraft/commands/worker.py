"""`raddraft worker`: draft studies for a site server (`raddraft server`) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path

from raddraft.commands.common_options import PROVIDERS, add_registry_arguments, registry_overrides

HELP = ("draft studies for a RadDraft site server: claim the next studies waiting, draft them on this "
        "machine's GPU or CPU (several at once) and write the drafts back, until interrupted")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="URL", help="the site server, e.g. https://raddraft.example.org:8443")
    parser.add_argument("--token", help="a worker token (`raddraft user token NAME` on the server)")
    parser.add_argument("--token-file", type=Path, metavar="FILE", help="read the token from FILE instead")
    parser.add_argument("--ca-file", type=Path, metavar="FILE",
                        help="certificate or CA to check the server's TLS certificate against")
    parser.add_argument("--worker-id", help="how the server names this worker (default: HOST-PID)")
    parser.add_argument("--batch", type=int, help="studies drafted at once (default 4)")
    parser.add_argument("--lease", type=float, metavar="SECONDS", help="lease on a claimed study (default 120)")
    parser.add_argument("--cache-dir", type=Path, help="where fetched instances are kept while drafted")
    parser.add_argument("--model", type=Path, help="model bundle folder to draft with (default: the embedded model)")
    parser.add_argument("--provider", action="append", choices=PROVIDERS,
                        help="execution provider to prefer (repeatable, in order; CPU is always the fallback)")
    parser.add_argument("--variant", choices=["auto", "fp32", "fp16", "int8", "int4"], help="graph precision")
    parser.add_argument("--once", action="store_true", help="draft one claim's studies (if any) and exit")
    add_registry_arguments(parser)


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        **registry_overrides(args),
        "worker.server": args.server,
        "worker.token": args.token,
        "worker.token_file": str(args.token_file) if args.token_file else None,
        "worker.ca_file": str(args.ca_file) if args.ca_file else None,
        "worker.worker_id": args.worker_id,
        "worker.batch": args.batch,
        "worker.lease_s": args.lease,
        "worker.cache_dir": str(args.cache_dir) if args.cache_dir else None,
        "worker.model": str(args.model) if args.model else None,
        "worker.providers": args.provider,
        "worker.variant": args.variant,
    }


def run(args: argparse.Namespace, config) -> int:
    from raddraft.worker.main import run_worker

    return run_worker(config, once=args.once)
