"""The training recipe: typed, frozen dataclasses read from one TOML file (`raddraft train --config`).

Sections: `[model]` (a base LLaVA checkpoint folder, or a named size built from scratch), `[data]` (manifests
or phantom sets, mix weights, task mix, preprocessing), `[stages.<name>]` (which parts train and the
optimisation of each stage), `[lora]`, `[prompts]` (plain prompts of models without a chat template),
`[prompting]` (how a checkpoint's chat template is filled), `[memory]` (precision of the frozen base,
gradient checkpointing, QLoRA), `[compute]` and `[output]`. Unknown keys and bad values
raise `TrainConfigError` naming the key. Relative paths are taken from the current folder.

Stages, in order: `vision` and `language` (stage 0: pretrain the vision encoder on findings classification
and the language model on report text; only when building from scratch), `projector` (stage 1) and
`finetune` (stage 2: LoRA on the language model + the projector, with VQA "mixup" samples).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.bundle import (
    COMBINE_MODES,
    PRIOR_MODES,
    PRIOR_PLACEHOLDER,
    VIEW_KINDS,
    WINDOW_POLICIES,
    PriorPrompts,
    Prompts,
)

NAMED_SIZES = ("tiny", "phantom-cxr", "bench-181m")
STAGE_NAMES = ("vision", "language", "projector", "finetune")
PRETRAIN_STAGES = ("vision", "language")
PARTS = ("vision", "projector", "language", "lora")
SCHEDULES = ("constant", "linear", "cosine")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "no", "bf16", "fp16")
TEST_SPLITS = ("test", "all")
EVAL_ENGINES = ("auto", "engine", "torch")
IMPRESSION_SOURCES = ("image", "findings")  # model.json `impression_from` (engine.bundle)
BASE_DTYPES = ("auto", "fp32", "bf16", "fp16")
BASE_QUANTIZATIONS = ("none", "4bit")
OPTIMIZERS = ("adamw", "adamw-8bit")
DEFAULT_LORA_TARGETS = r".*\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class TrainConfigError(ValueError):
    """The training configuration is unusable; the message names the file and the key."""

    def __init__(self, key: str, message: str, source: Path | None = None) -> None:
        self.key = key
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}" if key else f"{where}{message}")


class _Invalid(ValueError):
    """Raised by `__post_init__` checks: the field at fault and why (the loader adds the section)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise _Invalid(key, message)


def _one_of(value: Any, choices: tuple, key: str) -> None:
    _check(value in choices, key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")


# ----------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelConfig:
    """base: a local `LlavaForConditionalGeneration` folder (with `tokenizer.json`); None builds one from
        scratch of `size` (stage 0 then pretrains the vision encoder and the language model).
    size: named size (`tiny`, `phantom-cxr`); `vision` / `text` override single fields of it.
    tokenizer_vocab: BPE vocabulary size of the tokenizer trained from scratch.
    seed: weight initialisation seed.
    """

    base: Path | None = None
    size: str = "tiny"
    vision: dict[str, int] = field(default_factory=dict)
    text: dict[str, int] = field(default_factory=dict)
    tokenizer_vocab: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        from training.modeling.llava import TextSize, VisionSize

        _one_of(self.size, NAMED_SIZES, "size")
        _check(self.tokenizer_vocab >= 300, "tokenizer_vocab", "must be at least 300 (bytes + merges)")
        for part, cls in (("vision", VisionSize), ("text", TextSize)):
            known = [f.name for f in dataclasses.fields(cls)]
            unknown = sorted(set(getattr(self, part)) - set(known))
            _check(not unknown, f"{part}.{unknown[0] if unknown else ''}",
                   f"unknown key; known keys: {', '.join(known)}")

    def llava_size(self):
        """The `LlavaSize` to build from scratch: the named size with the overrides applied."""
        from training.modeling.llava import NAMED_SIZES as SIZES
        from training.modeling.llava import LlavaSize

        named = SIZES[self.size]
        return LlavaSize(vision=dataclasses.replace(named.vision, **self.vision),
                         text=dataclasses.replace(named.text, **self.text))

    @property
    def from_scratch(self) -> bool:
        return self.base is None


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class PhantomSet:
    """A synthetic phantom data set generated by `training.data.phantoms` (reused when already there)."""

    studies: int
    seed: int
    image_size: int = 128
    lateral_fraction: float = 0.0
    normal_fraction: float = 0.3
    workers: int = 0
    priors: bool = False  # longitudinal phantoms (`raddraft synth --priors`): prior studies and `change`
    wording: str = "varied"  # of the comparison reports: "house" for training targets (training.data.longitudinal)

    def __post_init__(self) -> None:
        from training.data.longitudinal import WORDINGS

        _check(self.studies >= 1, "studies", "must be at least 1")
        _check(self.seed >= 0, "seed", "must be 0 or more")
        _one_of(self.wording, WORDINGS, "wording")
        _check(self.priors or self.wording == "varied", "wording", "only a set with priors writes comparisons")


@dataclass(frozen=True)
class DataSource:
    """One training data set: an existing manifest (`manifest.jsonl`) or a phantom set to generate.

    weight: how many times each of its training studies is seen per epoch (0.5: a random half each epoch);
        the mix ratio between sources.
    """

    name: str
    manifest: Path | None = None
    phantoms: PhantomSet | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        _check(bool(self.name) and self.name.replace("-", "").replace("_", "").isalnum(), "name",
               f"must be a simple name (letters, digits, - and _), got {self.name!r}")
        _check((self.manifest is None) != (self.phantoms is None), "manifest",
               "give exactly one of manifest or phantoms")
        _check(self.weight >= 0, "weight", "must be 0 or more")


@dataclass(frozen=True)
class TestSet:
    """The held-out studies the exported bundle is evaluated on.

    split: "test" uses the test split of the manifest; "all" every study (a phantom set of its own seed).
    limit: evaluate at most this many studies (0: all).
    """

    name: str = "test"
    manifest: Path | None = None
    phantoms: PhantomSet | None = None
    split: str = "test"
    limit: int = 0

    def __post_init__(self) -> None:
        _one_of(self.split, TEST_SPLITS, "split")
        _check(self.manifest is None or self.phantoms is None, "manifest", "give manifest or phantoms, not both")
        _check(self.limit >= 0, "limit", "must be 0 or more")


@dataclass(frozen=True)
class TaskMix:
    """Samples per training study and epoch of each task (fractions are drawn at random each epoch)."""

    findings: float = 1.0
    impression: float = 1.0
    impression_from_findings: float = 0.5
    # the impression from another study's findings and report, beside this study's images: the findings
    # disagree with the image, and the target follows the findings (the text wins over the image)
    impression_from_other_findings: float = 0.0
    # the impression from findings as a radiologist edits them: a share of the findings (this study's or
    # another's) rewritten, often tersely ("Large right pneumothorax. No nodule."), with the impression of
    # what is left; needs structured findings (phantoms): without them, that study's own text is given
    impression_from_edited_findings: float = 0.0

    def __post_init__(self) -> None:
        for name in ("findings", "impression", "impression_from_findings", "impression_from_other_findings",
                     "impression_from_edited_findings"):
            _check(getattr(self, name) >= 0, name, "must be 0 or more")
        _check(self.findings + self.impression + self.impression_from_findings > 0, "findings",
               "at least one task needs a positive share")


@dataclass(frozen=True)
class DataConfig:
    """sources: training data (their `train` split trains, their `validation` split validates).
    test: held-out evaluation set; None uses the `test` split of the sources.
    views / combine / window / mean / std: image preprocessing, as written into the bundle.
    data_dir / cache_dir: where phantom sets and decoded pixel caches go (default: under the run folder).
    """

    sources: tuple[DataSource, ...] = ()
    test: TestSet | None = None
    tasks: TaskMix = field(default_factory=TaskMix)
    views: tuple[str, ...] = ("frontal",)
    combine: str = "tokens"
    window: str = "dicom"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    validation_limit: int = 0
    data_dir: Path | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        _check(len(self.sources) >= 1, "sources", "name at least one data source ([[data.sources]])")
        names = [s.name for s in self.sources] + ([self.test.name] if self.test else [])
        _check(len(set(names)) == len(names), "sources", f"names must be unique, got {names}")
        _check(bool(self.views) and all(v in VIEW_KINDS for v in self.views), "views",
               f"must list some of {VIEW_KINDS}, got {self.views!r}")
        _one_of(self.combine, COMBINE_MODES, "combine")
        _one_of(self.window, WINDOW_POLICIES, "window")
        _check(len(self.mean) == 3 and len(self.std) == 3 and 0 not in self.std, "std",
               "mean and std need 3 values each, std non-zero")
        _check(self.validation_limit >= 0, "validation_limit", "must be 0 or more")


# ---------------------------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class Optimisation:
    """lr: peak learning rate (AdamW); schedule: constant | linear | cosine decay after `warmup` (a share
    of the stage's optimizer steps). batch_size: samples per optimizer step and process before
    accumulation; accumulation: micro-batches per optimizer step. max_grad_norm: 0 disables clipping."""

    lr: float = 1e-3
    schedule: str = "cosine"
    warmup: float = 0.05
    batch_size: int = 16
    accumulation: int = 1
    epochs: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.lr > 0, "lr", "must be positive")
        _one_of(self.schedule, SCHEDULES, "schedule")
        _check(0 <= self.warmup < 1, "warmup", "must lie in [0, 1)")
        _check(self.batch_size >= 1, "batch_size", "must be at least 1")
        _check(self.accumulation >= 1, "accumulation", "must be at least 1")
        _check(self.epochs >= 1, "epochs", "must be at least 1")
        _check(self.weight_decay >= 0, "weight_decay", "must be 0 or more")
        _check(self.max_grad_norm >= 0, "max_grad_norm", "must be 0 or more")


@dataclass(frozen=True)
class StageConfig:
    """enabled: run this stage. trains: parts that learn (vision, projector, language, lora); the
    pretraining stages train their own part only. vqa_fraction: share of the stage's samples that are
    VQA "mixup" questions. data_fraction: share of the training studies each epoch uses (drawn afresh each
    epoch; 0.5 sees a different half every epoch). validation_drafts: validation studies drafted after each
    epoch for metrics.
    checkpoint_every: optimizer steps between checkpoints (0: at the end of each epoch only)."""

    enabled: bool = True
    trains: tuple[str, ...] = ()
    optimisation: Optimisation = field(default_factory=Optimisation)
    vqa_fraction: float = 0.0
    data_fraction: float = 1.0
    validation_drafts: int = 16
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        unknown = [p for p in self.trains if p not in PARTS]
        _check(not unknown, "trains", f"unknown part {unknown[0]!r}; known: {', '.join(PARTS)}" if unknown else "")
        _check(not ({"lora", "language"} <= set(self.trains)), "trains",
               "train the language model either fully (language) or through LoRA (lora), not both")
        _check(0 <= self.vqa_fraction < 1, "vqa_fraction", "must lie in [0, 1)")
        _check(self.data_fraction > 0, "data_fraction", "must be positive")
        _check(self.validation_drafts >= 0, "validation_drafts", "must be 0 or more")
        _check(self.checkpoint_every >= 0, "checkpoint_every", "must be 0 or more")


def _stage(trains: tuple[str, ...], lr: float, vqa: float = 0.0) -> StageConfig:
    return StageConfig(trains=trains, optimisation=Optimisation(lr=lr), vqa_fraction=vqa)


@dataclass(frozen=True)
class Stages:
    vision: StageConfig = field(default_factory=lambda: _stage(("vision",), 1e-3))
    language: StageConfig = field(default_factory=lambda: _stage(("language",), 1e-3))
    projector: StageConfig = field(default_factory=lambda: _stage(("projector",), 1e-3))
    finetune: StageConfig = field(default_factory=lambda: _stage(("projector", "lora"), 5e-4, vqa=0.2))

    def __post_init__(self) -> None:
        _check(self.vision.trains == ("vision",), "vision.trains", "stage 0 vision trains [\"vision\"] only")
        _check(self.language.trains == ("language",), "language.trains",
               "stage 0 language trains [\"language\"] only")
        for name in ("projector", "finetune"):
            _check(bool(getattr(self, name).trains), f"{name}.trains", "name the parts that train")

    def named(self) -> list[tuple[str, StageConfig]]:
        return [(name, getattr(self, name)) for name in STAGE_NAMES]


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the language model. target_modules: a regex matched against full module names; the default
    keeps LoRA out of the CLIP tower (whose attention also has q_proj / v_proj)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str = DEFAULT_LORA_TARGETS

    def __post_init__(self) -> None:
        _check(self.rank >= 1, "rank", "must be at least 1")
        _check(self.alpha >= 1, "alpha", "must be at least 1")
        _check(0 <= self.dropout < 1, "dropout", "must lie in [0, 1)")
        _check(bool(self.target_modules), "target_modules", "must be a non-empty regex")


@dataclass(frozen=True)
class PromptingConfig:
    """How a base checkpoint's chat template is filled (ignored for models without one; a checkpoint's own
    `raddraft_prompts.json` takes precedence). indication: how the reason for the exam is introduced, e.g.
    "Indication: {indication}" ("": not prompted). system: the system prompt ("": the template's default).
    impression_from: how the bundle drafts a study's Impression, written into its model.json: "image" (its
    own prompt, beside the findings) or "findings" (from the findings just drafted, and the prior; the
    findings prompt may then leave the prior out, and learns the findings written without it)."""

    indication: str = ""
    system: str = ""
    impression_from: str = "image"

    def __post_init__(self) -> None:
        _one_of(self.impression_from, IMPRESSION_SOURCES, "impression_from")
        _check(not self.indication or "{indication}" in self.indication, "indication",
               "must contain {indication} (or be empty)")


@dataclass(frozen=True)
class PriorConfig:
    """What the model takes of a study's prior (the manifest's `prior_*` fields): "none", "report" or
    "report+image" (its frontal image as a further `<image>` block), written into the bundle's model.json;
    words: how the prior is brought in at the prompts' `{prior}` slot (and what is said without one)."""

    intake: str = "none"
    words: PriorPrompts = field(default_factory=PriorPrompts)

    def __post_init__(self) -> None:
        _one_of(self.intake, PRIOR_MODES, "intake")


@dataclass(frozen=True)
class MemoryConfig:
    """base_dtype: what the frozen weights (vision tower, language model) are held in; auto: bf16 on a GPU
    (fp16 where bf16 is missing), fp32 on CPU. The trainable parts (LoRA, projector) and the optimiser
    state stay fp32. gradient_checkpointing: recompute the language model's activations in the backward
    pass (and the vision tower's when it trains). quantize_base: "4bit" holds the language model in 4 bits
    (QLoRA, bitsandbytes, CUDA only); the merged model is then rebuilt from the bf16 base. optimizer:
    "adamw-8bit" keeps AdamW's state in 8 bits (bitsandbytes, CUDA only)."""

    base_dtype: str = "auto"
    gradient_checkpointing: bool = False
    quantize_base: str = "none"
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        _one_of(self.base_dtype, BASE_DTYPES, "base_dtype")
        _one_of(self.quantize_base, BASE_QUANTIZATIONS, "quantize_base")
        _one_of(self.optimizer, OPTIMIZERS, "optimizer")


# ------------------------------------------------------------------------------------- compute, output
@dataclass(frozen=True)
class ComputeConfig:
    """device: auto (CUDA when present) | cpu | cuda. mixed_precision: auto (bf16 on a GPU that has it,
    else fp16 on GPU, none on CPU) | no | bf16 | fp16. threads: torch CPU threads (0: torch's default)."""

    device: str = "auto"
    mixed_precision: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        _one_of(self.device, DEVICES, "device")
        _one_of(self.mixed_precision, PRECISIONS, "mixed_precision")
        _check(self.threads >= 0, "threads", "must be 0 or more")


@dataclass(frozen=True)
class OutputConfig:
    """run_dir: checkpoints, caches, curves, the merged checkpoint. bundle_dir: the exported bundle.
    quantize: extra bundle variants (e.g. ["int8"]). eval_engine: auto uses the ONNX engine on the bundle
    when it can load it, else torch generation on the merged model. include_checkpoint: the bundle carries
    the merged checkpoint (`checkpoint/`), so a site can fine-tune it (`raddraft finetune --from BUNDLE`)."""

    run_dir: Path = Path("runs/train")
    bundle_dir: Path | None = None
    name: str = "raddraft-model"
    version: str = "0.1.0"
    quantize: tuple[str, ...] = ()
    export: bool = True
    include_checkpoint: bool = True
    evaluate: bool = True
    eval_engine: str = "auto"
    max_new_tokens: int = 160
    description: str = ""

    def __post_init__(self) -> None:
        _one_of(self.eval_engine, EVAL_ENGINES, "eval_engine")
        _check(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")

    @property
    def bundle(self) -> Path:
        return self.bundle_dir or self.run_dir / "bundle"


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(sources=(DataSource("phantoms",
                                                                                    phantoms=PhantomSet(64, 0)),)))
    stages: Stages = field(default_factory=Stages)
    lora: LoraSettings = field(default_factory=LoraSettings)
    prompts: Prompts = field(default_factory=Prompts)
    prompting: PromptingConfig = field(default_factory=PromptingConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        if self.memory.quantize_base != "none":
            _check(not self.model.from_scratch, "memory.quantize_base",
                   "a 4-bit base needs a pretrained model.base (stage 0 trains the base itself)")
            _check(self.compute.device != "cpu", "memory.quantize_base",
                   "4-bit QLoRA runs on CUDA only (bitsandbytes); set it to \"none\" on CPU")
        if self.memory.optimizer != "adamw":
            _check(self.compute.device != "cpu", "memory.optimizer",
                   "the 8-bit optimiser runs on CUDA only (bitsandbytes); use \"adamw\" on CPU")
        if self.model.from_scratch:
            self._check_prior_slots()  # a base may prompt by its chat template: checked once that is known
            for name in PRETRAIN_STAGES:
                _check(getattr(self.stages, name).enabled, f"stages.{name}.enabled",
                       "stage 0 cannot be skipped when training from scratch (without it the drafts ignore "
                       "the image); set model.base to start from a pretrained checkpoint instead")

    def check_prior_slots(self) -> None:
        """TrainConfigError unless the plain `[prompts]` hold the `{prior}` slot once each when the model takes
        priors (prompts rendered from a base's chat template get it from `engine.prompts.prior_slotted`)."""
        try:
            self._check_prior_slots()
        except _Invalid as exc:
            raise TrainConfigError(exc.key, exc.message) from None

    def _check_prior_slots(self) -> None:
        if self.prior.intake == "none":
            return
        for name in ("findings", "impression", "impression_from_findings"):
            count = getattr(self.prompts, name).count(PRIOR_PLACEHOLDER)
            if name == "findings" and self.prompting.impression_from == "findings":
                _check(count <= 1, f"prompts.{name}", f"may hold {PRIOR_PLACEHOLDER} once at most")
                continue
            _check(count == 1, f"prompts.{name}",
                   f"must hold {PRIOR_PLACEHOLDER} once when prior.intake is {self.prior.intake!r}")

    @property
    def data_dir(self) -> Path:
        return self.data.data_dir or self.output.run_dir / "data"

    @property
    def cache_dir(self) -> Path:
        return self.data.cache_dir or self.output.run_dir / "cache"

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ------------------------------------------------------------------------------------------- loading
def load_train_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read a TOML recipe (None: all defaults) and apply `overrides` ({"output.run_dir": "x", ...})."""
    raw: dict[str, Any] = {}
    source = Path(path) if path is not None else None
    if source is not None:
        try:
            with source.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise TrainConfigError("", f"training configuration not found: {source}") from None
        except tomllib.TOMLDecodeError as exc:
            raise TrainConfigError("", f"not valid TOML: {exc}", source) from None
    apply_overrides(raw, overrides or {}, source)
    return config_from_dict(raw, source)


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any], source: Path | None = None) -> None:
    """Set `{"output.run_dir": "x", ...}` in a raw (TOML-shaped) recipe."""
    for dotted, value in overrides.items():
        _set_dotted(raw, dotted, value, source)


def data_source_from_dict(table: Mapping[str, Any], where: str = "data.sources") -> DataSource:
    """One `[[data.sources]]` table, checked as the recipe loader checks it."""
    try:
        return _build(DataSource, table, where)
    except _Invalid as exc:
        raise TrainConfigError(exc.key, exc.message) from None


def config_from_dict(raw: Mapping[str, Any], source: Path | None = None) -> TrainConfig:
    try:
        return _build(TrainConfig, raw, "")
    except _Invalid as exc:
        raise TrainConfigError(exc.key, exc.message, source) from None


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` with a TOML value (`lr=1e-4`, `views=["frontal"]`); bare words are strings."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise TrainConfigError(text, "an override is KEY=VALUE, e.g. stages.finetune.optimisation.lr=1e-4")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, source: Path | None) -> None:
    *parents, last = dotted.split(".")
    table = raw
    for part in parents:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise TrainConfigError(dotted, f"{part} is not a table", source)
    table[last] = value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise _Invalid(where, "must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise _Invalid(_join(where, unknown[0]), f"unknown key; known keys: {', '.join(fields)}")
    if cls is Stages:
        data = {name: _merge(dataclasses.asdict(getattr(Stages(), name)), value) for name, value in data.items()}
    values = {name: _coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    try:
        return cls(**values)
    except _Invalid as exc:
        raise _Invalid(_join(where, exc.key), exc.message) from None
    except TypeError as exc:  # a required field is missing
        raise _Invalid(where, f"incomplete table ({exc})") from None


def _merge(defaults: dict[str, Any], table: Any) -> Any:
    """A stage table overrides only the keys it names; the rest keep that stage's defaults."""
    if not isinstance(table, Mapping):
        return table
    merged = dict(defaults)
    for key, value in table.items():
        merged[key] = _merge(defaults[key], value) if isinstance(defaults.get(key), dict) else value
    return merged


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None or value == "" else _coerce(options[0], value, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is tuple:
        return _coerce_tuple(typing.get_args(hint)[0], value, key)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Invalid(key, f"expected a table, got {value!r}")
        item = typing.get_args(hint)[1]
        return {str(k): _coerce(item, v, f"{key}.{k}") for k, v in value.items()}
    return _coerce_scalar(hint, value, key)


def _coerce_tuple(item: Any, value: Any, key: str) -> tuple:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _Invalid(key, f"expected a list, got {value!r}")
    if dataclasses.is_dataclass(item):
        return tuple(_build(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    return tuple(_coerce(item, v, key) for v in value)


def _coerce_scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif hint is Path:
        ok = isinstance(value, (str, Path))
        value = Path(value).expanduser() if ok else value
    else:  # pragma: no cover - a field type this loader does not know
        raise _Invalid(key, f"unsupported field type {hint!r}")
    if not ok:
        names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
        raise _Invalid(key, f"expected {names[hint]}, got {value!r}")
    return value
