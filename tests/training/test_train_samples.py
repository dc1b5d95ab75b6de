"""Samples: epoch plans, the VQA mixup, and token ids / labels built through engine.prompts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.bundle import Prompts
from engine.prompts import prompt_ids, prompt_text, target_ids
from training.train.config import TaskMix
from training.train.samples import (
    IGNORE,
    VQA,
    Encoded,
    Item,
    SampleEncoder,
    SampleError,
    global_batches,
    pad_batch,
    plan_epoch,
    shard,
)
from training.train.studies import Study
from training.train.vqa import draw_question, question_pairs, vqa_prompt

FINDINGS = ({"kind": "pleural_effusion", "side": "right", "severity": "mild"},
            {"kind": "pneumothorax", "side": "left", "severity": "severe"},
            {"kind": "edema", "side": "bilateral", "severity": "moderate", "hedged": True},
            {"kind": "support_device", "severity": "mild", "device": "pacemaker"})


def test_vqa_answers_come_from_the_structured_findings():
    answers = dict(question_pairs(FINDINGS))
    assert answers["Is there a pleural effusion?"] == "Yes, on the right."
    assert answers["Which side is the pneumothorax on?"] == "Left."
    assert answers["How large is the pneumothorax?"] == "Large."
    assert answers["Is there pulmonary edema?"] == "Possibly."  # hedged in the report; always bilateral
    assert answers["Is there a support device?"] == "Yes, a pacemaker."
    assert answers["Is there cardiomegaly?"] == "No."
    assert answers["Is this chest radiograph normal?"].startswith("No:")
    normal = dict(question_pairs([]))
    assert normal["Is this chest radiograph normal?"].startswith("Yes")
    assert draw_question(FINDINGS, np.random.default_rng(1)) == draw_question(FINDINGS, np.random.default_rng(1))
    assert vqa_prompt("Is there X?").startswith("<s><image>")


def test_epoch_plans_are_reproducible_and_follow_the_mix():
    weights = [1.0] * 40 + [0.5] * 40 + [0.0] * 20
    tasks = TaskMix(findings=1.0, impression=1.0, impression_from_findings=0.5)
    plan = plan_epoch(weights, tasks, 0.2, seed=7, epoch=3)
    assert plan == plan_epoch(weights, tasks, 0.2, seed=7, epoch=3)
    assert plan != plan_epoch(weights, tasks, 0.2, seed=7, epoch=4)
    studies = Counter(item.study for item in plan if item.kind == "findings")
    assert all(s < 80 for s in studies) and all(studies[s] == 1 for s in range(40))
    assert 10 <= sum(1 for s in studies if s >= 40) <= 30  # weight 0.5: about half of them
    kinds = Counter(item.kind for item in plan)
    assert kinds[VQA] == pytest.approx(0.2 * len(plan), abs=1)
    assert kinds["impression_from_findings"] == pytest.approx(kinds["findings"] / 2, rel=0.4)
    assert {i.study for i in plan_epoch(weights, None, 0.0, 1, 0)} <= set(range(80))


def test_batches_and_shards():
    items = [Item(i, "findings") for i in range(10)]
    batches = global_batches(items, 4)
    assert [len(b) for b in batches] == [4, 4]  # the partial batch is dropped
    assert global_batches(items[:3], 4) == [items[:3]]
    assert shard(batches[1], 0, 2) + shard(batches[1], 1, 2) == batches[1]
    with pytest.raises(SampleError):
        shard(items[:1], 0, 2)
    with pytest.raises(SampleError):
        global_batches([], 4)


@pytest.fixture(scope="module")
def tokenizer():
    from training.modeling.tokenizer import train_tokenizer

    texts = ["Small right pleural effusion. No pneumothorax.", "Large left pneumothorax.", "Is there a nodule? No."]
    return train_tokenizer(texts * 20, vocab_size=300, min_frequency=1)


def a_study() -> Study:
    from pathlib import Path

    return Study(uid="1.2.3", source="s", manifest=Path("/nowhere/manifest.jsonl"), images=("a.dcm",), split="train",
                 findings_text="Small right pleural effusion.", impression_text="Right pleural effusion.",
                 labels={}, findings=FINDINGS)


def test_tokens_come_from_engine_prompts_and_only_targets_are_learned(tokenizer):
    prompts = Prompts()
    encoder = SampleEncoder(tokenizer, prompts, image_token_id=3, image_tokens=4, eos_id=1, max_positions=256)
    study = a_study()
    for kind, prompt_kind, target in (("findings", "findings", study.findings_text),
                                      ("impression", "impression", study.impression_text),
                                      ("impression_from_findings", "impression_from_findings", study.impression_text)):
        encoded = encoder.encode(Item(0, kind), study, num_images=2)
        prompt = prompt_ids(tokenizer, prompt_text(prompts, prompt_kind, study.findings_text), 3, 4, 2)
        target = target_ids(tokenizer, target, 1)
        assert encoded.input_ids == prompt + target
        assert encoded.labels == [IGNORE] * len(prompt) + target
        assert encoded.input_ids.count(3) == 8  # 4 image tokens x 2 images, all unlabelled
    vqa = encoder.encode(Item(0, VQA, variant=5), study, num_images=1)
    assert vqa.labels[-1] == 1 and vqa.input_ids.count(3) == 4
    with pytest.raises(SampleError, match="leaves fewer than"):
        SampleEncoder(tokenizer, prompts, 3, 200, 1, max_positions=100).encode(Item(0, "findings"), study, 1)


def test_a_target_longer_than_the_positions_left_is_learned_up_to_the_last_position(tokenizer):
    """A long report beside a long prompt (findings given, a prior) is cut, never the run stopped."""
    from dataclasses import replace

    prompts = Prompts()
    study = replace(a_study(), findings_text="Small right pleural effusion. No pneumothorax. " * 20)
    prompt = prompt_ids(tokenizer, prompt_text(prompts, "findings", ""), 3, 4, 1)
    target = target_ids(tokenizer, study.findings_text, 1)
    positions = len(prompt) + len(target) - 5
    encoded = SampleEncoder(tokenizer, prompts, 3, 4, 1, max_positions=positions).encode(Item(0, "findings"), study, 1)
    assert len(encoded.input_ids) == positions and encoded.input_ids == prompt + target[:-5]
    assert encoded.labels == [IGNORE] * len(prompt) + target[:-5]


def test_padding_masks_and_ignores_the_pad():
    batch = pad_batch([Encoded([5, 6, 7], [IGNORE, 6, 7]), Encoded([5], [IGNORE])], pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, IGNORE, IGNORE]]


def test_impressions_from_another_studys_findings_follow_the_text(tokenizer):
    from dataclasses import replace

    weights = [1.0] * 30
    tasks = TaskMix(findings=1.0, impression=1.0, impression_from_findings=0.0, impression_from_other_findings=1.0)
    plan = plan_epoch(weights, tasks, 0.0, seed=3, epoch=0)
    other = [item for item in plan if item.text_from >= 0]
    assert len(other) == 30 and all(item.kind == "impression_from_findings" and item.text_from != item.study
                                    for item in other)
    assert plan == plan_epoch(weights, tasks, 0.0, seed=3, epoch=0)
    without = TaskMix(findings=1.0, impression=1.0, impression_from_findings=0.0)
    assert all(item.text_from == -1 for item in plan_epoch(weights, without, 0.0, seed=3, epoch=0))
    prompts = Prompts()
    encoder = SampleEncoder(tokenizer, prompts, image_token_id=3, image_tokens=4, eos_id=1, max_positions=256)
    images, text = a_study(), replace(a_study(), uid="4.5.6", findings_text="Large left pneumothorax.",
                                      impression_text="Left pneumothorax.")
    encoded = encoder.encode(Item(0, "impression_from_findings", text_from=1), images, 1, text_study=text)
    prompt = prompt_ids(tokenizer, prompt_text(prompts, "impression_from_findings", text.findings_text), 3, 4, 1)
    assert encoded.input_ids == prompt + target_ids(tokenizer, text.impression_text, 1)
