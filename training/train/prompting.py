"""The prompts training feeds the model: the very text the exported bundle will run with.

A base checkpoint with a chat template (an HF llava release, or what `raddraft import` wrote) is prompted
through the export's own renderer (`training.export.layout.render_prompts`, which writes the bundle's
`prompting.variants`), and each sample's variant is picked by `engine.prompts.layout_prompt_text`, as the
engine picks it at draft time: by section, by the views the study's images fill, and with the indication
when the study has one and the template takes one. The prompt spec (instructions, system prompt, views,
view words, indication) is the checkpoint's `raddraft_prompts.json` when it has one (a model fine-tuned
here keeps its layout), else the recipe's `[prompting]` with `data.views` / `data.combine`; training writes
it into the merged checkpoint, so the export renders the same prompts.

Models without a chat template (RadDraft's own, built from scratch) keep the recipe's plain `[prompts]`.

The prior (`SampleEncoder.prior_text`) reaches a rendered prompt as it reaches the engine's: the template
leaves no `{prior}` slot, and `layout_prompt_text` places the block by `engine.prompts.prior_slotted` (in the
user turn, before the indication or the instruction), so a model trained here sees its prior where it will
see it when drafting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from engine.bundle import PromptLayout, Prompts
from engine.prompts import MAX_INDICATION_TOKENS, layout_prompt_text
from training.train.vqa import vqa_prompt

# VQA questions go where a section's instruction goes: the template is rendered once around this slot.
QUESTION_SLOT = "{question}"


@dataclass(frozen=True)
class TrainingPrompts:
    """prompts: the plain prompts (or the rendered full-view ones). layout: the rendered variants (empty:
    no chat template). spec: the `PromptSpec` they were rendered from. questions: the variants rendered
    with `QUESTION_SLOT` as the findings instruction, for VQA samples."""

    prompts: Prompts
    layout: PromptLayout = field(default_factory=PromptLayout)
    spec: object | None = None  # training.export.layout.PromptSpec
    questions: PromptLayout = field(default_factory=PromptLayout)

    @property
    def templated(self) -> bool:
        return bool(self.layout.variants)

    def default_views(self, num_images: int) -> tuple[str, ...]:
        views = tuple(self.spec.views) if self.spec is not None else ("frontal", "lateral")
        return views[:max(1, num_images)]

    def text(self, kind: str, views: tuple[str, ...], findings: str | None = None,
             indication: str | None = None, prior: str = "") -> str:
        """prior: the text of the `{prior}` slot (`engine.prompts.prior_block`), placed in a rendered variant
        by `engine.prompts.prior_slotted`."""
        return layout_prompt_text(self.layout, self.prompts, kind, views, findings, indication, prior)

    def question(self, question: str, views: tuple[str, ...]) -> str:
        if not self.templated:
            return vqa_prompt(question)
        return layout_prompt_text(self.questions, self.prompts, "findings", views).replace(QUESTION_SLOT, question)

    def recorded(self) -> dict:
        """For the model card: where the prompts came from."""
        if not self.templated:
            return {"source": "the recipe's plain prompts"}
        return {"source": f"the checkpoint's chat template ({self.layout.chat_template})",
                "views": list(self.spec.views), "indication": self.spec.indication}


def plain_prompts(prompts: Prompts) -> TrainingPrompts:
    return TrainingPrompts(prompts)


def prompt_spec(base: Path, views: tuple[str, ...], combine: str, indication: str, system: str):
    """The checkpoint's `raddraft_prompts.json`, else the recipe's views and prompting."""
    from training.export.layout import PromptSpec, read_prompt_spec

    spec = read_prompt_spec(base)
    if spec is not None:
        return spec
    spec = PromptSpec(views=tuple(views), combine=combine, indication=indication or None, system=system or None)
    spec.check("the recipe's [prompting] and data.views")
    return spec


def checkpoint_prompts(base: Path, spec, fallback: Prompts) -> TrainingPrompts:
    """The chat template of `base` rendered for `spec`; the plain `fallback` when it has no template."""
    from training.export.layout import render_prompts

    tokenizer_file = Path(base) / "tokenizer.json"
    rendered = render_prompts(base, spec, tokenizer_file)
    if rendered is None:
        return TrainingPrompts(fallback)
    prompts, layout = rendered
    question_spec = dataclasses.replace(spec, instructions={**spec.instructions, "findings": QUESTION_SLOT},
                                        indication=None)
    _, questions = render_prompts(base, question_spec, tokenizer_file)
    return TrainingPrompts(prompts, layout, spec, questions)


def limit_indication(tokenizer, text: str | None) -> str | None:
    """At most MAX_INDICATION_TOKENS tokens of `text`, as the engine cuts it (`DraftModel.limit_indication`)."""
    text = " ".join((text or "").split())
    if not text:
        return None
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if len(ids) <= MAX_INDICATION_TOKENS:
        return text
    return tokenizer.decode(ids[:MAX_INDICATION_TOKENS], skip_special_tokens=True).strip() or None
