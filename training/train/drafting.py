"""Drafts with torch (greedy), for validation metrics during training and to evaluate a merged model.

Same prompts and token ids as the engine (`engine.prompts`); prompts of a batch are left-padded. The
exported bundle is evaluated through the ONNX engine instead when it can be loaded (`evaluation.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from engine.prompts import IMPRESSION_FROM_FINDINGS, impression_kind
from training.train.samples import Item, SampleEncoder, item_prior_pixels
from training.train.studies import PixelStore, Study


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, length - len(sequence):] = torch.tensor(list(sequence), dtype=torch.long)
        mask[row, length - len(sequence):] = 1
    return ids, mask


@torch.no_grad()
def generate_section(model: nn.Module, encoder: SampleEncoder, studies: Sequence[Study], pixels: PixelStore,
                     indices: Sequence[int], section: str, *, pad_id: int, max_new_tokens: int,
                     priors: PixelStore | None = None, findings: Sequence[str] | None = None) -> list[str]:
    """Greedy continuations of the `section` prompt for the studies `indices` (one batch), each with its
    prior when the model takes priors (`priors`: their frontal images). findings: for an impression from
    findings, each study's findings text (in the order of `indices`)."""
    device = next(model.parameters()).device
    default = encoder.prompting.default_views(2)
    prompts, images = [], []
    for n, i in enumerate(indices):
        prior = item_prior_pixels(Item(i, section), encoder, studies, priors)
        count = 0 if prior is None else len(prior)
        views = pixels.study_views(i, default)
        if section == IMPRESSION_FROM_FINDINGS:
            text = encoder.section_text(section, studies[i], views, findings[n], prior_images=count)
            prompts.append(encoder.prompt(text, pixels.num_images(i), count))
        else:
            prompts.append(encoder.section_prompt(section, studies[i], pixels.num_images(i), views,
                                                  prior_images=count))
        images += [pixels.pixels(i)] + ([prior] if prior is not None else [])
    ids, mask = left_pad(prompts, pad_id)
    pixel_values = torch.from_numpy(np.concatenate(images)).to(device)
    output = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), pixel_values=pixel_values,
                            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            eos_token_id=encoder.eos_id, pad_token_id=pad_id)
    new_tokens = output[:, ids.shape[1]:].tolist()
    texts = []
    for tokens in new_tokens:
        if encoder.eos_id in tokens:
            tokens = tokens[:tokens.index(encoder.eos_id)]
        texts.append(encoder.tokenizer.decode(tokens, skip_special_tokens=True).strip())
    return texts


def _impression_rows(encoder: SampleEncoder, indices: Sequence[int], findings: Sequence[str]
                     ) -> list[tuple[str, list[int]]]:
    """(prompt kind, rows) for the impressions of a batch: from the drafted findings where the model makes
    its impression so and has findings to go on (as `engine.runtime.DraftModel.draft`), else from the image."""
    kinds = [impression_kind(text) if encoder.impression_from == "findings" else "impression" for text in findings]
    groups = [(kind, [r for r, k in enumerate(kinds) if k == kind]) for kind in (IMPRESSION_FROM_FINDINGS, "impression")]
    return [(kind, rows) for kind, rows in groups if rows]


def draft_studies(model: nn.Module, encoder: SampleEncoder, studies: Sequence[Study], pixels: PixelStore,
                  *, pad_id: int, max_new_tokens: int, batch_size: int = 16, progress=None,
                  priors: PixelStore | None = None) -> list[dict[str, str]]:
    """Findings and Impression of every study, the impression made as the engine makes it for the bundle
    (`encoder.impression_from`: from the image, or from the findings just drafted)."""
    was_training = model.training
    model.eval()
    drafts = [{"study_uid": s.uid} for s in studies]
    for start in range(0, len(studies), batch_size):
        indices = list(range(start, min(len(studies), start + batch_size)))
        findings = generate_section(model, encoder, studies, pixels, indices, "findings", pad_id=pad_id,
                                    max_new_tokens=max_new_tokens, priors=priors)
        for index, text in zip(indices, findings):
            drafts[index]["findings"] = text
        for section, rows in _impression_rows(encoder, indices, findings):
            texts = generate_section(model, encoder, studies, pixels, [indices[r] for r in rows], section,
                                     pad_id=pad_id, max_new_tokens=max_new_tokens, priors=priors,
                                     findings=[findings[r] for r in rows])
            for row, text in zip(rows, texts):
                drafts[indices[row]]["impression"] = text
        if progress:
            progress(len(indices))
    model.train(was_training)
    return drafts
