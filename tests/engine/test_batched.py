"""Batched decoding gives each study the tokens it gets alone (greedy, fp32), on the embedded model and a
tiny random one, with rows of different lengths that finish at different steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from engine.batched import BatchRequest, generate_batch
from engine.bundle import read_manifest
from engine.generation import GenerationOptions, generate
from engine.runtime import load_model, resolve_variant
from engine.settings import EngineSettings

EMBEDDED = Path(__file__).resolve().parents[2] / "resources" / "models" / "raddraft-phantom-cxr"
CPU = EngineSettings(providers=("cpu",), variant="fp32")


@pytest.fixture(scope="module", params=["embedded", "tiny"])
def model(request, tiny_bundle: Path):
    return load_model(EMBEDDED if request.param == "embedded" else tiny_bundle, CPU)


def test_decoder_graphs_take_a_dynamic_batch(model) -> None:
    inputs = {i.name: i.shape for i in model.graphs.decoder.get_inputs()}
    assert isinstance(inputs["inputs_embeds"][0], str) and isinstance(inputs["attention_mask"][0], str)
    assert isinstance(model.graphs.vision.get_inputs()[0].shape[0], str)
    assert model.graphs.takes_batches


def test_draft_batch_equals_each_study_drafted_alone(model, phantom_studies) -> None:
    options = model.default_options(max_new_tokens=24)
    studies = [model.prepare(study["paths"]) for study in phantom_studies]
    batched = model.draft_batch(studies, options=options)
    alone = [model.draft(study["paths"], options=options) for study in phantom_studies]
    assert [(d.findings, d.impression) for d in batched] == [(d.findings, d.impression) for d in alone]
    assert all(d.findings for d in batched)
    assert [d.images for d in batched] == [d.images for d in alone]
    assert [d.confidence.keys() for d in batched] == [d.confidence.keys() for d in alone]
    assert {d.timings["batch"] for d in batched} == {len(studies)}


def test_rows_of_different_lengths_finishing_apart_get_their_own_tokens(model, phantom_studies) -> None:
    """Prompts of different lengths (left padding), rows that stop at eos at different steps (a finished row
    leaves the batch), over the images of different studies."""
    features = [model.image_features(model.prepare(study["paths"])) for study in phantom_studies[:3]]
    prompts = [
        model.prompt_ids("findings", features[0].shape[0]),
        model.prompt_ids("impression_from_findings", features[1].shape[0], findings="No acute findings."),
        model.prompt_ids("impression_from_findings", features[2].shape[0],
                         findings="Small left pleural effusion. The heart is enlarged. Lines and tubes unchanged."),
        model.prompt_ids("impression", features[0].shape[0]),
    ]
    assert len({len(p) for p in prompts}) >= 3
    options = GenerationOptions(max_new_tokens=40)
    rows = [BatchRequest(tuple(p), f) for p, f in zip(prompts, [features[0], features[1], features[2], features[0]])]
    batched = generate_batch(model.graphs, model.tokenizer, rows, options)
    alone = [generate(model.graphs, model.tokenizer, list(r.prompt_ids), r.image_features, options) for r in rows]
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]
    assert [r.stop_reason for r in batched] == [r.stop_reason for r in alone]
    assert [r.text for r in batched] == [r.text for r in alone]


def test_forced_length_rows_and_their_probabilities(model, phantom_studies) -> None:
    """min_new_tokens keeps every row going to the end (the batch never shrinks); probabilities agree."""
    features = model.image_features(model.prepare(phantom_studies[3]["paths"]))
    ids = model.prompt_ids("findings", features.shape[0])
    options = GenerationOptions(max_new_tokens=16, min_new_tokens=16)
    rows = [BatchRequest(tuple(ids), features), BatchRequest(tuple(ids[:-1]), features)]
    batched = generate_batch(model.graphs, model.tokenizer, rows, options)
    alone = [generate(model.graphs, model.tokenizer, list(r.prompt_ids), features, options) for r in rows]
    for b, a in zip(batched, alone):
        assert b.token_ids == a.token_ids and len(b.token_ids) == 16
        assert b.token_probs == pytest.approx(a.token_probs, abs=1e-4)


def test_one_request_or_no_cache_decodes_alone(model, phantom_studies) -> None:
    features = model.image_features(model.prepare(phantom_studies[0]["paths"]))
    ids = model.prompt_ids("findings", features.shape[0])
    options = GenerationOptions(max_new_tokens=8)
    single = generate(model.graphs, model.tokenizer, ids, features, options)
    assert generate_batch(model.graphs, model.tokenizer, [BatchRequest(tuple(ids), features)], options)[0].token_ids \
        == single.token_ids
    uncached = replace(options, use_cache=False)
    rows = [BatchRequest(tuple(ids), features)] * 2
    assert [r.token_ids for r in generate_batch(model.graphs, model.tokenizer, rows, uncached)] == \
        [single.token_ids] * 2


def test_auto_variant_passes_over_int8_when_batching() -> None:
    manifest = read_manifest(EMBEDDED)
    assert resolve_variant(manifest, "auto", "cpu") == "int8"
    assert resolve_variant(manifest, "auto", "cpu", batch=4) == "fp32"
    assert resolve_variant(manifest, "int8", "cpu", batch=4) == "int8"  # asked for by name: kept


def test_a_batching_engine_loads_fp32_where_one_at_a_time_loads_int8() -> None:
    assert load_model(EMBEDDED, EngineSettings(providers=("cpu",))).variant == "int8"
    assert load_model(EMBEDDED, EngineSettings(providers=("cpu",), batch_size=4)).variant == "fp32"


def test_an_int8_model_drafts_a_batch_row_by_row_and_gives_what_it_gives_alone(phantom_studies) -> None:
    """int8 quantizes activations with one scale over all rows (and over a prefilled chunk): its batch is not
    run together, and each impression continues from its findings' cache as a study drafted alone does."""
    model = load_model(EMBEDDED, EngineSettings(providers=("cpu",), variant="int8"))
    assert not model.rows_independent
    options = model.default_options(max_new_tokens=24)
    batched = model.draft_batch([model.prepare(study["paths"]) for study in phantom_studies], options=options)
    alone = [model.draft(study["paths"], options=options) for study in phantom_studies]
    assert [(d.findings, d.impression) for d in batched] == [(d.findings, d.impression) for d in alone]
    # the impression continues from the findings' cache, as alone: only what follows the findings is prefilled
    # (one chunk over the findings' tokens would give int8 another activation scale than their decode did)
    assert [d.timings["impression"]["reused_tokens"] for d in batched] == \
        [d.timings["impression"]["reused_tokens"] for d in alone]
    assert all(d.timings["impression"]["reused_tokens"] > d.timings["shared_prefix_tokens"] for d in batched)


def test_draft_batch_with_priors_equals_each_study_drafted_alone_with_its_prior(
        tiny_bundle: Path, phantom_studies, tmp_path: Path) -> None:
    """A bundle that takes the prior report and image: studies with and without a prior in one batch get what
    `draft` gives each alone with its prior (text, the prior used, what became of it)."""
    from tests.engine.test_priors_prompt import phantom_prior, prior_bundle

    model = load_model(prior_bundle(tiny_bundle, tmp_path / "prior-bundle"), CPU)
    earlier = phantom_studies[-1]
    prior = phantom_prior(earlier)
    current = phantom_studies[:3]
    priors = [prior, None, prior]
    options = model.default_options(max_new_tokens=16)
    batched = model.draft_batch([model.prepare(s["paths"]) for s in current], options=options, priors=priors)
    alone = [model.draft(s["paths"], options=options, prior=p) for s, p in zip(current, priors)]
    assert [(d.findings, d.impression, d.prior, d.prompts) for d in batched] == \
        [(d.findings, d.impression, d.prior, d.prompts) for d in alone]
    assert [d.prior is not None for d in batched] == [True, False, True]
    assert [d.domain for d in batched] == [d.domain for d in alone]
