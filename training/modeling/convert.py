"""`raddraft import`: original-layout LLaVA releases -> a Hugging Face `LlavaForConditionalGeneration` folder.

Two source layouts:
- the LLaVA repository's `llava_llama` / `llava_mistral` checkpoints (`config.json` with `mm_*` keys,
  weights named `model.layers...`, `model.mm_projector.{0,2}`, optionally `model.vision_tower.vision_tower...`);
- a LoRA adapter + projector release over a base language model (LLaVA-Rad's shape: `adapter_config.json`,
  `adapter_model.*`, `non_lora_trainables.bin`, a `config.json` with `mm_*` keys), with `base` the language
  model it was trained from. peft merges the adapter (`PeftModel.merge_and_unload`); the result is then an
  original-layout state dict and takes the path above.

The weight names go to the legacy llava-hf names exactly as transformers' `convert_llava_weights_to_hf.py`
renames them (that script is not in the transformers wheel, so its prefix table is followed here), and
`from_pretrained` then applies transformers' own `_checkpoint_conversion_mapping` to today's layout. New
token rows (`<image>`, `<pad>`) are initialised by `resize_token_embeddings(mean_resizing=True)`, the same
mean/covariance sampling the converter does. The vision tower's config (and its weights when the release
lacks them, as the LLaVA releases do) comes from an HF vision folder (`vision`): CLIP, SigLIP or Dinov2.
A tower that is not an HF model (open_clip/timm, e.g. BiomedCLIP-CXR) is refused: its tensors do not map
one to one onto an HF config without a converter we could test.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dicom_node.durable import folder_written_aside
from training.export.errors import ExportError, read_json_object

IMAGE = "<image>"
PAD = "<pad>"
PROMPT_SPEC_FILE = "raddraft_prompts.json"
ORIGINAL_TYPES = {"llava_llama": "llama", "llava_mistral": "mistral", "llava": "llama"}
HF_VISION_TYPES = ("clip_vision_model", "siglip_vision_model", "dinov2")
# The LLaVA repository's conversation templates, as string-content chat templates:
# conv_vicuna_v1 (llava_llama, v1.5) and conv_mistral_instruct (llava_mistral, LLaVA-Med v1.5).
VICUNA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                    "helpful, detailed, and polite answers to the human's questions.")
TEMPLATES = {
    "llama": (
        "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set loop_messages = "
        "messages[1:] %}{% else %}{% set system = '" + VICUNA_V1_SYSTEM.replace("'", "\\'") + "' %}"
        "{% set loop_messages = messages %}{% endif %}{{ system }}{% for message in loop_messages %}"
        "{% if message['role'] == 'user' %}{{ ' USER: ' + message['content'] }}{% else %}{{ ' ASSISTANT: ' + "
        "message['content'] + eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
        "{{ ' ASSISTANT:' }}{% endif %}"),
    "mistral": (
        "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + "
        "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
        "{% endif %}{% endfor %}"),
}


@dataclass
class ImportReport:
    out_dir: Path
    layout: str  # "llava_llama", "llava_mistral", "lora"
    text_model: str
    vision_model: str
    parameters: int
    image_token_id: int

    def summary(self) -> str:
        return (f"{self.layout} -> {self.out_dir}: {self.text_model} decoder, {self.vision_model} tower, "
                f"{self.parameters:,} parameters, <image> = {self.image_token_id}")


def import_checkpoint(source: Path, out_dir: Path, *, base: Path | None = None,
                      vision: Path | None = None) -> ImportReport:
    """Convert `source` into an HF LLaVA folder `out_dir` (written aside, renamed into place at the end)."""
    source, out_dir = Path(source), Path(os.path.abspath(out_dir))
    if not (source / "config.json").is_file():
        raise ExportError(f"{source}: config.json is missing; give an original LLaVA release folder")
    config = read_json_object(source / "config.json")
    if config.get("model_type") == "llava" and "vision_config" in config:
        raise ExportError(f"{source}: already a Hugging Face LLaVA checkpoint; export it directly")
    if "mm_projector_type" not in config and "mm_hidden_size" not in config:
        raise ExportError(f"{source}: not an original LLaVA layout (config.json has no mm_* keys) nor a "
                          "LoRA + projector release")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} exists and is not empty")
    lora = (source / "adapter_config.json").is_file()
    if lora and base is None:
        raise ExportError(f"{source}: a LoRA adapter release; give the language model it was trained on with --base")
    vision_dir = _vision_folder(source, config, vision)
    with folder_written_aside(out_dir) as staging:  # files synced before the folder takes its name
        state, tokenizer_dir = (_merged_lora_state(source, base) if lora else (_original_state(source), source))
        report = _convert(config, state, tokenizer_dir, vision_dir, staging)
        report.layout = "lora" if lora else str(config.get("model_type"))
    report.out_dir = out_dir
    return report




def _vision_folder(source: Path, config: dict, vision: Path | None) -> Path:
    tower = config.get("mm_vision_tower", "")
    if vision is None:
        local = Path(tower) if tower else None
        if local is None or not (local / "config.json").is_file():
            raise ExportError(f"{source}: the vision tower {tower!r} is not a local HF folder; give one with --vision "
                              "(e.g. a download of openai/clip-vit-large-patch14-336)")
        vision = local
    vision = Path(vision)
    if not (vision / "config.json").is_file():
        raise ExportError(f"{vision}: config.json is missing (give an HF vision model folder)")
    vision_config = read_json_object(vision / "config.json")
    kind = vision_config.get("model_type", "")
    if kind in ("clip", "siglip"):
        kind = f"{kind}_vision_model"
    if kind not in HF_VISION_TYPES:
        raise ExportError(f"{vision}: the vision tower is {kind or 'not an HF model'!r} (open_clip and timm towers "
                          f"such as BiomedCLIP do not map one to one onto an HF config); the import takes "
                          f"{', '.join(HF_VISION_TYPES)} towers")
    return vision


def _weights(folder: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    state = {}
    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        if not file.name.startswith("adapter_model"):
            state.update(load_file(str(file)))
    if not files:
        for file in sorted(folder.glob("*.bin")):
            if file.name not in ("adapter_model.bin", "non_lora_trainables.bin", "training_args.bin"):
                state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def _original_state(source: Path) -> dict:
    state = _weights(source)
    if not state:
        raise ExportError(f"{source}: no weights (*.safetensors or *.bin)")
    return state


def _merged_lora_state(source: Path, base: Path) -> tuple[dict, Path]:
    """peft merges the adapter into the base language model; the projector comes from non_lora_trainables."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainables = source / "non_lora_trainables.bin"
    if not trainables.is_file():
        raise ExportError(f"{source}: non_lora_trainables.bin (the projector weights) is missing")
    try:
        language_model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        merged = PeftModel.from_pretrained(language_model, str(source)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ExportError(f"cannot merge the adapter {source} into {base}: {error}") from error
    state = dict(merged.state_dict())
    for key, value in torch.load(trainables, map_location="cpu", weights_only=True).items():
        state[key.removeprefix("base_model.model.")] = value
    tokenizer_dir = source if (source / "tokenizer_config.json").is_file() else Path(base)
    return state, tokenizer_dir


def legacy_hf_key(key: str) -> str | None:
    """An original LLaVA weight name -> its llava-hf (legacy) name, None for buffers the HF model lacks."""
    if key.endswith(".inv_freq") or key == "model.image_newline":
        return None
    if key.startswith("model.vision_tower.vision_tower."):
        return "vision_tower." + key.removeprefix("model.vision_tower.vision_tower.")
    if key.startswith("model.mm_projector."):
        index, rest = key.removeprefix("model.mm_projector.").split(".", 1)
        layers = {"0": "linear_1", "2": "linear_2"}
        if index not in layers:
            raise ExportError(f"projector layer {key!r}: only the 2-layer mlp2x_gelu projector maps onto "
                              "LlavaForConditionalGeneration")
        return f"multi_modal_projector.{layers[index]}.{rest}"
    if key.startswith("lm_head."):
        return "language_model." + key
    if key.startswith("model."):
        return "language_model." + key
    raise ExportError(f"unexpected weight {key!r} in an original LLaVA checkpoint")


def _convert(config: dict, state: dict, tokenizer_dir: Path, vision_dir: Path, staging: Path) -> ImportReport:
    import torch
    from safetensors.torch import save_file
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoTokenizer,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    text_type = ORIGINAL_TYPES.get(str(config.get("model_type")))
    if text_type is None:
        raise ExportError(f"model_type {config.get('model_type')!r} is not an original LLaVA type "
                          f"({', '.join(ORIGINAL_TYPES)})")
    projector = config.get("mm_projector_type", "linear")
    if projector != "mlp2x_gelu":
        raise ExportError(f"mm_projector_type {projector!r}: only mlp2x_gelu maps onto LlavaForConditionalGeneration")
    text_fields = {k: v for k, v in config.items() if not k.startswith("mm_") and k not in (
        "model_type", "architectures", "transformers_version", "image_aspect_ratio", "tune_mm_mlp_adapter",
        "freeze_mm_mlp_adapter", "use_mm_proj", "image_grid_pinpoints", "tokenizer_padding_side",
        "tokenizer_model_max_length")}
    text_config = AutoConfig.for_model(text_type, **text_fields)
    vision_config = AutoConfig.from_pretrained(str(vision_dir))
    vision_config = getattr(vision_config, "vision_config", vision_config)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    original_vocab = int(text_config.vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD})
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    strategy = "full" if config.get("mm_vision_select_feature", "patch") == "cls_patch" else "default"
    llava_config = LlavaConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(),
                               image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
                               vision_feature_layer=int(config.get("mm_vision_select_layer", -2)),
                               vision_feature_select_strategy=strategy, projector_hidden_act="gelu",
                               pad_token_id=tokenizer.pad_token_id)
    legacy = {}
    for key, value in state.items():
        name = legacy_hf_key(key)
        if name is not None:
            legacy[name] = value.detach().to(torch.float32).contiguous()
    if not any(name.startswith("vision_tower.") for name in legacy):
        # the LLaVA releases leave the tower out: take it from the vision folder (a full CLIP/SigLIP model
        # holds a text tower too; only its vision_model belongs to LLaVA)
        tower = AutoModel.from_pretrained(str(vision_dir), dtype=torch.float32)
        full_model = hasattr(tower, "text_model")
        for key, value in tower.state_dict().items():
            if not full_model or key.startswith("vision_model."):
                legacy["vision_tower." + key] = value.contiguous()
    if "language_model.lm_head.weight" not in legacy and getattr(text_config, "tie_word_embeddings", False):
        legacy["language_model.lm_head.weight"] = legacy["language_model.model.embed_tokens.weight"].clone()
    with tempfile.TemporaryDirectory(dir=staging.parent) as work:
        llava_config.save_pretrained(work)
        save_file(legacy, os.path.join(work, "model.safetensors"), metadata={"format": "pt"})
        try:
            # transformers' own `_checkpoint_conversion_mapping` takes the legacy names to today's layout
            model, info = LlavaForConditionalGeneration.from_pretrained(work, dtype=torch.float32,
                                                                        output_loading_info=True)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ExportError(f"the converted weights do not load as LlavaForConditionalGeneration: {error}") from error
    _require_all_loaded(info)
    if len(tokenizer) > original_vocab:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=True)
    model.save_pretrained(staging)
    _save_processor(tokenizer, vision_dir, llava_config, config, text_type, staging)
    eos = text_config.eos_token_id
    GenerationConfig(bos_token_id=text_config.bos_token_id, eos_token_id=eos,
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(staging)
    return ImportReport(out_dir=staging, layout="", text_model=text_type, vision_model=vision_config.model_type,
                        parameters=sum(p.numel() for p in model.parameters()),
                        image_token_id=int(llava_config.image_token_index))


def _require_all_loaded(info: dict) -> None:
    """from_pretrained leaves unmatched weights randomly initialised with only a log line: refuse instead."""
    missing = [key for key in info.get("missing_keys", []) if not key.endswith("position_ids")]
    unexpected = [key for key in info.get("unexpected_keys", []) if not key.endswith("position_ids")]
    if missing or unexpected:
        raise ExportError(f"the converted weights do not map one to one: missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]}")


def _save_processor(tokenizer, vision_dir: Path, llava_config, config: dict, text_type: str, staging: Path) -> None:
    from transformers import AutoImageProcessor, CLIPImageProcessor, LlavaImageProcessor, LlavaProcessor

    vision = llava_config.vision_config
    try:
        image_processor = AutoImageProcessor.from_pretrained(str(vision_dir))
    except (OSError, ValueError):
        size = int(vision.image_size)
        image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    if config.get("image_aspect_ratio") == "pad":  # LLaVA-1.5 pads to a square with the mean colour first
        settings = image_processor.to_dict()
        image_processor = LlavaImageProcessor(
            do_pad=True, size=settings.get("size"), crop_size=settings.get("crop_size"),
            image_mean=settings.get("image_mean"), image_std=settings.get("image_std"))
    has_cls = vision.model_type != "siglip_vision_model"
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vision.patch_size,
                               vision_feature_select_strategy=llava_config.vision_feature_select_strategy,
                               num_additional_image_tokens=1 if has_cls else 0, chat_template=TEMPLATES[text_type])
    processor.save_pretrained(staging)
    template_file = staging / "chat_template.json"
    if not template_file.exists():
        template_file.write_text(json.dumps({"chat_template": TEMPLATES[text_type]}) + "\n")
