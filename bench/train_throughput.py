"""Training throughput: samples/s and peak memory of stage 1 (projector), stage 2 (LoRA + projector) and full
fine-tuning (projector + language model) of the same model, side by side; medians of several runs.

    python bench/train_throughput.py [--size phantom-cxr] [--runs 3] [--steps 6] [--batch 16] [--threads 0]

Each mode runs in a fresh process (so its peak memory is its own) through the real training loop
(`training.train.trainer`) on real phantom studies: a warm-up of 2 optimizer steps, then `--runs` timed
runs of `--steps` steps. CPU rows always; a CUDA row per mode when torch sees a GPU. The CPU of a shared
machine makes numbers noisy: compare rows of one table, not tables of different days.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="phantom-cxr", help="named model size (tiny, phantom-cxr)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data", help="folder for the bench's phantoms and caches (default: a temp folder)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args, args.child, args.device)))
        return
    import torch

    with tempfile.TemporaryDirectory(prefix="raddraft-train-bench-") as temp:
        args.data = args.data or temp
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        results = [child(args, mode, device) for device in devices for mode in MODES]
    print(table(results, args))


if __name__ == "__main__":
    main()
