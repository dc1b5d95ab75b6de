"""`raddraft import`: miniature original-layout LLaVA releases become HF checkpoints that compute what the
original parts compute, and that `raddraft export` then takes.

Layouts: `llava_llama` with its vision tower in the state dict, `llava_mistral` (8 of 32 KV heads) whose
tower comes from `--vision`, and a LoRA adapter + projector over a base Llama (LLaVA-Rad's shape).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("sentencepiece")

from checkpoint_layouts import sentencepiece_tokenizer

from training.export import ExportError
from training.modeling.convert import import_checkpoint

pytestmark = pytest.mark.slow
IMAGE_SIZE, PATCH = 56, 14


def tiny_language_model(kind: str, vocab: int, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    common = {"vocab_size": vocab, "hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
              "max_position_embeddings": 512, "bos_token_id": tokenizer.bos_token_id,
              "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(1)
    if kind == "mistral":
        return MistralForCausalLM(MistralConfig(num_attention_heads=32, num_key_value_heads=8, head_dim=4,
                                                **common)).eval()
    return LlamaForCausalLM(LlamaConfig(num_attention_heads=4, num_key_value_heads=4, **common)).eval()


def tiny_vision(folder: Path):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(2)
    tower = CLIPVisionModel(CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=32,
                                             num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)).eval()
    tower.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return tower


def tiny_projector(vision_hidden: int, text_hidden: int):
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(vision_hidden, text_hidden), torch.nn.GELU(),
                               torch.nn.Linear(text_hidden, text_hidden)).eval()


def llava_config(kind: str, language_model, vision_dir: Path) -> dict:
    """config.json as the LLaVA repository writes it: the language model's fields plus mm_*."""
    config = language_model.config.to_dict()
    config.update(model_type=f"llava_{kind}", architectures=[f"Llava{kind.capitalize()}ForCausalLM"],
                  mm_vision_tower=str(vision_dir), mm_hidden_size=32, mm_projector_type="mlp2x_gelu",
                  mm_vision_select_layer=-2, mm_vision_select_feature="patch", image_aspect_ratio="square",
                  mm_use_im_start_end=False, mm_use_im_patch_token=False)
    return config


def save_original(folder: Path, kind: str, language_model, projector, tower, tokenizer, vision_dir: Path,
                  with_tower: bool) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    state = {key: value.contiguous() for key, value in language_model.state_dict().items()}
    state.update({f"model.mm_projector.{key}": value for key, value in projector.state_dict().items()})
    if with_tower:
        state.update({f"model.vision_tower.vision_tower.{key}": value for key, value in tower.state_dict().items()})
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(llava_config(kind, language_model, vision_dir)))
    tokenizer.save_pretrained(folder)
    return folder


def reference_logits(language_model, projector, tower, input_ids, pixel_values, image_token_id: int):
    """The original LLaVA forward from its parts: tower layer -2 without CLS -> projector -> in place of <image>."""
    with torch.no_grad():
        features = projector(tower(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:])
        is_image = input_ids == image_token_id
        embeds = language_model.get_input_embeddings()(torch.where(is_image, 0, input_ids))
        embeds[is_image] = features.reshape(-1, features.shape[-1])
        return language_model(inputs_embeds=embeds).logits


def imported_logits(out: Path, images):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(out)
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    text = processor.apply_chat_template([{"role": "user", "content": "<image>\nDescribe the findings."}],
                                         add_generation_prompt=True)
    inputs = processor(images=images, text=text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    return model, inputs, logits, text


def phantom_picture():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(4)
    return Image.fromarray(rng.integers(0, 256, (70, 64), dtype=np.uint8)).convert("RGB")


@pytest.mark.parametrize("kind, with_tower", [("llama", True), ("mistral", False)])
def test_original_llava_release_imports_and_exports(tmp_path, kind, with_tower):
    tokenizer = sentencepiece_tokenizer(tmp_path / "spm", with_image=False)
    language_model = tiny_language_model(kind, len(tokenizer), tokenizer)
    tower = tiny_vision(tmp_path / "clip")
    projector = tiny_projector(32, 128)
    source = save_original(tmp_path / "release", kind, language_model, projector, tower, tokenizer,
                           tmp_path / "clip", with_tower)
    report = import_checkpoint(source, tmp_path / "hf")
    assert (report.layout, report.text_model) == (f"llava_{kind}", kind)
    _, inputs, logits, text = imported_logits(tmp_path / "hf", [phantom_picture()])
    assert report.image_token_id == len(tokenizer)  # appended after the original vocabulary
    expected = reference_logits(language_model, projector, tower, inputs["input_ids"], inputs["pixel_values"],
                                report.image_token_id)
    torch.testing.assert_close(logits[..., :len(tokenizer)], expected, atol=1e-4, rtol=1e-4)
    assert text.startswith("A chat between") if kind == "llama" else text.startswith("[INST] <image>\n")

    from training.export import export_bundle

    bundle = export_bundle(tmp_path / "hf", tmp_path / "bundle", name=f"imported-{kind}", version="1")
    assert bundle.parity["fp32"].passed
    assert bundle.manifest.prompts.findings.startswith("<s>A chat between" if kind == "llama" else "<s>[INST] <image>\n")


def test_lora_and_projector_release_merges_over_its_base(tmp_path):
    from peft import LoraConfig, get_peft_model

    tokenizer = sentencepiece_tokenizer(tmp_path / "spm", with_image=False)
    base = tiny_language_model("llama", len(tokenizer), tokenizer)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    tower = tiny_vision(tmp_path / "clip")
    projector = tiny_projector(32, 128)
    adapted = get_peft_model(tiny_language_model("llama", len(tokenizer), tokenizer),
                             LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    source = tmp_path / "release"
    adapted.save_pretrained(source)
    torch.save({f"base_model.model.model.mm_projector.{key}": value for key, value in projector.state_dict().items()},
               source / "non_lora_trainables.bin")
    (source / "config.json").write_text(json.dumps(llava_config("llama", base, tmp_path / "clip")))

    with pytest.raises(ExportError, match="give the language model it was trained on with --base"):
        import_checkpoint(source, tmp_path / "nope")
    report = import_checkpoint(source, tmp_path / "hf", base=tmp_path / "base", vision=tmp_path / "clip")
    assert report.layout == "lora"
    merged = adapted.merge_and_unload()
    _, inputs, logits, _ = imported_logits(tmp_path / "hf", [phantom_picture()])
    expected = reference_logits(merged, projector, tower, inputs["input_ids"], inputs["pixel_values"],
                                report.image_token_id)
    torch.testing.assert_close(logits[..., :len(tokenizer)], expected, atol=1e-4, rtol=1e-4)
    unadapted = reference_logits(base, projector, tower, inputs["input_ids"], inputs["pixel_values"],
                                 report.image_token_id)
    assert (expected - unadapted).abs().max() > 1e-3  # the adapter is in there


def test_an_open_clip_tower_and_a_deep_projector_are_refused(tmp_path, capsys):
    from raddraft.cli import main

    tokenizer = sentencepiece_tokenizer(tmp_path / "spm", with_image=False)
    language_model = tiny_language_model("llama", len(tokenizer), tokenizer)
    tiny_vision(tmp_path / "clip")
    source = save_original(tmp_path / "release", "llama", language_model, tiny_projector(32, 128),
                           None, tokenizer, tmp_path / "clip", with_tower=False)
    open_clip = tmp_path / "biomedclip"
    open_clip.mkdir()
    (open_clip / "config.json").write_text(json.dumps({"model_cfg": {"vision_cfg": {"timm_model_name": "vit_base"}}}))
    assert main(["import", "--from", str(source), "--out", str(tmp_path / "hf"), "--vision", str(open_clip)]) == 2
    assert "open_clip and timm towers" in capsys.readouterr().err
    config = json.loads((source / "config.json").read_text())
    config["mm_projector_type"] = "mlp4x_gelu"  # MAIRA-2's 4-layer projector is not LlavaForConditionalGeneration's
    (source / "config.json").write_text(json.dumps(config))
    assert main(["import", "--from", str(source), "--out", str(tmp_path / "hf2")]) == 2
    assert "only mlp2x_gelu maps" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists() and not (tmp_path / "hf2").exists()
    assert main(["import", "--from", str(source.parent / "spm"), "--out", str(tmp_path / "hf3")]) == 2
