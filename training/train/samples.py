"""Training samples: which (study, task) pairs each epoch holds, their token ids, and batches of tensors.

Prompts and tokenisation come from `engine.prompts`, as at run time: the prompt (with `image_tokens`
image tokens per image) is followed by the target (" text</s>"). A checkpoint with a chat template is
prompted with its rendered variants (`training.train.prompting`): per section, views and indication. The loss sees only the target: labels
are -100 on the prompt, the image tokens and the padding.

An epoch's plan depends only on (seed, epoch), so a resumed run sees the same samples in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.bundle import PRIOR_PLACEHOLDER, Prompts
from engine.prompts import (
    IMPRESSION_FROM_FINDINGS,
    MAX_PRIOR_REPORT_TOKENS,
    cut_to_tokens,
    prior_block,
    prompt_ids,
    target_ids,
)
from training.train.config import PriorConfig, TaskMix
from training.train.edited_findings import edited_report
from training.train.prompting import TrainingPrompts, limit_indication
from training.train.studies import PixelStore, Study
from training.train.vqa import draw_question

MIN_TARGET_TOKENS = 8  # a prompt leaving fewer positions than this for its target teaches nothing

IGNORE = -100
VQA = "vqa"
TASKS = ("findings", "impression", IMPRESSION_FROM_FINDINGS)


class SampleError(ValueError):
    """A sample cannot be built (a sequence longer than the model's positions, an empty batch)."""


@dataclass(frozen=True)
class Item:
    """One sample of an epoch: study index (its images), task, a seed that picks its VQA question (or, for an
    impression from findings, the edit of those findings; 0: unedited), and for an impression from findings,
    the study whose findings and impression are the text (-1: this one)."""

    study: int
    kind: str
    variant: int = 0
    text_from: int = -1


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


class SampleEncoder:
    """Token ids of (prompt, target) pairs through `engine.prompts`."""

    def __init__(self, tokenizer, prompts: Prompts, image_token_id: int, image_tokens: int, eos_id: int,
                 max_positions: int, prompting: TrainingPrompts | None = None,
                 prior: PriorConfig | None = None, impression_from: str = "image") -> None:
        self.tokenizer = tokenizer  # a `tokenizers.Tokenizer`
        self.prompts = prompts
        self.prompting = prompting or TrainingPrompts(prompts)
        self.image_token_id = image_token_id
        self.image_tokens = image_tokens
        self.eos_id = eos_id
        self.max_positions = max_positions
        self.prior = prior or PriorConfig()
        self.impression_from = impression_from  # "findings": the impression is drafted from drafted findings

    @property
    def findings_read_prior(self) -> bool:
        """Whether the findings prompt carries the prior (a rendered template always places it)."""
        return self.prompting.templated or PRIOR_PLACEHOLDER in self.prompting.prompts.findings

    def findings_target(self, study: Study) -> str:
        """What the findings prompt teaches: findings written without the prior when the prompt has none
        (and the manifest has them), else the report's findings."""
        if not self.findings_read_prior and study.findings_without_prior:
            return study.findings_without_prior
        return study.findings_text

    def given_findings(self, study: Study) -> str:
        """The findings an impression from findings is given: for a model that drafts its impression from
        its own findings, the findings it drafts (`findings_target`), else the report's."""
        return self.findings_target(study) if self.impression_from == "findings" else study.findings_text

    def can_edit(self, study: Study) -> bool:
        """Whether an impression from edited findings can be made of `study`: it has structured findings, and
        no prior reaches its prompt (an edited text states no comparison, which the prior would call for)."""
        return bool(study.findings) and (self.prior.intake == "none" or study.prior is None)

    def prompt(self, text: str, num_images: int, prior_images: int = 0) -> list[int]:
        return prompt_ids(self.tokenizer, text, self.image_token_id, self.image_tokens, num_images, prior_images)

    def takes_prior_image(self, study: Study | None) -> bool:
        return self.prior.intake == "report+image" and study is not None and study.prior is not None

    def prior_text(self, prior_of: Study | None, prior_images: int) -> str:
        """The `{prior}` slot as the engine fills it (`engine.runtime.DraftModel.prepare_prior`): the prior of
        `prior_of` with its report cut alike; "none" without one (or, for report+image, without its image)."""
        mode = self.prior.intake
        prior = prior_of.prior if prior_of is not None else None
        if mode == "report+image" and not prior_images:
            prior = None
        if prior is None:
            return prior_block(self.prior.words, mode, None)
        return prior_block(self.prior.words, mode, prior,
                           cut_to_tokens(self.tokenizer, prior.report, MAX_PRIOR_REPORT_TOKENS))

    def section_text(self, kind: str, study: Study, views: tuple[str, ...], findings: str | None = None,
                     prior_of: Study | None = None, prior_images: int = 0) -> str:
        """The prompt of section `kind` for `study`, with its indication when the template takes one and the
        prior of `prior_of` (default: `study`) when the model takes priors."""
        indication = limit_indication(self.tokenizer, study.indication)
        return self.prompting.text(kind, views, findings, indication,
                                   self.prior_text(prior_of or study, prior_images))

    def section_prompt(self, kind: str, study: Study, num_images: int, views: tuple[str, ...] | None = None,
                       prior_images: int = 0) -> list[int]:
        """Token ids of the section prompt the engine would build for this study (num_images: its own)."""
        views = views or self.prompting.default_views(num_images)
        text = self.section_text(kind, study, views, prior_images=prior_images)
        return self.prompt(text, num_images, prior_images)

    def pair(self, prompt: str, target: str, num_images: int, prior_images: int = 0) -> Encoded:
        """The prompt whole and as much of the target as the model's positions leave room for: a long report
        (findings given in the prompt, a prior) teaches its start and not its end, rather than stopping the
        run. A prompt that leaves no room at all is an error: nothing of it could be learned."""
        ids = self.prompt(prompt, num_images, prior_images)
        target_tokens = target_ids(self.tokenizer, target, self.eos_id)
        room = self.max_positions - len(ids)
        if room < MIN_TARGET_TOKENS:
            raise SampleError(f"a prompt of {len(ids)} tokens leaves fewer than {MIN_TARGET_TOKENS} of the model's "
                              f"{self.max_positions} positions for the text to learn")
        target_tokens = target_tokens[:room]
        return Encoded(ids + target_tokens, [IGNORE] * len(ids) + target_tokens)

    def encode(self, item: Item, study: Study, num_images: int, views: tuple[str, ...] | None = None,
               text_study: Study | None = None, prior_images: int = 0) -> Encoded:
        """views: the views the study's images fill (default: the first `num_images` of the prompt's).
        text_study: where an impression from findings takes its findings, its prior and its target (default:
        `study`): another study's comparison statements belong with that study's prior.
        prior_images: the prior frontal images that follow the study's own (1 for report+image with a prior)."""
        views = views or self.prompting.default_views(num_images)
        if item.kind == VQA:
            question, answer = draw_question(study.findings, np.random.default_rng(item.variant))
            return self.pair(self.prompting.question(question, views), answer, num_images)
        if item.kind == "findings":
            text = self.section_text("findings", study, views, prior_images=prior_images)
            return self.pair(text, self.findings_target(study), num_images, prior_images)
        if item.kind == "impression":
            text = self.section_text("impression", study, views, prior_images=prior_images)
            return self.pair(text, study.impression_text, num_images, prior_images)
        if item.kind == IMPRESSION_FROM_FINDINGS:
            source = text_study or study
            findings, impression = self.given_findings(source), source.impression_text
            if item.variant and self.can_edit(source):
                findings, impression = edited_report(source.findings, item.variant)
            text = self.section_text(IMPRESSION_FROM_FINDINGS, study, views, findings, prior_of=source,
                                     prior_images=prior_images)
            return self.pair(text, impression, num_images, prior_images)
        raise SampleError(f"unknown sample kind {item.kind!r}")


def _repeat(rng: np.random.Generator, share: float) -> int:
    """`share` = 1.7 gives 1 copy plus a second one 70% of the time."""
    whole = int(share)
    return whole + int(rng.random() < share - whole)


def plan_epoch(weights: Sequence[float], tasks: TaskMix | None, vqa_fraction: float, seed: int,
               epoch: int, vqa_eligible: Sequence[bool] | None = None) -> list[Item]:
    """The shuffled samples of one epoch over studies 0..len(weights)-1.

    weights: copies of each study per epoch (its source's mix weight; 0 leaves it out). tasks: report
    tasks per study (None: one `findings`-less item per study, for the pretraining stages, kind "study").
    vqa_fraction: share of the epoch's samples that are VQA questions about the chosen studies.
    vqa_eligible: which studies can be asked about (VQA answers come from structured findings, which a
    site's signed reports do not have); None: all.
    """
    rng = np.random.default_rng([seed, epoch])
    chosen = [i for i, w in enumerate(weights) for _ in range(_repeat(rng, w))]
    if tasks is None:
        items = [Item(i, "study") for i in chosen]
    else:
        shares = {"findings": tasks.findings, "impression": tasks.impression,
                  IMPRESSION_FROM_FINDINGS: tasks.impression_from_findings}
        items = [Item(i, kind) for i in chosen for kind in TASKS for _ in range(_repeat(rng, shares[kind]))]
        if tasks.impression_from_other_findings > 0 and len(set(chosen)) > 1:  # (no draws otherwise: old plans stay)
            items += _from_other_findings(rng, chosen, tasks.impression_from_other_findings)
        if tasks.impression_from_edited_findings > 0:
            items += _from_edited_findings(rng, chosen, tasks.impression_from_edited_findings)
    askable = chosen if vqa_eligible is None else [i for i in chosen if vqa_eligible[i]]
    if vqa_fraction > 0 and askable:
        count = round(len(items) * vqa_fraction / (1 - vqa_fraction))
        picks = rng.choice(len(askable), size=count)
        items += [Item(askable[int(p)], VQA, int(rng.integers(2**31))) for p in picks]
    order = rng.permutation(len(items))
    return [items[int(i)] for i in order]


def _from_other_findings(rng: np.random.Generator, chosen: Sequence[int], share: float) -> list[Item]:
    """Impressions from findings whose text comes from another study than the images."""
    items = []
    for i in chosen:
        for _ in range(_repeat(rng, share)):
            other = i
            while other == i:
                other = chosen[int(rng.integers(len(chosen)))]
            items.append(Item(i, IMPRESSION_FROM_FINDINGS, text_from=other))
    return items


def _from_edited_findings(rng: np.random.Generator, chosen: Sequence[int], share: float) -> list[Item]:
    """Impressions from edited findings (`training.train.edited_findings`): of this study or another, with a
    seed (`variant`, never 0) that picks the edit."""
    items = []
    for i in chosen:
        for _ in range(_repeat(rng, share)):
            source = i if rng.random() < 0.5 else chosen[int(rng.integers(len(chosen)))]
            items.append(Item(i, IMPRESSION_FROM_FINDINGS, int(rng.integers(1, 2**31)), text_from=source))
    return items


def global_batches(items: Sequence[Item], batch_size: int) -> list[list[Item]]:
    """Batches of `batch_size` items; the last partial batch is dropped (unless it is the only one)."""
    if not items:
        raise SampleError("an epoch without samples: check the data sources, their weights and splits")
    if len(items) < batch_size:
        return [list(items)]
    return [list(items[i:i + batch_size]) for i in range(0, len(items) - batch_size + 1, batch_size)]


def shard(batch: Sequence[Item], rank: int, world: int) -> list[Item]:
    """This process's part of a global batch (contiguous, equal parts; the global batch is a multiple)."""
    size = len(batch) // world
    if size == 0:
        raise SampleError(f"a batch of {len(batch)} samples cannot be split over {world} processes")
    return list(batch[rank * size:(rank + 1) * size])


def pad_batch(encoded: Sequence[Encoded], pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded input_ids, attention_mask and labels (-100 on padding)."""
    if not encoded:
        raise SampleError("an empty batch")
    length = max(len(e.input_ids) for e in encoded)
    input_ids = np.full((len(encoded), length), pad_id, dtype=np.int64)
    labels = np.full((len(encoded), length), IGNORE, dtype=np.int64)
    mask = np.zeros((len(encoded), length), dtype=np.int64)
    for row, e in enumerate(encoded):
        input_ids[row, :len(e.input_ids)] = e.input_ids
        labels[row, :len(e.labels)] = e.labels
        mask[row, :len(e.input_ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def prior_source(item: Item) -> int:
    """The study whose prior an item's prompt carries: the one its text comes from."""
    return item.text_from if item.kind == IMPRESSION_FROM_FINDINGS and item.text_from >= 0 else item.study


def item_prior_pixels(item: Item, encoder: SampleEncoder, studies: Sequence[Study],
                      priors: PixelStore | None) -> np.ndarray | None:
    """The prior frontal image that follows the item's own images (None: its prompt takes none)."""
    source = prior_source(item)
    if item.kind == VQA or priors is None or not encoder.takes_prior_image(studies[source]):
        return None
    if item.kind == "findings" and not encoder.findings_read_prior:
        return None
    if priors.num_images(source) == 0:
        return None
    return priors.pixels(source)


def collate(items: Sequence[Item], studies: Sequence[Study], pixels: PixelStore, encoder: SampleEncoder,
            pad_id: int, priors: PixelStore | None = None) -> dict:
    """Tensors for a LLaVA forward pass: token ids, mask, labels and the images of every sample, in order
    (each sample's own images, then its prior's frontal image when its prompt takes one)."""
    import torch

    default = encoder.prompting.default_views(2)
    encoded, images = [], []
    for item in items:
        prior = item_prior_pixels(item, encoder, studies, priors)
        encoded.append(encoder.encode(item, studies[item.study], pixels.num_images(item.study),
                                      pixels.study_views(item.study, default),
                                      studies[item.text_from] if item.text_from >= 0 else None,
                                      prior_images=0 if prior is None else len(prior)))
        images += [pixels.pixels(item.study)] + ([prior] if prior is not None else [])
    batch = {key: torch.from_numpy(value) for key, value in pad_batch(encoded, pad_id).items()}
    batch["pixel_values"] = torch.from_numpy(np.concatenate(images))
    return batch
