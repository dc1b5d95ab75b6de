"""Training curves: one panel per stage with the training loss per step and validation numbers per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRIC_KEYS = ("presence_acc", "presence_f1", "micro_f1", "bleu4")


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    out, last = [], None
    for value in values:
        last = value if last is None else weight * last + (1 - weight) * value
        out.append(last)
    return out


def plot_curves(history: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Write a PNG of `history` (records with stage, kind train|validation, step, loss / val_loss, metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(r["stage"] for r in history))
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(4.2 * max(1, len(stages)), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        train = [r for r in history if r["stage"] == stage and r["kind"] == "train"]
        validation = [r for r in history if r["stage"] == stage and r["kind"] == "validation"]
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], color="0.8", lw=0.8)
            ax.plot([r["step"] for r in train], smooth([r["loss"] for r in train]), color="C0", label="train loss")
        with_loss = [r for r in validation if "val_loss" in r]
        if with_loss:
            ax.plot([r["step"] for r in with_loss], [r["val_loss"] for r in with_loss], "o-", color="C1",
                    label="validation loss")
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_title(stage)
        _plot_metrics(ax, validation)
        ax.legend(loc="upper right", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_metrics(ax, validation: Sequence[Mapping[str, Any]]) -> None:
    keys = [k for k in METRIC_KEYS if any(k in r for r in validation)]
    if not keys:
        return
    twin = ax.twinx()
    for index, key in enumerate(keys):
        rows = [r for r in validation if key in r]
        twin.plot([r["step"] for r in rows], [r[key] for r in rows], "s--", color=f"C{index + 2}", label=key)
    twin.set_ylim(0, 1.05)
    twin.legend(loc="center right", fontsize=7)
