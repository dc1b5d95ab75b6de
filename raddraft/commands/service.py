"""`raddraft service`: the DICOM node, headless, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path

from raddraft.commands.model_options import add_model_arguments, model_overrides

HELP = ("run the DICOM node (C-ECHO, C-STORE into the study store) and draft each complete study, "
        "until interrupted")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, help="store folder (default: the user data dir)")
    parser.add_argument("--port", type=int, help="port to listen on (0: any free port)")
    parser.add_argument("--ae-title", help="our AE title")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--allow-ae", action="append", metavar="AET",
                        help="accept only these calling AE titles (repeatable)")
    parser.add_argument("--stable-after", type=float, metavar="SECONDS",
                        help="quiet period after which a study is complete")
    parser.add_argument("--max-associations", type=int)
    add_model_arguments(parser)
    parser.add_argument("--no-draft", action="store_true", help="store studies only; do not draft them")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "store.root": str(args.store) if args.store else None,
        "node.port": args.port,
        "node.ae_title": args.ae_title,
        "node.host": args.host,
        "node.allowed_calling_aes": args.allow_ae,
        "node.stable_after_s": args.stable_after,
        "node.max_associations": args.max_associations,
        **model_overrides(args),
        "engine.draft_on_stable": False if args.no_draft else None,
    }


def run(args: argparse.Namespace, config) -> int:
    from raddraft.service import run_service

    return run_service(config)
