"""model.json v2: rendered prompt variants, one image block per `<image>`, stop token lists, the fit
checked at load, indications from DICOM, resize modes; and v1 bundles (the embedded one) still read."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from engine.bundle import (
    MANIFEST_NAME,
    Architecture,
    Preprocessing,
    PromptLayout,
    Prompts,
    PromptVariant,
    read_manifest,
)
from engine.errors import BundleError, GenerationError
from engine.indication import study_indication
from engine.preprocess import fit_image, unit_images_to_pixel_values
from engine.prompts import layout_prompt_text, prompt_ids
from engine.runtime import load_model
from engine.settings import EngineSettings

CPU = EngineSettings(providers=("cpu",), variant="fp32")
EMBEDDED = Path(__file__).resolve().parents[2] / "resources" / "models" / "raddraft-phantom-cxr"
TWO_VIEWS = PromptLayout(chat_template="chat_template.json", indication="Indication: {indication}", variants=(
    PromptVariant("findings", ("frontal", "lateral"), "<s>USER: Frontal: <image>\nLateral: <image>\nFindings? ASSISTANT:"),
    PromptVariant("findings", ("frontal", "lateral"),
                  "<s>USER: Frontal: <image>\nLateral: <image>\nIndication: {indication}\nFindings? ASSISTANT:", True),
    PromptVariant("findings", ("frontal",), "<s>USER: Frontal: <image>\nFindings? ASSISTANT:"),
    PromptVariant("findings", ("frontal",), "<s>USER: Frontal: <image>\nIndication: {indication}\nFindings? ASSISTANT:",
                  True),
))


# The model.json of the embedded bundle 1.0.0, the last one written in format version 1 (bundles installed at
# sites still have it); its graphs are the same files as the embedded bundle's.
V1_MANIFEST = Path(__file__).resolve().parent / "data" / "model-v1-raddraft-phantom-cxr-1.0.0.json"


def test_a_v1_bundle_reads_with_v1_defaults(tmp_path: Path):
    data = json.loads(V1_MANIFEST.read_text())
    assert data["format_version"] == 1 and "prompting" not in data
    for item in EMBEDDED.iterdir():
        if item.name != MANIFEST_NAME:
            (tmp_path / item.name).symlink_to(item)
    (tmp_path / MANIFEST_NAME).write_text(V1_MANIFEST.read_text())
    manifest = read_manifest(tmp_path)
    assert manifest.model_id == "raddraft-phantom-cxr@1.0.0"
    assert manifest.architecture.stop_token_ids == (manifest.architecture.eos_token_id,)
    assert (manifest.architecture.decoder, manifest.architecture.vision) == ("llama", "clip_vision_model")
    assert manifest.preprocessing.resize == "pad" and manifest.preprocessing.scale == 1.0
    assert manifest.prompting.variants == ()


def test_the_embedded_bundle_drafts_as_before(phantom_studies):
    model = load_model(EMBEDDED, CPU)
    ids = model.prompt_ids("findings", 1)
    text = model.prompt_text("findings", ("frontal",))
    assert text == "<s><image>\nFindings:"
    assert ids.count(model.manifest.architecture.image_token_id) == model.manifest.architecture.image_tokens
    draft = model.draft(phantom_studies[0]["paths"], options=model.default_options(max_new_tokens=8))
    assert draft.findings and "indication" not in draft.prompts


def test_a_v2_manifest_round_trips(tiny_bundle: Path, tmp_path: Path):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    manifest = read_manifest(bundle)
    changed = dataclasses.replace(
        manifest, prompting=TWO_VIEWS,
        preprocessing=dataclasses.replace(manifest.preprocessing, views=("frontal", "lateral"), resize="crop",
                                          shortest_edge=80, scale=255.0),
        architecture=dataclasses.replace(manifest.architecture, stop_token_ids=(1, 5)))
    (bundle / MANIFEST_NAME).write_text(changed.to_json())
    again = read_manifest(bundle)
    assert again == changed
    assert again.architecture.stop_token_ids == (1, 5)
    assert json.loads((bundle / MANIFEST_NAME).read_text())["format_version"] == 2


def test_variant_is_chosen_by_views_and_indication():
    plain = Prompts()
    text = layout_prompt_text(TWO_VIEWS, plain, "findings", ("frontal",), indication="  Cough,\n fever {findings} ")
    assert text == "<s>USER: Frontal: <image>\nIndication: Cough, fever {findings}\nFindings? ASSISTANT:"
    assert "Indication" not in layout_prompt_text(TWO_VIEWS, plain, "findings", ("frontal", "lateral"))
    with pytest.raises(GenerationError, match="no impression prompt"):
        layout_prompt_text(TWO_VIEWS, plain, "impression", ("frontal",))
    assert layout_prompt_text(PromptLayout(), plain, "findings", ("frontal",), indication="x") == plain.findings


class _Tokenizer:
    """Whitespace 'tokenizer' over a fixed vocabulary (prompt_ids only calls encode)."""

    class _Encoding:
        def __init__(self, ids):
            self.ids = ids

    def __init__(self):
        self.vocab = {"<image>": 3}

    def encode(self, text, add_special_tokens=False):
        return self._Encoding([self.vocab.setdefault(word, len(self.vocab) + 10) for word in text.split()])


def test_each_image_placeholder_gets_its_own_block_or_one_takes_all():
    tokenizer = _Tokenizer()
    two = prompt_ids(tokenizer, "a <image> b <image> c", image_token_id=3, image_tokens=4, num_images=2)
    assert two[:1] + two[5:6] + two[-1:] == [tokenizer.vocab["a"], tokenizer.vocab["b"], tokenizer.vocab["c"]]
    assert two[1:5] == [3] * 4 and two[6:10] == [3] * 4
    one = prompt_ids(tokenizer, "a <image> c", image_token_id=3, image_tokens=4, num_images=2)
    assert one.count(3) == 8
    with pytest.raises(GenerationError, match="2 <image> placeholders for 3 images"):
        prompt_ids(tokenizer, "a <image> b <image>", image_token_id=3, image_tokens=4, num_images=3)


def test_generation_stops_at_any_stop_token(tiny_bundle: Path, tmp_path: Path, phantom_studies):
    model = load_model(tiny_bundle, CPU)
    study = model.prepare(phantom_studies[0]["paths"])
    free = model.generate("findings", model.image_features(study), model.default_options(max_new_tokens=6,
                                                                                          min_new_tokens=6))
    second = free.token_ids[2]
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    data["architecture"]["stop_token_ids"] = [data["architecture"]["eos_token_id"], second]
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))
    stopping = load_model(bundle, CPU)
    result = stopping.generate("findings", stopping.image_features(study), stopping.default_options(max_new_tokens=6))
    assert result.stop_reason == "eos"
    assert list(result.token_ids) == [t for t in free.token_ids[:free.token_ids.index(second)]]


def test_a_bundle_whose_prompts_cannot_fit_is_refused_at_load(tiny_bundle: Path, tmp_path: Path):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    data["generation"]["max_new_tokens"] = data["architecture"]["max_positions"] // 2
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="impression_from_findings prompt for frontal takes"):
        load_model(bundle, CPU)
    assert load_model(bundle, dataclasses.replace(CPU, max_new_tokens=32)).prompt_ids("findings", 1)


def test_indication_from_the_study_dicom_attributes():
    ds = Dataset()
    assert study_indication([ds]) is None
    request = Dataset()
    request.RequestedProcedureDescription = "CHEST  2 VIEWS"
    ds.RequestAttributesSequence = [request]
    assert study_indication([ds]) == "CHEST 2 VIEWS"
    ds.ReasonForTheRequestedProcedure = "Fever,\n cough "
    assert study_indication([Dataset(), ds]) == "Fever, cough"


def test_resize_modes_follow_the_image_processors():
    image = np.linspace(0, 1, 40 * 80, dtype=np.float32).reshape(40, 80)
    square, content = fit_image(image, Preprocessing(image_size=20, resize="pad"))
    assert square.shape == (20, 20) and content.sum() == 20 * 10
    cropped, none = fit_image(image, Preprocessing(image_size=20, resize="crop", shortest_edge=20))
    assert none is None and cropped.shape == (20, 20)
    assert cropped.mean() == pytest.approx(image.mean(), abs=0.01)  # the centre of a left-right ramp
    stretched, _ = fit_image(image, Preprocessing(image_size=20, resize="stretch"))
    assert stretched[0, 0] < 0.05 and stretched[-1, -1] > 0.95
    prep = Preprocessing(image_size=20, resize="pad", mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.5),
                         pad_value=(0.4, 0.5, 0.6))
    pixels = unit_images_to_pixel_values([image], prep)
    assert np.allclose(pixels[0, :, 0, 0], 0.0)  # padded with the mean colour: zero after normalising
    white = np.ones((40, 80), np.float32)
    raw = unit_images_to_pixel_values([white], dataclasses.replace(prep, scale=255.0, pad_value=(0, 0, 0)))
    assert raw[0, 0].max() == pytest.approx((255.0 - 0.4) / 0.2)  # a processor that does not rescale
    assert raw[0, 0, 0, 0] == pytest.approx(-0.4 / 0.2)


def test_architecture_without_stop_list_stops_at_eos():
    arch = Architecture("llava", 8, 1, 1, 8, 10, 64, 3, 4, None, 1, 2)
    assert arch.stop_token_ids == (1,) and arch.bos_token_id is None
    assert Architecture("llava", 8, 1, 1, 8, 10, 64, 3, 4, 0, 1, 2, stop_token_ids=(7,)).stop_token_ids == (1, 7)
