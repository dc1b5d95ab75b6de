"""Stage 0, language: the tokenizer and next-token pretraining of the language model on report text.

The texts are the training prompts without their image (`<image>` removed) followed by the targets, so
the language model learns the very sequences it will continue later: "<s>\\nFindings: ... </s>",
"<s>\\nImpression: ... </s>", "<s>\\nFindings: ...\\nImpression: ... </s>" and the VQA questions. The loss
covers every token after `<s>`; no image is involved.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from engine.bundle import IMAGE_PLACEHOLDER, Prompts
from engine.prompts import IMPRESSION_FROM_FINDINGS, prompt_text, target_ids
from training.train.samples import IGNORE, VQA, Encoded, Item, SampleError, pad_batch
from training.train.studies import Study
from training.train.vqa import draw_question, question_pairs, vqa_prompt


def tokenizer_corpus(studies: Iterable[Study], prompts: Prompts) -> list[str]:
    """Everything the tokenizer should encode compactly: reports, prompts and VQA text."""
    texts = []
    for study in studies:
        texts += [study.findings_text, study.impression_text]
        texts += [f"{q} {a}" for q, a in question_pairs(study.findings)[:4]]
    texts += [prompts.findings, prompts.impression, prompts.impression_from_findings]
    return texts


def train_report_tokenizer(studies: Sequence[Study], prompts: Prompts, vocab_size: int):
    """A byte-level BPE trained on the training reports (special tokens at ids 0-3)."""
    from training.modeling.tokenizer import train_tokenizer

    return train_tokenizer(tokenizer_corpus(studies, prompts), vocab_size=vocab_size)


class TextEncoder:
    """Token ids of prompt-without-image + target, labelled for next-token prediction."""

    def __init__(self, tokenizer, prompts: Prompts, eos_id: int, max_positions: int) -> None:
        self.tokenizer = tokenizer  # a `tokenizers.Tokenizer`
        self.prompts = prompts
        self.eos_id = eos_id
        self.max_positions = max_positions

    def text_pair(self, item: Item, study: Study) -> tuple[str, str]:
        if item.kind == VQA:
            question, answer = draw_question(study.findings, np.random.default_rng(item.variant))
            return vqa_prompt(question), answer
        if item.kind == "findings":
            return prompt_text(self.prompts, "findings"), study.findings_text
        if item.kind == "impression":
            return prompt_text(self.prompts, "impression"), study.impression_text
        if item.kind == IMPRESSION_FROM_FINDINGS:
            return prompt_text(self.prompts, IMPRESSION_FROM_FINDINGS, study.findings_text), study.impression_text
        raise SampleError(f"unknown sample kind {item.kind!r}")

    def encode(self, item: Item, study: Study) -> Encoded:
        prompt, target = self.text_pair(item, study)
        ids = self.tokenizer.encode(prompt.replace(IMAGE_PLACEHOLDER, ""), add_special_tokens=False).ids
        ids = (ids + target_ids(self.tokenizer, target, self.eos_id))[:self.max_positions]
        return Encoded(ids, [IGNORE] + ids[1:])


def collate_text(items: Sequence[Item], studies: Sequence[Study], encoder: TextEncoder, pad_id: int) -> dict:
    encoded = [encoder.encode(item, studies[item.study]) for item in items]
    return {key: torch.from_numpy(value) for key, value in pad_batch(encoded, pad_id).items()}


def token_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over labelled positions, and their number (LLaVA or plain LM)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                       ignore_index=IGNORE, reduction="sum")
    return loss, (targets != IGNORE).sum()


@torch.no_grad()
def mean_token_loss(model: nn.Module, batches: Iterable[dict]) -> float:
    """Mean next-token loss over labelled tokens of `batches` (validation)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        loss, n = token_loss(model, {k: v.to(device) for k, v in batch.items()})
        total, count = total + loss.item(), count + int(n)
    return total / max(1, count)
