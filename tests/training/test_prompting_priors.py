"""Training prompts a chat-template model with its prior exactly as the engine drafts with it: the prompts
rendered from the checkpoint's LLaVA-1.5 template hold no `{prior}`, and both sides place the prior block by
the one rule of `engine.prompts.prior_slotted`, so the token ids of every section, view set and indication
are identical with a prior (its date, report and image block) and without one ("Prior: none.")."""

from __future__ import annotations

import dataclasses
import filecmp
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from checkpoint_layouts import LLAVA_15_TEMPLATE
from tokenizers import Tokenizer

from engine.bundle import Prompts
from engine.prompts import IMPRESSION_FROM_FINDINGS, PriorInput
from tests.engine.test_priors_prompt import phantom_prior

INDICATION = "Indication: {indication}"
SECTIONS = ("findings", "impression", IMPRESSION_FROM_FINDINGS)


@pytest.fixture(scope="module")
def chat_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with the llava-hf LLaVA-1.5 chat template."""
    checkpoint = tmp_path_factory.mktemp("chat-prior") / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    (checkpoint / "chat_template.json").write_text(json.dumps({"chat_template": LLAVA_15_TEMPLATE}))
    return checkpoint


@pytest.fixture(scope="module")
def prompting(chat_checkpoint: Path):
    from training.export.layout import PromptSpec
    from training.train.prompting import checkpoint_prompts

    spec = PromptSpec(views=("frontal", "lateral"), indication=INDICATION)
    rendered = checkpoint_prompts(chat_checkpoint, spec, Prompts())
    assert rendered.templated and not any("{prior}" in v.text for v in rendered.layout.variants)
    return rendered


@pytest.fixture(scope="module")
def model(tiny_bundle: Path, chat_checkpoint: Path, prompting, tmp_path_factory: pytest.TempPathFactory):
    """The tiny bundle taking the prior report and image, prompted by the rendered variants (as the export
    writes them for this checkpoint)."""
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    bundle = tmp_path_factory.mktemp("chat-prior-bundle") / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    assert filecmp.cmp(bundle / "tokenizer.json", chat_checkpoint / "tokenizer.json", shallow=False)
    data = json.loads((bundle / "model.json").read_text())
    data.update(prior="report+image", prompts=dataclasses.asdict(prompting.prompts),
                prompting=json.loads(json.dumps(dataclasses.asdict(prompting.layout))))
    (bundle / "model.json").write_text(json.dumps(data))
    return load_model(bundle, EngineSettings(providers=("cpu",), max_new_tokens=4))


def _encoder(model, chat_checkpoint: Path, prompting):
    from training.train.config import PriorConfig
    from training.train.samples import SampleEncoder

    arch = model.manifest.architecture
    tokenizer = Tokenizer.from_file(str(chat_checkpoint / "tokenizer.json"))  # training's own
    return SampleEncoder(tokenizer, prompting.prompts, arch.image_token_id, arch.image_tokens, arch.eos_token_id,
                         arch.max_positions, prompting=prompting,
                         prior=PriorConfig("report+image", model.manifest.prior_prompts))


def _study(prior: PriorInput | None, indication: str | None):
    from training.train.studies import Study

    return Study("1.2.826.0.1.27", "site", Path("manifest.jsonl"), ("a.dcm",), "train",
                 "Small right pleural effusion.", "Effusion.", {}, (), indication, prior)


def test_training_and_the_engine_give_identical_prompt_ids_with_and_without_a_prior(
        model, chat_checkpoint: Path, prompting, phantom_studies: list[dict]) -> None:
    encoder = _encoder(model, chat_checkpoint, prompting)
    earlier = phantom_studies[1]
    prior = phantom_prior(earlier)
    image = model.manifest.architecture.image_token_id
    compared = 0
    for given in (prior, None):
        ready = model.prepare_prior(given)
        prior_images = 1 if given is not None else 0
        assert ready.images == prior_images  # the prior's frontal image is read
        for indication in (None, "Cough and fever for three days."):
            study = _study(given, indication)
            for views in (("frontal",), ("frontal", "lateral")):
                for section in SECTIONS:
                    findings = "No pneumothorax." if section == IMPRESSION_FROM_FINDINGS else None
                    text = encoder.section_text(section, study, views, findings, prior_images=prior_images)
                    trained = encoder.prompt(text, len(views), prior_images)
                    drafted = model.prompt_ids(section, len(views) + prior_images, findings, views=views,
                                               indication=model.limit_indication(indication), prior=ready.block,
                                               prior_images=prior_images)
                    assert trained == drafted, (section, views, indication, given is not None)
                    assert drafted.count(image) == (len(views) + prior_images) * model.manifest.architecture.image_tokens
                    assert text == model.prompt_text(section, views, findings, model.limit_indication(indication),
                                                     ready.block)
                    instruction = text.index("Write the")
                    words = "Prior 2023-01-05: <image>\nPrior report: " if given is not None else "Prior: none.\n"
                    assert words in text and text.index(words) < instruction  # in the user turn, before it asks
                    assert "USER: " + "<image>\n" * len(views) + words in text  # after the study's images
                    compared += 1
    assert compared == 2 * 2 * 2 * len(SECTIONS)


@pytest.mark.slow
def test_the_export_of_a_chat_template_checkpoint_with_a_prior_intake_drafts_with_the_prior(
        chat_checkpoint: Path, prompting, phantom_studies: list[dict], tmp_path: Path) -> None:
    """The real path: `export_bundle` renders the template (no `{prior}` in it), records the prior intake, and
    the bundle loads and drafts with the prior where training put it."""
    from engine.runtime import load_model
    from engine.settings import EngineSettings
    from training.export import export_bundle
    from training.export.layout import PromptSpec
    from training.train.config import PriorConfig

    out = tmp_path / "bundle"
    export_bundle(chat_checkpoint, out, name="tiny-chat-prior", version="0.0.1", parity=False,
                  prompt_spec=PromptSpec(views=("frontal", "lateral"), indication=INDICATION),
                  prior=PriorConfig("report+image"))
    model = load_model(out, EngineSettings(providers=("cpu",), max_new_tokens=4))
    assert model.takes_prior == "report+image"
    assert model.manifest.prompting.variants == prompting.layout.variants  # what training prompted with
    earlier = phantom_studies[1]
    prior = phantom_prior(earlier)
    draft = model.draft(phantom_studies[0]["paths"], prior=prior)
    assert draft.prompts["prior"] == "given" and draft.prior["date"] == "2023-01-05"
    encoder = _encoder(model, chat_checkpoint, prompting)
    ready = model.prepare_prior(prior)
    views = ("frontal",)
    assert encoder.prompt(encoder.section_text("findings", _study(prior, None), views, prior_images=1), 1, 1) == \
        model.prompt_ids("findings", 2, views=views, prior=ready.block, prior_images=1)


def test_a_recipe_with_a_chat_template_base_takes_priors_without_a_prior_slot_in_its_plain_prompts(
        chat_checkpoint: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The recipe's plain `[prompts]` are not what a chat-template base trains with, so they need no `{prior}`;
    a base without a template trains with them, and is refused before training without one."""
    from training.train.config import TrainConfigError, load_train_config
    from training.train.pipeline import base_prompt_spec, training_prompts

    def recipe(base: Path):
        return load_train_config(None, {"model.base": str(base), "prior.intake": "report+image",
                                        "output.run_dir": str(tmp_path / "run")})

    chat = recipe(chat_checkpoint)
    rendered = training_prompts(chat, base_prompt_spec(chat))
    assert rendered.templated and "Prior: none.\n" in rendered.text("findings", ("frontal",), prior="Prior: none.\n")
    plain = recipe(tiny_checkpoint)
    with pytest.raises(TrainConfigError, match="prompts.findings"):
        training_prompts(plain, base_prompt_spec(plain))
