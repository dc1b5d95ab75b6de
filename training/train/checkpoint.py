"""Checkpoints that resume a stage exactly: trainable weights, optimiser, scheduler, RNG and data position.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` in the stage folder, written under a temporary name,
each file synced, then renamed into place (a crash leaves the previous checkpoint intact); the file
`checkpoints/latest` names the newest one. Frozen weights are not stored: a stage always starts from the
previous stage's saved output, so the trainable weights are what changes. The resolved training config
is saved next to every checkpoint (`config.json`).
"""

from __future__ import annotations

import io
import json
import os
import random
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dicom_node.durable import TEMP_SUFFIX, fsync_dir, write_atomically, write_text_atomically

CHECKPOINTS = "checkpoints"
LATEST = "latest"
FILES = ("trainable.pt", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json", "config.json")


class CheckpointError(RuntimeError):
    """A checkpoint is missing a file, is unreadable, or does not fit the model it is loaded into."""


@dataclass
class Position:
    """How far a stage got: finished epochs, optimizer steps of the current epoch, steps in the stage."""

    epoch: int = 0
    window: int = 0
    step: int = 0


@dataclass
class TrainerState:
    position: Position = field(default_factory=Position)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        data = json.loads(text)
        return cls(position=Position(**data["position"]), history=list(data["history"]),
                   seconds=float(data.get("seconds", 0.0)))


@dataclass
class Checkpoint:
    path: Path
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    state: TrainerState


# ------------------------------------------------------------------------------------------------ RNG
def capture_rng() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------- save
def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the trainable parameters of `model`; every name must match exactly."""
    parameters = dict(model.named_parameters())
    expected = {name for name, p in parameters.items() if p.requires_grad}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise CheckpointError(f"checkpoint does not fit the stage's trainable parameters (missing "
                              f"{missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for name, value in state.items():
            if parameters[name].shape != value.shape:
                raise CheckpointError(f"checkpoint: {name} has shape {tuple(value.shape)}, the model "
                                      f"{tuple(parameters[name].shape)}")
            parameters[name].copy_(value)


def _torch_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def save_checkpoint(stage_dir: Path, *, trainable: dict[str, torch.Tensor], optimizer: dict[str, Any],
                    scheduler: dict[str, Any], state: TrainerState, config_json: str, keep: int = 1) -> Path:
    """Write a checkpoint atomically and point `latest` at it; keep the newest `keep` checkpoints."""
    root = Path(stage_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.position.step:07d}"
    temp = root / f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    temp.mkdir()
    try:
        contents = {"trainable.pt": _torch_bytes(trainable), "optimizer.pt": _torch_bytes(optimizer),
                    "scheduler.pt": _torch_bytes(scheduler), "rng.pt": _torch_bytes(capture_rng()),
                    "state.json": state.to_json().encode(), "config.json": config_json.encode()}
        for name, data in contents.items():
            write_atomically(temp / name, [data])
        if final.exists():
            shutil.rmtree(final)
        os.replace(temp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    write_text_atomically(root / LATEST, final.name + "\n")
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stray in root.glob(f".step-*{TEMP_SUFFIX}"):
        shutil.rmtree(stray, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- load
def latest_checkpoint(stage_dir: Path) -> Path | None:
    pointer = Path(stage_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    return path if path.is_dir() else None


def load_checkpoint(path: Path) -> Checkpoint:
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    try:
        return Checkpoint(
            path=path,
            trainable=torch.load(path / "trainable.pt", map_location="cpu", weights_only=True),
            optimizer=torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
            scheduler=torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True),
            rng=torch.load(path / "rng.pt", map_location="cpu", weights_only=True),
            state=TrainerState.from_json((path / "state.json").read_text(encoding="utf-8")),
        )
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None


def checkpoint_config(path: Path) -> dict[str, Any]:
    return json.loads((path / "config.json").read_text(encoding="utf-8"))
