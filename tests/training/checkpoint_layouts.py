"""Miniature checkpoints in the public LLaVA-family layouts (real widths cut down, random weights).

Each is saved the way the Hub ships it: `LlavaForConditionalGeneration.save_pretrained` + a
`LlavaProcessor` (tokenizer files, `preprocessor_config.json`, `chat_template.json`) + a
`generation_config.json` with the model's EOS list. Tokenizers are real formats trained offline:
a SentencePiece BPE with byte fallback converted to `LlamaTokenizerFast` (Llama/Mistral), and a
byte-level BPE with ChatML special tokens (Qwen2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tiny_llava import REPORT_TEXTS

IMAGE = "<image>"
EXTRA_TEXTS = [
    "Write the findings section of the radiology report for this chest X-ray.",
    "Write the impression section of the radiology report for this chest X-ray.",
    "USER: ASSISTANT: [INST] [/INST] Indication: Cough. Fever. Shortness of breath.",
    "Current frontal image Current lateral image A chat between a curious user and an artificial assistant.",
]

# The templates below are the ones the public checkpoints ship (llava-hf/llava-1.5-7b-hf,
# llava-hf/llava-v1.6-mistral-7b-hf, llava-hf/llava-interleave-qwen-0.5b-hf) and a Vicuna v1 template
# taking plain string content (as LLaVA-Rad and MAIRA-2 prompt).
LLAVA_15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\n' + "
    "message['content'][0]['text'] + '\n<</SYS>>\n\n' }}{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor%}{{' [/INST]' }}{% elif "
    "message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '<\\s> '}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}"
    "{% endfor %}{# Render all text next #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{{ content['text'] }}{% endfor %}{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VICUNA_V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
                    "gives helpful, detailed, and polite answers to the user's questions.")
VICUNA_V1_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set loop_messages = "
    "messages[1:] %}{% else %}{% set system = '" + VICUNA_V1_SYSTEM.replace("'", "\\'") + "' %}"
    "{% set loop_messages = messages %}{% endif %}{{ system }}{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{{ ' USER: ' + message['content'] }}{% else %}{{ ' ASSISTANT: ' + "
    "message['content'] + eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ ' ASSISTANT:' }}"
    "{% endif %}"
)


@dataclass(frozen=True)
class Layout:
    name: str
    decoder: str  # llama, mistral, qwen2
    vision: str  # clip, siglip, dinov2
    tokenizer: str  # sentencepiece, chatml
    template: str
    strategy: str = "default"
    feature_layer: int | list[int] = -2
    kv_heads: tuple[int, int] = (4, 4)  # (attention heads, key/value heads)
    sliding_window: int | None = None
    processor: dict = field(default_factory=dict)  # preprocessor_config.json overrides


def sentencepiece_tokenizer(folder: Path, with_image: bool = True):
    """A Llama-format SentencePiece BPE with byte fallback, as `LlamaTokenizerFast` with `<image>` added
    (`with_image=False`: as the original LLaVA releases ship it, without `<image>` and `<pad>`)."""
    import sentencepiece as spm
    from transformers import LlamaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join((REPORT_TEXTS + EXTRA_TEXTS) * 8) + "\n")
    prefix = folder / "spm"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), model_type="bpe", vocab_size=400, byte_fallback=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        minloglevel=2, hard_vocab_limit=False)
    tokenizer = LlamaTokenizerFast(vocab_file=str(prefix) + ".model", legacy=False, add_bos_token=True,
                                   add_eos_token=False, from_slow=True)
    if with_image:
        tokenizer.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": [IMAGE]})
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    return tokenizer


def chatml_tokenizer():
    """A byte-level BPE with Qwen2's ChatML special tokens (no BOS; `<|endoftext|>` pads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, min_frequency=1, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator((REPORT_TEXTS + EXTRA_TEXTS) * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>", IMAGE],
                                   model_input_names=["input_ids", "attention_mask"])


def save_checkpoint(layout: Layout, out_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    out_dir = Path(out_dir)
    tokenizer = sentencepiece_tokenizer(out_dir.parent / f"{out_dir.name}-spm") if layout.tokenizer == "sentencepiece" \
        else chatml_tokenizer()
    vision_config, image_processor, extra_tokens = _vision(layout)
    text_config = _text(layout, tokenizer)
    config = LlavaConfig(vision_config=vision_config, text_config=text_config,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
                         vision_feature_select_strategy=layout.strategy, vision_feature_layer=layout.feature_layer,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(out_dir)
    stops = [tokenizer.eos_token_id] if layout.tokenizer == "sentencepiece" else \
        [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    GenerationConfig(bos_token_id=text_config.bos_token_id, eos_token_id=stops if len(stops) > 1 else stops[0],
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(out_dir)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=vision_config.patch_size,
                               vision_feature_select_strategy=layout.strategy,
                               num_additional_image_tokens=extra_tokens, chat_template=layout.template)
    processor.save_pretrained(out_dir)
    template_file = out_dir / "chat_template.json"
    if not template_file.exists():  # newer transformers write chat_template.jinja; the Hub layout has both
        template_file.write_text(json.dumps({"chat_template": layout.template}))
    return out_dir


def _vision(layout: Layout):
    from transformers import (
        BitImageProcessor,
        CLIPImageProcessor,
        CLIPVisionConfig,
        Dinov2Config,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    if layout.vision == "clip":
        # CLIP ViT-L/14-336 cut down: 336 -> 56 px, patch 14 (16 patches), CLIP's mean/std, resize + centre crop
        config = CLIPVisionConfig(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=3,
                                  num_attention_heads=2, intermediate_size=64, projection_dim=32)
        processor = CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                                       **layout.processor)
        return config, processor, 1
    if layout.vision == "siglip":
        # SigLIP-so400m/384 cut down: stretch resize to 48 px, mean/std 0.5, no CLS token
        config = SiglipVisionConfig(image_size=48, patch_size=16, hidden_size=32, num_hidden_layers=3,
                                    num_attention_heads=2, intermediate_size=64)
        processor = SiglipImageProcessor(size={"height": 48, "width": 48}, **layout.processor)
        return config, processor, 0
    # RAD-DINO (Dinov2, 518 px) cut down: 56 px, patch 14, ImageNet mean/std, resize + centre crop
    config = Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                          mlp_ratio=2)
    processor = BitImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                                  image_mean=[0.5307, 0.5307, 0.5307], image_std=[0.2583, 0.2583, 0.2583],
                                  do_convert_rgb=True, **layout.processor)
    return config, processor, 1


def _text(layout: Layout, tokenizer):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    heads, kv_heads = layout.kv_heads
    common = {"vocab_size": len(tokenizer), "hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 1024,
              "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    if layout.decoder == "mistral":
        return MistralConfig(bos_token_id=tokenizer.bos_token_id, sliding_window=layout.sliding_window,
                             head_dim=128 // heads, **common)
    if layout.decoder == "qwen2":
        # Qwen2: q/k/v biases are built in; tied embeddings as the small Qwen2 models ship; no BOS
        return Qwen2Config(bos_token_id=None, tie_word_embeddings=True, **common)
    return LlamaConfig(bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False, **common)


LLAVA_15 = Layout("llava-1.5", "llama", "clip", "sentencepiece", LLAVA_15_TEMPLATE)
MISTRAL = Layout("llava-mistral", "mistral", "clip", "sentencepiece", MISTRAL_TEMPLATE, kv_heads=(32, 8),
                 sliding_window=24)
QWEN2_SIGLIP = Layout("llava-interleave-qwen", "qwen2", "siglip", "chatml", CHATML_TEMPLATE, strategy="full",
                      feature_layer=-1, kv_heads=(4, 2))
DINOV2_TWO_VIEW = Layout("maira-2-like", "llama", "dinov2", "sentencepiece", VICUNA_V1_TEMPLATE,
                         feature_layer=[-2, -1])
