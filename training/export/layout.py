"""What a checkpoint says about its own inputs: image processor, chat template, stop tokens.

- `read_preprocessing`: `preprocessor_config.json` (CLIP, LLaVA, SigLIP, BiT/Dinov2 image processors)
  -> `Preprocessing` (size, resize/crop/pad, mean/std, rescale).
- `stop_token_ids`: every EOS id of `generation_config.json` and of the text config.
- `render_prompts`: the checkpoint's chat template (`chat_template.json` / `.jinja` /
  `tokenizer_config.json`) rendered by transformers for each section, set of views and with/without an
  indication -> `PromptLayout` variants the engine fills in. Each rendered text is checked to tokenise,
  through the bundle's `tokenizer.json`, to exactly what `tokenizer(text)` gives in transformers (the way
  `LlavaProcessor` tokenises), so the engine feeds the model what transformers would.

A `PromptSpec` says what to ask (per-section instructions), the system prompt, the views and the
words introducing each, and how an indication is introduced. It is read from `raddraft_prompts.json`
in the checkpoint when present (training writes it, so a fine-tuned model is prompted as it was trained).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.bundle import (
    FINDINGS_PLACEHOLDER,
    IMAGE_PLACEHOLDER,
    INDICATION_PLACEHOLDER,
    VIEW_KINDS,
    Preprocessing,
    PromptLayout,
    Prompts,
    PromptVariant,
)
from training.export.errors import ExportError, read_json_object

PROMPT_SPEC_FILE = "raddraft_prompts.json"
PROCESSOR_FILE = "preprocessor_config.json"
SECTIONS = ("findings", "impression", "impression_from_findings")
DEFAULT_INSTRUCTIONS = {
    "findings": "Write the findings section of the radiology report for this chest X-ray.",
    "impression": "Write the impression section of the radiology report for this chest X-ray.",
    "impression_from_findings": f"Findings: {FINDINGS_PLACEHOLDER}\nWrite the impression section of the "
                                "radiology report for this chest X-ray.",
}


@dataclass(frozen=True)
class PromptSpec:
    """instructions: per section (impression_from_findings holds `{findings}`). system: None keeps the
    template's own default. view_words: e.g. {"frontal": "Current frontal image", "lateral": ...}; empty:
    the template places the images. indication: e.g. "Indication: {indication}", None: not prompted."""

    instructions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_INSTRUCTIONS))
    system: str | None = None
    views: tuple[str, ...] = ("frontal",)
    combine: str = "tokens"
    view_words: dict[str, str] = field(default_factory=dict)
    indication: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = PROMPT_SPEC_FILE) -> PromptSpec:
        known = {"instructions", "system", "views", "combine", "view_words", "indication"}
        if not isinstance(data, dict) or set(data) - known:
            raise ExportError(f"{where}: expected an object with some of {', '.join(sorted(known))}")
        instructions = {**DEFAULT_INSTRUCTIONS, **data.get("instructions", {})}
        spec = cls(instructions=instructions, system=data.get("system"),
                   views=tuple(data.get("views", ("frontal",))), combine=data.get("combine", "tokens"),
                   view_words=dict(data.get("view_words", {})), indication=data.get("indication"))
        spec.check(where)
        return spec

    def check(self, where: str = "prompt spec") -> None:
        if not self.views or any(view not in VIEW_KINDS for view in self.views) or len(set(self.views)) != len(self.views):
            raise ExportError(f"{where}: views must list some of {VIEW_KINDS} once each, got {self.views!r}")
        if self.combine not in ("tokens", "stitch"):
            raise ExportError(f"{where}: combine must be 'tokens' or 'stitch', got {self.combine!r}")
        if FINDINGS_PLACEHOLDER not in self.instructions.get("impression_from_findings", ""):
            raise ExportError(f"{where}: instructions.impression_from_findings must contain {FINDINGS_PLACEHOLDER}")
        if self.indication is not None and INDICATION_PLACEHOLDER not in self.indication:
            raise ExportError(f"{where}: indication must contain {INDICATION_PLACEHOLDER}")
        if self.view_words and self.combine == "stitch":
            raise ExportError(f"{where}: view_words need one image per view (combine 'tokens')")


def read_prompt_spec(checkpoint_dir: Path) -> PromptSpec | None:
    path = Path(checkpoint_dir) / PROMPT_SPEC_FILE
    if not path.is_file():
        return None
    return PromptSpec.from_dict(read_json_object(path), str(path))


# ------------------------------------------------------------------------------------ preprocessing
def read_preprocessing(checkpoint_dir: Path, vision_size: int, spec: PromptSpec | None = None) -> Preprocessing | None:
    """`Preprocessing` from the checkpoint's image processor config; None when it has none."""
    path = Path(checkpoint_dir) / PROCESSOR_FILE
    if not path.is_file():
        return None
    where = str(path)
    config = read_json_object(path)
    mean = _three(config.get("image_mean", 0.5), "image_mean", where)
    std = _three(config.get("image_std", 0.5), "image_std", where)
    if config.get("do_normalize", True) is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    scale = 255.0 * float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 255.0
    size = config.get("size", vision_size)
    crop = config.get("crop_size")
    views = spec.views if spec else ("frontal",)
    combine = spec.combine if spec else "tokens"
    common = {"mean": mean, "std": std, "scale": round(scale, 9), "views": views, "combine": combine}
    edge = size.get("shortest_edge") if isinstance(size, dict) else None
    if config.get("do_center_crop", False) and crop is not None:
        crop_size = _square(crop, "crop_size", where)
        if config.get("do_pad", False):
            if edge != crop_size:
                raise ExportError(f"{where}: padding to a square, then resizing to {edge} and cropping "
                                  f"{crop_size} is not supported (pad takes equal sizes)")
            return Preprocessing(image_size=crop_size, resize="pad", pad_value=mean, **common)
        return Preprocessing(image_size=crop_size, resize="crop", shortest_edge=int(edge or crop_size), **common)
    if edge is not None:
        raise ExportError(f"{where}: a shortest-edge resize without a centre crop gives non-square images; "
                          "the export takes square model inputs")
    return Preprocessing(image_size=_square(size, "size", where), resize="stretch", **common)


def _three(value: Any, name: str, where: str) -> tuple[float, float, float]:
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3:
        raise ExportError(f"{where}: {name} must have 3 values, got {value!r}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def _square(value: Any, name: str, where: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and "height" in value and "width" in value:
        if value["height"] != value["width"]:
            raise ExportError(f"{where}: {name} {value} is not square; the export takes square model inputs")
        return int(value["height"])
    raise ExportError(f"{where}: {name} {value!r} is not understood (expected height/width or an integer)")


# ------------------------------------------------------------------------------------ stop tokens
def stop_token_ids(checkpoint_dir: Path, text_eos: Any) -> tuple[int, ...]:
    """EOS ids of generation_config.json first (in their order), then the text config's."""
    ids: list[int] = []
    path = Path(checkpoint_dir) / "generation_config.json"
    sources = []
    if path.is_file():
        sources.append(read_json_object(path).get("eos_token_id"))
    sources.append(text_eos)
    for source in sources:
        for value in (source if isinstance(source, (list, tuple)) else [source]):
            if value is not None and int(value) not in ids:
                ids.append(int(value))
    return tuple(ids)


# ------------------------------------------------------------------------------------ prompts
def read_chat_template(checkpoint_dir: Path, tokenizer) -> tuple[str, str] | None:
    """(template, where it came from) or None: chat_template.json, chat_template.jinja, then the tokenizer's."""
    checkpoint_dir = Path(checkpoint_dir)
    json_file = checkpoint_dir / "chat_template.json"
    if json_file.is_file():
        try:
            template = json.loads(json_file.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
            raise ExportError(f"{json_file}: not readable ({error})") from None
        if isinstance(template, str) and template.strip():
            return template, json_file.name
    jinja_file = checkpoint_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8"), jinja_file.name
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template.strip():
        return template, "tokenizer_config.json"
    return None


def render_prompts(checkpoint_dir: Path, spec: PromptSpec, tokenizer_file: Path) -> tuple[Prompts, PromptLayout] | None:
    """The checkpoint's chat template rendered for every section x view set x indication; None when the
    checkpoint has no chat template (the plain `Prompts` are used)."""
    from transformers import AutoTokenizer

    spec.check()
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    found = read_chat_template(checkpoint_dir, tokenizer)
    if found is None:
        return None
    template, source = found
    renderer = _Renderer(tokenizer, template, spec)
    variants = []
    for section in SECTIONS:
        for views in view_sets(spec.views):
            for indication in ((False, True) if spec.indication else (False,)):
                text = renderer.render(section, views, indication)
                check_tokenisation(tokenizer, tokenizer_file, text, renderer.prefix)
                variants.append(PromptVariant(section=section, views=views, text=text, indication=indication))
    full = {v.section: v.text for v in variants if v.views == tuple(spec.views) and not v.indication}
    prompts = Prompts(findings=full["findings"], impression=full["impression"],
                      impression_from_findings=full["impression_from_findings"])
    layout = PromptLayout(chat_template=source, system=spec.system, instructions=dict(spec.instructions),
                          view_words=dict(spec.view_words), indication=spec.indication, variants=tuple(variants))
    return prompts, layout


def view_sets(views: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The view sets a study can give: the first view is always filled (any image serves), the others
    only when the study has them (see engine.preprocess.select_images)."""
    first, rest = views[0], views[1:]
    sets = []
    for count in range(len(rest), -1, -1):
        for chosen in itertools.combinations(rest, count):
            sets.append((first, *chosen))
    return sets


class _Renderer:
    def __init__(self, tokenizer, template: str, spec: PromptSpec) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.spec = spec
        # What `tokenizer(text)` puts in front (BOS for Llama/Mistral, nothing for Qwen2), as text.
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        full = tokenizer("x")["input_ids"]
        added = full[:len(full) - len(plain)] if full[len(full) - len(plain):] == plain else []
        self.prefix = tokenizer.decode(added) if added else ""

    def render(self, section: str, views: tuple[str, ...], indication: bool) -> str:
        images = 1 if self.spec.combine == "stitch" else len(views)
        lines = []
        if self.spec.view_words:
            lines += [f"{self.spec.view_words.get(view, view)}: {IMAGE_PLACEHOLDER}" for view in views]
        if indication:
            lines.append(self.spec.indication)
        lines.append(self.spec.instructions[section])
        text = "\n".join(lines)
        messages = [{"role": "system", "content": [{"type": "text", "text": self.spec.system}]}] \
            if self.spec.system is not None else []
        if self.spec.view_words:
            content = [{"type": "text", "text": text}]
        else:
            content = [{"type": "image"} for _ in range(images)] + [{"type": "text", "text": text}]
        rendered = self._apply(messages + [{"role": "user", "content": content}], text, images)
        if rendered is None:  # a template that takes plain string content
            inline = text if self.spec.view_words else "".join(f"{IMAGE_PLACEHOLDER}\n" for _ in range(images)) + text
            string_messages = [{"role": m["role"], "content": m["content"][0]["text"]} for m in messages]
            rendered = self._apply(string_messages + [{"role": "user", "content": inline}], text, images)
        if rendered is None:
            raise ExportError("the checkpoint's chat template does not place the prompt text and images "
                              "(tried list and string message content)")
        return self.prefix + rendered

    def _apply(self, messages: list, text: str, images: int) -> str | None:
        try:
            rendered = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                          add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - jinja raises many kinds on content of the other shape
            return None
        if self.spec.instructions["findings"] not in rendered and text.splitlines()[-1] not in rendered:
            return None
        if rendered.count(IMAGE_PLACEHOLDER) != images:
            return None
        return rendered


def check_tokenisation(tokenizer, tokenizer_file: Path, text: str, prefix: str) -> None:
    """The engine's ids for `text` (tokenizers, no special tokens added) == transformers' `tokenizer(text
    without the prefix)`, with slot placeholders filled by a sample value."""
    from tokenizers import Tokenizer

    sample = text.replace(FINDINGS_PLACEHOLDER, "No pleural effusion.").replace(INDICATION_PLACEHOLDER, "Cough.")
    engine_ids = Tokenizer.from_file(str(tokenizer_file)).encode(sample, add_special_tokens=False).ids
    body = sample[len(prefix):] if prefix and sample.startswith(prefix) else sample
    expected = tokenizer(body)["input_ids"]
    if engine_ids != expected:
        raise ExportError(f"the rendered prompt {sample!r} tokenises differently in the engine "
                          f"({engine_ids[:12]}...) than in transformers ({expected[:12]}...)")
