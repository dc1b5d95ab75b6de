"""Engine latency: the same LLaVA model and the same study, drafted by transformers `generate` in torch
(fp32, eager) and by the RadDraft engine on ONNX Runtime (fp32, int8, and CUDA when present).

    python bench/engine_latency.py [--size bench-181m|tiny] [--new-tokens 64] [--runs 3] [--threads 2]

The model is a random-weight LLaVA of the named size (default: CLIP 384x6 at 224 px, 196 image
tokens; LLaMA 1024x12, vocabulary 32k), so the prompt is about 200 tokens. It is built and exported
once into a cache folder. Each engine runs in its own process (so peak RSS is its own), alternating
in every round; each measures one warm-up then `--runs` drafts of the findings prompt with
`--new-tokens` tokens (end of sequence suppressed). Medians are shown; ratios are against torch.
Token agreement: share of positions where the engine's greedy tokens equal torch's, up to the
first difference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENGINES = ("torch", "ort-fp32", "ort-int8", "ort-cuda")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="bench-181m", choices=["bench-181m", "tiny"])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3, help="timed drafts per engine and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; engines alternate within each")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench-cache")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--study", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)))
        return 0
    return run_benchmark(args)


# -- preparation (once) ------------------------------------------------------------------------------
def prepare(size_name: str, cache: Path) -> tuple[Path, Path, Path]:
    """Checkpoint, bundle (fp32 + int8) and a phantom study, built once per size."""
    from training.data.phantoms import PhantomConfig, generate_dataset
    from training.export import export_bundle
    from training.modeling.llava import BENCH_181M, TINY, build_llava
    from training.modeling.tokenizer import as_transformers, train_tokenizer

    size = {"bench-181m": BENCH_181M, "tiny": TINY}[size_name]
    folder = cache / size_name
    checkpoint, bundle, data = folder / "checkpoint", folder / "bundle", folder / "study"
    if not (data / "manifest.jsonl").exists():
        generate_dataset(data, 1, seed=7, config=PhantomConfig(image_size=256, lateral_fraction=0.0, workers=1))
    if not (checkpoint / "config.json").exists():
        print(f"building a random {size_name} LLaVA ...", file=sys.stderr)
        reports = [json.loads(line)["report"]["findings"] for line in
                   (data / "manifest.jsonl").read_text().splitlines()]
        tokenizer = as_transformers(train_tokenizer(reports * 50, vocab_size=600, min_frequency=1))
        model = build_llava(size, tokenizer, seed=0)
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
    if not (bundle / "model.json").exists():
        print("exporting fp32 + int8 (once) ...", file=sys.stderr)
        started = time.perf_counter()
        export_bundle(checkpoint, bundle, name=f"bench-{size_name}", version="0", quantize=("int8",),
                      parity=False)
        print(f"  exported in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    study = data / "studies" / "000000"
    return checkpoint, bundle, study


# -- workers (one process per engine and round) -------------------------------------------------------
def run_worker(args: argparse.Namespace) -> dict:
    if args.worker == "torch":
        timings, tokens = torch_worker(args)
    else:
        timings, tokens = ort_worker(args)
    return {"engine": args.worker, "runs": timings, "tokens": tokens, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries that across exec from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _study_input(bundle: Path, study: Path, engine_name: str):
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    providers = ("cuda", "cpu") if engine_name == "ort-cuda" else ("cpu",)
    variant = {"ort-fp32": "fp32", "ort-int8": "int8", "ort-cuda": "fp32", "torch": "fp32"}[engine_name]
    threads = int(os.environ.get("BENCH_THREADS", "2"))
    model = load_model(bundle, EngineSettings(providers=providers, variant=variant, intra_op_threads=threads))
    return model, model.prepare(sorted(study.glob("*.dcm")))


def ort_worker(args: argparse.Namespace) -> tuple[list[dict], list[int]]:
    model, study = _study_input(args.bundle, args.study, args.worker)
    options = model.default_options(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    runs, tokens = [], []
    for index in range(args.runs + 1):
        started = time.perf_counter()
        features = model.image_features(study)
        vision_s = time.perf_counter() - started
        result = model.generate("findings", features, options)
        total = time.perf_counter() - started
        tokens = list(result.token_ids)
        if index:  # the first is a warm-up
            runs.append({"prefill_s": vision_s + result.prefill_s, "ms_per_token": result.ms_per_token,
                         "total_s": total, "provider": model.provider})
    return runs, tokens


def torch_worker(args: argparse.Namespace) -> tuple[list[dict], list[int]]:
    # Same prompt and pixels as the engine, built without importing onnxruntime: with onnxruntime loaded
    # in the same process, torch's decode here ran 20-40x slower.
    from tokenizers import Tokenizer

    from engine.bundle import read_manifest
    from engine.preprocess import load_study, prepare_study
    from engine.prompts import prompt_ids, prompt_text

    manifest = read_manifest(args.bundle)
    prepared = prepare_study(load_study(sorted(args.study.glob("*.dcm"))), manifest.preprocessing)
    arch = manifest.architecture
    tokenizer = Tokenizer.from_file(str(args.bundle / manifest.tokenizer))
    ids = prompt_ids(tokenizer, prompt_text(manifest.prompts, "findings"), arch.image_token_id, arch.image_tokens,
                     prepared.pixel_values.shape[0])

    import torch
    from transformers import LlavaForConditionalGeneration

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    # Random weights drive activations into denormal floats, which cost torch 5-7x here; ONNX Runtime
    # runs with denormals as zero (engine/graphs.py), so torch gets the same.
    torch.set_flush_denormal(True)
    model = LlavaForConditionalGeneration.from_pretrained(args.checkpoint, attn_implementation="eager").eval()
    input_ids = torch.tensor([ids])
    pixel_values = torch.from_numpy(prepared.pixel_values)

    def run(new_tokens: int) -> tuple[float, list[int]]:
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, pixel_values=pixel_values,
                                 attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        return time.perf_counter() - started, out[0, input_ids.shape[1]:].tolist()

    runs, tokens = [], []
    for index in range(args.runs + 1):
        prefill_s, _ = run(1)
        total, tokens = run(args.new_tokens)
        if index:
            runs.append({"prefill_s": prefill_s, "ms_per_token": 1000 * (total - prefill_s) / (args.new_tokens - 1),
                         "total_s": total, "provider": "torch cpu"})
    return runs, tokens


# -- orchestration -----------------------------------------------------------------------------------
def available_engines() -> list[str]:
    import onnxruntime as ort

    engines = ["torch", "ort-fp32", "ort-int8"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        engines.append("ort-cuda")
    return engines


def run_benchmark(args: argparse.Namespace) -> int:
    checkpoint, bundle, study = prepare(args.size, args.cache)
    results: dict[str, list[dict]] = {}
    for round_index in range(args.rounds):
        for engine_name in available_engines():
            print(f"round {round_index + 1}/{args.rounds}: {engine_name} ...", file=sys.stderr)
            cmd = [sys.executable, __file__, "--worker", engine_name, "--bundle", str(bundle),
                   "--checkpoint", str(checkpoint), "--study", str(study), "--runs", str(args.runs),
                   "--new-tokens", str(args.new_tokens)]
            env = dict(os.environ, BENCH_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            results.setdefault(engine_name, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    print_table(results, args)
    return 0


def agreement(reference: list[int], tokens: list[int]) -> float:
    same = 0
    for a, b in zip(reference, tokens, strict=False):
        if a != b:
            break
        same += 1
    return same / max(len(reference), 1)


def print_table(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    def median(engine_name: str, key: str) -> float:
        return statistics.median(run[key] for worker in results[engine_name] for run in worker["runs"])

    reference = results["torch"][0]["tokens"]
    base = {key: median("torch", key) for key in ("prefill_s", "ms_per_token", "total_s")}
    print(f"\nEngine latency: {args.size}, findings prompt, {args.new_tokens} new tokens, {args.threads} threads, "
          f"medians of {args.rounds}x{args.runs} runs\n")
    print("| engine | prefill ms | ms/token | full draft s | speed-up (draft) | decode speed-up | peak RSS MB "
          "| token agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for engine_name, workers in results.items():
        prefill, per_token, total = (median(engine_name, k) for k in ("prefill_s", "ms_per_token", "total_s"))
        rss = statistics.median(w["peak_rss_mb"] for w in workers)
        provider = workers[0]["runs"][0]["provider"]
        print(f"| {engine_name} ({provider}) | {1000 * prefill:.0f} | {per_token:.1f} | {total:.2f} "
              f"| {base['total_s'] / total:.2f}x | {base['ms_per_token'] / per_token:.2f}x | {rss:.0f} "
              f"| {agreement(reference, workers[0]['tokens']):.2f} |")


if __name__ == "__main__":
    sys.exit(main())
