"""Prompt text and prompt token ids, shared by the engine and by training so both see the same tokens.

A prompt is tokenised on its own; the model's answer (section text, then a stop token) follows it. Each
`<image>` placeholder becomes the image token repeated once per image feature, the way transformers'
LLaVA processor expands it, so that image features replace exactly those positions: one placeholder per
image (one block per view, as MAIRA-2 prompts), or a single placeholder taking every image's block.

Bundles exported from a checkpoint with a chat template carry prompts already rendered by that template
(`PromptLayout.variants`, one per section, set of views and with/without indication); the engine picks
one and fills in `{indication}` and `{findings}`. Bundles without variants use the plain `Prompts`.

A bundle that takes priors (`BundleManifest.prior`) has a `{prior}` slot in each prompt, before the section
words, so the prior (its date, its report and, for "report+image", its frontal image as a further `<image>`
block) lies in the prefix that Findings and Impression share; without a prior the slot says there is none.
A prompt rendered by a chat template has no such slot of its own: `prior_slotted` places it in the user turn,
before the indication or else the instruction (after the study's images, as MAIRA-2 puts the prior image
and report), the one rule by which the engine drafts and training (training/train/prompting.py) trains.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from engine.bundle import (
    FINDINGS_PLACEHOLDER,
    IMAGE_PLACEHOLDER,
    INDICATION_PLACEHOLDER,
    PRIOR_DATE_PLACEHOLDER,
    PRIOR_PLACEHOLDER,
    PRIOR_REPORT_PLACEHOLDER,
    SECTIONS,
    PriorPrompts,
    PromptLayout,
    Prompts,
    PromptVariant,
)
from engine.errors import GenerationError

log = logging.getLogger(__name__)

IMPRESSION_FROM_FINDINGS = "impression_from_findings"
PROMPT_KINDS = (*SECTIONS, IMPRESSION_FROM_FINDINGS)
# The engine cuts an indication to this many tokens so every prompt fits the positions checked at load.
MAX_INDICATION_TOKENS = 64
# ... and a prior's report (findings, then impression) to this many.
MAX_PRIOR_REPORT_TOKENS = 80
_SLOTS = re.compile("|".join(re.escape(slot) for slot in (FINDINGS_PLACEHOLDER, INDICATION_PLACEHOLDER,
                                                           PRIOR_PLACEHOLDER)))
_PRIOR_SLOTS = re.compile(re.escape(PRIOR_DATE_PLACEHOLDER) + "|" + re.escape(PRIOR_REPORT_PLACEHOLDER))


@dataclass(frozen=True)
class PriorInput:
    """What the engine takes of a prior study: its date (YYYY-MM-DD), its report and its images (the
    frontal one is used). Built from `dicom_node.priors.PriorStudy` by `prior_input`, or by hand."""

    date: str
    findings: str = ""
    impression: str = ""
    image_paths: tuple[Path, ...] = ()
    study_uid: str = ""

    @property
    def report(self) -> str:
        return " ".join(" ".join(part.split()) for part in (self.findings, self.impression) if part.strip())

    def identity(self) -> dict[str, str]:
        return {"study_uid": self.study_uid, "date": self.date}


def iso_date(value: str) -> str:
    """A DICOM DA (YYYYMMDD) as YYYY-MM-DD; a date already written so is kept."""
    text = "".join(str(value or "").split())
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def prior_input(prior, path_of: Callable[[object], Path]) -> PriorInput:
    """A `dicom_node.priors.PriorStudy`-like object (study_uid, study_date, findings, impression, instances
    with the frontal first) as the engine's input; `path_of` maps an instance row to its file (the store's
    `path_of`)."""
    return PriorInput(date=iso_date(prior.study_date), findings=prior.findings or "",
                      impression=prior.impression or "",
                      image_paths=tuple(Path(path_of(row)) for row in prior.instances),
                      study_uid=str(prior.study_uid))


def newest_prior_input(index, study_uid: str, path_of: Callable[[object], Path]) -> PriorInput | None:
    """The study's most recent retrieved prior (`dicom_node.priors.priors_of` on the store's `index`) as the
    engine takes it, or None: what every draft of the study is given, queued or on demand. A prior that
    cannot be read is logged and left out: the study is drafted without one, never held up."""
    from dicom_node.priors import priors_of

    try:
        priors = priors_of(index, study_uid)
    except Exception:
        log.exception("the priors of study %s cannot be read; drafting without a prior", study_uid)
        return None
    return prior_input(priors[0], path_of) if priors else None


def impression_kind(findings: str | None) -> str:
    """The prompt of an impression drafted from `findings`: from them when there are any, else from the
    image (an empty findings prompt would teach nothing and fill nothing)."""
    return IMPRESSION_FROM_FINDINGS if findings and findings.strip() else "impression"


def cut_to_tokens(tokenizer: Tokenizer, text: str, limit: int) -> str:
    """At most `limit` tokens of `text` (whitespace collapsed)."""
    text = " ".join((text or "").split())
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if len(ids) <= limit:
        return text
    return tokenizer.decode(ids[:limit], skip_special_tokens=True).strip()


def prior_block(words: PriorPrompts, mode: str, prior: PriorInput | None, report: str | None = None) -> str:
    """The text at the `{prior}` slot: the prior's words for `mode` filled with its date and `report`
    (default: its whole report), or the words saying there is none. Empty for a bundle taking no prior."""
    if mode == "none":
        return ""
    if prior is None:
        return words.none
    template = words.with_image if mode == "report+image" else words.report_only
    values = {PRIOR_DATE_PLACEHOLDER: prior.date, PRIOR_REPORT_PLACEHOLDER: prior.report if report is None else report}
    return _PRIOR_SLOTS.sub(lambda match: values[match.group(0)], template)


def prompt_text(prompts: Prompts, kind: str, findings: str | None = None, prior: str = "") -> str:
    """The plain prompt of `kind` ("findings", "impression", "impression_from_findings"); `prior`: the
    text of its `{prior}` slot (`prior_block`)."""
    _check_kind(kind)
    return fill_slots(getattr(prompts, kind), kind, findings=findings, prior=prior)


def layout_prompt_text(layout: PromptLayout, prompts: Prompts, kind: str, views: tuple[str, ...],
                       findings: str | None = None, indication: str | None = None, prior: str = "") -> str:
    """The prompt for `kind` and the study's `views`: the rendered variant when the bundle has them
    (with the indication when one is given and the template takes one), else the plain `prompts`.
    prior: the text of the `{prior}` slot (`prior_block`)."""
    _check_kind(kind)
    if not layout.variants:
        return prompt_text(prompts, kind, findings, prior)
    indication = " ".join((indication or "").split())
    wanted = bool(indication) and layout.takes_indication
    for variant in layout.variants:
        if variant.section == kind and tuple(variant.views) == tuple(views) and variant.indication == wanted:
            text = prior_slotted(layout, variant) if prior else variant.text
            return fill_slots(text, kind, findings=findings, indication=indication, prior=prior)
    have = sorted({"+".join(v.views) for v in layout.variants if v.section == kind})
    raise GenerationError(f"the model has no {kind} prompt for the views {'+'.join(views) or '(none)'} "
                          f"(it has {', '.join(have) or 'none'})")


def prior_slotted(layout: PromptLayout, variant: PromptVariant) -> str:
    """The rendered `variant` with its `{prior}` slot: its own when the template put one there, else at the
    start of the indication words (when the variant has them) or of the section's instruction, the last
    place each occurs (the user turn comes last), but never before the study's last `<image>` (the prior's
    image block follows the study's, as its features do): then right after that `<image>` and its line
    break. GenerationError when the text has none of these."""
    text = variant.text
    if PRIOR_PLACEHOLDER in text:
        return text
    at = _prior_position(layout, variant)
    if at < 0:
        raise GenerationError(f"the model's {variant.section} prompt for {'+'.join(variant.views)} has no place "
                              f"for the prior (no instruction or {IMAGE_PLACEHOLDER} in it)")
    return text[:at] + PRIOR_PLACEHOLDER + text[at:]


def _prior_position(layout: PromptLayout, variant: PromptVariant) -> int:
    text = variant.text
    anchors = [layout.indication if variant.indication else None, layout.instructions.get(variant.section)]
    at = next((text.rindex(anchor) for anchor in anchors if anchor and anchor in text), -1)
    image = text.rfind(IMAGE_PLACEHOLDER)
    if image < 0:
        return at
    after = image + len(IMAGE_PLACEHOLDER)
    return max(at, after + 1 if text.startswith("\n", after) else after)


def fill_slots(template: str, kind: str, *, findings: str | None = None, indication: str | None = None,
               prior: str = "") -> str:
    """Replace `{findings}`, `{indication}` and `{prior}` in one pass (the texts may hold braces or another
    slot)."""
    if kind == IMPRESSION_FROM_FINDINGS and (not findings or not findings.strip()):
        raise GenerationError("impression from findings needs non-empty findings text")
    values = {FINDINGS_PLACEHOLDER: " ".join((findings or "").split()), INDICATION_PLACEHOLDER: indication or "",
              PRIOR_PLACEHOLDER: prior}
    return _SLOTS.sub(lambda match: values[match.group(0)], template)


def _check_kind(kind: str) -> None:
    if kind not in PROMPT_KINDS:
        raise GenerationError(f"unknown section {kind!r}; expected one of {', '.join(PROMPT_KINDS)}")


def prompt_ids(tokenizer: Tokenizer, text: str, image_token_id: int, image_tokens: int,
               num_images: int = 1, prior_images: int = 0) -> list[int]:
    """Token ids of `text`: with one `<image>` per image each becomes `image_tokens` image tokens; a single
    `<image>` takes the blocks of all `num_images` images. prior_images: 1 when the last `<image>` is the
    prior's frontal image (its features follow the study's)."""
    if num_images < 1:
        raise GenerationError("a prompt needs at least one image")
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    placeholders = ids.count(image_token_id) - prior_images
    if placeholders < 1:
        raise GenerationError(f"prompt {text!r} has no {IMAGE_PLACEHOLDER} token for the study's images")
    if placeholders not in (1, num_images):
        raise GenerationError(f"the prompt has {placeholders} {IMAGE_PLACEHOLDER} placeholders for "
                              f"{num_images} images")
    blocks = [image_tokens * (num_images if placeholders == 1 else 1)] * placeholders + [image_tokens] * prior_images
    expanded: list[int] = []
    for token in ids:
        expanded.extend([token] * blocks.pop(0) if token == image_token_id else [token])
    return expanded


def target_ids(tokenizer: Tokenizer, text: str, eos_token_id: int) -> list[int]:
    """What training teaches the model to produce after a prompt: a space, the text, then `</s>`."""
    return tokenizer.encode(" " + " ".join(text.split()), add_special_tokens=False).ids + [eos_token_id]
