"""Choosing the next token from logits: repetition penalty, then greedy or temperature + top-p sampling.

Same semantics as transformers' logits processors (penalty divides positive and multiplies negative
logits of tokens already in the sequence), so greedy output matches `generate` token for token.
"""

from __future__ import annotations

import numpy as np


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    if penalty == 1.0 or seen.size == 0:
        return logits
    logits = logits.copy()
    scores = logits[seen]
    logits[seen] = np.where(scores < 0, scores * penalty, scores / penalty)
    return logits


def next_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    if temperature <= 0.0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        keep = order[: int(np.searchsorted(cumulative, top_p) + 1)]
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    return int(rng.choice(probs.size, p=probs))
