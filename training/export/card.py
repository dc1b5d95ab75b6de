"""MODEL_CARD.md of a bundle: what the model is, where it came from, how well it does, what it is for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.bundle import BundleManifest
from training.export.parity import ParityResult

DEFAULT_INTENDED_USE = (
    "Drafts the Findings and Impression sections of a chest radiograph report for a radiologist, who reviews, "
    "edits and signs every report. It is not a diagnostic device and must not be used without that review."
)


def render_card(manifest: BundleManifest, *, parameters: Mapping[str, int], parity: Mapping[str, ParityResult],
                variant_sizes: Mapping[str, int], notes: str | None = None, intended_use: str | None = None) -> str:
    arch = manifest.architecture
    prep = manifest.preprocessing
    lines = [f"# {manifest.name} {manifest.version}", ""]
    if notes and notes.strip():
        lines += [notes.strip(), ""]
    lines += ["## Intended use", "", (intended_use or DEFAULT_INTENDED_USE).strip(), ""]

    lines += ["## Architecture", "",
              f"LLaVA: a {arch.vision} vision encoder and projector feeding a {arch.decoder} decoder.", "",
              "| | |", "|---|---|"]
    for label, key in (("vision encoder", "vision_tower"), ("projector", "projector"),
                       ("language model", "language_model"), ("output head", "lm_head"), ("total", "total")):
        if key in parameters:
            lines.append(f"| {label} parameters | {_count(parameters[key])} |")
    lines += [
        f"| decoder | {arch.num_layers} layers, hidden {arch.hidden_size}, {arch.num_kv_heads} KV heads of {arch.head_dim} |",
        f"| vocabulary | {arch.vocab_size} tokens |",
        f"| context | {arch.max_positions} positions |",
        f"| image | {prep.image_size}x{prep.image_size} pixels -> {arch.image_tokens} image tokens |",
        f"| views | {', '.join(prep.views)} (combined as {prep.combine}) |",
        f"| pixels | resize {prep.resize}, mean {_triple(prep.mean)}, std {_triple(prep.std)}, scale {prep.scale:g} |",
        f"| stop tokens | {', '.join(map(str, arch.stop_token_ids))} |",
        "",
    ]
    layout = manifest.prompting
    lines += ["## Prompts", "",
              (f"Rendered by the checkpoint's chat template (`{layout.chat_template}`)" if layout.chat_template
               else "Plain prompts (the checkpoint has no chat template)")
              + (f", indication as `{layout.indication}`" if layout.indication else ", no indication") + ".", "",
              "```", manifest.prompts.findings, "```", ""]

    lines += ["## Provenance", ""]
    provenance = {k: v for k, v in manifest.provenance.items() if k != "export"}
    if provenance:
        lines += [f"- **{key}**: {_inline(value)}" for key, value in provenance.items()]
    else:
        lines.append("- **training**: not recorded")
    export = manifest.provenance.get("export", {})
    if export:
        versions = ", ".join(f"{k} {v}" for k, v in export.get("versions", {}).items())
        lines.append(f"- **exported**: {export.get('exported_at', '?')} from `{export.get('checkpoint', '?')}`"
                     + (f" ({versions})" if versions else ""))
    lines.append("")

    lines += ["## Measured quality", ""]
    if manifest.metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_number(value)} |" for key, value in _flatten(manifest.metrics).items()]
    else:
        lines.append("No metrics were recorded at export.")
    lines.append("")

    lines += ["## Variants", "",
              ("Agreement with the torch fp32 model on a phantom radiograph and the findings prompt "
               f"({_new_tokens(parity)} greedy tokens): *greedy* is the share of tokens generated identically "
               "before the first difference, *top-1* the share of positions where the variant's most likely "
               "token is torch's when both see the same text."), "",
              "| variant | files | size | greedy | top-1 | max logit diff (tolerance) |", "|---|---|---|---|---|---|"]
    for name, files in manifest.variants.items():
        result = parity.get(name)
        size = _megabytes(variant_sizes.get(name, 0))
        marker = " (default)" if name == manifest.default_variant else ""
        if result is None:
            cells = "not checked | not checked | not checked"
        else:
            mark = "" if result.within_tolerance else " over"
            cells = (f"{result.greedy_agreement:.0%} | {result.top1_agreement:.0%} | "
                     f"{result.max_logit_diff:.2e} ({result.tolerance:.2e}{mark})")
        lines.append(f"| {name}{marker} | {', '.join(f'`{f}`' for f in files.all())} | {size} | {cells} |")
    failed = [r for name, r in parity.items() if name not in manifest.variants]
    for result in failed:
        lines.append(f"\n{result.variant} was not written: {result.error}")
    lines.append("")
    return "\n".join(lines)


def _new_tokens(parity: Mapping[str, ParityResult]) -> int | str:
    for result in parity.values():
        if result.torch_tokens:
            return len(result.torch_tokens)
    return "—"


def _triple(values) -> str:
    return "/".join(f"{v:.4g}" for v in values)


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} M ({n:,})"
    if n >= 1_000:
        return f"{n / 1e3:.1f} k ({n:,})"
    return str(n)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_inline(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_inline(v) for v in value)
    return str(value)


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat
