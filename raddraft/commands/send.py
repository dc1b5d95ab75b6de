"""`raddraft send`: C-STORE files and folders to a DICOM peer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "send DICOM files and folders (recursively) to a peer over one association"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    parser.add_argument("--ae-title", default="RADDRAFT", help="our (calling) AE title")
    parser.add_argument("--called-ae", default="ANY-SCP", help="the peer's AE title")
    parser.add_argument("--timeout", type=float, default=60.0, help="network/DIMSE timeout in seconds")


def run(args: argparse.Namespace, config) -> int:
    from tqdm import tqdm

    from dicom_node.sender import SendError, send_files

    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"raddraft send: no such file or folder: {missing[0]}", file=sys.stderr)
        return 2
    with tqdm(desc="sending", unit="file", file=sys.stderr, disable=None) as bar:
        try:
            summary = send_files(args.host, args.port, args.paths, calling_ae=args.ae_title,
                                 called_ae=args.called_ae, timeout_s=args.timeout, progress=lambda _o: bar.update())
        except SendError as exc:
            print(f"raddraft send: {exc}", file=sys.stderr)
            return 2
    failed = summary.failed
    print(f"{summary.succeeded} sent, {len(failed)} failed")
    for outcome in failed:
        status = "not sent" if outcome.status is None else f"status 0x{outcome.status:04X}"
        print(f"  FAILED {outcome.path}: {status} {outcome.comment}".rstrip())
    return 1 if failed else 0
