"""The model bundle format: a folder with `model.json`, ONNX graphs, `tokenizer.json` and `MODEL_CARD.md`.

The training export writes it (`write_manifest`) and the engine reads it (`read_manifest`,
`validate_bundle`). `model.json` is the single description both sides rely on; anything the engine does
differently per model (image size, prompts, which images, generation defaults) is read from here.

Graphs (names of inputs and outputs are part of the format):
- vision: `pixel_values` float32 [images, 3, H, W] -> `image_features` float32 [images, image_tokens, hidden]
- embed: `input_ids` int64 [batch, seq] -> `inputs_embeds` float32 [batch, seq, hidden]
- decoder: `inputs_embeds`, `attention_mask` int64 [batch, past + seq], `position_ids` int64 [batch, seq],
  `past_key_values.{i}.key` / `.value` float32 [batch, kv_heads, past, head_dim]
  -> `logits` [batch, seq, vocab], `present.{i}.key` / `.value` [batch, kv_heads, past + seq, head_dim];
  a decoder written from the weights also takes `logits_to_keep` int64 [1] (logits of the last that many
  positions, 0 for all), which the engine sets to 1

Where the Impression comes from (`impression_from`): "image" (the default, and what a bundle without the key
does) drafts it from the image like the Findings; "findings" drafts it from the drafted Findings with the
`impression_from_findings` prompt, which is where a bundle that takes priors states the comparison. Such a
bundle's plain `findings` prompt may leave out the `{prior}` slot: its Findings are then read from the image
alone, and the prior (its report and, for "report+image", its image) reaches the Impression only. (Prompts
rendered by a chat template take the prior in every section, as before.)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.durable import write_text_atomically

# The decoder written from the weights takes it: logits of the last that many positions only (0: all of them),
# as transformers' argument of that name. The traced and onnxruntime-genai layouts do not.
LOGITS_TO_KEEP = "logits_to_keep"
from engine.errors import BundleError

FORMAT_VERSION = 2
# Version 1 lacks the decoder/vision types, stop token list, resize mode and prompt layout: read with defaults.
READABLE_FORMATS = (1, 2)
MANIFEST_NAME = "model.json"
IMAGE_PLACEHOLDER = "<image>"
FINDINGS_PLACEHOLDER = "{findings}"
INDICATION_PLACEHOLDER = "{indication}"
PRIOR_PLACEHOLDER = "{prior}"
PRIOR_DATE_PLACEHOLDER = "{prior_date}"
PRIOR_REPORT_PLACEHOLDER = "{prior_report}"
# What a bundle takes of the patient's previous study: nothing, its report, or its report and frontal image.
PRIOR_MODES = ("none", "report", "report+image")
# What a bundle drafts the Impression from by default: the image (as the Findings) or the drafted Findings.
IMPRESSION_SOURCES = ("image", "findings")
SECTIONS = ("findings", "impression")
WINDOW_POLICIES = ("dicom", "minmax", "percentile")
COMBINE_MODES = ("tokens", "stitch")
VIEW_KINDS = ("frontal", "lateral")
# pad: longest side to image_size, the rest padded (aspect kept, LLaVA's "pad"); crop: shortest side to
# shortest_edge, then the centre image_size square (CLIP, Dinov2); stretch: both sides to image_size (SigLIP).
RESIZE_MODES = ("pad", "crop", "stretch")


@dataclass(frozen=True)
class GraphFiles:
    """File names (relative to the bundle) of one precision variant."""

    vision: str
    embed: str
    decoder: str

    def all(self) -> tuple[str, ...]:
        return (self.vision, self.embed, self.decoder)


@dataclass(frozen=True)
class Architecture:
    """bos_token_id None: the model takes no start token (Qwen2). stop_token_ids: every id that ends a
    section (the checkpoint's generation_config EOS list), eos_token_id first; empty means eos only."""

    family: str
    hidden_size: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int
    image_token_id: int
    image_tokens: int  # features per image
    bos_token_id: int | None
    eos_token_id: int
    pad_token_id: int
    decoder: str = "llama"
    vision: str = "clip_vision_model"
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        stops = tuple(int(i) for i in self.stop_token_ids) or (self.eos_token_id,)
        if self.eos_token_id not in stops:
            stops = (self.eos_token_id, *stops)
        object.__setattr__(self, "stop_token_ids", stops)


@dataclass(frozen=True)
class Preprocessing:
    """How DICOM images become `pixel_values`.

    window: "dicom" applies the header's VOI LUT / window (min-max when it has none); "minmax" and
        "percentile" (0.5-99.5) ignore the header window.
    views: which images of a study are used, in order ("frontal", then "lateral" when present).
    combine: "tokens" gives each image its own block of image tokens; "stitch" places the images side
        by side in one square image before resizing.
    resize: see `RESIZE_MODES`; shortest_edge: the "crop" mode's resize target (0: image_size).
    pad_value: the "pad" mode's fill per channel, in [0, 1] units (LLaVA pads with the mean colour).
    scale: multiplies the [0, 1] image before (x - mean) / std: 1 for processors that rescale 8-bit
        pixels by 1/255, 255 for ones that do not rescale.
    """

    image_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    window: str = "dicom"
    views: tuple[str, ...] = ("frontal",)
    combine: str = "tokens"
    resize: str = "pad"
    shortest_edge: int = 0
    pad_value: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0


@dataclass(frozen=True)
class Prompts:
    """Prompt texts; `<image>` marks where image tokens go, `{findings}` where given findings go.

    The model continues a prompt with the section text and `</s>`; training tokenises the prompt and
    the target separately in the same way, so the boundary is identical at run time.
    """

    findings: str = "<s><image>\nFindings:"
    impression: str = "<s><image>\nImpression:"
    impression_from_findings: str = "<s><image>\nFindings: {findings}\nImpression:"


@dataclass(frozen=True)
class PriorPrompts:
    """The words that bring a prior study into a prompt, at the prompts' `{prior}` slot.

    with_image: the prior with its frontal image (its own `<image>` block, introduced by its own words, as
    MAIRA-2 prompts), its date and report; report_only: the prior's date and report; none: what a bundle
    that takes priors is told when the study has none (so that it learns not to claim a comparison)."""

    with_image: str = "Prior {prior_date}: <image>\nPrior report: {prior_report}\n"
    report_only: str = "Prior {prior_date}.\nPrior report: {prior_report}\n"
    none: str = "Prior: none.\n"


@dataclass(frozen=True)
class PromptVariant:
    """A prompt rendered by the checkpoint's chat template for one section, one set of views and with or
    without an indication: `<image>` once per view (or once for a stitched image), `{indication}` where
    the reason for the exam goes, `{findings}` (impression_from_findings) where drafted findings go."""

    section: str
    views: tuple[str, ...]
    text: str
    indication: bool = False


@dataclass(frozen=True)
class PromptLayout:
    """How the prompts were made (for the card and for training) and the rendered variants the engine uses.

    chat_template: where the template came from ("chat_template.json", "tokenizer_config.json") or None
    (the plain `prompts` texts). system: the system prompt given to the template (None: its own default).
    view_words: the words that introduce each view's image ({} : images placed by the template itself).
    indication: how an indication is introduced ("Indication: {indication}"), None when the prompt takes none.
    """

    chat_template: str | None = None
    system: str | None = None
    instructions: dict[str, str] = field(default_factory=dict)
    view_words: dict[str, str] = field(default_factory=dict)
    indication: str | None = None
    variants: tuple[PromptVariant, ...] = ()

    @property
    def takes_indication(self) -> bool:
        return any(variant.indication for variant in self.variants)


@dataclass(frozen=True)
class GenerationDefaults:
    max_new_tokens: int = 160
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class BundleManifest:
    name: str
    version: str
    architecture: Architecture
    preprocessing: Preprocessing
    variants: dict[str, GraphFiles]
    default_variant: str = "fp32"
    prompts: Prompts = field(default_factory=Prompts)
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    prompting: PromptLayout = field(default_factory=PromptLayout)
    tokenizer: str = "tokenizer.json"
    card: str = "MODEL_CARD.md"
    # What the prompts take of a prior study (PRIOR_MODES); "none" (and absent in older bundles): nothing.
    prior: str = "none"
    prior_prompts: PriorPrompts = field(default_factory=PriorPrompts)
    # IMPRESSION_SOURCES: "findings" drafts the impression from the drafted findings unless a caller says not.
    impression_from: str = "image"
    # The merged Hugging Face checkpoint the graphs were exported from, for further fine-tuning
    # (`raddraft finetune --from BUNDLE`); the engine never reads it. None: the bundle carries none.
    checkpoint: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # The out-of-domain check (engine.domain): "signature" names its .npz file, the rest describes how it
    # was made (method, threshold, studies, score figures). Empty: no signature, drafts say in_domain None.
    domain: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    def prior_in(self, kind: str) -> bool:
        """Whether the prompts of `kind` ("findings", "impression", "impression_from_findings") take the
        prior: all of them in a bundle that takes priors, but the plain findings prompt of an
        impression-from-findings bundle only when it holds a `{prior}` slot (without one the findings are read
        from the image alone). Prompts rendered by a chat template always take it (engine.prompts.prior_slotted
        places it; training/train/samples.py trains them so)."""
        if self.prior == "none":
            return False
        if kind != "findings" or self.impression_from != "findings" or self.prompting.variants:
            return True
        return PRIOR_PLACEHOLDER in self.prompts.findings

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"


def write_manifest(manifest: BundleManifest, bundle_dir: Path) -> Path:
    """Validate `manifest` and write it atomically as `bundle_dir/model.json`."""
    _check_manifest(manifest, Path(bundle_dir))
    path = Path(bundle_dir) / MANIFEST_NAME
    write_text_atomically(path, manifest.to_json())
    return path


def read_manifest(bundle_dir: Path) -> BundleManifest:
    """Parse and check `model.json`; `BundleError` names what is wrong."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise BundleError(f"model bundle {bundle_dir}: not a folder")
    if not path.is_file():
        raise BundleError(f"model bundle {bundle_dir}: {MANIFEST_NAME} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"model bundle {bundle_dir}: {MANIFEST_NAME} is not valid JSON ({error})") from None
    manifest = manifest_from_dict(data, where=f"model bundle {bundle_dir}")
    _check_manifest(manifest, bundle_dir)
    return manifest


def validate_bundle(bundle_dir: Path, variant: str | None = None) -> BundleManifest:
    """`read_manifest` plus: the variant's ONNX files and the tokenizer exist and are non-empty."""
    manifest = read_manifest(bundle_dir)
    chosen = variant or manifest.default_variant
    if chosen not in manifest.variants:
        raise BundleError(f"model bundle {bundle_dir}: no {chosen!r} variant "
                          f"(it has {', '.join(sorted(manifest.variants))})")
    for name in (*manifest.variants[chosen].all(), manifest.tokenizer):
        file = Path(bundle_dir) / name
        if not file.is_file():
            raise BundleError(f"model bundle {bundle_dir}: {name} is missing")
        if file.stat().st_size == 0:
            raise BundleError(f"model bundle {bundle_dir}: {name} is empty")
    return manifest


def manifest_from_dict(data: Any, where: str = "model.json") -> BundleManifest:
    if not isinstance(data, dict):
        raise BundleError(f"{where}: {MANIFEST_NAME} must hold a JSON object")
    version = data.get("format_version")
    if version not in READABLE_FORMATS:
        raise BundleError(f"{where}: format_version {version!r} is not supported (this RadDraft reads "
                          f"versions {', '.join(map(str, READABLE_FORMATS))}); export the model again with "
                          "this version")
    try:
        variants = {key: _build(GraphFiles, value, f"variants.{key}") for key, value in
                    _require(data, "variants", dict).items()}
        return BundleManifest(
            name=_require(data, "name", str),
            version=_require(data, "version", str),
            architecture=_build(Architecture, _require(data, "architecture", dict), "architecture"),
            preprocessing=_build(Preprocessing, _require(data, "preprocessing", dict), "preprocessing"),
            variants=variants,
            default_variant=data.get("default_variant", "fp32"),
            prompts=_build(Prompts, data.get("prompts", {}), "prompts"),
            generation=_build(GenerationDefaults, data.get("generation", {}), "generation"),
            prompting=_prompt_layout(data.get("prompting", {})),
            prior=data.get("prior", "none"),
            prior_prompts=_build(PriorPrompts, data.get("prior_prompts", {}), "prior_prompts"),
            impression_from=data.get("impression_from", "image"),
            tokenizer=data.get("tokenizer", "tokenizer.json"),
            card=data.get("card", "MODEL_CARD.md"),
            checkpoint=data.get("checkpoint"),
            provenance=data.get("provenance", {}),
            metrics=data.get("metrics", {}),
            domain=_optional_object(data, "domain"),
            format_version=version,
        )
    except _FieldError as error:
        raise BundleError(f"{where}: {MANIFEST_NAME} {error}") from None


class _FieldError(Exception):
    pass


def _prompt_layout(data: Any) -> PromptLayout:
    if not isinstance(data, dict):
        raise _FieldError("'prompting' must be an object")
    variants = data.get("variants", [])
    if not isinstance(variants, list):
        raise _FieldError("'prompting.variants' must be a list")
    built = tuple(_build(PromptVariant, item, "prompting.variants") for item in variants)
    rest = {key: value for key, value in data.items() if key != "variants"}
    for key in ("instructions", "view_words"):
        if not isinstance(rest.get(key, {}), dict):
            raise _FieldError(f"'prompting.{key}' must be an object")
    layout = _build(PromptLayout, rest, "prompting")
    return dataclasses.replace(layout, variants=built)


def _optional_object(data: dict, key: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise _FieldError(f"{key!r} must be an object")
    return value


def _require(data: dict, key: str, kind: type) -> Any:
    if key not in data:
        raise _FieldError(f"lacks {key!r}")
    if not isinstance(data[key], kind):
        raise _FieldError(f"{key!r} must be a {kind.__name__}")
    return data[key]


def _build(cls: type, data: Any, section: str) -> Any:
    if not isinstance(data, dict):
        raise _FieldError(f"{section!r} must be an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise _FieldError(f"{section!r} has unknown keys: {', '.join(sorted(unknown))}")
    values = {}
    for key, value in data.items():
        values[key] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**values)
    except TypeError as error:
        raise _FieldError(f"{section!r}: {error}") from None


def _check_manifest(manifest: BundleManifest, bundle_dir: Path) -> None:
    where = f"model bundle {bundle_dir}: {MANIFEST_NAME}"
    if not manifest.variants:
        raise BundleError(f"{where} lists no graph variants")
    if manifest.default_variant not in manifest.variants:
        raise BundleError(f"{where}: default_variant {manifest.default_variant!r} is not among the variants")
    prep = manifest.preprocessing
    if prep.window not in WINDOW_POLICIES:
        raise BundleError(f"{where}: preprocessing.window must be one of {WINDOW_POLICIES}, got {prep.window!r}")
    if prep.combine not in COMBINE_MODES:
        raise BundleError(f"{where}: preprocessing.combine must be one of {COMBINE_MODES}, got {prep.combine!r}")
    if not prep.views or any(view not in VIEW_KINDS for view in prep.views):
        raise BundleError(f"{where}: preprocessing.views must list some of {VIEW_KINDS}, got {prep.views!r}")
    if prep.image_size <= 0 or len(prep.mean) != 3 or len(prep.std) != 3 or 0 in prep.std:
        raise BundleError(f"{where}: preprocessing needs a positive image_size and 3 means and non-zero stds")
    if prep.resize not in RESIZE_MODES or len(prep.pad_value) != 3 or prep.scale <= 0 or prep.shortest_edge < 0:
        raise BundleError(f"{where}: preprocessing.resize must be one of {RESIZE_MODES} with 3 pad values, "
                          f"a positive scale and shortest_edge >= 0")
    _check_prompt_variants(manifest, where)
    _check_impression_source(manifest, where)
    _check_prior_intake(manifest, where)
    for name in ("findings", "impression", "impression_from_findings"):
        if IMAGE_PLACEHOLDER not in getattr(manifest.prompts, name):
            raise BundleError(f"{where}: prompts.{name} must contain {IMAGE_PLACEHOLDER}")
    if manifest.checkpoint is not None and (not isinstance(manifest.checkpoint, str) or
                                            Path(manifest.checkpoint).name != manifest.checkpoint or
                                            manifest.checkpoint in ("", ".", "..")):
        raise BundleError(f"{where}: checkpoint must name a folder inside the bundle, got {manifest.checkpoint!r}")
    if FINDINGS_PLACEHOLDER not in manifest.prompts.impression_from_findings:
        raise BundleError(f"{where}: prompts.impression_from_findings must contain {FINDINGS_PLACEHOLDER}")


def _check_prompt_variants(manifest: BundleManifest, where: str) -> None:
    for variant in manifest.prompting.variants:
        label = f"prompting variant {variant.section}/{'+'.join(variant.views)}"
        if variant.section not in (*SECTIONS, "impression_from_findings"):
            raise BundleError(f"{where}: {label}: unknown section")
        if not variant.views or any(view not in VIEW_KINDS for view in variant.views):
            raise BundleError(f"{where}: {label}: views must list some of {VIEW_KINDS}")
        if IMAGE_PLACEHOLDER not in variant.text:
            raise BundleError(f"{where}: {label} must contain {IMAGE_PLACEHOLDER}")
        if variant.indication != (INDICATION_PLACEHOLDER in variant.text):
            raise BundleError(f"{where}: {label}: {INDICATION_PLACEHOLDER} must appear exactly when "
                              "the variant takes an indication")
        if (variant.section == "impression_from_findings") != (FINDINGS_PLACEHOLDER in variant.text):
            raise BundleError(f"{where}: {label}: {FINDINGS_PLACEHOLDER} belongs in impression_from_findings only")


def prompt_texts(manifest: BundleManifest) -> list[tuple[str, str]]:
    """(label, text) of every prompt the bundle drafts with: its plain prompts and rendered variants."""
    plain = [(f"prompts.{name}", getattr(manifest.prompts, name))
             for name in ("findings", "impression", "impression_from_findings")]
    rendered = [(f"prompting variant {v.section}/{'+'.join(v.views)}", v.text) for v in manifest.prompting.variants]
    return rendered or plain


def _check_impression_source(manifest: BundleManifest, where: str) -> None:
    if manifest.impression_from not in IMPRESSION_SOURCES:
        raise BundleError(f"{where}: impression_from must be one of {', '.join(IMPRESSION_SOURCES)}, "
                          f"got {manifest.impression_from!r}")


def _check_prior_intake(manifest: BundleManifest, where: str) -> None:
    """A bundle that takes priors has a `{prior}` slot in every prompt (but its findings prompts when it drafts
    the impression from the findings) and prior words that fit its mode."""
    if manifest.prior not in PRIOR_MODES:
        raise BundleError(f"{where}: prior must be one of {', '.join(PRIOR_MODES)}, got {manifest.prior!r}")
    texts = prompt_texts(manifest)
    if manifest.prior == "none":
        if any(PRIOR_PLACEHOLDER in text for _, text in texts):
            raise BundleError(f"{where}: the prompts have a {PRIOR_PLACEHOLDER} slot but prior is \"none\"")
        return
    # a prompt rendered by a chat template may leave the slot to the engine (engine.prompts.prior_slotted;
    # the model's check at load builds each prompt with a prior)
    least = 0 if manifest.prompting.variants else 1
    # findings drafted from the image alone, where the impression is drafted from them, need no prior
    image_only = "prompts.findings" if manifest.impression_from == "findings" else None
    for label, text in texts:
        fewest = 0 if label == image_only else least
        if not fewest <= text.count(PRIOR_PLACEHOLDER) <= 1:
            raise BundleError(f"{where}: {label} must hold {PRIOR_PLACEHOLDER} "
                              f"{'at most once' if fewest == 0 else 'once'} (prior is {manifest.prior!r}, "
                              f"impression_from is {manifest.impression_from!r})")
    words = manifest.prior_prompts
    given = words.with_image if manifest.prior == "report+image" else words.report_only
    for slot in (PRIOR_DATE_PLACEHOLDER, PRIOR_REPORT_PLACEHOLDER):
        if slot not in given:
            raise BundleError(f"{where}: the prior words {given!r} lack {slot}")
    images = given.count(IMAGE_PLACEHOLDER)
    if images != (1 if manifest.prior == "report+image" else 0):
        raise BundleError(f"{where}: the prior words {given!r} need exactly "
                          f"{'one' if manifest.prior == 'report+image' else 'no'} {IMAGE_PLACEHOLDER}")
    if IMAGE_PLACEHOLDER in words.none or PRIOR_PLACEHOLDER in words.none:
        raise BundleError(f"{where}: prior_prompts.none must hold no {IMAGE_PLACEHOLDER} or slot")
