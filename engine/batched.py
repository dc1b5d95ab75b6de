"""Batched decoding: several sequences (studies, sections) step through the decoder together.

Each row is prefilled on its own, exactly as `generate` prefills it (a shared prefix reused), because a
prefill is already a matrix product over its tokens and stacking prompts only adds padding. The gain is
in decoding: one decoder run advances every row by one token, where one row at a time pays the run's
fixed cost and reads every weight once per row.

Rows whose caches differ in length are left-padded: the attention mask is 0 over a row's padding and
each row has its own position ids, so a row gets the tokens it would get alone when the graph's float
math does not mix rows (fp32, fp16, weight-only int4). int8 graphs quantize activations dynamically
with one scale per tensor, over all rows, so their rows can differ slightly from batch 1 (measured in
bench/site_server.py). A finished row leaves the batch at once, and padding no row needs is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer

from engine.generation import (
    DecoderState,
    GenerationOptions,
    GenerationResult,
    TextCallback,
    TokenChooser,
    fitting_options,
    generate,
    start_from,
)
from engine.graphs import ModelGraphs


@dataclass(frozen=True)
class BatchRequest:
    """One row: a prompt over its study's image features, with caches it may reuse (as `generate`)."""

    prompt_ids: tuple[int, ...]
    image_features: np.ndarray = field(repr=False, compare=False)
    reuse: tuple[DecoderState, ...] = field(default=(), repr=False, compare=False)
    on_text: TextCallback | None = field(default=None, repr=False, compare=False)


@dataclass(eq=False)  # rows are compared by identity
class _Row:
    chooser: TokenChooser
    prompt_tokens: int
    reused: int
    prefill_s: float
    logits: np.ndarray  # of the last prompt token
    past: list  # [1, kv_heads, prompt_tokens, head_dim] per layer and key/value
    decode_s: float | None = None  # seconds from the batch's first step until this row finished


class _Batch:
    """The rows still decoding: one left-padded cache, its attention mask and each row's next position."""

    def __init__(self, rows: list[_Row]) -> None:
        lengths = [row.past[0].shape[2] for row in rows]
        width = max(lengths)
        self.mask = np.zeros((len(rows), width), dtype=np.int64)
        self.past = []
        for layer in range(len(rows[0].past)):
            kv_heads, head_dim = rows[0].past[layer].shape[1], rows[0].past[layer].shape[3]
            stacked = np.zeros((len(rows), kv_heads, width, head_dim), dtype=rows[0].past[layer].dtype)
            for i, (row, length) in enumerate(zip(rows, lengths)):
                stacked[i, :, width - length:] = row.past[layer][0]
            self.past.append(stacked)
        for i, length in enumerate(lengths):
            self.mask[i, width - length:] = 1
        self.positions = np.asarray(lengths, dtype=np.int64)

    def step(self, graphs: ModelGraphs, tokens: list[int]) -> np.ndarray:
        """Feed one token per row; the logits of the next token of each row [rows, vocab]."""
        embeds = graphs.embed(np.asarray(tokens, dtype=np.int64)[:, None])
        self.mask = np.concatenate([self.mask, np.ones((len(tokens), 1), dtype=np.int64)], axis=1)
        logits, self.past = graphs.decode_rows(embeds, self.mask, self.positions[:, None], self.past)
        self.positions = self.positions + 1
        return logits

    def keep(self, rows: list[int]) -> None:
        """Only `rows` (indexes into the current rows) go on; columns that are padding in all of them go."""
        arrays = [value if isinstance(value, np.ndarray) else value.numpy() for value in self.past]
        mask = self.mask[rows]
        first = int(np.argmax(mask.any(axis=0)))
        self.mask = np.ascontiguousarray(mask[:, first:])
        self.past = [np.ascontiguousarray(value[rows][:, :, first:]) for value in arrays]
        self.positions = self.positions[rows]


def generate_batch(graphs: ModelGraphs, tokenizer: Tokenizer, requests: Sequence[BatchRequest],
                   options: GenerationOptions, *, together: bool = True) -> list[GenerationResult]:
    """`generate` for each request, the decoding steps of all rows run together.

    Falls back to one row at a time when `together` is False (graphs whose rows are not independent,
    see the module docstring), for a single request, without the cache, or for a decoder that derives
    positions from the mask (it cannot take padded rows)."""
    if not together or len(requests) <= 1 or not options.use_cache or not graphs.takes_batches:
        return [generate(graphs, tokenizer, list(r.prompt_ids), r.image_features, options, r.on_text,
                         reuse=r.reuse) for r in requests]
    rows = [_prefilled(graphs, tokenizer, request, options) for request in requests]
    _decode_together(graphs, rows)
    return [GenerationResult(row.chooser.finish_text(), tuple(row.chooser.generated), row.chooser.stop_reason,
                             row.prompt_tokens, row.prefill_s, row.decode_s or 0.0, reused_tokens=row.reused,
                             token_probs=tuple(row.chooser.probabilities)) for row in rows]


def _prefilled(graphs: ModelGraphs, tokenizer: Tokenizer, request: BatchRequest,
               options: GenerationOptions) -> _Row:
    ids = list(request.prompt_ids)
    options = fitting_options(graphs.arch, ids, options)
    chooser = TokenChooser(graphs.arch, tokenizer, ids, options, request.on_text)
    started = time.perf_counter()
    logits, past, reused = start_from(graphs, ids, request.image_features, request.reuse)
    past = [value if isinstance(value, np.ndarray) else value.numpy() for value in past]  # stacked on the host
    return _Row(chooser, len(ids), reused, time.perf_counter() - started, logits, past)


def _decode_together(graphs: ModelGraphs, rows: list[_Row]) -> None:
    started = time.perf_counter()
    active = [row for row in rows if row.chooser.step(row.logits)]
    for row in rows:
        row.logits = np.empty(0, dtype=np.float32)  # prefill logits are no longer needed
        if row not in active:
            row.decode_s = time.perf_counter() - started
    if not active:
        return
    batch = _Batch(active)
    for row in active:
        row.past = []  # the batch holds the cache now
    while active:
        logits = batch.step(graphs, [row.chooser.generated[-1] for row in active])
        going = [i for i, row in enumerate(active) if row.chooser.step(logits[i])]
        now = time.perf_counter() - started
        for i, row in enumerate(active):
            if i not in going:
                row.decode_s = now
        if going and len(going) < len(active):
            batch.keep(going)
        active = [active[i] for i in going]
