"""`raddraft service`: the DICOM node and the drafting queue, headless, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse

from raddraft.commands.common_options import (
    add_model_arguments,
    add_node_arguments,
    model_overrides,
    node_overrides,
)

HELP = ("run the DICOM node (C-ECHO, C-STORE into the study store) and draft each complete study, "
        "until interrupted")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_node_arguments(parser)
    parser.add_argument("--allow-ae", action="append", metavar="AET",
                        help="accept only these calling AE titles (repeatable)")
    parser.add_argument("--max-associations", type=int)
    add_model_arguments(parser)


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        **node_overrides(args),
        "node.allowed_calling_aes": args.allow_ae,
        "node.max_associations": args.max_associations,
        **model_overrides(args),
    }


def run(args: argparse.Namespace, config) -> int:
    from raddraft.service import run_service

    return run_service(config)
