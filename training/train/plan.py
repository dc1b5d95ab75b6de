"""`raddraft train --plan` / `raddraft finetune --plan`: the memory a recipe needs, before an hour-long run.

For each report stage that would run (projector, LoRA) the plan counts, from the model's config (built on
the meta device: no weights are loaded), the bytes of:
- the frozen weights (in `memory.base_dtype`, or 4 bits for QLoRA's language model);
- the trainable parameters (fp32; peft keeps a trainable copy of the projector beside the frozen one),
  their gradients (fp32) and AdamW's two moments (fp32, or 8-bit);
- the activations one sample keeps for the backward pass at the recipe's sequence length (image tokens of
  every view + prompt + `output.max_new_tokens` report tokens), from what each operation of a LLaMA-style
  decoder layer saves (see `layer_activation_bytes`), once per layer, or only the layer inputs plus one
  layer recomputed with gradient checkpointing; and the logits, held in fp32 for the loss;
- on CPU, the process itself (Python, torch and transformers loaded: this process's resident size).
From that: the largest batch that fits the device, and a refusal in one line saying what to change.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from training.train.config import LoraSettings, MemoryConfig, TrainConfig

GiB = 2**30
PROMPT_TOKENS = 48        # instruction and chat-template markers around the image tokens
INDICATION_TOKENS = 64    # the engine's cut of an indication (engine.prompts.MAX_INDICATION_TOKENS)
NF4_BYTES = 0.5 + 1 / 64  # 4-bit weights plus one (double-quantised) scale per 64


class PlanError(ValueError):
    """The recipe cannot be planned (no model config), or does not fit (the message says what to change)."""


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a LLaVA model (counted on the meta device)."""

    frozen_language: int      # parameters of the language model + LM head
    frozen_vision: int
    projector: int
    lora: int                 # LoRA A/B parameters the recipe's target_modules give
    lora_inputs: tuple[int, ...]  # input width of every LoRA-adapted linear of one decoder layer
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    image_tokens: int


@dataclass(frozen=True)
class MemoryPlan:
    stage: str
    batch: int
    sequence: int
    weights: int
    trainable: int
    gradients: int
    optimiser: int
    activations_per_sample: int
    runtime: int
    budget: int
    checkpoint_copy: int = 0

    @property
    def fixed(self) -> int:
        return self.weights + self.trainable + self.gradients + self.optimiser + self.runtime + self.checkpoint_copy

    @property
    def peak(self) -> int:
        return self.fixed + self.batch * self.activations_per_sample

    @property
    def largest_batch(self) -> int:
        return max(0, (self.budget - self.fixed) // max(1, self.activations_per_sample))

    @property
    def fits(self) -> bool:
        return self.peak <= self.budget

    def rows(self) -> list[tuple[str, str]]:
        return [("weights (frozen base)", gib(self.weights)), ("trainable parameters (fp32)", gib(self.trainable)),
                ("gradients", gib(self.gradients)), ("optimiser state", gib(self.optimiser)),
                (f"activations per sample ({self.sequence} tokens)", gib(self.activations_per_sample)),
                (f"activations at batch {self.batch}", gib(self.batch * self.activations_per_sample)),
                ("process (CPU: Python, torch)", gib(self.runtime)),
                ("checkpoint writing (CPU copy)", gib(self.checkpoint_copy)),
                ("expected peak", gib(self.peak)), ("device memory", gib(self.budget)),
                ("largest batch that fits", str(self.largest_batch))]


def gib(value: float) -> str:
    return f"{value / GiB:.2f} GiB"


# ------------------------------------------------------------------------------------ the model
def model_shape(llava_config, lora: LoraSettings, trains: tuple[str, ...]) -> ModelShape:
    """Parameter counts and widths of a `LlavaConfig`, from a model built on the meta device."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from training.train.tasks import image_tokens

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(llava_config)
    inner = model.model
    count = lambda module: sum(p.numel() for p in module.parameters())
    regex = re.compile(lora.target_modules)
    adapted = [(name, m) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and regex.fullmatch(name)] if "lora" in trains else []
    first_layer = [m.in_features for name, m in adapted if ".layers.0." in name]
    text = llava_config.text_config
    return ModelShape(
        frozen_language=count(inner.language_model) + count(model.lm_head),
        frozen_vision=count(inner.vision_tower), projector=count(inner.multi_modal_projector),
        lora=sum(lora.rank * (m.in_features + m.out_features) for _, m in adapted),
        lora_inputs=tuple(first_layer), layers=int(text.num_hidden_layers), hidden=int(text.hidden_size),
        intermediate=int(text.intermediate_size), heads=int(text.num_attention_heads),
        kv_heads=int(getattr(text, "num_key_value_heads", None) or text.num_attention_heads),
        vocab=int(text.vocab_size), image_tokens=image_tokens(llava_config))


def recipe_llava_config(config: TrainConfig):
    if config.model.base is not None:
        from transformers import AutoConfig

        if not (Path(config.model.base) / "config.json").is_file():
            raise PlanError(f"model.base {config.model.base} has no config.json to plan from")
        return AutoConfig.from_pretrained(str(config.model.base))
    from training.modeling.llava import llava_config
    from training.modeling.tokenizer import as_transformers, train_tokenizer

    size = config.model.llava_size()
    tokenizer = as_transformers(train_tokenizer(["x"], vocab_size=300, min_frequency=1))
    built = llava_config(size, tokenizer)
    built.text_config.vocab_size = size.text.vocab_size or config.model.tokenizer_vocab
    return built


# ------------------------------------------------------------------------------------ activations
def layer_activation_bytes(shape: ModelShape, tokens: int, dtype_bytes: int, lora_dropout: bool) -> int:
    """Bytes one decoder layer keeps for the backward pass, per sample, as the eager LLaMA-style layer of
    transformers saves them with frozen base weights (a frozen linear keeps no input):
    - each RMSNorm keeps its fp32 upcast input (4 h);
    - each LoRA-adapted linear of input width w keeps its fp32 input copy after dropout (4 w) and the
      dropout mask (w);
    - attention keeps q, k, v (b h each) and the scores: the fp32 softmax output (4 a s²) and, in bf16/fp16,
      its cast (2 a s²), which the value product keeps;
    - the MLP keeps the gate input of SiLU, its output and the up projection (b m each)."""
    h, m, a, s, b = shape.hidden, shape.intermediate, shape.heads, tokens, dtype_bytes
    kv = h * shape.kv_heads // shape.heads
    lora_input = 5 if lora_dropout else (4 if b != 4 else 0)
    per_token = 2 * 4 * h + sum(lora_input * w for w in shape.lora_inputs) + b * (h + 2 * kv) + 3 * b * m
    scores = (4 + (2 if b != 4 else 0)) * a * s * s
    return per_token * s + scores


def activation_bytes(shape: ModelShape, memory: MemoryConfig, tokens: int, dtype_bytes: int,
                     lora_dropout: bool) -> int:
    """One sample's activations: every layer's saved tensors (or, with checkpointing, the layer inputs and
    one layer recomputed), the final norm, and the logits: bf16/fp32 logits, their fp32 copy for the loss
    and the log-softmax the loss keeps."""
    layer = layer_activation_bytes(shape, tokens, dtype_bytes, lora_dropout)
    if memory.gradient_checkpointing:
        layers = shape.layers * dtype_bytes * shape.hidden * tokens + layer
    else:
        layers = shape.layers * layer
    logits = (dtype_bytes + 4 + 4) * tokens * shape.vocab
    return layers + 4 * shape.hidden * tokens + logits


def sequence_length(config: TrainConfig, shape: ModelShape) -> int:
    """Image tokens of every view + the prompt (+ an indication) + the longest report the recipe writes."""
    views = len(config.data.views) if config.data.combine == "tokens" else 1
    indication = INDICATION_TOKENS if config.prompting.indication else 0
    return views * shape.image_tokens + PROMPT_TOKENS + indication + config.output.max_new_tokens


# ------------------------------------------------------------------------------------ the plan
def plan_stage(shape: ModelShape, memory: MemoryConfig, trains: tuple[str, ...], *, stage: str, batch: int,
               tokens: int, dtype_bytes: int, lora_dropout: bool, runtime: int, budget: int) -> MemoryPlan:
    language = shape.frozen_language
    if memory.quantize_base == "4bit":
        embeddings = 2 * shape.vocab * shape.hidden  # embedding and LM head stay in the compute dtype
        weights = int((language - embeddings) * NF4_BYTES + embeddings * 2 + shape.frozen_vision * 2)
    else:
        weights = (language + shape.frozen_vision) * dtype_bytes
    trains_projector = "projector" in trains
    weights += shape.projector * dtype_bytes  # the frozen projector (peft keeps it beside its copy)
    trainable = (shape.lora if "lora" in trains else 0) + (shape.projector if trains_projector else 0)
    optimiser = trainable * (2 if memory.optimizer == "adamw-8bit" else 8)
    # a checkpoint copies the trainable weights and the optimiser state to host memory before writing
    # them; on a GPU that copy is not in device memory (runtime 0 marks the device plan)
    copy = 4 * trainable + optimiser if runtime else 0
    return MemoryPlan(stage=stage, batch=batch, sequence=tokens, weights=weights, trainable=4 * trainable,
                      gradients=4 * trainable, optimiser=optimiser,
                      activations_per_sample=activation_bytes(shape, memory, tokens, dtype_bytes, lora_dropout),
                      runtime=runtime, budget=budget, checkpoint_copy=copy)


def device_budget(device: str) -> tuple[str, int]:
    """(what, bytes): the GPU's memory, or the memory this machine has available."""
    import torch

    from training.train.precision import on_cuda

    if on_cuda(device) and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"CUDA {props.name}", int(props.total_memory)
    available = _meminfo("MemAvailable")
    return "CPU (available memory)", available + process_rss()


def process_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _meminfo(key: str) -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise PlanError(f"/proc/meminfo has no {key}")


def plan_recipe(config: TrainConfig, budget: int | None = None,
                runtime: int | None = None) -> tuple[str, list[MemoryPlan]]:
    """The plan of every report stage the recipe runs (stage 0 trains small models only). budget: the
    device's bytes (default: measured); runtime: the process's own bytes (default: this process on CPU)."""
    import torch

    from training.train.pipeline import stage_plan
    from training.train.precision import base_dtype, on_cuda

    where, available = device_budget(config.compute.device)
    llava = recipe_llava_config(config)
    dtype_bytes = torch.tensor([], dtype=base_dtype(config.memory, config.compute.device)).element_size()
    if runtime is None:
        runtime = 0 if on_cuda(config.compute.device) and torch.cuda.is_available() else process_rss()
    plans = []
    for name in stage_plan(config):
        stage = getattr(config.stages, name)
        if name in ("vision", "language"):
            continue
        shape = model_shape(llava, config.lora, stage.trains)
        plans.append(plan_stage(shape, config.memory, stage.trains, stage=name, batch=stage.optimisation.batch_size,
                                tokens=sequence_length(config, shape), dtype_bytes=dtype_bytes,
                                lora_dropout=config.lora.dropout > 0, runtime=runtime,
                                budget=budget if budget is not None else available))
    return where, plans


def refusal(plan: MemoryPlan, memory: MemoryConfig) -> str | None:
    """None when the plan fits; else one line saying what to change."""
    if plan.fits:
        return None
    key = f"stages.{plan.stage}.optimisation"
    if plan.largest_batch >= 1:
        steps = math.ceil(plan.batch / plan.largest_batch)
        return (f"stage {plan.stage} needs {gib(plan.peak)} at batch {plan.batch}, the device has {gib(plan.budget)}: "
                f"set {key}.batch_size={plan.largest_batch} and {key}.accumulation={steps}")
    hints = []
    if not memory.gradient_checkpointing:
        hints.append("memory.gradient_checkpointing=true")
    if memory.quantize_base == "none":
        hints.append("memory.quantize_base=\"4bit\" (CUDA)")
    hints.append("a lower output.max_new_tokens or a device with more memory")
    return (f"stage {plan.stage} needs {gib(plan.fixed + plan.activations_per_sample)} even at batch 1, the device "
            f"has {gib(plan.budget)}: set " + ", or ".join(hints))


def plan_text(where: str, plans: list[MemoryPlan]) -> str:
    lines = [f"memory plan on {where}"]
    for plan in plans:
        lines.append(f"stage {plan.stage} (batch {plan.batch}, {plan.sequence} tokens per sample):")
        lines += [f"  {label:<44} {value:>12}" for label, value in plan.rows()]
    return "\n".join(lines)


def report_plan(config: TrainConfig, write=print) -> int:
    """Print the plan; 0 when every stage fits, 1 (after one line per stage saying what to change) when not."""
    where, plans = plan_recipe(config)
    write(plan_text(where, plans))
    refusals = [line for line in (refusal(plan, config.memory) for plan in plans) if line]
    for line in refusals:
        write(f"refused: {line}")
    return 1 if refusals else 0
