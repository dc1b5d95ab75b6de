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


# What a released checkpoint says about its inputs, which `save_pretrained` of the model does not write.
INPUT_FILES = ("preprocessor_config.json", "processor_config.json", "chat_template.json", "chat_template.jinja")


def save_hf_checkpoint(model: nn.Module, tokenizer, out_dir: Path, *, inputs_from: Path | None = None,
                       prompt_spec=None) -> Path:
    """`save_pretrained` + `tokenizer.json` into `out_dir`, written aside and renamed into place.

    inputs_from: the base checkpoint whose image processor and chat template files come along.
    prompt_spec: written as `raddraft_prompts.json`, so the export renders the prompts training used."""
    import json
    import shutil

    from training.export.layout import PROMPT_SPEC_FILE

    out_dir = Path(out_dir)
    with folder_written_aside(out_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        for name in INPUT_FILES if inputs_from is not None else ():
            if (Path(inputs_from) / name).is_file() and not (Path(staging) / name).is_file():
                shutil.copyfile(Path(inputs_from) / name, Path(staging) / name)
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, str) and template and not (Path(staging) / "chat_template.json").is_file():
            # the Hub layout's file, which every reader of a checkpoint (and a bundle's checkpoint/) keeps
            (Path(staging) / "chat_template.json").write_text(json.dumps({"chat_template": template}),
                                                              encoding="utf-8")
        if prompt_spec is not None:
            (Path(staging) / PROMPT_SPEC_FILE).write_text(prompt_spec.to_json(), encoding="utf-8")
    return out_dir
