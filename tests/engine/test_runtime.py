"""The engine on a real exported bundle: parity with torch, the KV cache, streaming, sampling, bad bundles."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.bundle import MANIFEST_NAME
from engine.errors import BundleError, GenerationError
from engine.generation import GenerationOptions
from engine.providers import choose_providers
from engine.runtime import load_model
from engine.settings import EngineSettings

CPU = EngineSettings(providers=("cpu",), variant="fp32")


@pytest.fixture(scope="module")
def model(tiny_bundle: Path):
    return load_model(tiny_bundle, CPU)


@pytest.fixture(scope="module")
def study(model, phantom_studies):
    return model.prepare(phantom_studies[0]["paths"])


def test_onnx_greedy_tokens_equal_torch_greedy(model, study, tiny_checkpoint: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import LlavaForConditionalGeneration

    ids = model.prompt_ids("findings", study.pixel_values.shape[0])
    reference = LlavaForConditionalGeneration.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()
    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        out = reference.generate(input_ids=input_ids, pixel_values=torch.from_numpy(study.pixel_values),
                                 attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 max_new_tokens=24, min_new_tokens=24)
    torch_tokens = out[0, len(ids):].tolist()

    result = model.generate("findings", model.image_features(study),
                            model.default_options(max_new_tokens=24, min_new_tokens=24))
    assert list(result.token_ids) == torch_tokens


def test_generation_with_cache_equals_without(model, study) -> None:
    features = model.image_features(study)
    cached = model.generate("findings", features, GenerationOptions(max_new_tokens=20, min_new_tokens=20))
    uncached = model.generate("findings", features,
                              GenerationOptions(max_new_tokens=20, min_new_tokens=20, use_cache=False))
    assert cached.token_ids == uncached.token_ids
    assert len(cached.token_ids) == 20


def test_streamed_pieces_join_to_the_full_text(model, study) -> None:
    pieces: list[str] = []
    result = model.generate("impression", model.image_features(study),
                            GenerationOptions(max_new_tokens=30, min_new_tokens=30), on_text=pieces.append)
    assert len(pieces) > 1
    assert "".join(pieces).strip() == result.text
    assert result.text == model.tokenizer.decode(list(result.token_ids), skip_special_tokens=True).strip()


def test_sampling_is_reproducible_with_a_seed_and_top_p_near_zero_is_greedy(model, study) -> None:
    features = model.image_features(study)
    greedy = model.generate("findings", features, GenerationOptions(max_new_tokens=15, min_new_tokens=15))
    nucleus = model.generate("findings", features, GenerationOptions(
        max_new_tokens=15, min_new_tokens=15, temperature=1.0, top_p=1e-6, seed=1))
    assert nucleus.token_ids == greedy.token_ids
    hot = GenerationOptions(max_new_tokens=15, min_new_tokens=15, temperature=5.0, seed=3)
    first, second = (model.generate("findings", features, hot) for _ in range(2))
    assert first.token_ids == second.token_ids
    assert first.token_ids != greedy.token_ids  # at temperature 5 a random tiny model wanders


def test_repetition_penalty_changes_what_repeats(model, study) -> None:
    features = model.image_features(study)
    plain = model.generate("findings", features, GenerationOptions(max_new_tokens=30, min_new_tokens=30))
    penalised = model.generate("findings", features, GenerationOptions(
        max_new_tokens=30, min_new_tokens=30, repetition_penalty=3.0))
    assert len(set(penalised.token_ids)) > len(set(plain.token_ids))


def test_generation_stops_at_end_of_sequence(model, study, tiny_bundle: Path, tmp_path: Path) -> None:
    # Declare the token greedy decoding emits at step k the end-of-sequence token: generation must stop
    # right there, without emitting it.
    features = model.image_features(study)
    tokens = model.generate("findings", features, GenerationOptions(max_new_tokens=20)).token_ids
    k = next(i for i in range(2, len(tokens)) if tokens[i] not in tokens[:i])
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    data["architecture"]["eos_token_id"] = tokens[k]
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))
    stopping = load_model(bundle, CPU)
    result = stopping.generate("findings", features, GenerationOptions(max_new_tokens=20))
    assert result.stop_reason == "eos"
    assert result.token_ids == tokens[:k]
    suppressed = stopping.generate("findings", features, GenerationOptions(max_new_tokens=20, min_new_tokens=20))
    assert suppressed.stop_reason == "length" and len(suppressed.token_ids) == 20


def test_draft_has_both_sections_provenance_and_timings(model, phantom_studies) -> None:
    pieces: list[tuple[str, str]] = []
    draft = model.draft(phantom_studies[1]["paths"], options=model.default_options(max_new_tokens=12),
                        on_piece=lambda section, text: pieces.append((section, text)))
    assert draft.model == "tiny-test@0.0.1"
    assert draft.provider == "cpu"
    assert draft.images and draft.images[0] in {i["sop_instance_uid"] for i in phantom_studies[1]["image_info"]}
    assert {section for section, _ in pieces} <= {"findings", "impression"}
    assert "".join(text for section, text in pieces if section == "findings").strip() == draft.findings
    assert draft.timings["findings"]["new_tokens"] <= 12
    assert draft.timings["total_s"] > 0
    json.dumps(draft.to_dict())


def test_impression_from_findings_uses_the_findings_prompt(model, study) -> None:
    features = model.image_features(study)
    plain = model.prompt_ids("impression", 1)
    conditioned = model.prompt_ids("impression_from_findings", 1, findings="Small right pleural effusion.")
    assert len(conditioned) > len(plain)
    with pytest.raises(GenerationError, match="non-empty findings"):
        model.generate("impression_from_findings", features, findings="  ")


def test_int8_variant_loads_and_auto_picks_it_on_cpu(tiny_bundle: Path) -> None:
    auto = load_model(tiny_bundle, EngineSettings(providers=("cpu",)))
    assert auto.variant == "int8"
    assert load_model(tiny_bundle, CPU).variant == "fp32"


def test_cuda_request_without_cuda_is_reported_as_a_cpu_fallback(tiny_bundle: Path, caplog) -> None:
    choice = choose_providers(("cuda", "cpu"), available=["CPUExecutionProvider"])
    assert choice.ort_providers == ("CPUExecutionProvider",)
    assert "cuda" in choice.fallback_reason and "CPU" in choice.fallback_reason
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA; the fallback path is exercised on CPU-only machines")
    with caplog.at_level(logging.WARNING):
        model = load_model(tiny_bundle, EngineSettings(providers=("cuda", "cpu")))
    assert model.provider == "cpu"
    assert any("GPU not used" in record.getMessage() for record in caplog.records)


def test_provider_order_is_kept_and_cpu_is_always_last() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    choice = choose_providers(("cuda", "tensorrt"), available)
    assert choice.ort_providers == ("CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider")
    assert choice.fallback_reason == ""


# -- bad bundles --------------------------------------------------------------------------------------
def _broken(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def _edit_manifest(bundle: Path, **changes: object) -> None:
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    data.update(changes)
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))


def test_missing_folder_and_manifest_are_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a folder"):
        load_model(tmp_path / "nope", CPU)
    with pytest.raises(BundleError, match="model.json is missing"):
        load_model(tmp_path, CPU)


def test_unknown_format_version_is_named(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _broken(tiny_bundle, tmp_path)
    _edit_manifest(bundle, format_version=99)
    with pytest.raises(BundleError, match="format_version 99 is not supported"):
        load_model(bundle, CPU)


def test_invalid_json_and_missing_keys_are_named(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _broken(tiny_bundle, tmp_path)
    (bundle / MANIFEST_NAME).write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_model(bundle, CPU)
    shutil.copy(tiny_bundle / MANIFEST_NAME, bundle / MANIFEST_NAME)
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    del data["architecture"]
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="lacks 'architecture'"):
        load_model(bundle, CPU)


def test_missing_and_corrupt_onnx_files_are_named(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _broken(tiny_bundle, tmp_path)
    decoder = json.loads((bundle / MANIFEST_NAME).read_text())["variants"]["fp32"]["decoder"]
    (bundle / decoder).write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    with pytest.raises(BundleError, match=f"{decoder} cannot be loaded"):
        load_model(bundle, CPU)
    (bundle / decoder).unlink()
    with pytest.raises(BundleError, match=f"{decoder} is missing"):
        load_model(bundle, CPU)


def test_bad_tokenizer_is_named(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _broken(tiny_bundle, tmp_path)
    (bundle / "tokenizer.json").write_text("[]")
    with pytest.raises(BundleError, match="tokenizer.json is not a valid tokenizer"):
        load_model(bundle, CPU)


def test_unknown_variant_is_named(tiny_bundle: Path) -> None:
    with pytest.raises(BundleError, match="no 'fp16' variant"):
        load_model(tiny_bundle, EngineSettings(providers=("cpu",), variant="fp16"))


def test_new_tokens_end_at_the_models_last_position(model, study) -> None:
    """More new tokens asked for than the positions leave: the draft runs to the last position (stop reason
    "length") instead of failing; a long findings text given for the impression still gets one."""
    positions = model.manifest.architecture.max_positions
    asked = GenerationOptions(max_new_tokens=positions, min_new_tokens=positions)
    result = model.generate("findings", model.image_features(study), asked)
    assert result.stop_reason == "length" and result.prompt_tokens + len(result.token_ids) == positions


def test_a_prompt_that_leaves_no_room_is_refused(model, study) -> None:
    positions = model.manifest.architecture.max_positions
    findings = "Small right pleural effusion. " * positions
    with pytest.raises(GenerationError, match="leaves 0 of the model's"):
        model.generate("impression_from_findings", model.image_features(study), findings=findings)


def test_image_features_shape_matches_the_manifest(model, study) -> None:
    features = model.image_features(study)
    arch = model.manifest.architecture
    assert features.shape == (study.pixel_values.shape[0], arch.image_tokens, arch.hidden_size)
    assert np.isfinite(features).all()
