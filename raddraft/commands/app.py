"""`raddraft app`: the desktop application (worklist, viewer, draft, sign, send)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("open the desktop app: it hosts the DICOM node and the drafting queue (or attaches to a running "
        "`raddraft service` on the same store), and shows images and drafts for reading and signing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, help="store folder (default: the user data dir)")
    parser.add_argument("--port", type=int, help="port the node listens on (0: any free port)")
    parser.add_argument("--ae-title", help="our AE title")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--stable-after", type=float, metavar="SECONDS",
                        help="quiet period after which a study is complete")
    parser.add_argument("--model", type=Path, help="model bundle (default: the embedded model)")
    parser.add_argument("--provider", action="append", choices=["tensorrt", "cuda", "directml", "coreml", "cpu"],
                        help="execution provider to prefer (repeatable; CPU is always the fallback)")
    parser.add_argument("--no-draft", action="store_true", help="do not draft studies as they become complete")
    parser.add_argument("--radiologist", help="the name reports are signed with")
    parser.add_argument("--screenshot", type=Path, metavar="PNG",
                        help="save a picture of the window once it has settled, then quit (for docs)")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "store.root": str(args.store) if args.store else None,
        "node.port": args.port,
        "node.ae_title": args.ae_title,
        "node.host": args.host,
        "node.stable_after_s": args.stable_after,
        "engine.model": str(args.model) if args.model else None,
        "engine.providers": args.provider,
        "engine.draft_on_stable": False if args.no_draft else None,
        "reading.radiologist": args.radiologist,
    }


def run(args: argparse.Namespace, config) -> int:
    import sys

    from dicom_node.errors import StoreWriteError
    from raddraft.workstation import Workstation

    overrides = {k: v for k, v in config_overrides(args).items() if v is not None}
    try:
        workstation = Workstation.start(config, config_path=getattr(args, "config", None), overrides=overrides)
    except StoreWriteError as error:
        print(f"raddraft: {error}", file=sys.stderr)
        return 1
    from desktop.app import run_app  # Qt is loaded only here

    return run_app(workstation, screenshot=args.screenshot)
