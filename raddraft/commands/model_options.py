"""The model options shared by the commands that draft (`draft`, `service`, `app`)."""

from __future__ import annotations

import argparse
from pathlib import Path

PROVIDERS = ["tensorrt", "cuda", "directml", "coreml", "cpu"]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="model bundle folder (default: the embedded model)")
    parser.add_argument("--provider", action="append", choices=PROVIDERS,
                        help="execution provider to prefer (repeatable, in order; CPU is always the fallback)")
    parser.add_argument("--variant", choices=["auto", "fp32", "fp16", "int8", "int4"],
                        help="graph precision (auto: int8 on CPU, fp16 on GPU when the bundle has them)")


def model_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "engine.model": str(args.model) if args.model else None,
        "engine.providers": args.provider,
        "engine.variant": args.variant,
    }
