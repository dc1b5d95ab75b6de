"""`export_bundle`: a Hugging Face LLaVA checkpoint folder -> a RadDraft model bundle.

Everything is written into a hidden sibling folder and renamed into place at the end, so a failed or
interrupted export leaves the target as it was (absent, empty, or the previous bundle).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicom_node.durable import folder_written_aside, write_text_atomically
from engine.bundle import (
    MANIFEST_NAME,
    Architecture,
    BundleManifest,
    GenerationDefaults,
    GraphFiles,
    Preprocessing,
    PromptLayout,
    Prompts,
    validate_bundle,
    write_manifest,
)
from engine.errors import EngineError
from training.export.errors import ExportError, read_json_object
from training.export.parity import ParityResult

FP32 = GraphFiles(vision="vision.onnx", embed="embed.onnx", decoder="decoder.onnx")
TOKENIZER = "tokenizer.json"
CARD = "MODEL_CARD.md"
RECORD = "export.json"
CHECKPOINT = "checkpoint"
CHECKPOINT_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt")
# Kept in step with training/export/decoder.py (not imported from there: it imports torch).
SUPPORTED_DECODERS = ("llama", "mistral", "qwen2")
SUPPORTED_VISION = ("clip_vision_model", "siglip_vision_model", "dinov2")

# progress(done, total, what is being done now)
Progress = Callable[[int, int, str], None]


@dataclass
class ExportReport:
    bundle_dir: Path
    manifest: BundleManifest
    files: dict[str, int]  # file name in the bundle -> bytes
    parity: dict[str, ParityResult] = field(default_factory=dict)  # variant -> result; empty without parity
    failed_variants: dict[str, str] = field(default_factory=dict)  # variant -> why it was left out
    parameters: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds
    peak_rss: dict[str, int] = field(default_factory=dict)  # step -> peak resident bytes at its end
    seconds: float = 0.0

    def variant_size(self, variant: str) -> int:
        return sum(self.files.get(name, 0) + self.files.get(f"{name}.data", 0)
                   for name in self.manifest.variants[variant].all())

    def summary_lines(self) -> list[str]:
        lines = [f"{self.manifest.model_id} -> {self.bundle_dir} in {self.seconds:.1f} s"]
        for name, size in self.files.items():
            lines.append(f"  {name:<24} {_human(size):>10}")
        for variant in self.manifest.variants:
            result = self.parity.get(variant)
            check = result.summary() if result else f"{variant}: parity not checked"
            lines.append(f"  {check} [{_human(self.variant_size(variant))}]")
        for variant, why in self.failed_variants.items():
            lines.append(f"  {variant}: left out ({why})")
        return lines


def export_bundle(checkpoint_dir: Path, out_dir: Path, *, name: str, version: str,
                  quantize: Iterable[str] | str = (), preprocessing: Preprocessing | None = None,
                  prompts: Prompts | None = None, generation: GenerationDefaults | None = None,
                  provenance: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                  parity: bool = True, progress: Progress | None = None, overwrite: bool = False,
                  card_notes: str | None = None, intended_use: str | None = None,
                  quantize_options=None, threads: int | None = None,
                  include_checkpoint: bool = False, prompt_spec=None, prior=None,
                  decoder_method: str = "auto", impression_from: str = "image") -> ExportReport:
    """Export the LLaVA checkpoint in `checkpoint_dir` as a bundle in `out_dir`.

    quantize: extra variants ("int8", "fp16") besides fp32. parity: check fp32 (fatal) and the variants
    (reported) against torch. card_notes: markdown placed at the top of MODEL_CARD.md (e.g. "not for
    clinical use"). An existing bundle in `out_dir` is replaced; another non-empty folder only with
    `overwrite`. include_checkpoint: copy the checkpoint into the bundle (`checkpoint/`) so a site can
    fine-tune the bundle itself (`raddraft finetune --from BUNDLE`). Raises `ExportError` (and leaves
    `out_dir` untouched) on any failure.

    Unless given, preprocessing comes from the checkpoint's `preprocessor_config.json` and the prompts from
    its chat template, rendered for `prompt_spec` (a `training.export.layout.PromptSpec`; default: the
    checkpoint's `raddraft_prompts.json`, else one frontal view and plain instructions); stop tokens are
    every EOS of its `generation_config.json`. prior: what the prompts take of a prior study (a
    `training.train.config.PriorConfig`; None: nothing). decoder_method: "direct" (the decoder graph written from the
    weights), "trace" (torch's exporter with optimum's config) or "auto" (direct where it can).
    impression_from: model.json's `impression_from` ("image", or "findings": the engine drafts the impression
    from the drafted findings).
    """
    from training.export.layout import PromptSpec, read_preprocessing, read_prompt_spec

    started = time.monotonic()
    checkpoint_dir = Path(checkpoint_dir)
    out_dir = Path(os.path.abspath(out_dir))
    variants = _check_variants(quantize)
    _check_identity(name, version)
    config = check_checkpoint(checkpoint_dir)
    _check_target(out_dir, overwrite)
    spec = prompt_spec or read_prompt_spec(checkpoint_dir) or PromptSpec()
    spec.check()
    generation = generation or GenerationDefaults()
    vision_size = int(config["vision_config"].get("image_size", 224))
    preprocessing = preprocessing or read_preprocessing(checkpoint_dir, vision_size, spec) or \
        Preprocessing(image_size=vision_size, views=spec.views, combine=spec.combine)
    interpolates = config["vision_config"].get("model_type") == "dinov2"  # Dinov2 resizes its position table
    if preprocessing.image_size != vision_size and not interpolates:
        raise ExportError(f"preprocessing.image_size {preprocessing.image_size} differs from the vision encoder's "
                          f"image size {vision_size}; the vision graph takes {vision_size}x{vision_size} images")

    steps = ["load checkpoint", "export vision graph", "export embedding graph"] + \
        (["run torch reference"] if parity else []) + ["export decoder graph"] + \
        (["check fp32 parity"] if parity else [])
    for variant in variants:
        steps += [f"write {variant} variant"] + ([f"check {variant} parity"] if parity else [])
    steps += ["write manifest and card"]
    timer = _Steps(steps, progress)

    with folder_written_aside(out_dir) as staging:
        with _quiet_exporters():
            report = _export_into(staging, checkpoint_dir, timer, name=name, version=version, variants=variants,
                                  preprocessing=preprocessing, prompts=prompts, generation=generation,
                                  provenance=dict(provenance or {}), metrics=dict(metrics or {}),
                                  parity=parity, card_notes=card_notes, intended_use=intended_use,
                                  quantize_options=quantize_options, threads=threads,
                                  include_checkpoint=include_checkpoint, spec=spec, prior=prior,
                                  decoder_method=decoder_method, impression_from=impression_from)
        timer.finish()
        report.seconds = time.monotonic() - started
        _write_record(staging, report, checkpoint_dir)
        report.files = _file_sizes(staging)
    report.bundle_dir = out_dir
    return report


# ------------------------------------------------------------------------------------------- checks
def check_checkpoint(checkpoint_dir: Path) -> dict:
    """The checkpoint's config.json, after checking it is a LLaVA with a decoder the export handles and a tokenizer.json."""
    where = f"checkpoint {checkpoint_dir}"
    if not checkpoint_dir.exists():
        raise ExportError(f"{where}: no such folder")
    if not checkpoint_dir.is_dir():
        raise ExportError(f"{where}: not a folder (give the folder written by save_pretrained)")
    config_file = checkpoint_dir / "config.json"
    if not config_file.is_file():
        raise ExportError(f"{where}: config.json is missing (give the folder written by save_pretrained)")
    config = read_json_object(config_file)
    model_type = config.get("model_type")
    if model_type != "llava":
        raise ExportError(f"{where}: model_type is {model_type!r}, not 'llava'; raddraft export takes LLaVA "
                          "checkpoints (LlavaForConditionalGeneration)")
    text_type = (config.get("text_config") or {}).get("model_type", "llama")
    if text_type not in SUPPORTED_DECODERS:
        raise ExportError(f"{where}: the language model is {text_type!r}; the export handles "
                          f"{', '.join(SUPPORTED_DECODERS)} decoders")
    vision_type = config.get("vision_config", {}).get("model_type", "clip_vision_model") \
        if isinstance(config.get("vision_config"), dict) else None
    if vision_type is not None and vision_type not in SUPPORTED_VISION:
        raise ExportError(f"{where}: the vision tower is {vision_type!r}; the export handles "
                          f"{', '.join(SUPPORTED_VISION)} towers")
    if not isinstance(config.get("vision_config"), dict):
        raise ExportError(f"{where}: config.json has no vision_config")
    strategy = config.get("vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
        raise ExportError(f"{where}: vision_feature_select_strategy {strategy!r} is not supported")
    if not (checkpoint_dir / TOKENIZER).is_file():
        raise ExportError(f"{where}: {TOKENIZER} is missing (save the tokenizer with the model)")
    if not any(checkpoint_dir.glob("*.safetensors")) and not any(checkpoint_dir.glob("*.bin")):
        raise ExportError(f"{where}: no weights (*.safetensors or *.bin)")
    return config


def _check_variants(quantize: Iterable[str] | str) -> list[str]:
    from training.export.quantize import VARIANTS

    if isinstance(quantize, str):
        quantize = [quantize]
    chosen: list[str] = []
    for variant in quantize:
        if variant not in VARIANTS:
            raise ExportError(f"unknown quantization {variant!r}; choose from {', '.join(VARIANTS)}")
        if variant not in chosen:
            chosen.append(variant)
    return chosen


def _check_identity(name: str, version: str) -> None:
    for label, value in (("name", name), ("version", version)):
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value) or "@" in value:
            raise ExportError(f"bundle {label} {value!r} must be a non-empty word without spaces or '@'")


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder")
    is_bundle = (out_dir / MANIFEST_NAME).is_file()
    if not is_bundle and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} is not empty and holds no model bundle; choose a new folder or "
                          "overwrite it (--overwrite)")


# ------------------------------------------------------------------------------------------- export
def _prior_fields(prior) -> dict:
    """model.json's `prior` and `prior_prompts` from a `PriorConfig` (nothing for None)."""
    if prior is None:
        return {}
    return {"prior": prior.intake, "prior_prompts": prior.words}


def _export_into(folder: Path, checkpoint_dir: Path, timer: _Steps, *, name: str, version: str,
                 variants: list[str], preprocessing: Preprocessing, prompts: Prompts,
                 generation: GenerationDefaults, provenance: dict, metrics: dict, parity: bool,
                 card_notes: str | None, intended_use: str | None, quantize_options, threads: int | None,
                 include_checkpoint: bool = False, spec=None, decoder_method: str = "auto",
                 prior=None, impression_from: str = "image") -> ExportReport:
    from training.export.card import render_card
    from training.export.decoder import decoder_method as chosen_decoder_method
    from training.export.decoder import export_decoder
    from training.export.graphs import check_graph, export_embed, export_vision, require_dynamic
    from training.export.layout import render_prompts, stop_token_ids
    from training.export.parity import check_variant, make_inputs, torch_reference
    from training.export.precision import llava_in_float32
    from training.export.quantize import QuantizeOptions, make_variant

    timer.start("load checkpoint")
    model = load_checkpoint(checkpoint_dir)
    stops = stop_token_ids(checkpoint_dir, model.config.text_config.eos_token_id)
    arch = architecture(model, checkpoint_dir / TOKENIZER, image_size=preprocessing.image_size,
                        stop_token_ids=stops)
    parameters = parameter_counts(model)
    shutil.copyfile(checkpoint_dir / TOKENIZER, folder / TOKENIZER)
    layout = PromptLayout()
    if prompts is None:
        rendered = render_prompts(checkpoint_dir, spec, folder / TOKENIZER)
        prompts, layout = rendered if rendered else (Prompts(), PromptLayout())

    # The vision graph comes first: its fp32 copy of the tower, once the reference has paged in the whole
    # checkpoint, was the export's peak (a 7 B: 20.0 GB, against 17.0 GB for the reference itself).
    timer.start("export vision graph")
    export_vision(model, folder / FP32.vision, image_size=preprocessing.image_size)  # from an fp32 copy
    timer.start("export embedding graph")
    export_embed(model, folder / FP32.embed)

    inputs = reference = None
    if parity:
        # The torch reference is taken before any graph is opened, so ONNX Runtime's sessions (another copy
        # of the weights) are only opened once the torch model is gone.
        timer.start("run torch reference")
        channels = int(getattr(model.config.vision_config, "num_channels", 3))
        images = 1 if preprocessing.combine == "stitch" else len(preprocessing.views)
        inputs = make_inputs(folder / TOKENIZER, arch, prompts, preprocessing.image_size, channels=channels,
                             num_images=images, preprocessing=preprocessing)
        if len(inputs.prompt_ids) + inputs.new_tokens > arch.max_positions:
            raise ExportError(f"the findings prompt ({len(inputs.prompt_ids)} tokens) leaves no room in the "
                              f"model's {arch.max_positions} positions")
        with llava_in_float32(model):
            reference = torch_reference(model, inputs, arch.stop_token_ids)

    timer.start("export decoder graph")
    method = chosen_decoder_method(model, decoder_method)
    export_decoder(model, folder / FP32.decoder, method)
    del model
    gc.collect()
    for graph in FP32.all():
        check_graph(folder / graph)
    require_dynamic(folder / FP32.vision, {"pixel_values": (0,)})
    require_dynamic(folder / FP32.embed, {"input_ids": (0, 1)})
    require_dynamic(folder / FP32.decoder, {"inputs_embeds": (0, 1), "attention_mask": (0, 1),
                                            "past_key_values.0.key": (0, 2)})

    results: dict[str, ParityResult] = {}
    if parity:
        timer.start("check fp32 parity")
        result = check_variant("fp32", folder, FP32, arch, inputs, reference, threads=threads)
        results["fp32"] = result
        if not result.passed:
            raise ExportError(_parity_failure(result))

    graph_variants = {"fp32": FP32}
    failed: dict[str, str] = {}
    options = quantize_options or QuantizeOptions()
    for variant in variants:
        timer.start(f"write {variant} variant")
        try:
            files = make_variant(folder, FP32, variant, options)
        except Exception as error:  # noqa: BLE001 - a variant that cannot be made is reported, not fatal
            failed[variant] = f"{type(error).__name__}: {_first_line(error)}"
            _remove_variant_files(folder, FP32, variant, options)
            continue
        if parity:
            timer.start(f"check {variant} parity")
            result = check_variant(variant, folder, files, arch, inputs, reference, threads=threads)
            results[variant] = result
            if result.error:
                failed[variant] = result.error
                _remove_variant_files(folder, FP32, variant, options)
                continue
        graph_variants[variant] = files

    timer.start("write manifest and card")
    provenance["export"] = _export_provenance(checkpoint_dir, results, failed, options, variants)
    provenance["export"]["parameters"] = parameters.get("total", 0)
    provenance["export"]["decoder_graph"] = "written from the weights" if method == "direct" else "traced"
    manifest = BundleManifest(name=name, version=version, architecture=arch, preprocessing=preprocessing,
                              variants=graph_variants, default_variant="fp32", prompts=prompts,
                              generation=generation, prompting=layout, tokenizer=TOKENIZER, card=CARD,
                              **_prior_fields(prior), impression_from=impression_from,
                              provenance=provenance,
                              metrics=metrics, checkpoint=CHECKPOINT if include_checkpoint else None)
    if include_checkpoint:
        copy_checkpoint(checkpoint_dir, folder / CHECKPOINT)
    try:
        write_manifest(manifest, folder)
        for variant in graph_variants:
            validate_bundle(folder, variant)
    except EngineError as error:
        raise ExportError(f"the bundle does not validate: {error}") from error
    except (TypeError, ValueError) as error:  # json.dumps of caller-given provenance or metrics
        raise ExportError(f"provenance and metrics must be JSON values: {error}") from error
    report = ExportReport(bundle_dir=folder, manifest=manifest, files=_file_sizes(folder), parity=results,
                          failed_variants=failed, parameters=parameters, timings=timer.timings,
                          peak_rss=timer.peak_rss)
    sizes = {variant: report.variant_size(variant) for variant in graph_variants}
    card = render_card(manifest, parameters=parameters, parity=results, variant_sizes=sizes, notes=card_notes,
                       intended_use=intended_use)
    write_text_atomically(folder / CARD, card)
    return report


def load_checkpoint(checkpoint_dir: Path):
    from transformers import LlavaForConditionalGeneration

    try:
        # In the checkpoint's own dtype (an fp16 checkpoint is held at its saved size); the graphs are
        # still fp32: each part is cast up only while it is traced or run (training/export/precision.py).
        model = LlavaForConditionalGeneration.from_pretrained(checkpoint_dir, attn_implementation="eager",
                                                              dtype="auto")
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ExportError(f"checkpoint {checkpoint_dir}: cannot be loaded ({_first_line(error)})") from error
    model.eval()
    return model


def count_image_tokens(model, image_size: int) -> int:
    """Features per image, measured: CLIP and Dinov2 have a CLS token that "default" drops, SigLIP has none."""
    import torch

    from training.export.graphs import VisionGraph
    from training.export.precision import vision_in_float32

    channels = int(getattr(model.config.vision_config, "num_channels", 3))
    with torch.no_grad(), vision_in_float32(model):
        features = VisionGraph(model)(torch.zeros(1, channels, image_size, image_size))
    return int(features.shape[1])


def architecture(model, tokenizer_file: Path, image_size: int | None = None,
                 stop_token_ids: tuple[int, ...] = ()) -> Architecture:
    from tokenizers import Tokenizer

    from training.modeling.tokenizer import BOS, EOS, IMAGE, PAD

    config = model.config
    text = config.text_config
    vision = config.vision_config
    tokenizer = Tokenizer.from_file(str(tokenizer_file))

    def token_id(configured, token: str, what: str) -> int:
        if isinstance(configured, (list, tuple)):
            configured = configured[0] if configured else None
        if configured is None:
            configured = tokenizer.token_to_id(token)
        if configured is None:
            raise ExportError(f"the checkpoint names no {what} token and its tokenizer has no {token}")
        return int(configured)

    image_token_id = int(getattr(config, "image_token_id", None) or config.image_token_index)
    in_tokenizer = tokenizer.token_to_id(IMAGE)
    if in_tokenizer is not None and in_tokenizer != image_token_id:
        raise ExportError(f"the tokenizer's {IMAGE} is id {in_tokenizer} but the model's image token is "
                          f"{image_token_id}")
    if tokenizer.get_vocab_size() > text.vocab_size:
        raise ExportError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens, more than the model's "
                          f"vocabulary of {text.vocab_size}")
    image_tokens = count_image_tokens(model, image_size or int(vision.image_size))
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return Architecture(
        family="llava",
        decoder=str(text.model_type),
        vision=str(vision.model_type),
        stop_token_ids=tuple(stop_token_ids),
        hidden_size=int(text.hidden_size),
        num_layers=int(text.num_hidden_layers),
        num_kv_heads=int(getattr(text, "num_key_value_heads", None) or text.num_attention_heads),
        head_dim=int(head_dim),
        vocab_size=int(text.vocab_size),
        max_positions=int(text.max_position_embeddings),
        image_token_id=image_token_id,
        image_tokens=int(image_tokens),
        bos_token_id=_optional_token_id(text.bos_token_id, tokenizer.token_to_id(BOS)),
        eos_token_id=token_id(text.eos_token_id, EOS, "end"),
        pad_token_id=_optional_token_id(
            text.pad_token_id if text.pad_token_id is not None else config.pad_token_id,
            tokenizer.token_to_id(PAD), fallback=token_id(text.eos_token_id, EOS, "end")),
    )


def _optional_token_id(configured, in_tokenizer: int | None, fallback: int | None = None) -> int | None:
    if isinstance(configured, (list, tuple)):
        configured = configured[0] if configured else None
    for value in (configured, in_tokenizer, fallback):
        if value is not None:
            return int(value)
    return None


def parameter_counts(model) -> dict[str, int]:
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    counts = {
        "vision_tower": count(model.model.vision_tower),
        "projector": count(model.model.multi_modal_projector),
        "language_model": count(model.model.language_model),
        "lm_head": count(model.lm_head),
    }
    counts["total"] = count(model)
    return counts


# ------------------------------------------------------------------------------------------- helpers
def _parity_failure(result: ParityResult) -> str:
    if result.error:
        return f"ONNX Runtime cannot run the exported fp32 graphs: {result.error}"
    problems = []
    if result.max_logit_diff > result.tolerance:
        problems.append(f"max |logit diff| {result.max_logit_diff:.3g} exceeds {result.tolerance:.3g}")
    if not result.tokens_identical:
        problems.append(f"greedy tokens differ (torch {result.torch_tokens}, onnx {result.onnx_tokens})")
    return "the exported fp32 graphs disagree with the torch model: " + "; ".join(problems)


def _remove_variant_files(folder: Path, fp32: GraphFiles, variant: str, options) -> None:
    from training.export.quantize import variant_files

    for name in set(variant_files(fp32, variant, options).all()) - set(fp32.all()):
        for path in (folder / name, folder / f"{name}.data"):
            path.unlink(missing_ok=True)


def _export_provenance(checkpoint_dir: Path, results: dict[str, ParityResult], failed: dict[str, str],
                       options, variants: list[str]) -> dict:
    from training.export.decoder import DECODER_OPSET

    return {
        "tool": "raddraft export",
        "exported_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "checkpoint": checkpoint_dir.name,
        "weights_sha256": _weights_digest(checkpoint_dir),
        "versions": _versions(),
        "opset": DECODER_OPSET,
        "quantization": {variant: options.record(variant) for variant in variants},
        "parity": {
            name: {"greedy_agreement": round(r.greedy_agreement, 4), "top1_agreement": round(r.top1_agreement, 4),
                   "max_logit_diff": _finite(r.max_logit_diff), "tokens_identical": r.tokens_identical,
                   "new_tokens": len(r.torch_tokens), "tolerance": _finite(r.tolerance),
                   "within_tolerance": r.within_tolerance, **({"error": r.error} if r.error else {})}
            for name, r in results.items()
        },
        **({"failed_variants": failed} if failed else {}),
    }


def _weights_digest(checkpoint_dir: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(checkpoint_dir.glob("*.safetensors")) or sorted(checkpoint_dir.glob("*.bin"))
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _write_record(folder: Path, report: ExportReport, checkpoint_dir: Path) -> None:
    record = {
        "model_id": report.manifest.model_id,
        "checkpoint": str(checkpoint_dir),
        "variants": {name: list(files.all()) for name, files in report.manifest.variants.items()},
        "parity": {name: r.to_dict() for name, r in report.parity.items()},
        "failed_variants": report.failed_variants,
        "parameters": report.parameters,
        "files": _file_sizes(folder),
        "timings_s": {step: round(seconds, 3) for step, seconds in report.timings.items()},
        # where the export's memory went: the peak so far at the end of each step
        "peak_rss_bytes_after": dict(report.peak_rss),
        "seconds": round(report.seconds, 3),
    }
    write_text_atomically(folder / RECORD, json.dumps(record, indent=2, default=_finite) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _file_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_checkpoint(checkpoint_dir: Path, target: Path) -> None:
    """The checkpoint's config, weights and tokenizer files (not optimiser state or other leftovers)."""
    target.mkdir()
    for path in sorted(checkpoint_dir.iterdir()):
        if path.is_file() and (path.suffix in CHECKPOINT_SUFFIXES or path.name == TOKENIZER):
            shutil.copyfile(path, target / path.name)




def peak_resident_bytes() -> int:
    """This process's own peak resident memory so far: Linux's VmHWM. Not ru_maxrss, which exec carries over
    from the parent's high-water mark when the process was started by vfork (Python's subprocess does);
    ru_maxrss elsewhere, 0 where neither exists (Windows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # macOS: bytes, Linux: KiB


def _human(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e3:.1f} kB"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _Steps:
    def __init__(self, steps: list[str], progress: Progress | None) -> None:
        self.steps = steps
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.peak_rss: dict[str, int] = {}  # step -> the process's peak resident bytes once it ended
        self.current: str | None = None
        self.since = time.monotonic()

    def start(self, step: str) -> None:
        self._close()
        self.current = step
        self.since = time.monotonic()
        if self.progress:
            done = self.steps.index(step) if step in self.steps else len(self.timings)
            self.progress(done, len(self.steps), step)

    def _close(self) -> None:
        if self.current is not None:
            self.timings[self.current] = time.monotonic() - self.since
            self.peak_rss[self.current] = peak_resident_bytes()
            self.current = None

    def finish(self) -> None:
        self._close()
        if self.progress:
            self.progress(len(self.steps), len(self.steps), "done")


@contextmanager
def _quiet_exporters():
    """The exporters warn about every traced branch and print advice; the parity check is what counts."""
    names = ("transformers", "optimum", "onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._export",
             "torch.fx.experimental.symbolic_shapes", "torch._dynamo")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)

