"""Autoregressive generation over the bundle's graphs: prefill image + prompt, then decode with KV cache.

A generation can start from the cache of an earlier one (`reuse`): the longest common token prefix of
the new prompt and a cached sequence is not computed again, so Findings and Impression share one prefill
of the image tokens and the prompt text before the sections differ, and impression-from-findings
continues from the findings generation itself.

Text streams out through `on_text` as it becomes printable (a byte-level BPE token can end inside a
UTF-8 character, so a piece is released only once it decodes cleanly).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from tokenizers import Tokenizer

from engine.bundle import Architecture
from engine.errors import GenerationError
from engine.graphs import ModelGraphs, cache_prefix
from engine.sampling import apply_repetition_penalty, next_token

TextCallback = Callable[[str], None]


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 160
    min_new_tokens: int = 0  # stop tokens are suppressed until this many tokens exist (benchmarks)
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    use_cache: bool = True  # False recomputes the whole sequence each step (for checking the cache)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise GenerationError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise GenerationError("temperature must be 0 (greedy) or more")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerationError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise GenerationError("repetition_penalty must be positive")


@dataclass(frozen=True)
class DecoderState:
    """The KV cache of `token_ids` (image tokens included) over one study's image features."""

    token_ids: tuple[int, ...]
    past: list = field(repr=False, compare=False)
    image_features: np.ndarray = field(repr=False, compare=False)

    def shared_length(self, ids: list[int], image_features: np.ndarray) -> int:
        """How many leading tokens of `ids` this cache already holds (0 for other images)."""
        if not same_leading_images(image_features, self.image_features):
            return 0
        length = 0
        for ours, theirs in zip(self.token_ids, ids):
            if ours != theirs:
                break
            length += 1
        return length


def same_leading_images(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether one of two feature arrays is the other or a view of its leading images: a prompt that leaves
    out the prior's image (it follows the study's) shares the study's cache with one that takes it. The
    k-th image token of a prompt always takes the k-th feature, so a common token prefix means the same
    features. (Both are alive, so the same address, dtype and layout is the same memory.)"""
    if first is second:
        return True
    return (first.dtype == second.dtype and first.shape[1:] == second.shape[1:] and
            first.strides == second.strides and
            first.__array_interface__["data"][0] == second.__array_interface__["data"][0])


@dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: tuple[int, ...]
    stop_reason: str  # "eos" (any of the model's stop tokens) or "length"
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    reused_tokens: int = 0  # prompt tokens taken from an earlier cache instead of prefilled
    state: DecoderState | None = field(default=None, repr=False, compare=False)  # cache after the last fed token
    # the model's own probability (softmax of the raw logits) of each token in token_ids: per-finding confidence
    token_probs: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def ms_per_token(self) -> float:
        steps = max(len(self.token_ids) - 1, 1)  # the first token comes out of the prefill
        return 1000.0 * self.decode_s / steps

    def timings(self) -> dict[str, float | int]:
        return {"prompt_tokens": self.prompt_tokens, "reused_tokens": self.reused_tokens,
                "new_tokens": len(self.token_ids), "prefill_s": round(self.prefill_s, 4), "decode_s": round(self.decode_s, 4),
                "ms_per_token": round(self.ms_per_token, 2)}


class TextStream:
    """Turns a growing list of token ids into printable pieces."""

    def __init__(self, tokenizer: Tokenizer, callback: TextCallback | None) -> None:
        self._tokenizer = tokenizer
        self._callback = callback
        self._ids: list[int] = []
        self._sent = ""

    def push(self, token_id: int) -> None:
        self._ids.append(token_id)
        if self._callback is None:
            return
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd") or len(text) <= len(self._sent):
            return
        piece, self._sent = text[len(self._sent):], text
        self._callback(piece)

    def finish(self) -> str:
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if self._callback is not None and len(text) > len(self._sent) and text.startswith(self._sent):
            self._callback(text[len(self._sent):])
        self._sent = text
        return text


def prompt_embeddings(graphs: ModelGraphs, prompt_ids: list[int], image_features: np.ndarray,
                      prefix: bool = False) -> np.ndarray:
    """Token embeddings of the prompt with the image token positions replaced by the image features.

    prefix: `prompt_ids` is the start of a prompt, which may hold only the first of the image tokens."""
    ids = np.asarray(prompt_ids, dtype=np.int64)[None, :]
    embeds = graphs.embed(ids)
    positions = np.flatnonzero(ids[0] == graphs.arch.image_token_id)
    features = image_features.reshape(-1, image_features.shape[-1])
    if prefix:
        features = features[:positions.size]
    if positions.size != features.shape[0]:
        raise GenerationError(f"the prompt has {positions.size} image tokens but the images gave "
                              f"{features.shape[0]} features")
    embeds[0, positions] = features
    return embeds


def prefill(graphs: ModelGraphs, ids: list[int], image_features: np.ndarray) -> DecoderState:
    """The cache of `ids` (e.g. the prefix two section prompts share), for `generate(..., reuse=...)`."""
    if not ids:
        raise GenerationError("nothing to prefill")
    embeds = prompt_embeddings(graphs, ids, image_features, prefix=True)
    _, past = graphs.decode(embeds, graphs.empty_past(), 0)
    return DecoderState(tuple(ids), past, image_features)


def shared_prefix_length(*sequences: list[int]) -> int:
    length = 0
    for tokens in zip(*sequences):
        if any(token != tokens[0] for token in tokens):
            break
        length += 1
    return length


def start_from(graphs: ModelGraphs, prompt_ids: list[int], image_features: np.ndarray,
                reuse: tuple[DecoderState, ...]) -> tuple[np.ndarray, list, int]:
    """Prefill `prompt_ids`, from the reusable cache sharing the longest prefix: (last logits, cache, reused)."""
    embeds = prompt_embeddings(graphs, prompt_ids, image_features)
    best, reused = None, 0
    for state in reuse:
        length = state.shared_length(prompt_ids, image_features)
        if length > reused:
            best, reused = state, length
    reused = min(reused, len(prompt_ids) - 1)  # the last prompt token is run to give the next token's logits
    past = cache_prefix(best.past, reused) if best is not None and reused > 0 else graphs.empty_past()
    logits, past = graphs.decode(embeds[:, reused:], past, reused)
    return logits, past, reused


class TokenChooser:
    """One sequence's side of decoding: penalty, suppressed stops, the choice of each token, its
    probability and the text stream. Single and batched decoding share it, so both choose alike."""

    def __init__(self, arch: Architecture, tokenizer: Tokenizer, prompt_ids: list[int],
                 options: GenerationOptions, on_text: TextCallback | None = None) -> None:
        self._stop_ids = arch.stop_token_ids
        self._stops = np.asarray(arch.stop_token_ids, dtype=np.int64)
        self._options = options
        self._rng = np.random.default_rng(options.seed)
        self._stream = TextStream(tokenizer, on_text)
        self._seen = {int(i) for i in prompt_ids}
        self.generated: list[int] = []
        self.probabilities: list[float] = []
        self.stop_reason = "length"

    def step(self, logits: np.ndarray) -> bool:
        """Choose the next token from `logits`; True when it was kept and must be fed to the decoder."""
        options = self._options
        adjusted = apply_repetition_penalty(logits, np.fromiter(self._seen, dtype=np.int64), options.repetition_penalty)
        if len(self.generated) < options.min_new_tokens:
            adjusted = adjusted.copy()
            adjusted[self._stops] = -np.inf
        token = next_token(adjusted, options.temperature, options.top_p, self._rng)
        if token in self._stop_ids:
            self.stop_reason = "eos"
            return False
        self.generated.append(token)
        self.probabilities.append(token_probability(logits, token))
        self._seen.add(token)
        self._stream.push(token)
        return len(self.generated) < options.max_new_tokens

    def finish_text(self) -> str:
        return self._stream.finish().strip()


MIN_ROOM_TOKENS = 16  # a prompt leaving fewer positions than this for the text is refused, not cut short


def fitting_options(arch: Architecture, prompt_ids: list[int], options: GenerationOptions) -> GenerationOptions:
    """`options` with at most as many new tokens as the model's positions leave after the prompt: a long
    prompt (findings given, a prior) gets a draft that ends at the model's last position (stop reason
    "length") instead of none. A prompt that leaves almost no room is an error."""
    room = arch.max_positions - len(prompt_ids)
    if room < min(MIN_ROOM_TOKENS, options.max_new_tokens):
        raise GenerationError(f"a prompt of {len(prompt_ids)} tokens leaves {max(room, 0)} of the model's "
                              f"{arch.max_positions} positions for the text")
    return options if options.max_new_tokens <= room else replace(options, max_new_tokens=room)


def generate(graphs: ModelGraphs, tokenizer: Tokenizer, prompt_ids: list[int], image_features: np.ndarray,
             options: GenerationOptions, on_text: TextCallback | None = None, *,
             reuse: tuple[DecoderState, ...] = ()) -> GenerationResult:
    """Generate after `prompt_ids` until one of the model's stop tokens or `max_new_tokens`.

    reuse: caches of earlier generations or prefills over the same image features; the prompt's longest
    shared prefix with one of them is taken from it instead of being computed again."""
    options = fitting_options(graphs.arch, prompt_ids, options)
    chooser = TokenChooser(graphs.arch, tokenizer, prompt_ids, options, on_text)
    started = time.perf_counter()
    if options.use_cache:
        logits, past, reused = start_from(graphs, prompt_ids, image_features, reuse)
    else:
        embeds = prompt_embeddings(graphs, prompt_ids, image_features)
        logits, past = graphs.decode(embeds, graphs.empty_past(), 0)
        reused = 0
    prefill_s = time.perf_counter() - started
    fed = list(prompt_ids)  # the tokens whose keys and values are in `past`
    decode_started = time.perf_counter()
    while chooser.step(logits):
        token = chooser.generated[-1]
        token_embeds = graphs.embed(np.array([[token]], dtype=np.int64))
        if options.use_cache:
            logits, past = graphs.decode(token_embeds, past, len(fed))
            fed.append(token)
        else:
            embeds = np.concatenate([embeds, token_embeds.astype(embeds.dtype)], axis=1)
            logits, _ = graphs.decode(embeds, graphs.empty_past(), 0)
    decode_s = time.perf_counter() - decode_started
    state = DecoderState(tuple(fed), past, image_features) if options.use_cache else None
    return GenerationResult(chooser.finish_text(), tuple(chooser.generated), chooser.stop_reason, len(prompt_ids),
                            prefill_s, decode_s, reused_tokens=reused, state=state,
                            token_probs=tuple(chooser.probabilities))


def token_probability(logits: np.ndarray, token: int) -> float:
    values = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(values - values.max())
    return float(shifted[token] / shifted.sum())
