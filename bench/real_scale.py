"""Real-size LLaVA shapes (random weights): export time and peak memory, bundle sizes, and drafting per variant.

    python -m bench.real_scale --shape cpu-tier-2layer --variants int4
    python -m bench.real_scale --shape llava-7b --variants int4 --no-parity     # needs ~20 GB of RAM
    python -m bench.real_scale --shape llava-7b --work W --draft-only             # re-measure drafting only

Each step runs in its own process so its peak resident memory (the child's VmHWM) is its own: building
the random checkpoint (saved in fp16, as the Hub ships 7 B models), `export_bundle`, and per variant
loading the bundle and drafting one phantom study (Findings + Impression, greedy, a fixed number of new
tokens, one shared prefill). One table, one row per shape and variant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> (vision, text) sizes. "2layer"/"1layer" keep every width and cut the depth.
CLIP_L_336 = {"kind": "clip", "image_size": 336, "patch_size": 14, "hidden_size": 1024, "num_layers": 24,
              "num_heads": 16, "intermediate_size": 4096}
SIGLIP_SO400M_384 = {"kind": "siglip", "image_size": 384, "patch_size": 14, "hidden_size": 1152, "num_layers": 27,
                     "num_heads": 16, "intermediate_size": 4304}
LLAMA_7B = {"kind": "llama", "hidden_size": 4096, "num_layers": 32, "num_heads": 32, "num_kv_heads": 32,
            "intermediate_size": 11008, "vocab_size": 32064, "max_positions": 4096}
QWEN2_1_5B = {"kind": "qwen2", "hidden_size": 1536, "num_layers": 28, "num_heads": 12, "num_kv_heads": 2,
              "intermediate_size": 8960, "vocab_size": 151936, "max_positions": 4096}


def _cut(size: dict, layers: int) -> dict:
    return {**size, "num_layers": layers}


SHAPES = {
    "llava-7b": (CLIP_L_336, LLAMA_7B),
    "llava-7b-2layer": (_cut(CLIP_L_336, 2), _cut(LLAMA_7B, 2)),
    "llava-7b-1layer": (_cut(CLIP_L_336, 1), _cut(LLAMA_7B, 1)),
    # the shape of tests/training/test_export_memory.py: CLIP-L and Llama widths cut to 1024, vocabulary kept
    "medium": ({**CLIP_L_336, "image_size": 224, "num_layers": 2},
               {**LLAMA_7B, "hidden_size": 1024, "num_layers": 2, "num_heads": 16, "num_kv_heads": 16,
                "intermediate_size": 2816, "max_positions": 2048}),
    "cpu-tier": (SIGLIP_SO400M_384, QWEN2_1_5B),
    "cpu-tier-2layer": (_cut(SIGLIP_SO400M_384, 2), _cut(QWEN2_1_5B, 2)),
}
# Findings ~150 + Impression ~40 new tokens: each section gets half, stop tokens suppressed (random weights).
NEW_TOKENS_PER_SECTION = 95


def llava_config(vision: dict, text: dict, tokenizer):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, Qwen2Config, SiglipVisionConfig

    vision_args = {"image_size": vision["image_size"], "patch_size": vision["patch_size"],
                   "hidden_size": vision["hidden_size"], "num_hidden_layers": vision["num_layers"],
                   "num_attention_heads": vision["num_heads"], "intermediate_size": vision["intermediate_size"]}
    if vision["kind"] == "clip":
        vision_config, strategy = CLIPVisionConfig(projection_dim=vision["hidden_size"], **vision_args), "default"
    else:
        vision_config, strategy = SiglipVisionConfig(**vision_args), "full"
    text_args = {"vocab_size": text["vocab_size"], "hidden_size": text["hidden_size"],
                 "num_hidden_layers": text["num_layers"], "num_attention_heads": text["num_heads"],
                 "num_key_value_heads": text["num_kv_heads"], "intermediate_size": text["intermediate_size"],
                 "max_position_embeddings": text["max_positions"], "eos_token_id": tokenizer.eos_token_id,
                 "pad_token_id": tokenizer.pad_token_id}
    if text["kind"] == "qwen2":
        text_config = Qwen2Config(bos_token_id=None, tie_word_embeddings=True, **text_args)
    else:
        text_config = LlamaConfig(bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False, **text_args)
    return LlavaConfig(vision_config=vision_config, text_config=text_config,
                       image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                       vision_feature_select_strategy=strategy, vision_feature_layer=-1,
                       pad_token_id=tokenizer.pad_token_id)


def build_checkpoint(shape: str, out_dir: Path) -> dict:
    """A random checkpoint of `shape` saved in fp16 (initialised in fp16: never an fp32 copy)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from training.modeling.tokenizer import as_transformers, train_tokenizer

    vision, text = SHAPES[shape]
    texts = ["Findings: The lungs are clear. No pleural effusion or pneumothorax. Impression: Normal chest.",
             "Findings: Right lower lobe consolidation. Small left effusion. Impression: Pneumonia."] * 20
    tokenizer = as_transformers(train_tokenizer(texts, vocab_size=512, min_frequency=1))
    config = llava_config(vision, text, tokenizer)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float16)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(out_dir, max_shard_size="2GB")
    tokenizer.save_pretrained(out_dir)
    parameters = sum(p.numel() for p in model.parameters())
    built = {"parameters": parameters, "checkpoint_bytes": sum(p.stat().st_size for p in out_dir.glob("*.safetensors"))}
    (out_dir / "built.json").write_text(json.dumps(built))
    return built


def export(checkpoint: Path, bundle: Path, variants: list[str], parity: bool, decoder: str) -> dict:
    from training.export import export_bundle

    started = time.perf_counter()
    report = export_bundle(checkpoint, bundle, name="real-scale", version="0.0.1", quantize=variants,
                           parity=parity, decoder_method=decoder)
    return {"export_s": time.perf_counter() - started,
            "sizes": {variant: report.variant_size(variant) for variant in report.manifest.variants},
            "parity": {name: result.summary() for name, result in report.parity.items()},
            "agreement": {name: f"{r.greedy_agreement:.0%}, {r.top1_agreement:.0%}" for name, r in report.parity.items()},
            "decoder": report.manifest.provenance["export"]["decoder_graph"],
            "failed": report.failed_variants, "peak_rss_after": report.peak_rss}


def recorded_export(bundle: Path) -> tuple[dict, int]:
    """An earlier export's figures as its bundle recorded them (export.json, model.json), in `export`'s
    form, with the variant sizes of the files there now."""
    from bench.engine_memory import bundle_bytes

    record = json.loads((bundle / "export.json").read_text())
    manifest = json.loads((bundle / "model.json").read_text())
    exported = {"export_s": record["seconds"],
                "sizes": {variant: bundle_bytes(bundle, variant) for variant in manifest["variants"]},
                "parity": {}, "agreement": {name: f"{r['greedy_agreement']:.0%}, {r['top1_agreement']:.0%}"
                                            for name, r in record.get("parity", {}).items()},
                "decoder": manifest["provenance"]["export"]["decoder_graph"],
                "failed": record.get("failed_variants", {}), "peak_rss_after": record["peak_rss_bytes_after"]}
    return exported, max(record["peak_rss_bytes_after"].values())


def draft(bundle: Path, variant: str, study_dir: Path) -> dict:
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    model = load_model(bundle, EngineSettings(providers=("cpu",), variant=variant))
    paths = sorted(study_dir.rglob("*.dcm"))
    options = model.default_options(max_new_tokens=NEW_TOKENS_PER_SECTION, min_new_tokens=NEW_TOKENS_PER_SECTION)
    started = time.perf_counter()
    result = model.draft(paths, options=options)
    total = time.perf_counter() - started
    timings = result.timings
    return {"load_s": model.load_seconds, "resident_bytes": model.resident_bytes, "draft_s": total,
            "shared_prefill_s": timings["shared_prefill_s"], "prompt_tokens": timings["findings"]["prompt_tokens"],
            "prefill_s": timings["shared_prefill_s"] + timings["findings"]["prefill_s"],
            "ms_per_token": timings["findings"]["ms_per_token"],
            "new_tokens": timings["findings"]["new_tokens"] + timings["impression"]["new_tokens"]}


def run_child(step: str, *args: str) -> tuple[dict, int]:
    """Run `step` in a fresh interpreter: (its JSON result, its peak resident bytes)."""
    command = [sys.executable, "-m", "bench.real_scale", "--child", step, *args]
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        code = subprocess.run([*command, out.name], check=False).returncode
        if code != 0:
            raise SystemExit(f"{step} failed (exit {code})")
        result = json.loads(Path(out.name).read_text() or "{}")
        return result, int(result.pop("peak_resident_bytes", 0))


def child(step: str, args: list[str]) -> None:
    *inputs, out = args
    if step == "build":
        result = build_checkpoint(inputs[0], Path(inputs[1]))
    elif step == "export":
        result = export(Path(inputs[0]), Path(inputs[1]), [v for v in inputs[2].split(",") if v], inputs[3] == "1",
                        inputs[4])
    elif step == "study":
        from training.data.phantoms import PhantomConfig, generate_dataset

        generate_dataset(Path(inputs[0]), 1, seed=7, config=PhantomConfig(image_size=512, lateral_fraction=0.0,
                                                                          workers=1))
        result = {}
    else:
        result = draft(Path(inputs[0]), inputs[1], Path(inputs[2]))
    from training.export.bundle import peak_resident_bytes

    Path(out).write_text(json.dumps({**result, "peak_resident_bytes": peak_resident_bytes()}))


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), required=True)
    parser.add_argument("--variants", default="int4", help="comma-separated variants to export and draft with")
    parser.add_argument("--no-parity", dest="parity", action="store_false",
                        help="skip the torch comparison (the fp32 torch reference of a 7 B model is slow)")
    parser.add_argument("--decoder", choices=("auto", "direct", "trace"), default="auto",
                        help="how the decoder graph is made: written from the weights, or traced")
    parser.add_argument("--work", type=Path, help="folder for checkpoints and bundles (default: a temp folder)")
    parser.add_argument("--draft-only", action="store_true",
                        help="draft with the bundles already in --work; export figures are those they recorded")
    args = parser.parse_args()
    if args.draft_only and not args.work:
        parser.error("--draft-only needs --work, the folder of an earlier run")
    variants = [v for v in args.variants.split(",") if v]
    work = args.work or Path(tempfile.mkdtemp(prefix="real-scale-"))
    if not (work / "study").exists():  # one phantom study, the same for every row
        run_child("study", str(work / "study"))
    rows = []
    for shape in args.shape:
        checkpoint, bundle = work / f"{shape}-checkpoint", work / f"{shape}-bundle"
        if not (checkpoint / "config.json").exists():  # a --work folder keeps the checkpoints it built
            run_child("build", shape, str(checkpoint))
        built = json.loads((checkpoint / "built.json").read_text())
        if args.draft_only:
            exported, export_peak = recorded_export(bundle)
        else:
            exported, export_peak = run_child("export", str(checkpoint), str(bundle), ",".join(variants),
                                              "1" if args.parity else "0", args.decoder)
        bound = 1.5 * built["checkpoint_bytes"] + 2 ** 30
        print(f"{shape}: {built['parameters'] / 1e9:.2f} B parameters, checkpoint {gb(built['checkpoint_bytes'])}; "
              f"export {exported['export_s']:.0f} s, peak RSS {gb(export_peak)} (bound {gb(bound)})", flush=True)
        for line in exported["parity"].values():
            print(f"  {line}")
        print("  peak RSS at the end of each step: " + ", ".join(
            f"{step} {gb(peak)}" for step, peak in exported["peak_rss_after"].items()))
        for variant in variants:
            if variant not in exported["sizes"]:
                print(f"  {variant}: not written ({exported['failed'].get(variant)})")
                continue
            drafted, draft_peak = run_child("draft", str(bundle), variant, str(work / "study"))
            rows.append((shape, variant, built, exported, export_peak, drafted, draft_peak))
    print()
    print("| shape | params | decoder | variant | agreement (greedy, top-1) | export s | export peak RSS | bound | "
          "bundle | load s | resident | prompt tokens | prefill s | ms/token | full draft s (tokens) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape, variant, built, exported, export_peak, drafted, draft_peak in rows:
        bound = 1.5 * built["checkpoint_bytes"] + 2 ** 30
        agreement = exported["agreement"].get(variant, "not checked")
        print(f"| {shape} | {built['parameters'] / 1e9:.2f} B | {exported['decoder']} | {variant} | {agreement} | "
              f"{exported['export_s']:.0f} | "
              f"{gb(export_peak)} | {gb(bound)} | {gb(exported['sizes'][variant])} | {drafted['load_s']:.1f} | "
              f"{gb(draft_peak)} | {drafted['prompt_tokens']} | {drafted['prefill_s']:.2f} | "
              f"{drafted['ms_per_token']:.0f} | {drafted['draft_s']:.1f} ({drafted['new_tokens']}) |")


if __name__ == "__main__":
    main()
