"""Training with priors: manifest prior fields -> studies, prior frontal pixels, prompts with the prior's
date, report and image block, impressions from another study's findings with that study's prior, the
recipe, and the prior intake written into the exported bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from engine.bundle import Preprocessing, Prompts
from engine.prompts import IMPRESSION_FROM_FINDINGS
from training.train.config import PriorConfig, TrainConfigError, load_train_config
from training.train.samples import Item, SampleEncoder, collate
from training.train.studies import Pool, decode_priors, decode_studies, read_studies

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "resources" / "models" / "raddraft-phantom-cxr" / "tokenizer.json"
RECIPE = ROOT / "training" / "configs" / "phantom-cxr-priors.toml"
PRIOR_PROMPTS = Prompts(findings="<s><image>\n{prior}Findings:", impression="<s><image>\n{prior}Impression:",
                        impression_from_findings="<s><image>\n{prior}Findings: {findings}\nImpression:")
IMAGE_TOKENS = 4
PREP = Preprocessing(image_size=64)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A hand-made longitudinal manifest over three phantom studies: study 1 has study 0 as its prior,
    study 2 has none."""
    from training.data.phantoms import PhantomConfig, generate_dataset

    out = tmp_path_factory.mktemp("longitudinal")
    generate_dataset(out, 3, seed=5, config=PhantomConfig(image_size=64, workers=1))
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    first, second = records[0], records[1]
    second.update(prior_study_uid=first["study_uid"], prior_date="2024-03-02", prior_images=first["images"],
                  prior_views=first["views"], prior_report=first["report"],
                  change={"pleural_effusion": "increased"}, device_change={"endotracheal_tube": "moved"})
    second["report"] = {"findings": "Compared with 2024-03-02, the right pleural effusion has increased.",
                        "impression": "Increased right pleural effusion."}
    second["report_without_prior"] = {"findings": "Large right pleural effusion.",
                                      "impression": "Right pleural effusion."}
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return out / "manifest.jsonl"


@pytest.fixture(scope="module")
def pool(manifest: Path) -> Pool:
    studies = read_studies(manifest, "longitudinal")
    return Pool(studies, decode_studies(studies, PREP), [1.0] * len(studies), decode_priors(studies, PREP))


def encoder() -> SampleEncoder:
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    return SampleEncoder(tokenizer, PRIOR_PROMPTS, image_token_id=tokenizer.token_to_id("<image>"),
                         image_tokens=IMAGE_TOKENS, eos_id=1, max_positions=512, prior=PriorConfig("report+image"))


def prompt_of(enc: SampleEncoder, ids: list[int], labels: list[int]) -> str:
    prompt = [t for t, label in zip(ids, labels) if label == -100 and t != enc.image_token_id]
    return enc.tokenizer.decode(prompt, skip_special_tokens=False)


def findings_of_studies_1_and_2(enc: SampleEncoder, pool: Pool) -> tuple[dict, list, list]:
    """The findings samples of study 1 (with a prior) and study 2 (without): the batch, its ids and labels."""
    batch = collate([Item(1, "findings"), Item(2, "findings")], pool.studies, pool.pixels, enc, pad_id=2,
                    priors=pool.prior_pixels)
    return batch, batch["input_ids"].tolist(), batch["labels"].tolist()


def test_the_manifest_prior_becomes_the_study_prior_and_its_reference(pool: Pool, manifest: Path) -> None:
    without, with_prior = pool.studies[2], pool.studies[1]
    assert without.prior is None and "change" not in without.reference()
    assert with_prior.prior.date == "2024-03-02" and with_prior.prior.study_uid == pool.studies[0].uid
    assert with_prior.prior.image_paths[0] == manifest.parent / pool.studies[0].images[0]
    assert with_prior.reference()["change"] == {"pleural_effusion": "increased"}
    # one prior frontal image for the study that has a prior, none for the others
    assert [pool.prior_pixels.num_images(i) for i in range(3)] == [0, 1, 0]
    assert np.array_equal(pool.prior_pixels.pixels(1)[0], pool.pixels.pixels(0)[0])  # study 0's frontal image


def test_a_moved_device_is_left_out_of_the_comparison_as_evaluate_leaves_it_out(pool: Pool) -> None:
    """The bench and the card score through `Study.reference()`: it carries the manifest's `device_change`, so
    a device that only moved (no `support_device` change) is scored as `raddraft evaluate` scores it."""
    from training.train.evaluation import evaluate_drafts

    study = pool.studies[1]
    assert study.reference()["device_change"] == {"endotracheal_tube": "moved"}
    draft = {"study_uid": study.uid, "findings": "Large right pleural effusion.",
             "impression": "Increased right pleural effusion. The endotracheal tube is unchanged in position."}
    comparison = evaluate_drafts([draft], [study])["comparison"]
    assert (comparison["micro_f1"], comparison["fp"]) == (1.0, 0)


def test_a_sample_with_a_prior_carries_its_date_report_and_image_block(pool: Pool) -> None:
    enc = encoder()
    batch, ids, labels = findings_of_studies_1_and_2(enc, pool)
    # every image token has its image: study 1's own and its prior's, study 2's own
    assert batch["pixel_values"].shape[0] == 3
    assert sum(row.count(enc.image_token_id) for row in ids) == 3 * IMAGE_TOKENS
    with_prior = prompt_of(enc, ids[0], labels[0])
    assert "Prior 2024-03-02:" in with_prior and pool.studies[0].findings_text.split()[0] in with_prior
    assert with_prior.rstrip().endswith("Findings:")
    assert "Prior: none." in prompt_of(enc, ids[1], labels[1])


def test_an_impression_from_another_studys_findings_takes_that_studys_prior(pool: Pool) -> None:
    enc = encoder()
    item = Item(2, IMPRESSION_FROM_FINDINGS, text_from=1)  # study 2's images, study 1's findings and prior
    batch = collate([item], pool.studies, pool.pixels, enc, pad_id=2, priors=pool.prior_pixels)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert batch["pixel_values"].shape[0] == 2 and ids.count(enc.image_token_id) == 2 * IMAGE_TOKENS
    text = prompt_of(enc, ids, labels)
    assert "Prior 2024-03-02:" in text and "pleural effusion has increased" in text
    target = enc.tokenizer.decode([t for t in labels if t not in (-100, 1)])
    assert target.strip() == "Increased right pleural effusion."


def impression_from_findings_encoder() -> SampleEncoder:
    """A model whose findings read the image alone and whose impression, from the findings, compares."""
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    prompts = Prompts(findings="<s><image>\nFindings:", impression=PRIOR_PROMPTS.impression,
                      impression_from_findings=PRIOR_PROMPTS.impression_from_findings)
    return SampleEncoder(tokenizer, prompts, image_token_id=tokenizer.token_to_id("<image>"),
                         image_tokens=IMAGE_TOKENS, eos_id=1, max_positions=512, prior=PriorConfig("report+image"),
                         impression_from="findings")


def target_of(labels: list[int], enc: SampleEncoder) -> str:
    return enc.tokenizer.decode([t for t in labels if t not in (-100, 1)]).strip()


def test_findings_without_the_prior_learn_the_findings_written_without_it(pool: Pool) -> None:
    enc = impression_from_findings_encoder()
    batch, ids, labels = findings_of_studies_1_and_2(enc, pool)
    # no prior image block and no prior words: the study's own image only
    assert batch["pixel_values"].shape[0] == 2
    assert "Prior" not in prompt_of(enc, ids[0], labels[0]) and "Prior" not in prompt_of(enc, ids[1], labels[1])
    assert target_of(labels[0], enc) == "Large right pleural effusion."
    # a study whose manifest has no such text learns its report's findings
    assert target_of(labels[1], enc) == pool.studies[2].findings_text


def test_an_impression_from_findings_is_given_the_findings_written_without_the_prior(pool: Pool) -> None:
    enc = impression_from_findings_encoder()
    batch = collate([Item(1, IMPRESSION_FROM_FINDINGS)], pool.studies, pool.pixels, enc, pad_id=2,
                    priors=pool.prior_pixels)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    text = prompt_of(enc, ids, labels)
    assert "Prior 2024-03-02:" in text and "Findings: Large right pleural effusion." in text
    assert "has increased" not in text  # the comparison is the impression's to make
    assert target_of(labels, enc) == "Increased right pleural effusion."
    # a model drafting its impression beside the findings is given the report's findings, as before
    before = collate([Item(1, IMPRESSION_FROM_FINDINGS)], pool.studies, pool.pixels, encoder(), pad_id=2,
                     priors=pool.prior_pixels)
    assert "has increased" in prompt_of(enc, before["input_ids"][0].tolist(), before["labels"][0].tolist())


def test_only_an_impression_drafted_from_findings_lets_the_findings_prompt_leave_the_prior_out() -> None:
    blind = {"prompts.findings": "<s><image>\nFindings:"}
    config = load_train_config(RECIPE, {**blind, "prompting.impression_from": "findings"})
    config.check_prior_slots()
    assert config.prompting.impression_from == "findings" and "{prior}" not in config.prompts.findings
    with pytest.raises(TrainConfigError, match="prompts.findings"):
        load_train_config(RECIPE, {**blind, "prompting.impression_from": "image"}).check_prior_slots()
    with pytest.raises(TrainConfigError, match="impression_from"):
        load_train_config(RECIPE, {"prompting.impression_from": "prior"})


def test_the_recipe_takes_priors_and_prompts_without_a_prior_slot_are_refused() -> None:
    config = load_train_config(RECIPE)
    assert config.prior.intake == "report" and config.model.base is not None
    assert config.prompting.impression_from == "findings" and "{prior}" not in config.prompts.findings
    assert all("{prior}" in getattr(config.prompts, name) for name in ("impression", "impression_from_findings"))
    # the findings prompt starts the impression's, so the engine continues from the findings' cache
    assert config.prompts.impression_from_findings.startswith(config.prompts.findings)
    assert config.data.tasks.impression_from_other_findings > 0 and not config.stages.projector.enabled
    with pytest.raises(TrainConfigError, match="prompts.findings"):
        load_train_config(None, {"prior.intake": "report"})
    with pytest.raises(TrainConfigError, match="prior.intake"):
        load_train_config(RECIPE, {"prior.intake": "image"})


@pytest.mark.slow
def test_the_export_writes_the_prior_intake_into_model_json(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from engine.bundle import read_manifest
    from training.export import export_bundle

    out = tmp_path / "bundle"
    prompts = Prompts(findings="<s><image>\nFindings:", impression=PRIOR_PROMPTS.impression,
                      impression_from_findings=PRIOR_PROMPTS.impression_from_findings)
    export_bundle(tiny_checkpoint, out, name="tiny-prior", version="0.0.1", prompts=prompts,
                  prior=PriorConfig("report+image"), impression_from="findings")
    manifest = read_manifest(out)
    data = json.loads((out / "model.json").read_text())
    assert data["prior"] == "report+image" and manifest.prior_prompts.none == "Prior: none.\n"
    assert data["impression_from"] == "findings" and manifest.impression_from == "findings"
    assert "{prior}" not in manifest.prompts.findings and "{prior}" in manifest.prompts.impression_from_findings


def test_the_card_and_model_json_carry_the_comparison_scores(manifest: Path) -> None:
    """A test set with priors: model.json's metrics and the card's quality table gain comparison micro F1 and
    the share of drafts without a prior that claim a comparison, scored on the drafts given."""
    from training.train.evaluation import evaluate_drafts, quality_section, summary_metrics

    studies = read_studies(manifest, "longitudinal")
    drafts = [{"study_uid": s.uid, "findings": s.findings_text, "impression": s.impression_text} for s in studies]
    drafts[2]["impression"] += " Unchanged from the prior study."  # study 2 has no prior: a made-up comparison
    result = evaluate_drafts(drafts, studies)
    summary = summary_metrics(result, evaluated_with="references", test_set="three phantoms")
    assert summary["comparison"] == {"micro_f1": 1.0, "hallucinated": 0.5, "n_with_prior": 1, "n_without_prior": 2}
    card = quality_section({"references": result}, "three phantoms")
    assert "| comparison with the prior: micro F1 over per-finding change labels | 1.000 |" in card
    assert "| studies without a prior: share of drafts claiming a comparison | 0.500 |" in card


def test_validation_drafts_make_the_impression_as_the_bundle_will(pool: Pool) -> None:
    """Torch drafts during training (validation metrics, the torch evaluation) make each impression as the
    engine will: from the findings just drafted for a model whose impression comes from its findings."""
    from training.modeling.llava import TINY, build_llava
    from training.modeling.tokenizer import as_transformers
    from training.train.drafting import draft_studies, generate_section

    tokenizer = as_transformers(Tokenizer.from_file(str(TOKENIZER)))
    model = build_llava(TINY, tokenizer, seed=3).eval()
    blind = Prompts(findings="<s><image>\nFindings:", impression=PRIOR_PROMPTS.impression,
                    impression_from_findings=PRIOR_PROMPTS.impression_from_findings)
    indices = [0, 1, 2]
    for impression_from, prompts in (("findings", blind), ("image", PRIOR_PROMPTS)):
        enc = SampleEncoder(tokenizer.backend_tokenizer, prompts, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                            image_tokens=TINY.image_tokens, eos_id=1, max_positions=512, prior=PriorConfig("report"),
                            impression_from=impression_from)
        drafts = draft_studies(model, enc, pool.studies, pool.pixels, pad_id=2, max_new_tokens=6)
        findings = [d["findings"] for d in drafts]
        assert all(findings)
        if impression_from == "findings":
            expected = generate_section(model, enc, pool.studies, pool.pixels, indices, IMPRESSION_FROM_FINDINGS,
                                        pad_id=2, max_new_tokens=6, findings=findings)
        else:
            expected = generate_section(model, enc, pool.studies, pool.pixels, indices, "impression", pad_id=2,
                                        max_new_tokens=6)
        assert [d["impression"] for d in drafts] == expected
