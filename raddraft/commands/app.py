"""`raddraft app`: the desktop application (worklist, viewer, draft, sign, send)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from raddraft.commands.common_options import (
    add_model_arguments,
    add_node_arguments,
    model_overrides,
    node_overrides,
)

# Taken when the CLI loads its subcommands, moments after the process starts: the origin of the ready time.
STARTED_AT = time.perf_counter()

HELP = ("open the desktop app: it hosts the DICOM node and the drafting queue (or attaches to a running "
        "`raddraft service` on the same store), and shows images and drafts for reading and signing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_node_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument("--radiologist", help="the name reports are signed with")
    parser.add_argument("--server", metavar="URL",
                        help="read from a site server (`raddraft server`) instead of a local store: log in, then "
                             "worklist, images, drafts and signing over its API; no local node or model")
    parser.add_argument("--user", help="with --server: the user name to log in with (else asked)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="with --server: read the password from the first line of stdin instead of asking")
    parser.add_argument("--ca-file", type=Path, metavar="PEM",
                        help="with --server: the certificate (or private CA) to trust for the server's TLS")
    parser.add_argument("--screenshot", type=Path, metavar="PNG",
                        help="save a picture of the window once it has settled, then quit (for docs)")
    parser.add_argument("--exit-when-ready", action="store_true",
                        help="quit as soon as the window is ready (shown, worklist loaded), printing the time "
                             "from start to ready (start-up measurements; works offscreen)")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {**node_overrides(args), **model_overrides(args), "reading.radiologist": args.radiologist}


def qt_platform(environ) -> str:
    """The platform plugin Qt will pick: QT_QPA_PLATFORM's first choice, else Wayland in a Wayland
    session, else X11 (xcb)."""
    chosen = environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if chosen:
        return chosen
    wayland = environ.get("WAYLAND_DISPLAY") and environ.get("XDG_SESSION_TYPE") == "wayland"
    return "wayland" if wayland else "xcb"


def run(args: argparse.Namespace, config) -> int:
    import os
    import sys

    from desktop.platform_check import platform_problem

    problem = platform_problem(qt_platform(os.environ))  # before Qt, which aborts without them (exit 134)
    if problem:
        print(f"raddraft: {problem}", file=sys.stderr)
        return 1
    if getattr(args, "server", None):
        from raddraft.site_app import run_site_app

        return run_site_app(args, config)
    from desktop.app import application, run_app  # Qt is loaded only here
    from dicom_node.errors import StoreWriteError
    from raddraft.qt_signals import quit_on_signals
    from raddraft.workstation import Workstation

    # Before the workstation starts: a SIGTERM during start-up also ends in the clean stop, never in 143.
    restore_signals = quit_on_signals(application())
    overrides = {k: v for k, v in config_overrides(args).items() if v is not None}
    try:
        try:
            workstation = Workstation.start(config, config_path=getattr(args, "config", None), overrides=overrides)
        except StoreWriteError as error:
            print(f"raddraft: {error}", file=sys.stderr)
            return 1

        def print_ready_time() -> None:
            print(f"RadDraft window ready in {time.perf_counter() - STARTED_AT:.3f} s", flush=True)

        return run_app(workstation, screenshot=args.screenshot,
                       on_ready=print_ready_time if args.exit_when_ready else None,
                       exit_when_ready=args.exit_when_ready)
    finally:
        restore_signals()
