"""Priors in the bundle and the prompts: model.json's `prior` intake, the `{prior}` slot, the prior frontal
image as a further `<image>` block, and drafting with and without a prior through the real engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from engine.bundle import PriorPrompts, Prompts, read_manifest
from engine.errors import BundleError
from engine.prompts import (
    MAX_PRIOR_REPORT_TOKENS,
    PriorInput,
    cut_to_tokens,
    iso_date,
    layout_prompt_text,
    prior_block,
    prior_input,
    prompt_ids,
)

PRIOR_PROMPTS = {
    "findings": "<s><image>\n{prior}Findings:",
    "impression": "<s><image>\n{prior}Impression:",
    "impression_from_findings": "<s><image>\n{prior}Findings: {findings}\nImpression:",
}
EMBEDDED_TOKENIZER = Path(__file__).resolve().parents[2] / "resources" / "models" / "raddraft-phantom-cxr" / \
    "tokenizer.json"


def phantom_prior(study: dict, date: str = "2023-01-05") -> PriorInput:
    """A phantom study of the `phantom_studies` fixture as the prior of another."""
    return PriorInput(date=date, findings=study["report"]["findings"], impression=study["report"]["impression"],
                      image_paths=tuple(study["paths"]), study_uid=study["study_uid"])


def prior_bundle(source: Path, target: Path, mode: str = "report+image", **changes: object) -> Path:
    """A copy of `source` whose model.json takes priors in `mode` (and has the top-level `changes`)."""
    shutil.copytree(source, target)
    data = json.loads((target / "model.json").read_text())
    data.update({"prior": mode, "prompts": PRIOR_PROMPTS, **changes})
    (target / "model.json").write_text(json.dumps(data))
    return target


def test_a_bundle_without_the_prior_keys_takes_no_prior(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_bundle, tmp_path / "old")
    data = json.loads((copy / "model.json").read_text())
    data.pop("prior", None)
    data.pop("prior_prompts", None)
    (copy / "model.json").write_text(json.dumps(data))
    manifest = read_manifest(copy)
    assert manifest.prior == "none" and manifest.prior_prompts == PriorPrompts()


@pytest.mark.parametrize("change, why", [
    ({"prior": "images"}, "prior must be one of"),
    ({"prior": "report+image", "prompts": {}}, "must hold {prior} once"),
    ({"prior": "none", "prompts": PRIOR_PROMPTS}, "but prior is \"none\""),
    ({"prior": "report+image", "prompts": PRIOR_PROMPTS,
      "prior_prompts": {"with_image": "Prior {prior_date}: {prior_report}\n"}}, "exactly one <image>"),
    ({"prior": "report", "prompts": PRIOR_PROMPTS,
      "prior_prompts": {"report_only": "Prior report: {prior_report}\n"}}, "lack {prior_date}"),
])
def test_a_prior_intake_that_does_not_fit_its_prompts_is_refused(tiny_bundle: Path, tmp_path: Path, change: dict,
                                                                  why: str) -> None:
    copy = shutil.copytree(tiny_bundle, tmp_path / "bad")
    data = json.loads((copy / "model.json").read_text())
    data.update(change)
    (copy / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=why.replace("{", r"\{").replace("}", r"\}").replace("+", r"\+")):
        read_manifest(copy)


def test_the_prior_block_says_date_and_report_or_that_there_is_none() -> None:
    words = PriorPrompts()
    prior = PriorInput(date="2024-03-02", findings="Small {findings} effusion.", impression="Effusion.")
    assert prior_block(words, "none", prior) == ""
    assert prior_block(words, "report+image", None) == "Prior: none.\n"
    given = prior_block(words, "report+image", prior)
    assert given == "Prior 2024-03-02: <image>\nPrior report: Small {findings} effusion. Effusion.\n"
    assert "<image>" not in prior_block(words, "report", prior)
    prompts = Prompts(**PRIOR_PROMPTS)
    from engine.bundle import PromptLayout

    text = layout_prompt_text(PromptLayout(), prompts, "impression_from_findings", ("frontal",), "No effusion.",
                              prior=given)
    # the prior's braces are text, not slots: filled in one pass
    assert text == ("<s><image>\nPrior 2024-03-02: <image>\nPrior report: Small {findings} effusion. Effusion.\n"
                    "Findings: No effusion.\nImpression:")


def test_the_prior_image_is_a_block_of_its_own_after_the_study_images() -> None:
    tokenizer = Tokenizer.from_file(str(EMBEDDED_TOKENIZER))
    image = tokenizer.token_to_id("<image>")
    text = "<s><image>\n" + prior_block(PriorPrompts(), "report+image", PriorInput("2024-03-02", "Clear.")) + \
        "Findings:"
    ids = prompt_ids(tokenizer, text, image, 5, num_images=1, prior_images=1)
    runs = [i for i, token in enumerate(ids) if token == image]
    assert len(runs) == 10 and runs[:5] == list(range(runs[0], runs[0] + 5)) and runs[5] > runs[4] + 1
    two_views = prompt_ids(tokenizer, text, image, 5, num_images=2, prior_images=1)  # one <image> takes both views
    assert two_views.count(image) == 15


def test_a_long_prior_report_is_cut_and_dates_are_written_iso() -> None:
    tokenizer = Tokenizer.from_file(str(EMBEDDED_TOKENIZER))
    long = " ".join(["There is a small right pleural effusion."] * 40)
    cut = cut_to_tokens(tokenizer, long, MAX_PRIOR_REPORT_TOKENS)
    assert len(tokenizer.encode(cut).ids) <= MAX_PRIOR_REPORT_TOKENS and long.startswith(cut)
    assert iso_date("20240302") == "2024-03-02" and iso_date("2024-03-02") == "2024-03-02"


def test_a_prior_study_from_the_index_becomes_the_engine_input(tmp_path: Path) -> None:
    from types import SimpleNamespace

    rows = [SimpleNamespace(path="a/frontal.dcm"), SimpleNamespace(path="a/lateral.dcm")]
    study = SimpleNamespace(study_uid="1.2.3", study_date="20240302", modality="CR", description="CHEST",
                            instances=rows, findings="Small effusion.", impression="Effusion.",
                            report_source="sr")
    made = prior_input(study, lambda row: tmp_path / row.path)
    assert made == PriorInput(date="2024-03-02", findings="Small effusion.", impression="Effusion.",
                              image_paths=(tmp_path / "a/frontal.dcm", tmp_path / "a/lateral.dcm"), study_uid="1.2.3")


def test_drafting_with_a_prior_puts_its_image_and_report_in_the_shared_prefix(
        tiny_bundle: Path, phantom_studies: list[dict], tmp_path: Path) -> None:
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    bundle = prior_bundle(tiny_bundle, tmp_path / "prior-bundle")
    model = load_model(bundle, EngineSettings(providers=("cpu",), max_new_tokens=8))
    assert model.takes_prior == "report+image"
    current, earlier = phantom_studies[0], phantom_studies[1]
    prior = phantom_prior(earlier)
    image_tokens = model.manifest.architecture.image_tokens

    with_prior = model.draft(current["paths"], prior=prior)
    assert with_prior.prior == {"study_uid": earlier["study_uid"], "date": "2023-01-05"}
    assert with_prior.prompts["prior"] == "given"
    # the shared prefill holds both image blocks and the prior's report, before "Findings:" / "Impression:"
    assert with_prior.timings["shared_prefix_tokens"] > 2 * image_tokens
    assert with_prior.timings["findings"]["prompt_tokens"] >= 2 * image_tokens

    without = model.draft(current["paths"])
    assert without.prior is None and "prior" not in without.prompts
    assert without.timings["findings"]["prompt_tokens"] < with_prior.timings["findings"]["prompt_tokens"]
    text = model.prompt_text("findings", ("frontal",))
    assert text == "<s><image>\nPrior: none.\nFindings:"

    unreadable = PriorInput(date="2023-01-05", findings="x", image_paths=(tmp_path / "missing.dcm",))
    fallback = model.draft(current["paths"], prior=unreadable)
    assert fallback.prior is None and fallback.prompts["prior"].startswith("none")


def test_a_bundle_without_priors_ignores_a_prior_and_says_so(tiny_bundle: Path, phantom_studies: list[dict]) -> None:
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    model = load_model(tiny_bundle, EngineSettings(providers=("cpu",), max_new_tokens=4))
    prior = PriorInput(date="2023-01-05", findings="Clear.", image_paths=tuple(phantom_studies[1]["paths"]))
    draft = model.draft(phantom_studies[0]["paths"], prior=prior)
    assert draft.prior is None and draft.prompts["prior"] == "not taken by this model"
    assert draft.to_dict()["prior"] is None
