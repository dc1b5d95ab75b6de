"""Does the exported bundle compute what the torch model computes?

A phantom radiograph (training.data.phantoms, through the bundle's own preprocessing) and the bundle's
findings prompt go through both sides:
- torch: `model(...)` over prompt + continuation for logits, `model.generate(do_sample=False)` for tokens;
  the logits compared are those a draft reads: at the last prompt position and the continuation's (the head
  over the 749 positions of a Qwen2-1.5B prompt and continuation would be 455 MB on each side; the cache
  that a draft continues from is checked through the continuation's logits). An int8 decoder's head scales
  its input over the positions it is given, so its logits here (16 positions) differ slightly from the
  engine's (one at a time);
- ONNX Runtime: the engine's own sessions and greedy generation (`engine.graphs`, `engine.generation`),
  so what passes here is what the app runs. A decoder over 256 MB (which ONNX Runtime could not open whole
  within the export's memory bound) is run a part at a time instead, teacher-forced (`parity_parts.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.bundle import Architecture, GraphFiles, Preprocessing, Prompts
from engine.prompts import prompt_ids, prompt_text

PARITY_SEED = 1234
PARITY_NEW_TOKENS = 16
FP32_ATOL = 1e-3
FP32_RTOL = 1e-4  # of the largest reference logit: trained models have logits far above 1
# Each variant's tolerance on the logits, relative to the largest reference logit at the compared positions
# (the last prompt position and the continuation). fp32 must meet its own
# (the export fails otherwise); the others are measured and reported in the card with their agreement.
VARIANT_RTOL = {"fp32": FP32_RTOL, "fp16": 0.02, "int8": 0.15, "int4": 0.2}


@dataclass
class ParityInputs:
    """What both sides are given: one image and the findings prompt with its image tokens expanded."""

    pixel_values: np.ndarray  # float32 [images, 3, H, W]
    prompt_ids: list[int]
    new_tokens: int = PARITY_NEW_TOKENS


@dataclass
class TorchReference:
    tokens: list[int]  # greedy continuation (EOS suppressed so there are always `new_tokens`)
    logits: np.ndarray  # [new_tokens, vocab]: at the last prompt position and over the continuation


@dataclass
class ParityResult:
    variant: str
    max_logit_diff: float  # at the last prompt position and the torch continuation (one decoder call, empty past)
    prefill_logit_diff: float  # at the last prompt position only (the prefill's logits a draft reads)
    tolerance: float
    top1_agreement: float  # teacher-forced: share of continuation positions whose argmax is torch's token
    greedy_agreement: float  # share of greedy tokens equal to torch's before the first difference
    tokens_identical: bool
    torch_tokens: list[int] = field(default_factory=list)
    onnx_tokens: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.tokens_identical and self.max_logit_diff <= self.tolerance

    @property
    def within_tolerance(self) -> bool:
        return self.error is None and self.max_logit_diff <= self.tolerance

    def summary(self) -> str:
        if self.error:
            return f"{self.variant}: failed ({self.error})"
        return (f"{self.variant}: greedy {self.greedy_agreement:.0%} identical, top-1 {self.top1_agreement:.0%}, "
                f"max |logit diff| {self.max_logit_diff:.2e}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def make_inputs(tokenizer_file: Path, arch: Architecture, prompts: Prompts, image_size: int, channels: int = 3,
                new_tokens: int = PARITY_NEW_TOKENS, seed: int = PARITY_SEED, num_images: int = 1,
                preprocessing: Preprocessing | None = None) -> ParityInputs:
    """The findings prompt and, with `preprocessing` (and 3 channels), a phantom radiograph's pixels;
    else seeded noise."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    ids = prompt_ids(tokenizer, prompt_text(prompts, "findings"), arch.image_token_id, arch.image_tokens,
                     num_images)
    if preprocessing is not None and channels == 3:
        pixels = phantom_pixels(preprocessing, num_images, seed)
    else:
        rng = np.random.default_rng(seed)
        pixels = rng.standard_normal((num_images, channels, image_size, image_size)).astype(np.float32)
    return ParityInputs(pixel_values=pixels, prompt_ids=ids, new_tokens=new_tokens)


def phantom_pixels(preprocessing: Preprocessing, num_images: int, seed: int = PARITY_SEED) -> np.ndarray:
    """`num_images` views of one phantom study (frontal, then lateral; repeated when it has fewer)."""
    import dataclasses

    from engine.preprocess import unit_images_to_pixel_values
    from training.data.phantoms import PhantomConfig, plan_study, render_study

    config = PhantomConfig(image_size=max(preprocessing.image_size, 64), lateral_fraction=1.0, workers=1)
    views = [image for _, image in render_study(plan_study(seed, 0, config), config)]
    images = [views[min(index, len(views) - 1)] for index in range(num_images)]
    # one image per view here: a stitched layout's single image is made of them by the engine itself
    return unit_images_to_pixel_values(images, dataclasses.replace(preprocessing, combine="tokens"))


def torch_reference(model, inputs: ParityInputs, eos_token_id: int | tuple[int, ...]) -> TorchReference:
    import torch

    ids = torch.tensor([inputs.prompt_ids], dtype=torch.int64)
    pixels = torch.from_numpy(inputs.pixel_values)
    with torch.no_grad():
        generated = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                                   max_new_tokens=inputs.new_tokens, min_new_tokens=inputs.new_tokens,
                                   do_sample=False, num_beams=1,
                                   eos_token_id=list(eos_token_id) if isinstance(eos_token_id, tuple) else eos_token_id,
                                   pad_token_id=model.config.text_config.pad_token_id)
        tokens = generated[0, ids.shape[1]:].tolist()
        full = torch.tensor([inputs.prompt_ids + tokens[:-1]], dtype=torch.int64)
        logits = model(input_ids=full, pixel_values=pixels, attention_mask=torch.ones_like(full),
                       logits_to_keep=inputs.new_tokens).logits[0]
    return TorchReference(tokens=tokens, logits=logits.float().numpy())


def greedy_from_teacher_forced(choices: list[int], reference: list[int]) -> list[int]:
    """The greedy tokens as far as they are known from one teacher-forced pass: torch's tokens up to the
    first position whose argmax differs, then that argmax (what greedy decoding takes there)."""
    tokens = []
    for ours, theirs in zip(choices, reference):
        tokens.append(ours)
        if ours != theirs:
            break
    return tokens


def engine_graphs(bundle_dir: Path, files: GraphFiles, arch: Architecture, threads: int | None = None):
    """The engine's own sessions for one variant, on CPU: parity checks what the app will run."""
    from engine.graphs import ModelGraphs, SessionOptions
    from engine.providers import choose_providers

    return ModelGraphs(Path(bundle_dir), files, arch, choose_providers(("cpu",)), SessionOptions(threads or 0))


def onnx_logits(graphs, ids: list[int], pixel_values: np.ndarray, keep: int = 0) -> np.ndarray:
    """Logits at every position of `ids` (or its last `keep`) in one decoder call with an empty past."""
    from engine.generation import prompt_embeddings

    embeds = prompt_embeddings(graphs, ids, graphs.image_features(pixel_values))
    return graphs.logits(embeds, graphs.empty_past(), 0, keep=keep)[0]


def onnx_greedy(graphs, tokenizer_file: Path, ids: list[int], pixel_values: np.ndarray, new_tokens: int) -> list[int]:
    """The engine's greedy generation with end of sequence suppressed (as torch's min_new_tokens)."""
    from tokenizers import Tokenizer

    from engine.generation import GenerationOptions, generate

    result = generate(graphs, Tokenizer.from_file(str(tokenizer_file)), ids, graphs.image_features(pixel_values),
                      GenerationOptions(max_new_tokens=new_tokens, min_new_tokens=new_tokens))
    return list(result.token_ids)


def check_variant(variant: str, bundle_dir: Path, files: GraphFiles, arch: Architecture, inputs: ParityInputs,
                  reference: TorchReference, *, atol: float = FP32_ATOL, rtol: float | None = None,
                  threads: int | None = None) -> ParityResult:
    """Compare one variant with the torch reference; errors running it are reported, not raised."""
    rtol = VARIANT_RTOL.get(variant, FP32_RTOL) if rtol is None else rtol
    tolerance = atol + rtol * float(np.abs(reference.logits).max())
    from training.export.parity_parts import logits_in_parts, runs_in_parts

    full_ids = inputs.prompt_ids + reference.tokens[:-1]
    in_parts = False
    try:
        in_parts = runs_in_parts(bundle_dir, files, arch)
        if in_parts:  # too large to open whole within the export's memory bound
            logits = logits_in_parts(bundle_dir, files, arch, full_ids, inputs.pixel_values, threads=threads,
                                     keep=inputs.new_tokens)
            tokens = []
        else:
            graphs = engine_graphs(bundle_dir, files, arch, threads=threads)
            logits = onnx_logits(graphs, full_ids, inputs.pixel_values, keep=inputs.new_tokens).astype(np.float32)
            tokens = onnx_greedy(graphs, Path(bundle_dir) / "tokenizer.json", inputs.prompt_ids,
                                 inputs.pixel_values, inputs.new_tokens)
    except Exception as error:  # noqa: BLE001 - a variant ORT cannot load or run is a failed variant with a reason
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return ParityResult(variant, float("inf"), float("inf"), tolerance, 0.0, 0.0, False,
                            torch_tokens=list(reference.tokens), error=message)
    if logits.shape != reference.logits.shape:
        return ParityResult(variant, float("inf"), float("inf"), tolerance, 0.0, 0.0, False,
                            torch_tokens=list(reference.tokens), onnx_tokens=tokens,
                            error=f"logits shape {logits.shape} != torch {reference.logits.shape}")
    diff = np.abs(logits - reference.logits)
    continuation = logits.copy()
    continuation[:, list(arch.stop_token_ids)] = -np.inf  # as generate's min_new_tokens does
    choices = np.argmax(continuation, axis=-1)
    top1 = float(np.mean(choices == np.array(reference.tokens)))
    if in_parts:
        tokens = greedy_from_teacher_forced(choices.tolist(), reference.tokens)
    same = 0
    for ours, theirs in zip(tokens, reference.tokens):
        if ours != theirs:
            break
        same += 1
    return ParityResult(
        variant=variant,
        max_logit_diff=float(diff.max()),
        prefill_logit_diff=float(diff[0].max()),
        tolerance=tolerance,
        top1_agreement=top1,
        greedy_agreement=same / len(reference.tokens),
        tokens_identical=tokens == reference.tokens,
        torch_tokens=list(reference.tokens),
        onnx_tokens=tokens,
    )
