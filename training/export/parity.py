"""Does the exported bundle compute what the torch model computes?

A fixed seeded image and the bundle's findings prompt go through both sides:
- torch: `model(...)` over prompt + continuation for logits, `model.generate(do_sample=False)` for tokens;
- ONNX Runtime: a small self-contained greedy loop over the three graphs (`OrtLlava`): embed the ids,
  put the vision features in place of the image tokens, run the decoder once with an empty past, then
  one token at a time feeding `present` back as `past_key_values`.

The loop here is deliberately minimal (no sampling, one sequence) so it can later give way to the
engine's runtime without changing what is checked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.bundle import Architecture, GraphFiles, Prompts
from engine.prompts import prompt_ids, prompt_text

PARITY_SEED = 1234
PARITY_NEW_TOKENS = 16
FP32_ATOL = 1e-3
FP32_RTOL = 1e-4  # of the largest reference logit: trained models have logits far above 1


@dataclass
class ParityInputs:
    """What both sides are given: one image and the findings prompt with its image tokens expanded."""

    pixel_values: np.ndarray  # float32 [1, 3, H, W]
    prompt_ids: list[int]
    new_tokens: int = PARITY_NEW_TOKENS


@dataclass
class TorchReference:
    tokens: list[int]  # greedy continuation (EOS suppressed so there are always `new_tokens`)
    logits: np.ndarray  # [prompt + new_tokens - 1, vocab]: over the prompt and the continuation


@dataclass
class ParityResult:
    variant: str
    max_logit_diff: float  # over the prompt and the torch continuation (one decoder call, empty past)
    prefill_logit_diff: float  # at the prompt positions only
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
                new_tokens: int = PARITY_NEW_TOKENS, seed: int = PARITY_SEED) -> ParityInputs:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    ids = prompt_ids(tokenizer, prompt_text(prompts, "findings"), arch.image_token_id, arch.image_tokens)
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((1, channels, image_size, image_size)).astype(np.float32)
    return ParityInputs(pixel_values=pixels, prompt_ids=ids, new_tokens=new_tokens)


def torch_reference(model, inputs: ParityInputs, eos_token_id: int) -> TorchReference:
    import torch

    ids = torch.tensor([inputs.prompt_ids], dtype=torch.int64)
    pixels = torch.from_numpy(inputs.pixel_values)
    with torch.no_grad():
        generated = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                                   max_new_tokens=inputs.new_tokens, min_new_tokens=inputs.new_tokens,
                                   do_sample=False, num_beams=1, eos_token_id=eos_token_id,
                                   pad_token_id=model.config.text_config.pad_token_id)
        tokens = generated[0, ids.shape[1]:].tolist()
        full = torch.tensor([inputs.prompt_ids + tokens[:-1]], dtype=torch.int64)
        logits = model(input_ids=full, pixel_values=pixels, attention_mask=torch.ones_like(full)).logits[0]
    return TorchReference(tokens=tokens, logits=logits.float().numpy())


class OrtLlava:
    """Three ONNX Runtime sessions of one bundle variant and a greedy loop over them."""

    def __init__(self, bundle_dir: Path, files: GraphFiles, arch: Architecture, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.arch = arch
        self.vision = ort.InferenceSession(str(Path(bundle_dir) / files.vision), options, providers=providers)
        self.embed = ort.InferenceSession(str(Path(bundle_dir) / files.embed), options, providers=providers)
        self.decoder = ort.InferenceSession(str(Path(bundle_dir) / files.decoder), options, providers=providers)
        self.decoder_inputs = {i.name for i in self.decoder.get_inputs()}

    def prompt_embeds(self, ids: list[int], pixel_values: np.ndarray) -> np.ndarray:
        features = self.vision.run(["image_features"], {"pixel_values": pixel_values})[0]
        embeds = self.embed.run(["inputs_embeds"], {"input_ids": np.array([ids], dtype=np.int64)})[0]
        positions = np.flatnonzero(np.array(ids) == self.arch.image_token_id)
        flat = features.reshape(-1, features.shape[-1])
        if len(positions) != len(flat):
            raise ValueError(f"{len(positions)} image tokens in the prompt but {len(flat)} image features")
        embeds[0, positions] = flat
        return embeds

    def empty_past(self) -> dict[str, np.ndarray]:
        a = self.arch
        shape = (1, a.num_kv_heads, 0, a.head_dim)
        past = {}
        for i in range(a.num_layers):
            past[f"past_key_values.{i}.key"] = np.zeros(shape, dtype=np.float32)
            past[f"past_key_values.{i}.value"] = np.zeros(shape, dtype=np.float32)
        return past

    def step(self, embeds: np.ndarray, past: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One decoder call: logits [seq, vocab] and the new past (present)."""
        past_length = next(iter(past.values())).shape[2]
        seq = embeds.shape[1]
        feeds = {
            "inputs_embeds": embeds.astype(np.float32, copy=False),
            "attention_mask": np.ones((1, past_length + seq), dtype=np.int64),
            "position_ids": np.arange(past_length, past_length + seq, dtype=np.int64)[None, :],
            **past,
        }
        feeds = {name: value for name, value in feeds.items() if name in self.decoder_inputs}
        names = [o.name for o in self.decoder.get_outputs()]
        outputs = dict(zip(names, self.decoder.run(names, feeds)))
        present = {name.replace("present.", "past_key_values.", 1): value
                   for name, value in outputs.items() if name.startswith("present.")}
        return outputs["logits"][0], present

    def logits(self, ids: list[int], pixel_values: np.ndarray) -> np.ndarray:
        """Logits at every position of `ids` in one call with an empty past."""
        return self.step(self.prompt_embeds(ids, pixel_values), self.empty_past())[0]

    def greedy(self, ids: list[int], pixel_values: np.ndarray, new_tokens: int, suppress: int | None = None,
               ) -> list[int]:
        logits, past = self.step(self.prompt_embeds(ids, pixel_values), self.empty_past())
        tokens: list[int] = []
        while True:
            last = logits[-1].astype(np.float32).copy()
            if suppress is not None:
                last[suppress] = -np.inf
            token = int(np.argmax(last))
            tokens.append(token)
            if len(tokens) == new_tokens:
                return tokens
            embeds = self.embed.run(["inputs_embeds"], {"input_ids": np.array([[token]], dtype=np.int64)})[0]
            logits, past = self.step(embeds, past)


def check_variant(variant: str, bundle_dir: Path, files: GraphFiles, arch: Architecture, inputs: ParityInputs,
                  reference: TorchReference, *, atol: float = FP32_ATOL, rtol: float = FP32_RTOL,
                  threads: int | None = None) -> ParityResult:
    """Compare one variant with the torch reference; errors running it are reported, not raised."""
    tolerance = atol + rtol * float(np.abs(reference.logits).max())
    try:
        runner = OrtLlava(bundle_dir, files, arch, threads=threads)
        full_ids = inputs.prompt_ids + reference.tokens[:-1]
        logits = runner.logits(full_ids, inputs.pixel_values).astype(np.float32)
        tokens = runner.greedy(inputs.prompt_ids, inputs.pixel_values, inputs.new_tokens, suppress=arch.eos_token_id)
    except Exception as error:  # noqa: BLE001 - a variant ORT cannot load or run is a failed variant with a reason
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return ParityResult(variant, float("inf"), float("inf"), tolerance, 0.0, 0.0, False,
                            torch_tokens=list(reference.tokens), error=message)
    if logits.shape != reference.logits.shape:
        return ParityResult(variant, float("inf"), float("inf"), tolerance, 0.0, 0.0, False,
                            torch_tokens=list(reference.tokens), onnx_tokens=tokens,
                            error=f"logits shape {logits.shape} != torch {reference.logits.shape}")
    diff = np.abs(logits - reference.logits)
    prompt_length = len(inputs.prompt_ids)
    continuation = logits[prompt_length - 1:].copy()
    continuation[:, arch.eos_token_id] = -np.inf  # as generate's min_new_tokens does
    top1 = float(np.mean(np.argmax(continuation, axis=-1) == np.array(reference.tokens)))
    same = 0
    for ours, theirs in zip(tokens, reference.tokens):
        if ours != theirs:
            break
        same += 1
    return ParityResult(
        variant=variant,
        max_logit_diff=float(diff.max()),
        prefill_logit_diff=float(diff[:prompt_length].max()),
        tolerance=tolerance,
        top1_agreement=top1,
        greedy_agreement=same / len(reference.tokens),
        tokens_identical=tokens == reference.tokens,
        torch_tokens=list(reference.tokens),
        onnx_tokens=tokens,
    )
