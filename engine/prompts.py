"""Prompt text and prompt token ids, shared by the engine and by training so both see the same tokens.

A prompt is tokenised on its own; the model's answer (section text, then a stop token) follows it. Each
`<image>` placeholder becomes the image token repeated once per image feature, the way transformers'
LLaVA processor expands it, so that image features replace exactly those positions: one placeholder per
image (one block per view, as MAIRA-2 prompts), or a single placeholder taking every image's block.

Bundles exported from a checkpoint with a chat template carry prompts already rendered by that template
(`PromptLayout.variants`, one per section, set of views and with/without indication); the engine picks
one and fills in `{indication}` and `{findings}`. Bundles without variants use the plain `Prompts`.
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer

from engine.bundle import (
    FINDINGS_PLACEHOLDER,
    IMAGE_PLACEHOLDER,
    INDICATION_PLACEHOLDER,
    SECTIONS,
    PromptLayout,
    Prompts,
)
from engine.errors import GenerationError

IMPRESSION_FROM_FINDINGS = "impression_from_findings"
PROMPT_KINDS = (*SECTIONS, IMPRESSION_FROM_FINDINGS)
# The engine cuts an indication to this many tokens so every prompt fits the positions checked at load.
MAX_INDICATION_TOKENS = 64
_SLOTS = re.compile(re.escape(FINDINGS_PLACEHOLDER) + "|" + re.escape(INDICATION_PLACEHOLDER))


def prompt_text(prompts: Prompts, kind: str, findings: str | None = None) -> str:
    """The plain prompt of `kind` ("findings", "impression", "impression_from_findings")."""
    _check_kind(kind)
    return fill_slots(getattr(prompts, kind), kind, findings=findings)


def layout_prompt_text(layout: PromptLayout, prompts: Prompts, kind: str, views: tuple[str, ...],
                       findings: str | None = None, indication: str | None = None) -> str:
    """The prompt for `kind` and the study's `views`: the rendered variant when the bundle has them
    (with the indication when one is given and the template takes one), else the plain `prompts`."""
    _check_kind(kind)
    if not layout.variants:
        return prompt_text(prompts, kind, findings)
    indication = " ".join((indication or "").split())
    wanted = bool(indication) and layout.takes_indication
    for variant in layout.variants:
        if variant.section == kind and tuple(variant.views) == tuple(views) and variant.indication == wanted:
            return fill_slots(variant.text, kind, findings=findings, indication=indication)
    have = sorted({"+".join(v.views) for v in layout.variants if v.section == kind})
    raise GenerationError(f"the model has no {kind} prompt for the views {'+'.join(views) or '(none)'} "
                          f"(it has {', '.join(have) or 'none'})")


def fill_slots(template: str, kind: str, *, findings: str | None = None, indication: str | None = None) -> str:
    """Replace `{findings}` and `{indication}` in one pass (the texts may hold braces or the other slot)."""
    if kind == IMPRESSION_FROM_FINDINGS and (not findings or not findings.strip()):
        raise GenerationError("impression from findings needs non-empty findings text")
    values = {FINDINGS_PLACEHOLDER: " ".join((findings or "").split()), INDICATION_PLACEHOLDER: indication or ""}
    return _SLOTS.sub(lambda match: values[match.group(0)], template)


def _check_kind(kind: str) -> None:
    if kind not in PROMPT_KINDS:
        raise GenerationError(f"unknown section {kind!r}; expected one of {', '.join(PROMPT_KINDS)}")


def prompt_ids(tokenizer: Tokenizer, text: str, image_token_id: int, image_tokens: int,
               num_images: int = 1) -> list[int]:
    """Token ids of `text`: with one `<image>` per image each becomes `image_tokens` image tokens; a single
    `<image>` takes the blocks of all `num_images` images."""
    if num_images < 1:
        raise GenerationError("a prompt needs at least one image")
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    placeholders = ids.count(image_token_id)
    if placeholders == 0:
        raise GenerationError(f"prompt {text!r} has no {IMAGE_PLACEHOLDER} token")
    if placeholders not in (1, num_images):
        raise GenerationError(f"the prompt has {placeholders} {IMAGE_PLACEHOLDER} placeholders for "
                              f"{num_images} images")
    per_placeholder = image_tokens * (num_images if placeholders == 1 else 1)
    expanded: list[int] = []
    for token in ids:
        expanded.extend([token] * per_placeholder if token == image_token_id else [token])
    return expanded


def target_ids(tokenizer: Tokenizer, text: str, eos_token_id: int) -> list[int]:
    """What training teaches the model to produce after a prompt: a space, the text, then `</s>`."""
    return tokenizer.encode(" " + " ".join(text.split()), add_special_tokens=False).ids + [eos_token_id]
