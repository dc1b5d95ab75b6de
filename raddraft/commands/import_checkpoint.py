"""`raddraft import`: an original-layout LLaVA release (llava_llama / llava_mistral, or LoRA + projector over
a base language model) -> a Hugging Face LLaVA folder that `raddraft export` takes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "import"
HELP = ("convert an original LLaVA release (llava_llama, llava_mistral, or a LoRA adapter + projector with "
        "--base) into a Hugging Face LLaVA checkpoint for raddraft export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", type=Path, required=True, metavar="DIR",
                        help="the release folder (config.json with mm_* keys, weights or adapter, tokenizer)")
    parser.add_argument("--out", type=Path, required=True, metavar="HF_DIR", help="new folder to write")
    parser.add_argument("--base", type=Path, metavar="DIR",
                        help="the base language model a LoRA release was trained on (HF folder)")
    parser.add_argument("--vision", type=Path, metavar="DIR",
                        help="the HF vision tower folder (CLIP, SigLIP or Dinov2); default: mm_vision_tower "
                             "when it is a local folder")


def run(args: argparse.Namespace, config) -> int:
    from training.export.errors import ExportError
    from training.modeling.convert import import_checkpoint

    try:
        report = import_checkpoint(args.source, args.out, base=args.base, vision=args.vision)
    except ExportError as exc:
        print(f"raddraft import: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"raddraft import: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
