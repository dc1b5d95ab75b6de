"""`raddraft export`: a trained LLaVA checkpoint folder -> a RadDraft model bundle (ONNX + model.json + card)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = ("export a Hugging Face LLaVA checkpoint as a RadDraft model bundle (ONNX graphs, model.json, tokenizer, "
        "MODEL_CARD.md), checked against torch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="folder written by save_pretrained (config.json, weights, tokenizer.json)")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write (new, empty, or a bundle)")
    parser.add_argument("--quantize", action="extend", nargs="+", choices=["int8", "fp16", "int4"], default=[],
                        metavar="VARIANT",
                        help="also write these variants: int8, fp16 (GPU, fp16 I/O), int4 (weight-only, CPU and "
                             "small GPUs); repeatable, and several may follow one flag (--quantize int8 fp16)")
    parser.add_argument("--int4-block-size", type=int, default=32, choices=[16, 32, 64, 128, 256],
                        help="weights per int4 scale (default 32; recorded in model.json)")
    parser.add_argument("--name", help="model name in model.json (default: the checkpoint folder's name)")
    parser.add_argument("--version", dest="model_version", metavar="V", default="0.1.0",
                        help="model version (default 0.1.0)")
    parser.add_argument("--no-parity", dest="parity", action="store_false",
                        help="skip the torch vs ONNX Runtime comparison")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out that is not a bundle")
    parser.add_argument("--with-checkpoint", action="store_true",
                        help="carry the checkpoint in the bundle (checkpoint/) so it can be fine-tuned later")
    parser.add_argument("--prompts", type=Path, metavar="FILE.json",
                        help="prompt layout for checkpoints with a chat template: instructions, system, views, "
                             "view_words, indication (default: the checkpoint's raddraft_prompts.json, else one "
                             "frontal view; see docs/models.md)")
    parser.add_argument("--domain-data", type=Path, metavar="MANIFEST",
                        help="the training data's manifest.jsonl (raddraft synth / dataset): store a domain "
                             "signature of its train split, thresholds from its validation split, so drafts of "
                             "studies unlike it are flagged out of domain (without it: in_domain unknown)")
    parser.add_argument("--card-notes", type=Path, metavar="FILE.md",
                        help="markdown to put at the top of MODEL_CARD.md (e.g. a not-for-clinical-use notice)")


def run(args: argparse.Namespace, config) -> int:
    from tqdm import tqdm

    from training.export import ExportError, export_bundle
    from training.export.quantize import QuantizeOptions

    notes = None
    if args.card_notes is not None:
        try:
            notes = args.card_notes.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"raddraft export: cannot read {args.card_notes}: {getattr(exc, 'strerror', None) or exc}",
                  file=sys.stderr)
            return 2
    spec = None
    if args.prompts is not None:
        from training.export.layout import PromptSpec

        try:
            spec = PromptSpec.from_dict(json.loads(args.prompts.read_text(encoding="utf-8")), str(args.prompts))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            print(f"raddraft export: cannot read {args.prompts}: {getattr(exc, 'strerror', None) or exc}",
                  file=sys.stderr)
            return 2
        except ExportError as exc:
            print(f"raddraft export: {exc}", file=sys.stderr)
            return 2
    name = args.name or args.checkpoint.resolve().name
    bar = tqdm(total=1, desc="export", unit="step", file=sys.stderr, disable=None, leave=False)

    def progress(done: int, total: int, step: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_description(step)
        bar.refresh()

    try:
        report = export_bundle(args.checkpoint, args.out, name=name, version=args.model_version,
                               quantize=args.quantize, parity=args.parity, overwrite=args.overwrite,
                               card_notes=notes, progress=progress, include_checkpoint=args.with_checkpoint,
                               prompt_spec=spec,
                               quantize_options=QuantizeOptions(int4_block_size=args.int4_block_size))
    except ExportError as exc:
        bar.close()
        print(f"raddraft export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        bar.close()
        print(f"raddraft export: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    bar.close()
    print("\n".join(report.summary_lines()))
    if args.domain_data is not None:
        return _add_domain(report.bundle_dir, args.domain_data)
    return 0


def _add_domain(bundle_dir: Path, manifest: Path) -> int:
    from training.export import ExportError
    from training.export.domain import add_domain_signature, studies_of_manifest

    try:
        train, validation = studies_of_manifest(manifest)
        entry = add_domain_signature(bundle_dir, train, validation, source=str(manifest))
    except ExportError as exc:
        print(f"raddraft export: the bundle is written, but not its domain signature: {exc}", file=sys.stderr)
        return 2
    print(f"  domain signature: {entry['studies']['train']} training, {entry['studies']['validation']} "
          f"validation studies; thresholds {entry['thresholds']}")
    return 0
