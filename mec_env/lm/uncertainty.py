"""Token-level uncertainty of the first answer token (paper eq. 9 and Table I).

Definitions, each in [0, 1], higher = less certain:

- **margin** (eq. 9 of the GOA paper): take the top 3K tokens (K = 10) of the next-token
  softmax after the prompt, decode each, strip and lower-case it, drop empty strings, merge
  equal strings by summing their probability, keep the top K, renormalise; with p1 >= p2 the
  two largest, ``alpha = 1 - (p1 - p2)`` (p2 = 0 when a single string remains).
- **entropy**: Shannon entropy of that same merged top-K distribution, divided by ln K.
- **perplexity**: ``1 - 1 / PPL`` with ``PPL = exp(-mean_t log p(y_t))`` over the greedy
  continuation's tokens under the full softmax, i.e. one minus the geometric-mean
  probability of the generated answer (stops at end-of-sequence, at least one token).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

TOP_K = 10


def merged_top_k(
    probs: np.ndarray,
    decode: Callable[[int], str],
    k: int = TOP_K,
    candidates: int | None = None,
) -> tuple[list[str], np.ndarray]:
    """The merged, renormalised top-``k`` answer strings of one next-token distribution.

    :param probs: softmax over the vocabulary, shape (V,).
    :param decode: token id -> text.
    :param candidates: tokens looked at before merging; default ``3 * k``.
    :returns: ``(strings, probabilities)`` sorted by probability, descending (ties keep
        the order of first appearance among the top tokens).
    """
    n = min(3 * k if candidates is None else candidates, probs.shape[-1])
    top = np.argpartition(-probs, n - 1)[:n]
    top = top[np.argsort(-probs[top], kind="stable")]
    merged: dict[str, float] = {}
    for token in top:
        text = decode(int(token)).strip().lower()
        if text:
            merged[text] = merged.get(text, 0.0) + float(probs[token])
    items = sorted(merged.items(), key=lambda kv: -kv[1])[:k]
    if not items:
        return [], np.zeros(0)
    p = np.array([v for _, v in items], dtype=np.float64)
    return [s for s, _ in items], p / p.sum()


def margin_uncertainty(p: np.ndarray) -> float:
    """``1 - (p1 - p2)`` of a sorted, normalised distribution (eq. 9)."""
    if p.size == 0:
        return 1.0
    p2 = p[1] if p.size > 1 else 0.0
    return float(np.clip(1.0 - (p[0] - p2), 0.0, 1.0))


def entropy_uncertainty(p: np.ndarray, k: int = TOP_K) -> float:
    """Entropy of the merged top-k distribution over ln k."""
    if p.size == 0:
        return 1.0
    q = p[p > 0]
    return float(np.clip(-(q * np.log(q)).sum() / math.log(k), 0.0, 1.0))


def perplexity_uncertainty(token_logprobs: Sequence[float]) -> float:
    """``1 - exp(mean log p)`` of the generated tokens, i.e. 1 - 1/perplexity."""
    if len(token_logprobs) == 0:
        return 1.0
    return float(np.clip(1.0 - math.exp(float(np.mean(token_logprobs))), 0.0, 1.0))
