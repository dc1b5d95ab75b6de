"""Merging LoRA into the language model and saving a plain Hugging Face LLaVA checkpoint.

The merged folder holds `model.save_pretrained` output and `tokenizer.json`: what `training.export`
reads, and what a later fine-tuning run can start from (`model.base`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from dicom_node.durable import folder_written_aside
from training.train.stages import is_lora


def merge_lora(model: nn.Module) -> nn.Module:
    """A `LlavaForConditionalGeneration` with the LoRA deltas folded into the weights (peft
    `merge_and_unload`); the projector copy trained through `modules_to_save` replaces the original."""
    if not is_lora(model):
        return model
    with warnings.catch_warnings():
        # LLaVA here never ties input and output embeddings; peft says so on every merge.
        warnings.filterwarnings("ignore", message="Input and output embeddings are no longer tied")
        return model.merge_and_unload()


def save_hf_checkpoint(model: nn.Module, tokenizer, out_dir: Path) -> Path:
    """`save_pretrained` + `tokenizer.json` into `out_dir`, written aside and renamed into place."""
    out_dir = Path(out_dir)
    with folder_written_aside(out_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
    return out_dir
