"""Training throughput: samples/s and peak memory of stage 1 (projector), stage 2 (LoRA + projector) and full
fine-tuning (projector + language model) of the same model, side by side; medians of several runs.

    python bench/train_throughput.py [--size phantom-cxr] [--runs 3] [--steps 6] [--batch 16] [--threads 0]
    python bench/train_throughput.py --real-width [--layers 1] [--steps 3] [--dtypes fp32,bf16]

Each mode runs in a fresh process (so its peak memory is its own) through the real training loop
(`training.train.trainer`) on real phantom studies: a warm-up of 2 optimizer steps, then `--runs` timed
runs of `--steps` steps. CPU rows always; a CUDA row per mode when torch sees a GPU. The CPU of a shared
machine makes numbers noisy: compare rows of one table, not tables of different days.

`--real-width`: stage 2 (LoRA r=16 + projector) of a LLaVA-1.5-wide model cut to `--layers` layers
(CLIP-L/14 1024 wide, Llama 4096 wide, 32 heads, 11008 MLP, vocabulary 32064; `training.train.real_width`),
with and without gradient checkpointing, per base dtype: samples/s, measured peak RSS of the steps and the
memory plan's estimate beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES = {"stage 1 (projector)": ("projector",), "stage 2 (LoRA r=32 + projector)": ("projector", "lora"),
         "full fine-tuning (projector + LM)": ("projector", "language")}
WARMUP_STEPS = 2


def recipe_overrides(args: argparse.Namespace, data: Path) -> dict:
    return {"model.size": args.size, "model.vision": {}, "model.tokenizer_vocab": 1024,
            "data.sources": [{"name": "bench", "phantoms": {"studies": 96, "seed": 5, "image_size": 128,
                                                            "lateral_fraction": 0.0, "workers": 1}}],
            "data.validation_limit": 1, "data.data_dir": str(data / "data"),
            "data.cache_dir": str(data / "cache"), "lora.rank": 32, "lora.alpha": 64, "lora.dropout": 0.05,
            "compute.threads": args.threads}


def measure(args: argparse.Namespace, mode: str, device: str) -> dict:
    """Run in a child process: warm up, then time `runs` x `steps` optimizer steps of `mode`."""
    import torch

    from training.train.config import ComputeConfig, Optimisation
    from training.train.stages import count_parameters, prepare_stage
    from training.train.tasks import report_task
    from training.train.tiny_run import fresh_llava, tiny_context, tiny_recipe
    from training.train.trainer import make_accelerator, run_stage

    data = Path(args.data)
    ctx = tiny_context(tiny_recipe(data / "run", recipe_overrides(args, data)))
    model, trainable = prepare_stage(fresh_llava(ctx), MODES[mode], ctx.config.lora)
    accelerator = make_accelerator(ComputeConfig(device=device, threads=args.threads))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    task = report_task(ctx, "finetune", model)
    task.validate = None
    task.optimisation = Optimisation(lr=1e-4, batch_size=args.batch, epochs=50, warmup=0.0)
    task.stage_dir = data / "stages" / f"{device}-{os.getpid()}"
    started = time.perf_counter()
    result = run_stage(task, accelerator, progress=False, stop_after=WARMUP_STEPS + args.runs * args.steps,
                       resume=False)
    elapsed = time.perf_counter() - started
    steps = [r for r in result.history if r["kind"] == "train"][WARMUP_STEPS:]
    runs = [steps[i * args.steps:(i + 1) * args.steps] for i in range(args.runs)]
    result = {"mode": mode, "device": device, "trainable": count_parameters(trainable),
              "total": count_parameters(model.parameters()),
              "samples_per_s": [sum(r["samples"] for r in run) / sum(r["seconds"] for r in run) for run in runs],
              "rss_model_mb": rss_before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "seconds": elapsed}
    if device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def child(args: argparse.Namespace, mode: str, device: str) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--device", device, "--data", args.data,
               "--size", args.size, "--runs", str(args.runs), "--steps", str(args.steps),
               "--batch", str(args.batch), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} on {device} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict], args: argparse.Namespace) -> str:
    title = (f"training throughput, {args.size}, batch {args.batch}, medians of {args.runs} runs x {args.steps} "
             f"steps (after {WARMUP_STEPS} warm-up steps), threads {args.threads or 'default'}")
    header = (f"{'mode':<36}{'device':>7}{'trainable':>12}{'samples/s':>11}{'min-max':>14}{'peak RSS MB':>13}"
              f"{'model RSS MB':>14}{'peak GPU MB':>13}")
    lines = [title, "", header]
    for r in results:
        rates = r["samples_per_s"]
        gpu = f"{r['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in r else "—"
        lines.append(f"{r['mode']:<36}{r['device']:>7}{r['trainable'] / 1e6:>10.2f} M{statistics.median(rates):>11.1f}"
                     f"{f'{min(rates):.1f}-{max(rates):.1f}':>14}{r['peak_rss_mb']:>13.0f}{r['rss_model_mb']:>14.0f}"
                     f"{gpu:>13}")
    return "\n".join(lines)


def real_width_rows(args: argparse.Namespace) -> str:
    rows = []
    for dtype in args.dtypes.split(","):
        for checkpointing in (False, True):
            command = [sys.executable, "-m", "training.train.real_width", "--text-layers", str(args.layers),
                       "--vision-layers", str(args.layers), "--image-size", str(args.image_size), "--report-tokens",
                       str(args.report_tokens), "--batch", str(args.batch), "--base-dtype", dtype,
                       "--steps", str(args.steps), "--threads", str(args.threads or os.cpu_count())]
            command += ["--checkpointing"] if checkpointing else []
            done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False,
                                  cwd=Path(__file__).resolve().parent.parent)
            if done.returncode != 0:
                raise RuntimeError(f"real width {dtype} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    tokens = rows[0]["shape"]
    sequence = 1 + (tokens["image_size"] // 14) ** 2 + tokens["prompt_tokens"] + tokens["report_tokens"]
    title = (f"stage 2 at LLaVA-1.5 width, {args.layers} layer(s), batch {args.batch}, {sequence} tokens per "
             f"sample, CPU, {args.steps} steps (first step included)")
    header = (f"{'base':<6}{'checkpointing':>15}{'samples/s':>11}{'s/step (last)':>15}{'peak RSS MB':>13}"
              f"{'plan MB':>9}{'plan/measured':>15}")
    lines = [title, "", header]
    for r in rows:
        lines.append(f"{r['base_dtype'].replace('float32', 'fp32').replace('bfloat16', 'bf16'):<6}"
                     f"{'yes' if r['checkpointing'] else 'no':>15}{r['samples_per_s']:>11.3f}"
                     f"{r['step_seconds'][-1]:>15.1f}{r['peak_rss'] / 2**20:>13.0f}{r['plan_peak'] / 2**20:>9.0f}"
                     f"{r['plan_peak'] / r['peak_rss']:>15.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="phantom-cxr", help="named model size (tiny, phantom-cxr)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data", help="folder for the bench's phantoms and caches (default: a temp folder)")
    parser.add_argument("--real-width", action="store_true", help="LLaVA-1.5-wide stage 2 rows instead")
    parser.add_argument("--layers", type=int, default=1, help="--real-width: decoder and tower layers")
    parser.add_argument("--image-size", type=int, default=28, help="--real-width: pixels (14 per token side)")
    parser.add_argument("--report-tokens", type=int, default=12, help="--real-width: report tokens per sample")
    parser.add_argument("--dtypes", default="fp32", help="--real-width: base dtypes, e.g. fp32,bf16")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args, args.child, args.device)))
        return
    if args.real_width:
        args.batch = 1 if args.batch == 16 else args.batch
        print(real_width_rows(args))
        return
    import torch

    with tempfile.TemporaryDirectory(prefix="raddraft-train-bench-") as temp:
        args.data = args.data or temp
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        results = [child(args, mode, device) for device in devices for mode in MODES]
    print(table(results, args))


if __name__ == "__main__":
    main()
