"""Findings and Impression share one prefill: the same tokens as two separate prefills, with less work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.generation import GenerationOptions, generate, prefill, shared_prefix_length
from engine.runtime import load_model
from engine.settings import EngineSettings

EMBEDDED = Path(__file__).resolve().parents[2] / "resources" / "models" / "raddraft-phantom-cxr"
CPU = EngineSettings(providers=("cpu",), variant="fp32")
NEW_TOKENS = 12


def separate_prefills(model, paths, options: GenerationOptions, impression_from_findings: bool):
    """Each section from its own prefill of the whole prompt, nothing reused (the engine before sharing)."""
    features = model.image_features(model.prepare(paths))
    findings = model.generate("findings", features, options)
    kind = "impression_from_findings" if impression_from_findings and findings.text else "impression"
    impression = model.generate(kind, features, options, findings=findings.text)
    return findings, impression


@pytest.fixture(scope="module", params=["embedded", "tiny"])
def model(request, tiny_bundle: Path):
    return load_model(EMBEDDED if request.param == "embedded" else tiny_bundle, CPU)


@pytest.mark.parametrize("from_findings", [False, True], ids=["impression", "impression-from-findings"])
def test_shared_prefix_draft_gives_the_tokens_of_separate_prefills(model, phantom_studies, from_findings) -> None:
    options = model.default_options(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    for study in phantom_studies[:2]:
        draft = model.draft(study["paths"], options=options, impression_from_findings=from_findings, indication="")
        findings, impression = separate_prefills(model, study["paths"], options, from_findings)
        assert (draft.findings, draft.impression) == (findings.text, impression.text)
        image_tokens = model.manifest.architecture.image_tokens
        assert draft.timings["shared_prefix_tokens"] > image_tokens  # the image block and the text before it
        assert draft.timings["findings"]["reused_tokens"] == draft.timings["shared_prefix_tokens"]
        assert draft.timings["impression"]["reused_tokens"] >= draft.timings["shared_prefix_tokens"]


def test_impression_from_findings_continues_from_the_findings_cache(phantom_studies) -> None:
    """With prompts where the findings are the start of the impression prompt, the findings are not computed
    again (on the trained embedded model: its findings text tokenises back to the tokens it generated; a
    random model's often does not, and then less is reused)."""
    model = load_model(EMBEDDED, CPU)
    options = model.default_options(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    draft = model.draft(phantom_studies[0]["paths"], options=options, impression_from_findings=True, indication="")
    findings_prompt = len(model.prompt_ids("findings", 1))
    assert model.manifest.prompts.impression_from_findings.startswith(model.manifest.prompts.findings)
    assert draft.timings["impression"]["reused_tokens"] >= findings_prompt + NEW_TOKENS // 2


def test_generation_from_a_cached_prefix_equals_a_fresh_prefill(model, phantom_studies) -> None:
    features = model.image_features(model.prepare(phantom_studies[1]["paths"]))
    ids = model.prompt_ids("impression", features.shape[0])
    options = GenerationOptions(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    fresh = generate(model.graphs, model.tokenizer, ids, features, options)
    for length in (1, len(ids) // 2, len(ids) - 1, len(ids)):
        state = prefill(model.graphs, ids[:length], features)
        reused = generate(model.graphs, model.tokenizer, ids, features, options, reuse=(state,))
        assert reused.token_ids == fresh.token_ids
        assert reused.reused_tokens == min(length, len(ids) - 1)
    # a cache over other image features is never taken, whatever its tokens
    other = prefill(model.graphs, ids[:-1], np.ascontiguousarray(features * 0.5))
    assert generate(model.graphs, model.tokenizer, ids, features, options, reuse=(other,)).reused_tokens == 0


def test_shared_prefix_length() -> None:
    assert shared_prefix_length([1, 2, 3], [1, 2, 4], [1, 2]) == 2
    assert shared_prefix_length([5], [6]) == 0
