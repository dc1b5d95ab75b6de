"""Real-width LLaVA-1.5 shapes cut to a few layers: the memory plan's check and the throughput bench.

The widths are LLaVA-1.5-7B's (CLIP ViT-L/14: 1024 wide, 16 heads, 4096 MLP; Llama: 4096 wide, 32 heads,
11008 MLP, vocabulary 32064); the number of layers, the image size (so the image tokens) and the report
length are cut so a CPU runs a step in seconds. The model is random and the batch synthetic (fixed token
ids, so the loss falls as LoRA and the projector learn it); the loop is the real one
(`training.train.trainer`), with the recipe's memory settings (`training.train.precision`).

    python -m training.train.real_width --text-layers 1 --base-dtype bf16 --checkpointing --steps 3

prints one JSON line: losses, seconds per step, which parameters changed, the measured peak resident
size over the training steps (the high-water mark reset after the model is built, Linux `clear_refs`),
and the plan's estimate (`training.train.plan`) for the same shape, made before the model exists.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

IMAGE_TOKEN = 32000
LORA_TARGETS = r".*\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class Shape:
    text_layers: int = 1
    vision_layers: int = 1
    image_size: int = 56       # 336 in LLaVA-1.5 (576 image tokens); 56 px gives 16
    prompt_tokens: int = 8
    report_tokens: int = 24
    batch: int = 1

    def image_tokens(self) -> int:
        return (self.image_size // 14) ** 2

    def sequence(self) -> int:
        return 1 + self.image_tokens() + self.prompt_tokens + self.report_tokens


def llava15_config(shape: Shape):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                              num_hidden_layers=shape.vision_layers, image_size=shape.image_size, patch_size=14,
                              projection_dim=768)
    text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                       num_hidden_layers=shape.text_layers, vocab_size=32064, max_position_embeddings=4096,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                         vision_feature_layer=-2 if shape.vision_layers > 1 else -1,
                         vision_feature_select_strategy="default", image_seq_length=shape.image_tokens())
    config._attn_implementation = "eager"
    return config


def build(config, dtype):
    """The random model, built directly in `dtype` (no fp32 copy on the way). Drawing 700 M random numbers
    takes longer than the steps measured, so weights repeat one random block of a prime length (scaled as
    an initialiser would); norms start at 1, biases at 0."""
    import torch
    from transformers import LlavaForConditionalGeneration
    from transformers.modeling_utils import no_init_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights():
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    block = torch.randn(1_000_003, generator=torch.Generator().manual_seed(0)).to(dtype) * 0.02
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            flat = parameter.view(-1)
            if name.endswith("bias"):
                flat.zero_()
            elif "norm" in name:
                flat.fill_(1.0)
            else:
                for start in range(0, flat.numel(), block.numel()):
                    part = flat[start:start + block.numel()]
                    part.copy_(block[:part.numel()])
    model.config._attn_implementation = "eager"
    return model


def synthetic_batch(shape: Shape) -> dict:
    """One fixed batch: <s>, the image tokens, a prompt (labels -100), then a report to learn."""
    import torch

    generator = torch.Generator().manual_seed(1)
    rows, labels = [], []
    for _ in range(shape.batch):
        prompt = torch.randint(3, 31000, (shape.prompt_tokens,), generator=generator)
        report = torch.randint(3, 31000, (shape.report_tokens,), generator=generator)
        ids = torch.cat([torch.tensor([1]), torch.full((shape.image_tokens(),), IMAGE_TOKEN), prompt, report])
        rows.append(ids)
        labels.append(torch.cat([torch.full((len(ids) - len(report),), -100), report]))
    pixels = torch.randn((shape.batch, 3, shape.image_size, shape.image_size), generator=generator)
    return {"input_ids": torch.stack(rows), "attention_mask": torch.ones(shape.batch, rows[0].numel(), dtype=torch.long),
            "labels": torch.stack(labels), "pixel_values": pixels}


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")  # resets the resident high-water mark (VmHWM) to the current size


def peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def checksums(model) -> dict[str, float]:
    return {name: float(p.detach().double().sum()) + float(p.detach().double().abs().sum())
            for name, p in model.named_parameters()}


def run(shape: Shape, memory, *, steps: int, lr: float, stage_dir: Path, threads: int, rank: int = 16) -> dict:
    import torch

    from training.train.config import ComputeConfig, LoraSettings, Optimisation
    from training.train.lm_pretrain import token_loss
    from training.train.plan import model_shape, plan_stage, process_rss
    from training.train.precision import base_dtype, prepare_memory
    from training.train.samples import Item
    from training.train.stages import prepare_stage, trainable_names
    from training.train.trainer import StageTask, make_accelerator, run_stage

    torch.set_num_threads(threads)
    trains = ("projector", "lora")
    lora = LoraSettings(rank=rank, alpha=2 * rank, dropout=0.05, target_modules=LORA_TARGETS)
    config = llava15_config(shape)
    dtype = base_dtype(memory, "cpu")
    runtime = process_rss()
    plan = plan_stage(model_shape(config, lora, trains), memory, trains, stage="finetune", batch=shape.batch,
                      tokens=shape.sequence(), dtype_bytes=torch.tensor([], dtype=dtype).element_size(),
                      lora_dropout=True, runtime=runtime, budget=0)
    model, _ = prepare_stage(build(config, dtype), trains, lora)
    model = prepare_memory(model, memory, trains)
    model.train()
    before = checksums(model)
    batch = synthetic_batch(shape)
    task = StageTask(name="finetune", model=model, memory=memory,
                     optimisation=Optimisation(lr=lr, batch_size=shape.batch, epochs=1, warmup=0.0, schedule="constant"),
                     plan=lambda epoch: [Item(0, "findings")] * (shape.batch * steps),
                     collate=lambda items: batch, loss=token_loss, stage_dir=stage_dir, config_json="{}\n")
    accelerator = make_accelerator(ComputeConfig(device="cpu", mixed_precision="no", threads=threads))
    reset_peak_rss()
    started = time.perf_counter()
    result = run_stage(task, accelerator, progress=False, stop_after=steps, resume=False)
    elapsed = time.perf_counter() - started
    measured = peak_rss()
    after = checksums(result.model)
    history = [r for r in result.history if r["kind"] == "train"]
    return {"shape": shape.__dict__, "base_dtype": str(dtype).replace("torch.", ""),
            "checkpointing": memory.gradient_checkpointing, "losses": [r["loss"] for r in history],
            "step_seconds": [r["seconds"] for r in history], "samples_per_s": shape.batch * len(history) / elapsed,
            "changed": sorted(n for n in before if before[n] != after[n]),
            "trainable": trainable_names(result.model), "peak_rss": measured, "plan_peak": plan.peak,
            "plan": {k: getattr(plan, k) for k in ("weights", "trainable", "gradients", "optimiser",
                                                    "activations_per_sample", "runtime")},
            "trainable_dtypes": sorted({str(p.dtype) for p in result.model.parameters() if p.requires_grad}),
            "frozen_dtypes": sorted({str(p.dtype) for p in result.model.parameters() if not p.requires_grad})}


def main(argv: list[str] | None = None) -> None:
    import tempfile

    from training.train.config import MemoryConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-layers", type=int, default=1)
    parser.add_argument("--vision-layers", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--report-tokens", type=int, default=24)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--base-dtype", choices=["fp32", "bf16", "fp16"], default="bf16")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    shape = Shape(text_layers=args.text_layers, vision_layers=args.vision_layers, image_size=args.image_size,
                  report_tokens=args.report_tokens, batch=args.batch)
    memory = MemoryConfig(base_dtype=args.base_dtype, gradient_checkpointing=args.checkpointing)
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run(shape, memory, steps=args.steps, lr=args.lr, stage_dir=Path(folder) / "stage",
                             threads=args.threads)))


if __name__ == "__main__":
    main()
