"""The prior in prompts rendered by a chat template (`engine.prompts.prior_slotted`): a rendered variant has no
`{prior}` of its own, so the prior block goes into the user turn before the indication, else the instruction
(after the study's images, as MAIRA-2 puts the prior image and report); a bundle with a prior intake and
such variants loads and drafts with the prior in the prefix Findings and Impression share."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from engine.bundle import PriorPrompts, PromptLayout, Prompts, PromptVariant, read_manifest
from engine.errors import GenerationError
from engine.prompts import PriorInput, layout_prompt_text, prior_block, prior_slotted
from tests.engine.test_priors_prompt import phantom_prior

INSTRUCTIONS = {
    "findings": "Write the findings section of the radiology report for this chest X-ray.",
    "impression": "Write the impression section of the radiology report for this chest X-ray.",
    "impression_from_findings": "Findings: {findings}\nWrite the impression section of the radiology report "
                                "for this chest X-ray.",
}
INDICATION = "Indication: {indication}"
PRIOR = PriorInput(date="2024-03-02", findings="Small right effusion.", impression="Effusion.")
GIVEN = prior_block(PriorPrompts(), "report+image", PRIOR)
NONE = prior_block(PriorPrompts(), "report+image", None)


def llava_15(section: str, views: tuple[str, ...], indication: bool) -> str:
    """What the llava-hf LLaVA-1.5 template renders (images first, then the text, then ' ASSISTANT:')."""
    text = "\n".join(([INDICATION] if indication else []) + [INSTRUCTIONS[section]])
    return "<s>USER: " + "<image>\n" * len(views) + text + " ASSISTANT:"


def llava_15_layout(instructions: dict[str, str] = INSTRUCTIONS) -> PromptLayout:
    variants = tuple(PromptVariant(section, views, llava_15(section, views, indication), indication)
                     for section in INSTRUCTIONS for views in (("frontal", "lateral"), ("frontal",))
                     for indication in (False, True))
    return PromptLayout(chat_template="chat_template.json", instructions=dict(instructions), indication=INDICATION,
                        variants=variants)


def test_the_prior_goes_before_the_instruction_after_the_images() -> None:
    text = layout_prompt_text(llava_15_layout(), Prompts(), "findings", ("frontal", "lateral"), prior=GIVEN)
    assert text == ("<s>USER: <image>\n<image>\nPrior 2024-03-02: <image>\nPrior report: Small right effusion. "
                    "Effusion.\nWrite the findings section of the radiology report for this chest X-ray. ASSISTANT:")
    none = layout_prompt_text(llava_15_layout(), Prompts(), "impression", ("frontal",), prior=NONE)
    assert none == ("<s>USER: <image>\nPrior: none.\nWrite the impression section of the radiology report for "
                    "this chest X-ray. ASSISTANT:")


def test_with_an_indication_the_prior_comes_first_and_findings_keep_their_place() -> None:
    layout = llava_15_layout()
    text = layout_prompt_text(layout, Prompts(), "impression_from_findings", ("frontal",), findings="No effusion.",
                              indication="Cough.", prior=GIVEN)
    assert text.startswith("<s>USER: <image>\nPrior 2024-03-02: <image>\nPrior report: Small right effusion. "
                           "Effusion.\nIndication: Cough.\nFindings: No effusion.\nWrite the impression")
    findings = layout_prompt_text(layout, Prompts(), "findings", ("frontal",), indication="Cough.", prior=GIVEN)
    impression = layout_prompt_text(layout, Prompts(), "impression", ("frontal",), indication="Cough.", prior=GIVEN)
    shared = len("<s>USER: <image>\n" + GIVEN + "Indication: Cough.\nWrite the ")
    assert findings[:shared] == impression[:shared]  # the prior lies in the prefix both sections share


def test_without_a_prior_block_the_rendered_prompt_is_unchanged() -> None:
    layout = llava_15_layout()
    for variant in layout.variants:
        findings = "Clear." if variant.section == "impression_from_findings" else None
        assert layout_prompt_text(layout, Prompts(), variant.section, variant.views, findings,
                                  "Cough." if variant.indication else None) == \
            variant.text.replace("{findings}", findings or "").replace("{indication}", "Cough.")


def test_a_slot_the_template_placed_is_kept_and_an_old_layout_falls_back_to_after_the_images() -> None:
    own = PromptVariant("findings", ("frontal",), "<s>[INST] {prior}<image>\nDescribe. [/INST]")
    assert prior_slotted(PromptLayout(variants=(own,)), own) == own.text
    old = dataclasses.replace(llava_15_layout(), instructions={})  # a bundle that recorded no instructions
    variant = next(v for v in old.variants if v.section == "findings" and v.views == ("frontal",)
                   and not v.indication)
    assert prior_slotted(old, variant) == "<s>USER: <image>\n{prior}Write the findings section of the radiology " \
                                          "report for this chest X-ray. ASSISTANT:"
    text_first = PromptVariant("findings", ("frontal",), "<|im_start|>user\n" + INSTRUCTIONS["findings"] +
                               "<image>\n<|im_end|>\n<|im_start|>assistant\n")  # a template placing images last
    assert prior_slotted(llava_15_layout(), text_first).endswith("<image>\n{prior}<|im_end|>\n<|im_start|>assistant\n")
    nowhere = PromptVariant("findings", ("frontal",), "<s>Describe the study.")
    with pytest.raises(GenerationError, match="no place for the prior"):
        prior_slotted(PromptLayout(variants=(nowhere,)), nowhere)


def chat_prior_bundle(source: Path, target: Path, layout: PromptLayout, mode: str = "report+image") -> Path:
    """A copy of `source` whose model.json takes priors in `mode` and prompts with `layout`'s variants, none
    of which holds a `{prior}` slot."""
    shutil.copytree(source, target)
    data = json.loads((target / "model.json").read_text())
    full = {v.section: v.text for v in layout.variants if v.views == ("frontal",) and not v.indication}
    data.update(prior=mode, prompting=json.loads(json.dumps(dataclasses.asdict(layout))), prompts=full)
    (target / "model.json").write_text(json.dumps(data))
    return target


def test_a_chat_template_bundle_with_a_prior_intake_drafts_with_the_prior(
        tiny_bundle: Path, phantom_studies: list[dict], tmp_path: Path) -> None:
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    bundle = chat_prior_bundle(tiny_bundle, tmp_path / "chat-prior", llava_15_layout())
    assert read_manifest(bundle).prior == "report+image"
    model = load_model(bundle, EngineSettings(providers=("cpu",), max_new_tokens=4))
    current, earlier = phantom_studies[0], phantom_studies[1]
    prior = phantom_prior(earlier)
    image_tokens = model.manifest.architecture.image_tokens

    with_prior = model.draft(current["paths"], prior=prior)
    assert with_prior.prior == {"study_uid": earlier["study_uid"], "date": "2023-01-05"}
    assert with_prior.prompts["prior"] == "given"
    assert with_prior.timings["shared_prefix_tokens"] > 2 * image_tokens  # the study's and the prior's image
    without = model.draft(current["paths"])
    assert without.prior is None
    assert without.timings["shared_prefix_tokens"] < with_prior.timings["shared_prefix_tokens"] - image_tokens
    assert model.prompt_text("findings", ("frontal",)) == (
        "<s>USER: <image>\nPrior: none.\nWrite the findings section of the radiology report for this chest X-ray. "
        "ASSISTANT:")
