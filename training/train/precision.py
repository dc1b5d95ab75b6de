"""How a model is held in memory while it trains (`[memory]` of the recipe).

- The frozen base (vision tower, language model) in bf16 (fp16 where bf16 is missing) or fp32.
- The parts that learn (LoRA, projector) in fp32, so are their gradients and AdamW's state; the projector
  takes the tower's bf16 features through a cast at its input, and LoRA casts its input itself (peft).
- Gradient checkpointing on the language model (and the vision tower when it trains).
- QLoRA: the language model in 4 bits through bitsandbytes (CUDA only); its merge is rebuilt from the bf16
  base with the trained LoRA and projector loaded, never merged into the 4-bit weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.train.config import MemoryConfig, TrainConfig


class PrecisionError(RuntimeError):
    """A memory setting cannot be used here (4 bits without CUDA or bitsandbytes, ...)."""


def on_cuda(device: str) -> bool:
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def base_dtype(memory: MemoryConfig, device: str) -> torch.dtype:
    """The dtype of the frozen weights: `base_dtype`, with auto = bf16 (fp16 without it) on CUDA, fp32 on CPU."""
    choice = memory.base_dtype
    if choice == "auto":
        if not on_cuda(device):
            return torch.float32
        choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]


def check_cuda_settings(memory: MemoryConfig, device: str) -> None:
    """4-bit bases and 8-bit optimisers need CUDA and bitsandbytes; refused otherwise, saying what to change."""
    wanted = [what for what, used in (("memory.quantize_base = \"4bit\"", memory.quantize_base != "none"),
                                      ("memory.optimizer = \"adamw-8bit\"", memory.optimizer != "adamw")) if used]
    if not wanted:
        return
    if not on_cuda(device) or not torch.cuda.is_available():
        raise PrecisionError(f"{' and '.join(wanted)} need a CUDA GPU (bitsandbytes); torch sees none; "
                             "set them back to \"none\" / \"adamw\" to train on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise PrecisionError(f"{' and '.join(wanted)} need bitsandbytes: pip install bitsandbytes") from None


def load_base(config: TrainConfig, path: Path | None = None) -> nn.Module:
    """The base checkpoint in its training precision (4-bit language model for QLoRA)."""
    from transformers import LlavaForConditionalGeneration

    memory, device = config.memory, config.compute.device
    check_cuda_settings(memory, device)
    dtype = base_dtype(memory, device)
    kwargs = {"attn_implementation": "eager", "dtype": dtype}
    if memory.quantize_base == "4bit":
        from transformers import BitsAndBytesConfig

        compute = dtype if dtype != torch.float32 else torch.bfloat16
        kwargs.update(dtype=compute, device_map={"": torch.cuda.current_device()},
                      quantization_config=BitsAndBytesConfig(
                          load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                          bnb_4bit_compute_dtype=compute,
                          llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"]))
    model = LlavaForConditionalGeneration.from_pretrained(path or config.model.base, **kwargs)
    if memory.quantize_base == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=memory.gradient_checkpointing)
    return model


def hold_trainable_in_fp32(model: nn.Module) -> None:
    """Trainable parameters in fp32; a bf16 tower's features are cast at the projector's input."""
    from training.train.stages import base_llava

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    projector = base_llava(model).model.multi_modal_projector
    if not getattr(projector, "_raddraft_cast", False):
        projector.register_forward_pre_hook(_cast_to_own_dtype)
        projector._raddraft_cast = True


def _cast_to_own_dtype(module: nn.Module, args: tuple) -> tuple:
    dtype = next((p.dtype for p in module.parameters() if p.requires_grad), None)
    if dtype is None:
        dtype = next(module.parameters()).dtype
    return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def enable_checkpointing(model: nn.Module, trains: tuple[str, ...]) -> None:
    """Recompute activations in the backward pass: the language model always, the tower when it trains."""
    from training.train.stages import base_llava

    inner = base_llava(model).model
    options = {"use_reentrant": False}  # works with frozen inputs (LoRA) and keeps dropout's RNG exact
    inner.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    if "vision" in trains:
        inner.vision_tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def prepare_memory(model: nn.Module, memory: MemoryConfig, trains: tuple[str, ...]) -> nn.Module:
    hold_trainable_in_fp32(model)
    if memory.gradient_checkpointing:
        enable_checkpointing(model, trains)
    return model


def make_optimizer(parameters: list, memory: MemoryConfig, lr: float, weight_decay: float):
    if memory.optimizer == "adamw-8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(parameters, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


def merged_from_bf16_base(trained: nn.Module, config: TrainConfig, trains: tuple[str, ...]) -> nn.Module:
    """After QLoRA: the bf16 base, wrapped with the same LoRA, the trained weights loaded, then merged."""
    from transformers import LlavaForConditionalGeneration

    from training.train.checkpoint import load_trainable_state, trainable_state
    from training.train.merge import merge_lora
    from training.train.stages import prepare_stage

    state = {name: value.float().cpu() for name, value in trainable_state(trained).items()}
    base = LlavaForConditionalGeneration.from_pretrained(config.model.base, attn_implementation="eager",
                                                         dtype=torch.bfloat16)
    model, _ = prepare_stage(base, trains, config.lora)
    hold_trainable_in_fp32(model)
    load_trainable_state(model, state)
    return merge_lora(model)


def memory_record(config: TrainConfig) -> dict[str, str | bool]:
    """What the model card says about the memory settings of the run."""
    memory = config.memory
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[
        base_dtype(memory, config.compute.device)]
    return {"frozen base": "4-bit NF4 (QLoRA), vision tower " + dtype if memory.quantize_base == "4bit" else dtype,
            "trainable parts and optimiser state": "fp32" + (" (AdamW state 8-bit)" if memory.optimizer != "adamw"
                                                               else ""),
            "gradient checkpointing": memory.gradient_checkpointing,
            "merged from": "the bf16 base with LoRA merged in" if memory.quantize_base == "4bit" else
                           "the trained model with LoRA merged in"}
