"""LLaVA models (CLIP vision tower, MLP projector, LLaMA decoder) built from size configs.

`build_llava` gives a randomly initialised `LlavaForConditionalGeneration` of a named or explicit size:
tests use `TINY`, the embedded phantom model its own size, the engine benchmark `BENCH_181M`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from training.modeling.tokenizer import IMAGE


class ModelSizeError(ValueError):
    """A size config that cannot build a model (e.g. image size not a multiple of the patch size)."""


@dataclass(frozen=True)
class VisionSize:
    image_size: int = 64
    patch_size: int = 16
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 64


@dataclass(frozen=True)
class TextSize:
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 2
    intermediate_size: int = 64
    max_positions: int = 512
    # At least the tokenizer's size; larger pads the embedding (benchmarks use a 32k vocabulary).
    vocab_size: int | None = None


@dataclass(frozen=True)
class LlavaSize:
    vision: VisionSize = field(default_factory=VisionSize)
    text: TextSize = field(default_factory=TextSize)

    @property
    def image_tokens(self) -> int:
        """Features per image: one per patch (the CLS feature is dropped, strategy "default")."""
        return (self.vision.image_size // self.vision.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LlavaSize:
        return cls(vision=VisionSize(**data.get("vision", {})), text=TextSize(**data.get("text", {})))


TINY = LlavaSize()
BENCH_181M = LlavaSize(
    vision=VisionSize(image_size=224, patch_size=16, hidden_size=384, num_layers=6, num_heads=6,
                      intermediate_size=1536),
    text=TextSize(hidden_size=1024, num_layers=12, num_heads=16, num_kv_heads=16, intermediate_size=2816,
                  max_positions=2048, vocab_size=32000),
)
# The embedded default model (training/configs/phantom-cxr.toml): 128 px, 64 image tokens, ~5M parameters,
# trained from scratch on phantoms in about an hour on 2 CPU cores.
PHANTOM_CXR = LlavaSize(
    vision=VisionSize(image_size=128, patch_size=16, hidden_size=128, num_layers=4, num_heads=4,
                      intermediate_size=512),
    text=TextSize(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=688,
                  max_positions=512),
)
NAMED_SIZES = {"tiny": TINY, "phantom-cxr": PHANTOM_CXR, "bench-181m": BENCH_181M}


def build_llava(size: LlavaSize, tokenizer: PreTrainedTokenizerFast, seed: int = 0,
                attn_implementation: str = "eager") -> LlavaForConditionalGeneration:
    """A randomly initialised LLaVA whose special token ids match `tokenizer`."""
    config = llava_config(size, tokenizer)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.config._attn_implementation = attn_implementation
    model.eval()
    return model


def llava_config(size: LlavaSize, tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    vision, text = size.vision, size.text
    if vision.image_size % vision.patch_size:
        raise ModelSizeError(f"image size {vision.image_size} is not a multiple of patch size {vision.patch_size}")
    vocab_size = text.vocab_size or len(tokenizer)
    if vocab_size < len(tokenizer):
        raise ModelSizeError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
    vision_config = CLIPVisionConfig(
        image_size=vision.image_size, patch_size=vision.patch_size, hidden_size=vision.hidden_size,
        num_hidden_layers=vision.num_layers, num_attention_heads=vision.num_heads,
        intermediate_size=vision.intermediate_size, projection_dim=vision.hidden_size,
    )
    text_config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=text.hidden_size, num_hidden_layers=text.num_layers,
        num_attention_heads=text.num_heads, num_key_value_heads=text.num_kv_heads,
        intermediate_size=text.intermediate_size, max_position_embeddings=text.max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision_config, text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=size.image_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
