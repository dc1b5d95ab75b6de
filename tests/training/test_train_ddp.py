"""Data-parallel training through accelerate: 2 CPU processes (gloo) compute what 1 process computes.

The same worker (this file, run as a script) trains the LoRA + projector stage for a few steps: once as a
plain process with batch 4, once under `torch.distributed.run` (the launcher `accelerate launch
--multi_gpu` uses; accelerate's own launcher needs MPI for several CPU processes) as 2 processes with
batch 2 each. The trainable weights and the losses must agree.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest

STEPS = 3
OVERRIDES = {"lora.dropout": 0.0,  # dropout masks would differ between the two layouts
             "stages.finetune.validation_drafts": 0}


def worker(run_dir: Path, out: Path, batch_size: int) -> None:
    import torch

    from training.train.config import ComputeConfig
    from training.train.stages import prepare_stage
    from training.train.tasks import report_task
    from training.train.tiny_run import fresh_llava, tiny_context, tiny_recipe
    from training.train.trainer import make_accelerator, run_stage

    ctx = tiny_context(tiny_recipe(run_dir, {**OVERRIDES, "stages.finetune.optimisation.batch_size": batch_size}))
    accelerator = make_accelerator(ComputeConfig(device="cpu"))
    model, _ = prepare_stage(fresh_llava(ctx), ("projector", "lora"), ctx.config.lora)
    task = report_task(ctx, "finetune", model)
    task.stage_dir = out.with_suffix("")
    task.validate = None
    result = run_stage(task, accelerator, progress=False, stop_after=STEPS, resume=False)
    if accelerator.is_main_process:
        torch.save({"processes": accelerator.num_processes,
                    "losses": [r["loss"] for r in result.history if r["kind"] == "train"],
                    "weights": {n: p.detach().cpu() for n, p in result.model.named_parameters() if p.requires_grad}},
                   out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    pytest.importorskip("peft")
    from training.train.tiny_run import tiny_context, tiny_recipe

    folder = tmp_path_factory.mktemp("ddp") / "run"
    tiny_context(tiny_recipe(folder, OVERRIDES))  # data, pixel cache and tokenizer, shared by the workers
    return folder


def launch(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.slow
def test_two_processes_match_one(run_dir, tmp_path):
    torch = pytest.importorskip("torch")
    script = str(Path(__file__).resolve())
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    launch(sys.executable, script, str(run_dir), str(single), "4")
    launch(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), script, str(run_dir), str(ddp), "2")
    one, two = torch.load(single), torch.load(ddp)
    assert one["processes"] == 1 and two["processes"] == 2
    assert len(one["losses"]) == STEPS
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4, abs=1e-5)
    assert one["weights"].keys() == two["weights"].keys()
    for name in one["weights"]:
        torch.testing.assert_close(two["weights"][name], one["weights"][name], rtol=1e-4, atol=1e-5, msg=name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("batch_size", type=int)
    arguments = parser.parse_args()
    worker(arguments.run_dir, arguments.out, arguments.batch_size)
