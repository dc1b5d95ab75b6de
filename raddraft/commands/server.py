"""`raddraft server`: the site server (DICOM node, store with its PostgreSQL index, outbox, HTTPS API)."""

from __future__ import annotations

import argparse
from pathlib import Path

from raddraft.commands.common_options import add_node_arguments, node_overrides

HELP = "run the site server: one DICOM node and store for a department, an HTTPS API for apps and workers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_node_arguments(parser)
    parser.add_argument("--database", metavar="URL", help="the index: postgresql://USER@HOST:PORT/DB")
    parser.add_argument("--http-port", type=int, help="port of the HTTPS API (0: any free port)")
    parser.add_argument("--http-host", help="address the API binds (default 127.0.0.1)")
    parser.add_argument("--tls-cert", type=Path, help="the API's certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    parser.add_argument("--draft-on-server", action="store_true",
                        help="draft here too, with this machine's model (default: workers draft)")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides = {**node_overrides(args), "store.database": args.database, "server.http_port": args.http_port,
                 "server.http_host": args.http_host,
                 "server.tls_cert": str(args.tls_cert) if args.tls_cert else None,
                 "server.tls_key": str(args.tls_key) if args.tls_key else None,
                 "server.draft_on_server": True if args.draft_on_server else None}
    overrides.pop("engine.draft_on_stable", None)
    return overrides


def run(args: argparse.Namespace, config) -> int:
    from raddraft.site_server import run_server

    return run_server(config)
