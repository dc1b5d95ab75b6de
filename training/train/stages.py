"""Which parameters learn in each stage: the parts of a LLaVA model and the LoRA wrapping of stage 2.

Parts are found through the model's own submodules (vision tower, projector, language model + LM head)
and peft's module types, never through parameter names; only LoRA's target modules are chosen by a
regex over module names (peft's rule), and the default regex keeps LoRA out of the CLIP tower.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from training.train.config import PARTS, LoraSettings


class StageError(ValueError):
    """A stage cannot be set up on this model (unknown part, LoRA matching no module, ...)."""


def base_llava(model: nn.Module) -> nn.Module:
    """The `LlavaForConditionalGeneration` inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def part_modules(model: nn.Module, part: str) -> list[nn.Module]:
    """The submodules of a LLaVA model that make up `part` (vision, projector or language)."""
    llava = base_llava(model)
    inner = llava.model
    if part == "vision":
        return [inner.vision_tower]
    if part == "projector":
        return [inner.multi_modal_projector]
    if part == "language":
        return [inner.language_model, llava.lm_head]
    raise StageError(f"unknown part {part!r}; known: vision, projector, language")


def part_parameters(model: nn.Module, part: str) -> list[nn.Parameter]:
    return [p for module in part_modules(model, part) for p in module.parameters()]


def unused_vision_parameters(model: nn.Module) -> list[nn.Parameter]:
    """CLIP's final layer norm: LLaVA reads the last hidden state before it, so it never gets a gradient."""
    vision = base_llava(model).model.vision_tower
    post = getattr(getattr(vision, "vision_model", vision), "post_layernorm", None)
    return list(post.parameters()) if post is not None else []


def freeze_all(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def set_trainable(model: nn.Module, parts: Sequence[str]) -> list[nn.Parameter]:
    """Freeze everything but `parts` and return the parameters that train.

    vision / language: all their weights (CLIP's unused final norm excepted). projector: its weights, or
    the trainable copy peft keeps of it (`modules_to_save`) in a LoRA model. lora: the adapter weights of
    a model wrapped by `apply_lora`.
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise StageError(f"unknown part {unknown[0]!r}; known: {', '.join(PARTS)}")
    if "lora" in parts and not is_lora(model):
        raise StageError("a stage that trains lora needs the model wrapped by apply_lora first")
    freeze_all(model)
    for part in parts:
        for parameter in _trainable_of(model, part):
            parameter.requires_grad_(True)
    for parameter in unused_vision_parameters(model):
        parameter.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise StageError(f"no parameter trains with parts {list(parts)}")
    return trainable


def _trainable_of(model: nn.Module, part: str) -> list[nn.Parameter]:
    from peft.utils import ModulesToSaveWrapper

    if part == "lora":
        return lora_parameters(model)
    if part == "projector":
        projector = base_llava(model).model.multi_modal_projector
        if isinstance(projector, ModulesToSaveWrapper):
            return list(projector.modules_to_save.parameters())
    return part_parameters(model, part)


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA A/B matrices of every adapted layer."""
    from peft.tuners.lora import LoraLayer

    found: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, LoraLayer):
            found += list(module.lora_A.parameters()) + list(module.lora_B.parameters())
    return found


def is_lora(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def apply_lora(model: nn.Module, settings: LoraSettings, train_projector: bool) -> nn.Module:
    """Wrap the LLaVA model with LoRA adapters on the language model; the projector trains fully
    (`modules_to_save`) when `train_projector`."""
    from peft import LoraConfig, get_peft_model

    matched = lora_target_names(model, settings.target_modules)
    if not matched:
        raise StageError(f"lora.target_modules {settings.target_modules!r} matches no linear module")
    vision = {id(m) for m in part_modules(model, "vision")[0].modules()}
    modules = dict(model.named_modules())
    if any(id(modules[name]) in vision for name in matched):
        raise StageError(f"lora.target_modules {settings.target_modules!r} reaches into the vision tower; "
                         "restrict it to the language model")
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, bias="none",
                        modules_to_save=["multi_modal_projector"] if train_projector else None)
    return get_peft_model(model, config)


def lora_target_names(model: nn.Module, pattern: str) -> list[str]:
    """Names of the linear modules `pattern` selects (peft's rule: the regex matches the full name)."""
    import re

    regex = re.compile(pattern)
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and regex.fullmatch(name)]


def prepare_stage(model: nn.Module, parts: Sequence[str], lora: LoraSettings) -> tuple[nn.Module, list]:
    """The model for a stage training `parts` (wrapped with LoRA when they include "lora") and its
    trainable parameters; everything else is frozen."""
    if "lora" in parts and not is_lora(model):
        model = apply_lora(model, lora, train_projector="projector" in parts)
    return model, set_trainable(model, parts)


def trainable_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def count_parameters(parameters: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() for p in parameters)
