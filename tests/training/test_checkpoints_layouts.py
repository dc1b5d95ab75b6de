"""Public LLaVA-family layouts, miniature: export accepts each, and the bundle is faithful to the checkpoint.

Per layout (LLaVA-1.5 Llama + CLIP + SentencePiece; Mistral with 8 of 32 KV heads and a sliding window;
Qwen2 + SigLIP + ChatML; Dinov2 with two views, per-view words and an indication):
- the engine's prompt ids are what transformers' own `LlavaProcessor` makes of the chat template's rendering;
- greedy tokens of the engine equal `generate` on that prompt and a phantom radiograph;
- mean/std, sizes and stop tokens are the checkpoint's; the engine's pixels are close to the processor's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("optimum.exporters.onnx")

from checkpoint_layouts import (
    DINOV2_TWO_VIEW,
    LLAVA_15,
    MISTRAL,
    QWEN2_SIGLIP,
    VICUNA_V1_SYSTEM,
    save_checkpoint,
)

from engine.runtime import load_model
from engine.settings import EngineSettings
from training.export import export_bundle
from training.export.layout import PromptSpec

pytestmark = pytest.mark.slow
CPU = EngineSettings(providers=("cpu",), variant="fp32")
NEW_TOKENS = 12
VIEW_WORDS = {"frontal": "Current frontal image", "lateral": "Current lateral image"}
SPECS = {
    LLAVA_15.name: PromptSpec(),
    MISTRAL.name: PromptSpec(),
    QWEN2_SIGLIP.name: PromptSpec(system="You are a helpful assistant."),
    DINOV2_TWO_VIEW.name: PromptSpec(views=("frontal", "lateral"), view_words=VIEW_WORDS,
                                     indication="Indication: {indication}"),
}
LAYOUTS = [LLAVA_15, MISTRAL, QWEN2_SIGLIP, DINOV2_TWO_VIEW]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Each layout's checkpoint, exported bundle, loaded engine, HF processor and torch model, built once."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    built: dict[str, dict] = {}

    def get(layout):
        if layout.name not in built:
            root = tmp_path_factory.mktemp(layout.name)
            checkpoint = save_checkpoint(layout, root / "checkpoint")
            report = export_bundle(checkpoint, root / "bundle", name=layout.name, version="0.0.1",
                                   prompt_spec=SPECS[layout.name])
            built[layout.name] = {
                "layout": layout, "checkpoint": checkpoint, "report": report,
                "engine": load_model(report.bundle_dir, CPU),
                "processor": AutoProcessor.from_pretrained(checkpoint),
                "torch": LlavaForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval(),
            }
        return built[layout.name]

    return get


@pytest.fixture(params=LAYOUTS, ids=[layout.name for layout in LAYOUTS])
def case(request, cases):
    return cases(request.param)


@pytest.fixture(scope="module")
def two_view_study(tmp_path_factory):
    """A phantom study with a frontal and a lateral image."""
    from training.data.phantoms import PhantomConfig, generate_dataset

    out = tmp_path_factory.mktemp("two-view-phantoms")
    generate_dataset(out, 1, seed=3, config=PhantomConfig(image_size=64, workers=1, lateral_fraction=1.0,
                                                          ap_fraction=0.0))
    record = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    record["paths"] = [out / image for image in record["images"]]
    assert len(record["paths"]) == 2
    return record


def conversation(case, section_text: str, views: tuple[str, ...], indication: str | None = None) -> list:
    """The messages a site would give transformers for this layout, written out independently of the export."""
    layout = case["layout"]
    spec = SPECS[layout.name]
    if layout is DINOV2_TWO_VIEW:  # string content, one <image> per view with its words (MAIRA-2 style)
        lines = [f"{VIEW_WORDS[view]}: <image>" for view in views]
        lines += [f"Indication: {indication}"] if indication else []
        return [{"role": "user", "content": "\n".join([*lines, section_text])}]
    messages = [{"role": "system", "content": [{"type": "text", "text": spec.system}]}] if spec.system else []
    return messages + [{"role": "user", "content": [*({"type": "image"} for _ in views),
                                                    {"type": "text", "text": section_text}]}]


def unit_to_pil(unit: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")


def study_images(case, paths) -> tuple[list, tuple[str, ...]]:
    """The study's images as the engine selects them, as 8-bit RGB pictures for the HF processor."""
    from engine import preprocess
    from engine.imaging import image_to_unit

    manifest = case["engine"].manifest
    chosen = preprocess._select(preprocess.load_study(paths), manifest.preprocessing.views)
    return ([unit_to_pil(image_to_unit(ds, manifest.preprocessing.window)) for _, ds in chosen],
            tuple(view for view, _ in chosen))


def reference(case, images, views, section_text: str, indication: str | None = None):
    processor = case["processor"]
    text = processor.apply_chat_template(conversation(case, section_text, views, indication),
                                         add_generation_prompt=True)
    inputs = processor(images=images, text=text, return_tensors="pt")
    return inputs["input_ids"][0].tolist(), inputs["pixel_values"]


def torch_greedy(case, ids: list[int], pixel_values) -> list[int]:
    model = case["torch"]
    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, pixel_values=pixel_values, attention_mask=torch.ones_like(input_ids),
                             do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    return out[0, len(ids):].tolist()


def test_export_accepts_the_layout_with_fp32_parity(case):
    result = case["report"].parity["fp32"]
    assert result.passed, result.to_dict()
    arch = case["engine"].manifest.architecture
    config = json.loads((case["checkpoint"] / "config.json").read_text())
    assert arch.decoder == config["text_config"]["model_type"]
    assert arch.vision == config["vision_config"]["model_type"]
    assert arch.num_kv_heads == case["layout"].kv_heads[1]


def test_engine_prompt_and_greedy_tokens_equal_transformers(case, phantom_studies, two_view_study):
    engine = case["engine"]
    record = two_view_study if len(engine.manifest.preprocessing.views) > 1 else phantom_studies[0]
    images, views = study_images(case, record["paths"])
    instruction = SPECS[case["layout"].name].instructions["findings"]
    ids, pixel_values = reference(case, images, views, instruction)
    assert engine.prompt_ids("findings", len(views), views=views) == ids
    features = engine.graphs.image_features(pixel_values.numpy())
    result = engine.generate("findings", features, engine.default_options(max_new_tokens=NEW_TOKENS,
                                                                          min_new_tokens=NEW_TOKENS), views=views)
    assert list(result.token_ids) == torch_greedy(case, ids, pixel_values)


def test_engine_pixels_follow_the_image_processor(case, phantom_studies):
    engine = case["engine"]
    processor_config = json.loads((case["checkpoint"] / "preprocessor_config.json").read_text())
    prep = engine.manifest.preprocessing
    assert list(prep.mean) == pytest.approx(processor_config["image_mean"])
    assert list(prep.std) == pytest.approx(processor_config["image_std"])
    images, _ = study_images(case, phantom_studies[0]["paths"])
    expected = case["processor"].image_processor(images=images[:1], return_tensors="np")["pixel_values"]
    ours = engine.prepare(phantom_studies[0]["paths"]).pixel_values[:1]
    assert ours.shape == expected.shape
    # resampling differs (area averaging vs PIL bicubic): close on average, never systematically off
    assert float(np.mean(np.abs(ours - expected))) < 0.05
    assert abs(float(np.mean(ours - expected))) < 0.02


def test_stop_tokens_are_the_generation_configs(case):
    generation = json.loads((case["checkpoint"] / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    assert list(case["engine"].manifest.architecture.stop_token_ids) == (eos if isinstance(eos, list) else [eos])


def test_bundle_prompts_are_the_chat_templates_rendering(case):
    manifest = case["engine"].manifest
    processor = case["processor"]
    views = manifest.preprocessing.views
    for section in ("findings", "impression"):
        instruction = SPECS[case["layout"].name].instructions[section]
        rendered = processor.apply_chat_template(conversation(case, instruction, views), add_generation_prompt=True)
        assert getattr(manifest.prompts, section).endswith(rendered)
    assert manifest.prompting.chat_template == "chat_template.json"
    if case["layout"] is QWEN2_SIGLIP:
        assert manifest.prompts.findings.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
        assert manifest.architecture.bos_token_id is None
    elif case["layout"] is DINOV2_TWO_VIEW:
        assert manifest.prompts.findings.startswith(f"<s>{VICUNA_V1_SYSTEM} USER: Current frontal image: <image>\n"
                                                    "Current lateral image: <image>\n")
    else:
        assert manifest.prompts.findings.startswith("<s>")


def test_two_views_each_get_their_own_image_block_and_the_indication(cases, two_view_study, phantom_studies):
    case = cases(DINOV2_TWO_VIEW)
    engine = case["engine"]
    arch = engine.manifest.architecture
    images, views = study_images(case, two_view_study["paths"])
    assert views == ("frontal", "lateral")
    ids, _ = reference(case, images, views, SPECS[case["layout"].name].instructions["findings"], indication="Cough.")
    ours = engine.prompt_ids("findings", 2, views=views, indication="Cough.")
    assert ours == ids
    blocks = np.flatnonzero(np.diff(np.flatnonzero(np.array(ours) == arch.image_token_id)) > 1)
    assert len(blocks) == 1  # two separate runs of image tokens, words between them
    single = next(r for r in phantom_studies if len(study_images(case, r["paths"])[1]) == 1)
    draft = engine.draft(single["paths"], options=engine.default_options(max_new_tokens=4), indication="Fever.")
    assert draft.prompts["indication"] == "Fever."
    assert "Current lateral image" not in engine.prompt_text("findings", ("frontal",), indication="Fever.")


def test_drafting_a_study_end_to_end(case, phantom_studies):
    draft = case["engine"].draft(phantom_studies[0]["paths"], options=case["engine"].default_options(max_new_tokens=6))
    assert draft.model == f"{case['layout'].name}@0.0.1"
    assert draft.timings["findings"]["prompt_tokens"] > case["engine"].manifest.architecture.image_tokens


def test_mistral_sliding_window_is_honoured(cases):
    """The window (24) is shorter than the prompt: the graphs follow it, and it changes the logits."""
    from transformers import LlavaForConditionalGeneration

    case = cases(MISTRAL)
    engine = case["engine"]
    ids = engine.prompt_ids("findings", 1)
    assert len(ids) > 2 * MISTRAL.sliding_window
    pixels = np.random.default_rng(2).standard_normal((1, 3, 56, 56)).astype(np.float32)
    from engine.generation import prompt_embeddings

    graphs = engine.graphs
    ours = graphs.logits(prompt_embeddings(graphs, ids, graphs.image_features(pixels)), graphs.empty_past(), 0)[0]
    inputs = {"input_ids": torch.tensor([ids]), "pixel_values": torch.from_numpy(pixels)}
    with torch.inference_mode():
        windowed = case["torch"](**inputs).logits[0].numpy()
        unwindowed_model = LlavaForConditionalGeneration.from_pretrained(
            case["checkpoint"], attn_implementation="eager", text_config={"sliding_window": None}).eval()
        assert unwindowed_model.config.text_config.sliding_window is None
        unwindowed = unwindowed_model(**inputs).logits[0].numpy()
    np.testing.assert_allclose(ours, windowed, atol=1e-4)
    assert np.abs(windowed - unwindowed)[-1].max() > 1e-3


def test_a_stitched_two_view_layout_gives_one_image_block(tmp_path, two_view_study):
    checkpoint = save_checkpoint(LLAVA_15, tmp_path / "checkpoint", seed=1)
    spec = PromptSpec(views=("frontal", "lateral"), combine="stitch")
    report = export_bundle(checkpoint, tmp_path / "bundle", name="stitched", version="1", prompt_spec=spec)
    engine = load_model(report.bundle_dir, CPU)
    study = engine.prepare(two_view_study["paths"])
    assert study.pixel_values.shape[0] == 1 and study.views == ("frontal", "lateral")
    text = engine.prompt_text("findings", ("frontal", "lateral"))
    assert text.count("<image>") == 1 and text.startswith("<s>USER: <image>\n")
    ids = engine.prompt_ids("findings", 1, views=study.views)
    assert ids.count(engine.manifest.architecture.image_token_id) == engine.manifest.architecture.image_tokens
    assert engine.draft(two_view_study["paths"], options=engine.default_options(max_new_tokens=4)).findings is not None


@pytest.mark.parametrize("part, model_type, message", [
    ("text_config", "gemma", "the language model is 'gemma'; the export handles llama, mistral, qwen2 decoders"),
    ("vision_config", "vit", ("the vision tower is 'vit'; the export handles clip_vision_model, "
                              "siglip_vision_model, dinov2 towers")),
])
def test_unsupported_decoder_or_tower_is_refused_by_name(tmp_path, part, model_type, message):
    from training.export import ExportError

    folder = tmp_path / "checkpoint"
    folder.mkdir()
    config = {"model_type": "llava", "text_config": {"model_type": "llama"},
              "vision_config": {"model_type": "clip_vision_model"}}
    config[part]["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match=message):
        export_bundle(folder, tmp_path / "out", name="x", version="1")
    assert not (tmp_path / "out").exists()


def test_cli_export_takes_a_prompt_file_and_draft_an_indication(tmp_path, two_view_study, capsys):
    from raddraft.cli import main

    checkpoint = save_checkpoint(DINOV2_TWO_VIEW, tmp_path / "checkpoint", seed=2)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"views": ["frontal", "lateral"], "view_words": VIEW_WORDS,
                                   "indication": "Indication: {indication}",
                                   "instructions": {"findings": "Describe the findings."}}))
    bundle = tmp_path / "bundle"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(bundle), "--prompts", str(prompts),
                 "--no-parity"]) == 0
    capsys.readouterr()
    assert main(["draft", "--model", str(bundle), "--max-new-tokens", "4", "--indication", "Chest pain.",
                 *map(str, two_view_study["paths"])]) == 0
    draft = json.loads(capsys.readouterr().out)
    assert draft["prompts"]["indication"] == "Chest pain."
    manifest = load_model(bundle, CPU).manifest
    assert "Describe the findings." in manifest.prompts.findings
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"views": ["oblique"]}))
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "b2"), "--prompts", str(bad)]) == 2
    assert "views must list some of" in capsys.readouterr().err
