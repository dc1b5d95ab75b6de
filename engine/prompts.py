"""Prompt text and prompt token ids, shared by the engine and by training so both see the same tokens.

A prompt is tokenised on its own; the model's answer (section text, then `</s>`) follows it. Each
`<image>` placeholder becomes `image_tokens` copies of the image token per image, the way transformers'
LLaVA processor expands it, so that image features replace exactly those positions.
"""

from __future__ import annotations

from tokenizers import Tokenizer

from engine.bundle import FINDINGS_PLACEHOLDER, IMAGE_PLACEHOLDER, SECTIONS, Prompts
from engine.errors import GenerationError

IMPRESSION_FROM_FINDINGS = "impression_from_findings"
PROMPT_KINDS = (*SECTIONS, IMPRESSION_FROM_FINDINGS)


def prompt_text(prompts: Prompts, kind: str, findings: str | None = None) -> str:
    """The prompt of `kind` ("findings", "impression", "impression_from_findings")."""
    if kind not in PROMPT_KINDS:
        raise GenerationError(f"unknown section {kind!r}; expected one of {', '.join(PROMPT_KINDS)}")
    template = getattr(prompts, kind)
    if kind == IMPRESSION_FROM_FINDINGS:
        if not findings or not findings.strip():
            raise GenerationError("impression from findings needs non-empty findings text")
        # str.replace, not format: findings text may hold braces.
        return template.replace(FINDINGS_PLACEHOLDER, " ".join(findings.split()))
    return template


def prompt_ids(tokenizer: Tokenizer, text: str, image_token_id: int, image_tokens: int,
               num_images: int = 1) -> list[int]:
    """Token ids of `text` with each `<image>` expanded to `image_tokens * num_images` image tokens."""
    if num_images < 1:
        raise GenerationError("a prompt needs at least one image")
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if image_token_id not in ids:
        raise GenerationError(f"prompt {text!r} has no {IMAGE_PLACEHOLDER} token")
    expanded: list[int] = []
    for token in ids:
        expanded.extend([token] * (image_tokens * num_images) if token == image_token_id else [token])
    return expanded


def target_ids(tokenizer: Tokenizer, text: str, eos_token_id: int) -> list[int]:
    """What training teaches the model to produce after a prompt: a space, the text, then `</s>`."""
    return tokenizer.encode(" " + " ".join(text.split()), add_special_tokens=False).ids + [eos_token_id]
