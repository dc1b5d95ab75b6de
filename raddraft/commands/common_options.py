"""Options shared by the commands that run the node (`service`, `app`) and those that draft (`draft` too)."""

from __future__ import annotations

import argparse
from pathlib import Path

PROVIDERS = ["tensorrt", "cuda", "directml", "coreml", "cpu"]


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, help="store folder (default: the user data dir)")
    parser.add_argument("--port", type=int, help="port to listen on (0: any free port)")
    parser.add_argument("--ae-title", help="our AE title")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--stable-after", type=float, metavar="SECONDS",
                        help="quiet period after which a study is complete")
    parser.add_argument("--no-draft", action="store_true", help="store studies only; do not draft them")


def node_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "store.root": str(args.store) if args.store else None,
        "node.port": args.port,
        "node.ae_title": args.ae_title,
        "node.host": args.host,
        "node.stable_after_s": args.stable_after,
        "engine.draft_on_stable": False if args.no_draft else None,
    }


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path,
                        help="model bundle folder to pin (default: the current model of the model registry, "
                             "`raddraft model use`, else the embedded model)")
    add_registry_arguments(parser)
    parser.add_argument("--provider", action="append", choices=PROVIDERS,
                        help="execution provider to prefer (repeatable, in order; CPU is always the fallback)")
    parser.add_argument("--variant", choices=["auto", "fp32", "fp16", "int8", "int4"],
                        help="graph precision (auto: fp16 on a GPU, else int4; on CPU int4 above ~1 B parameters, "
                             "else int8; when the bundle has them)")


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, help="the model registry's folder (default: STORE/models)")


def registry_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {"engine.models_dir": str(args.models_dir) if args.models_dir else None}


def model_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        **registry_overrides(args),
        "engine.model": str(args.model) if args.model else None,
        "engine.providers": args.provider,
        "engine.variant": args.variant,
    }
