"""The training loop of every stage, through Hugging Face `accelerate`.

One process on CPU or one GPU, or several under `accelerate launch` (DDP): the same code. Each epoch's
samples come from a plan fixed by (seed, epoch); every optimizer step consumes one global batch of
`batch_size x processes x accumulation` samples, each process taking its own contiguous share. The loss
is the mean over all target elements of the global micro-batch (summed per process, divided by the
count gathered from all processes), so N processes compute what one process would.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.train.checkpoint import (
    TrainerState,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    load_trainable_state,
    restore_rng,
    save_checkpoint,
    trainable_state,
)
from training.train.config import ComputeConfig, MemoryConfig, Optimisation
from training.train.samples import Item, global_batches, shard

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, dict], tuple[torch.Tensor, torch.Tensor]]  # (sum of losses, element count)
StepObserver = Callable[[dict[str, Any]], None]


class TrainingError(RuntimeError):
    """A stage cannot run (nothing to train, loss not finite, ...)."""


@dataclass
class StageTask:
    """Everything the loop needs to train one stage.

    plan(epoch): the epoch's samples. collate(items): tensors for them (on CPU). loss(model, batch):
    summed loss and number of elements. validate(model): metrics after each epoch (run on the main
    process, without gradients, without disturbing the training RNG).
    """

    name: str
    model: nn.Module
    optimisation: Optimisation
    plan: Callable[[int], list[Item]]
    collate: Callable[[Sequence[Item]], dict]
    loss: LossFn
    stage_dir: Path
    config_json: str
    validate: Callable[[nn.Module], dict[str, float]] | None = None
    checkpoint_every: int = 0
    memory: MemoryConfig = field(default_factory=MemoryConfig)


@dataclass
class StageResult:
    name: str
    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    finished: bool = True
    resumed_from: Path | None = None
    samples: int = 0


def make_accelerator(compute: ComputeConfig):
    """An `accelerate.Accelerator` for the configured device and precision (DDP under `accelerate launch`)."""
    from accelerate import Accelerator

    cpu = compute.device == "cpu" or (compute.device == "auto" and not torch.cuda.is_available())
    if compute.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("compute.device is cuda, but torch sees no CUDA device")
    precision = compute.mixed_precision
    if precision == "auto":
        precision = "no" if cpu else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if compute.threads:
        torch.set_num_threads(compute.threads)
    return Accelerator(cpu=cpu, mixed_precision=precision)


def lr_lambda(kind: str, total_steps: int, warmup: float) -> Callable[[int], float]:
    warmup_steps = round(total_steps * warmup)

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, max(0.0, progress))
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def accumulation_windows(batches: list[list[Item]], accumulation: int) -> list[list[list[Item]]]:
    """Group micro-batches into optimizer steps; trailing micro-batches that fill no window are dropped."""
    if len(batches) < accumulation:
        return [batches]
    count = len(batches) // accumulation
    return [batches[i * accumulation:(i + 1) * accumulation] for i in range(count)]


@contextmanager
def preserved_rng():
    """Run something (validation, drafting) without changing the random streams training uses."""
    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


class StageRunner:
    """Runs one `StageTask` to the end (or to `stop_after` optimizer steps), checkpointing on the way."""

    def __init__(self, task: StageTask, accelerator, *, progress: bool = True, stop_after: int | None = None,
                 resume: bool = True, on_step: StepObserver | None = None) -> None:
        self.task = task
        self.on_step = on_step
        self.acc = accelerator
        self.opt = task.optimisation
        self.progress = progress
        self.stop_after = stop_after
        self.resume = resume
        self.world = accelerator.num_processes
        self.state = TrainerState()
        self.plans: dict[int, list[list[list[Item]]]] = {}

    # ------------------------------------------------------------------------------------ set-up
    def windows(self, epoch: int) -> list[list[list[Item]]]:
        if epoch not in self.plans:
            batches = global_batches(self.task.plan(epoch), self.opt.batch_size * self.world)
            self.plans[epoch] = accumulation_windows(batches, self.opt.accumulation)
        return self.plans[epoch]

    def total_steps(self) -> int:
        return sum(len(self.windows(e)) for e in range(self.opt.epochs))

    def setup(self) -> None:
        from accelerate.utils import set_seed

        trainable = [p for p in self.task.model.parameters() if p.requires_grad]
        if not trainable:
            raise TrainingError(f"stage {self.task.name}: no parameter is trainable")
        set_seed(self.opt.seed)
        from training.train.precision import make_optimizer

        self.optimizer = make_optimizer(trainable, self.task.memory, self.opt.lr, self.opt.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.opt.schedule, self.total_steps(), self.opt.warmup))
        self.model, self.optimizer = self.acc.prepare(self.task.model, self.optimizer)
        self.trainable = trainable
        self.resumed_from = self.load_latest() if self.resume else None

    def load_latest(self) -> Path | None:
        path = latest_checkpoint(self.task.stage_dir)
        if path is None:
            return None
        checkpoint = load_checkpoint(path)
        load_trainable_state(self.acc.unwrap_model(self.model), checkpoint.trainable)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(checkpoint.scheduler)
        restore_rng(checkpoint.rng)
        self.state = checkpoint.state
        log.info("stage %s: resumed from %s (step %d)", self.task.name, path, self.state.position.step)
        return path

    # ------------------------------------------------------------------------------------- steps
    def micro_batch_loss(self, items: Sequence[Item]) -> tuple[torch.Tensor, float]:
        batch = {k: v.to(self.acc.device) for k, v in self.task.collate(shard(items, self.acc.process_index,
                                                                              self.world)).items()}
        loss_sum, count = self.task.loss(self.model, batch)
        total = self.acc.reduce(count.detach().to(self.acc.device, torch.float32), reduction="sum")
        if total.item() <= 0:
            raise TrainingError(f"stage {self.task.name}: a batch without any target to learn")
        loss = loss_sum * self.world / total  # DDP averages gradients over processes
        return loss, float(self.acc.reduce(loss_sum.detach().float(), reduction="sum") / total)

    def optimizer_step(self, window: list[list[Item]]) -> float:
        self.model.train()
        losses = []
        for index, items in enumerate(window):
            sync = index == len(window) - 1
            with nullcontext() if sync else self.acc.no_sync(self.model):
                loss, value = self.micro_batch_loss(items)
                self.acc.backward(loss / len(window))
            losses.append(value)
        if self.opt.max_grad_norm > 0:
            self.acc.clip_grad_norm_(self.trainable, self.opt.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean = sum(losses) / len(losses)
        if not math.isfinite(mean):
            raise TrainingError(f"stage {self.task.name}: loss is {mean} at step {self.state.position.step}; "
                                "lower the learning rate")
        return mean

    # ------------------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> None:
        if self.acc.is_main_process:
            save_checkpoint(self.task.stage_dir, trainable=trainable_state(self.acc.unwrap_model(self.model)),
                            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                            state=self.state, config_json=self.task.config_json)
        self.acc.wait_for_everyone()

    def validate(self, epoch: int) -> None:
        if self.task.validate is None:
            return
        if self.acc.is_main_process:
            model = self.acc.unwrap_model(self.model)
            model.eval()
            with preserved_rng(), torch.no_grad():
                metrics = self.task.validate(model)
            model.train()
            record = {"stage": self.task.name, "kind": "validation", "epoch": epoch + 1,
                      "step": self.state.position.step, **metrics}
            self.state.history.append(record)
            self.write(f"{self.task.name} epoch {epoch + 1}: " + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
        self.acc.wait_for_everyone()

    def write(self, text: str) -> None:
        from tqdm import tqdm

        if self.progress:
            tqdm.write(text)
        log.info(text)

    # ------------------------------------------------------------------------------------ epochs
    def run_epoch(self, epoch: int) -> bool:
        """Train the rest of `epoch`; False when `stop_after` steps were reached first."""
        from tqdm import tqdm

        windows = self.windows(epoch)
        position = self.state.position
        bar = tqdm(total=len(windows), initial=position.window, desc=f"{self.task.name} {epoch + 1}/"
                   f"{self.opt.epochs}", unit="step", disable=not (self.progress and self.acc.is_main_process),
                   dynamic_ncols=True, leave=True)
        smoothed = None
        try:
            for index in range(position.window, len(windows)):
                started = time.perf_counter()
                loss = self.optimizer_step(windows[index])
                seconds = time.perf_counter() - started
                self.state.seconds += seconds
                position.window, position.step = index + 1, position.step + 1
                smoothed = loss if smoothed is None else 0.9 * smoothed + 0.1 * loss
                self.state.history.append({"stage": self.task.name, "kind": "train", "epoch": epoch + 1,
                                           "step": position.step, "loss": round(loss, 6),
                                           "lr": self.scheduler.get_last_lr()[0], "seconds": round(seconds, 4),
                                           "samples": sum(len(b) for b in windows[index])})
                bar.set_postfix(loss=f"{smoothed:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                bar.update(1)
                if self.on_step is not None and self.acc.is_main_process:
                    self.on_step({"stage": self.task.name, "epoch": epoch + 1, "epochs": self.opt.epochs,
                                  "step": position.step, "total": self.total_steps(), "loss": round(smoothed, 5)})
                if self.stop_after is not None and position.step >= self.stop_after:
                    self.checkpoint()
                    return False
                if self.task.checkpoint_every and position.step % self.task.checkpoint_every == 0:
                    self.checkpoint()
        finally:
            bar.close()
        return True

    def run(self) -> StageResult:
        self.setup()
        started = time.perf_counter()
        finished = True
        for epoch in range(self.state.position.epoch, self.opt.epochs):
            if not self.run_epoch(epoch):
                finished = False
                break
            self.validate(epoch)
            self.state.position.epoch, self.state.position.window = epoch + 1, 0
            self.checkpoint()
        model = self.acc.unwrap_model(self.model)
        samples = sum(len(b) for e in range(self.opt.epochs) for w in self.windows(e) for b in w)
        result = StageResult(self.task.name, model, list(self.state.history), self.state.position.step,
                             self.state.seconds, finished, self.resumed_from, samples)
        self.acc.free_memory()
        log.info("stage %s: %d steps in %.1f s (this run %.1f s)", self.task.name, result.steps, result.seconds,
                 time.perf_counter() - started)
        return result


def run_stage(task: StageTask, accelerator, *, progress: bool = True, stop_after: int | None = None,
              resume: bool = True, on_step: StepObserver | None = None) -> StageResult:
    """Train one stage; resumes from the stage's latest checkpoint when there is one. on_step gets a
    small dict (stage, epoch, epochs, step, total, loss) after every optimizer step, for progress displays."""
    return StageRunner(task, accelerator, progress=progress, stop_after=stop_after, resume=resume,
                       on_step=on_step).run()
