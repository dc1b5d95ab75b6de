"""A bundle that drafts its Impression from its drafted Findings (model.json `impression_from: "findings"`):
validation of the key and of the prior slot it allows the findings prompt to leave out, and every drafting
path of the real engine (one study, a batch, forced either way) following it, with the prior reaching the
impression only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.bundle import read_manifest
from engine.errors import BundleError
from engine.prompts import IMPRESSION_FROM_FINDINGS, PriorInput
from engine.runtime import load_model
from engine.settings import EngineSettings
from tests.engine.test_priors_prompt import PRIOR_PROMPTS, prior_bundle

CPU = EngineSettings(providers=("cpu",), variant="fp32", max_new_tokens=12)
# The findings are read from the image alone: no {prior} slot.
IMAGE_ONLY_FINDINGS = {**PRIOR_PROMPTS, "findings": "<s><image>\nFindings:"}
PRIOR_REPORT = "Interval increase in the moderate right pleural effusion."


def findings_bundle(tiny_bundle: Path, target: Path, mode: str = "report+image") -> Path:
    return prior_bundle(tiny_bundle, target, mode, impression_from="findings", prompts=IMAGE_ONLY_FINDINGS)


def effusion_prior(study: dict) -> PriorInput:
    """A phantom study as the prior, its report one words the tiny tokenizer spells out in the prompt."""
    return PriorInput(date="2023-01-05", findings=PRIOR_REPORT, impression="Effusion.",
                      image_paths=tuple(study["paths"]), study_uid=study["study_uid"])


@pytest.fixture(scope="module", params=["report+image", "report"])
def model(request, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_model(findings_bundle(tiny_bundle, tmp_path_factory.mktemp("from-findings") / "b", request.param),
                      CPU)


def test_a_bundle_without_the_key_drafts_its_impression_from_the_image(tiny_bundle: Path, tmp_path: Path) -> None:
    assert read_manifest(tiny_bundle).impression_from == "image"
    manifest = read_manifest(prior_bundle(tiny_bundle, tmp_path / "prior"))
    assert manifest.impression_from == "image"
    assert all(manifest.prior_in(kind) for kind in ("findings", "impression", IMPRESSION_FROM_FINDINGS))


def test_an_impression_from_findings_bundle_may_read_its_findings_without_the_prior(
        tiny_bundle: Path, tmp_path: Path) -> None:
    manifest = read_manifest(findings_bundle(tiny_bundle, tmp_path / "b"))
    assert manifest.impression_from == "findings"
    assert not manifest.prior_in("findings")
    assert manifest.prior_in("impression") and manifest.prior_in(IMPRESSION_FROM_FINDINGS)
    with_slot = read_manifest(prior_bundle(tiny_bundle, tmp_path / "slot", impression_from="findings"))
    assert with_slot.prior_in("findings")


@pytest.mark.parametrize("change, why", [
    ({"impression_from": "prior"}, "impression_from must be one of image, findings, got 'prior'"),
    ({"prompts": IMAGE_ONLY_FINDINGS}, "prompts.findings must hold {prior} once .* impression_from is 'image'"),
    ({"impression_from": "findings", "prompts": {**IMAGE_ONLY_FINDINGS, "impression": "<s><image>\nImpression:"}},
     "prompts.impression must hold {prior} once"),
    ({"impression_from": "findings", "prompts": {**PRIOR_PROMPTS, "findings": "<s><image>\n{prior}{prior}Findings:"}},
     "prompts.findings must hold {prior} at most once"),
])
def test_an_impression_source_that_does_not_fit_the_prompts_is_refused(tiny_bundle: Path, tmp_path: Path,
                                                                        change: dict, why: str) -> None:
    copy = prior_bundle(tiny_bundle, tmp_path / "bad", "report")
    data = json.loads((copy / "model.json").read_text())
    data.update(change)
    (copy / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=why.replace("{", r"\{").replace("}", r"\}")):
        read_manifest(copy)


def test_a_bundle_that_takes_no_prior_may_draft_its_impression_from_findings(tiny_bundle: Path,
                                                                             tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_bundle, tmp_path / "plain")
    data = json.loads((copy / "model.json").read_text())
    data["impression_from"] = "findings"
    (copy / "model.json").write_text(json.dumps(data))
    manifest = read_manifest(copy)
    assert manifest.impression_from == "findings" and not manifest.prior_in(IMPRESSION_FROM_FINDINGS)


def test_draft_follows_the_bundle_unless_told_otherwise(model, phantom_studies: list[dict]) -> None:
    paths, prior = phantom_studies[0]["paths"], effusion_prior(phantom_studies[-1])
    default = model.draft(paths, prior=prior)
    forced = model.draft(paths, prior=prior, impression_from_findings=True)
    from_image = model.draft(paths, prior=prior, impression_from_findings=False)
    assert default.findings.strip(), "the tiny model drafted no findings; the test proves nothing"
    assert default.prompts["impression"] == IMPRESSION_FROM_FINDINGS
    assert (default.findings, default.impression, default.prompts) == \
        (forced.findings, forced.impression, forced.prompts)
    assert from_image.prompts["impression"] == "impression"
    assert from_image.findings == default.findings
    # the findings prompt leaves the prior's image out and still reuses the prefill it shares with the impression
    assert default.timings["findings"]["reused_tokens"] == default.timings["shared_prefix_tokens"] > 0
    # the impression from the findings has them in its prompt; the one from the image does not
    assert default.timings["impression"]["prompt_tokens"] > from_image.timings["impression"]["prompt_tokens"]


def test_a_section_drafted_on_demand_is_the_one_the_draft_makes(model, phantom_studies: list[dict]) -> None:
    """The app's and the site server's on-demand sections (`draft_section`) take the prior and make the
    impression from the given findings, as the queued draft does; without findings, from the image."""
    paths, prior = phantom_studies[0]["paths"], effusion_prior(phantom_studies[-1])
    draft = model.draft(paths, prior=prior)
    assert model.draft_section(paths, "findings", prior=prior).text == draft.findings
    assert model.draft_section(paths, "impression", findings=draft.findings, prior=prior).text == draft.impression
    from_image = model.draft(paths, prior=prior, impression_from_findings=False)
    assert model.draft_section(paths, "impression", prior=prior).text == from_image.impression
    assert model.draft_section(paths, "impression", findings="  ", prior=prior).text == from_image.impression
    without = model.draft(paths, impression_from_findings=False)
    assert model.draft_section(paths, "impression").text == without.impression


def test_draft_batch_gives_each_study_what_draft_gives_it_alone(model, phantom_studies: list[dict]) -> None:
    prior = effusion_prior(phantom_studies[-1])
    current, priors = phantom_studies[:3], [prior, None, prior]
    batched = model.draft_batch([model.prepare(s["paths"]) for s in current], priors=priors)
    alone = [model.draft(s["paths"], prior=p) for s, p in zip(current, priors)]
    assert [(d.findings, d.impression, d.prior, d.prompts) for d in batched] == \
        [(d.findings, d.impression, d.prior, d.prompts) for d in alone]
    assert all(d.prompts["impression"] == IMPRESSION_FROM_FINDINGS for d in batched)
    assert [d.prior is not None for d in batched] == [True, False, True]
    assert [d.domain for d in batched] == [d.domain for d in alone]


def test_the_findings_prompt_holds_no_prior_and_the_impression_prompt_does(model,
                                                                            phantom_studies: list[dict]) -> None:
    study = model.prepare(phantom_studies[0]["paths"])
    ready = model.prepare_prior(effusion_prior(phantom_studies[-1]))
    features = model.image_features(study, ready)
    layout = model.prompt_layout(study, None, ready)
    image_token = model.manifest.architecture.image_token_id
    image_tokens = model.manifest.architecture.image_tokens
    findings_ids = model.prompt_ids("findings", features.shape[0], **layout)
    impression_ids = model.prompt_ids(IMPRESSION_FROM_FINDINGS, features.shape[0], "No effusion.", **layout)

    def words(ids: list[int]) -> str:
        return model.tokenizer.decode([i for i in ids if i != image_token], skip_special_tokens=False)

    assert "pleural effusion" not in words(findings_ids) and "Prior" not in words(findings_ids)
    assert "pleural effusion" in words(impression_ids) and "2023-01-05" in words(impression_ids)
    assert findings_ids.count(image_token) == study.pixel_values.shape[0] * image_tokens
    assert impression_ids.count(image_token) == (study.pixel_values.shape[0] + ready.images) * image_tokens
    # what the draft ran: its findings prompt is as long with the prior as without it
    with_prior = model.draft(phantom_studies[0]["paths"], prior=effusion_prior(phantom_studies[-1]))
    without = model.draft(phantom_studies[0]["paths"])
    assert with_prior.timings["findings"]["prompt_tokens"] == without.timings["findings"]["prompt_tokens"]
    assert with_prior.findings == without.findings
    assert with_prior.timings["impression"]["prompt_tokens"] > without.timings["impression"]["prompt_tokens"]


def test_a_chat_template_bundle_drafts_its_impression_from_findings_with_the_prior_in_every_prompt(
        tiny_bundle: Path, tmp_path: Path, phantom_studies: list[dict]) -> None:
    """Rendered variants hold no `{prior}` of their own and the engine slots the prior into each of them, as
    training trains them: an impression-from-findings chat bundle reads its findings with the prior too."""
    from tests.engine.test_prompt_chat_prior import chat_prior_bundle, llava_15_layout

    bundle = chat_prior_bundle(tiny_bundle, tmp_path / "chat", llava_15_layout())
    data = json.loads((bundle / "model.json").read_text())
    data["impression_from"] = "findings"
    (bundle / "model.json").write_text(json.dumps(data))
    model = load_model(bundle, CPU)
    assert model.manifest.prior_in("findings")
    block = model.prepare_prior(effusion_prior(phantom_studies[-1])).block
    assert PRIOR_REPORT in model.prompt_text("findings", ("frontal",), prior=block)
    assert PRIOR_REPORT in model.prompt_text(IMPRESSION_FROM_FINDINGS, ("frontal",), "Clear.", prior=block)
    with_prior = model.draft(phantom_studies[0]["paths"], prior=effusion_prior(phantom_studies[-1]))
    without = model.draft(phantom_studies[0]["paths"])
    assert with_prior.prompts["impression"] == without.prompts["impression"] == IMPRESSION_FROM_FINDINGS
    assert with_prior.timings["findings"]["prompt_tokens"] > without.timings["findings"]["prompt_tokens"]
