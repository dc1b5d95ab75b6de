"""Impressions from edited findings: a share of a study's findings written again (often tersely), and the
impression of exactly what is left, so that the model learns the text wins also for a radiologist's edit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from engine.bundle import Prompts
from engine.findings.labeler import label_report
from engine.prompts import IMPRESSION_FROM_FINDINGS, PriorInput, prompt_ids, prompt_text, target_ids
from training.data.phantoms import generate_dataset
from training.train.config import PriorConfig, TaskMix
from training.train.edited_findings import edited_report
from training.train.samples import Item, SampleEncoder, plan_epoch
from training.train.studies import Study

LABELS = ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "nodule", "edema", "atelectasis")


@pytest.fixture(scope="module")
def phantom_findings(tmp_path_factory) -> list[tuple]:
    out = tmp_path_factory.mktemp("edited")
    generate_dataset(out, 24, seed=4242, image_size=32)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return [(tuple(record["findings"]), record["report"]["findings"]) for record in records]


def present(text: str) -> set[str]:
    labels = label_report(text)
    return {name for name in LABELS if labels[name] == "present"}


def test_the_target_impression_states_what_the_edited_findings_state(phantom_findings) -> None:
    pairs = [edited_report(findings, seed) for findings, _ in phantom_findings for seed in (1, 2, 3)]
    agreeing = [present(text) == present(impression) for text, impression in pairs]
    # (not 1.0: the labeler does not read the templates' "patchy opacity" as consolidation, in the phantoms'
    # own reports either)
    assert sum(agreeing) / len(agreeing) >= 0.9
    # the edit drops findings and changes the wording, so the texts differ from the study's own report
    own = [report for _, report in phantom_findings for _seed in (1, 2, 3)]
    assert sum(text != report for (text, _), report in zip(pairs, own, strict=True)) >= 0.95 * len(pairs)
    assert any(len(text.split(". ")) <= 3 for text, _ in pairs)  # some are terse


def test_the_same_seed_gives_the_same_edit(phantom_findings) -> None:
    findings = next(f for f, _ in phantom_findings if len(f) >= 2)
    assert edited_report(findings, 7) == edited_report(findings, 7)
    assert len({edited_report(findings, seed) for seed in range(1, 12)}) > 3


def test_the_epoch_plan_holds_edited_items_with_their_seed() -> None:
    weights = [1.0] * 40
    tasks = TaskMix(findings=1.0, impression=0.0, impression_from_findings=0.0, impression_from_edited_findings=1.0)
    plan = plan_epoch(weights, tasks, 0.0, seed=5, epoch=0)
    edited = [item for item in plan if item.kind == IMPRESSION_FROM_FINDINGS]
    assert len(edited) == 40 and all(item.variant > 0 and item.text_from >= 0 for item in edited)
    assert any(item.text_from == item.study for item in edited)
    assert any(item.text_from != item.study for item in edited)
    assert plan == plan_epoch(weights, tasks, 0.0, seed=5, epoch=0)
    assert not any(item.variant for item in plan_epoch(weights, replace(tasks, impression_from_edited_findings=0.0),
                                                        0.0, seed=5, epoch=0))


def a_study(findings: tuple, prior: PriorInput | None = None) -> Study:
    return Study(uid="1.2.3", source="s", manifest=Path("/nowhere/manifest.jsonl"), images=("a.dcm",), split="train",
                 findings_text="Small right pleural effusion.", impression_text="Right pleural effusion.",
                 labels={}, findings=findings, prior=prior)


def test_an_edited_item_is_prompted_with_the_edit_and_learns_its_impression(phantom_findings) -> None:
    from training.modeling.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["Small right pleural effusion. No pneumothorax. Large left pneumothorax."] * 20,
                                vocab_size=300, min_frequency=1)
    prompts = Prompts()
    findings = next(f for f, _ in phantom_findings if len(f) >= 2)
    study = a_study(findings)
    encoder = SampleEncoder(tokenizer, prompts, image_token_id=3, image_tokens=4, eos_id=1, max_positions=400)
    encoded = encoder.encode(Item(0, IMPRESSION_FROM_FINDINGS, 99, text_from=0), study, 1, text_study=study)
    text, impression = edited_report(findings, 99)
    prompt = prompt_ids(tokenizer, prompt_text(prompts, IMPRESSION_FROM_FINDINGS, text), 3, 4, 1)
    assert encoded.input_ids == prompt + target_ids(tokenizer, impression, 1)

    # without structured findings (a site's signed reports), or with a prior in the prompt (an edit states
    # no comparison), the item keeps the study's own text
    plain = SampleEncoder(tokenizer, prompts, 3, 4, 1, max_positions=400)
    for source, encoder_ in ((replace(study, findings=()), plain),
                             (replace(study, prior=PriorInput(date="2024-01-02", findings="Clear.", impression="Normal.")),
                              SampleEncoder(tokenizer, Prompts(impression_from_findings="<s><image>\n{prior}Findings: "
                                                                                      "{findings}\nImpression:"),
                                            3, 4, 1, max_positions=400, prior=PriorConfig(intake="report")))):
        encoded = encoder_.encode(Item(0, IMPRESSION_FROM_FINDINGS, 99, text_from=0), source, 1, text_study=source)
        assert encoded.input_ids[-len(target_ids(tokenizer, source.impression_text, 1)):] == \
            target_ids(tokenizer, source.impression_text, 1)
