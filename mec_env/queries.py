"""Query sources: per-user uncertainty, correctness of each model and prompt size.

A source draws one query per user for a problem instance. Every source returns a
:class:`QueryBatch`; the simulator reads only that, so a trace table from real LM inference
(:mod:`mec_env.traces`, built on this module) and the synthetic model below are
interchangeable; :func:`mec_env.problem.make_query_source` picks the one a scenario names.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Mapping, Protocol

import numpy as np

from mec_env.config import QueryConfig

METRICS = ("margin", "entropy", "perplexity")
# Whitespace words -> LM tokens for English bAbI prompts (Llama-3 tokenizer, about 1.3).
TOKENS_PER_WORD = 1.3


@dataclass(frozen=True)
class QueryBatch:
    """One query per user; every array has length N."""

    uncertainty: Mapping[str, np.ndarray]  # metric name -> alpha in [0, 1]
    slm_correct: np.ndarray  # bool
    llm_correct: np.ndarray  # bool
    prompt_bytes: np.ndarray  # int, UTF-8 bytes of the prompt
    prompt_tokens: np.ndarray  # int
    answer_tokens: np.ndarray  # int

    def alpha(self, metric: str) -> np.ndarray:
        if metric not in self.uncertainty:
            raise KeyError(f"metric {metric!r} not in this query source; it has {sorted(self.uncertainty)}")
        return self.uncertainty[metric]


class QuerySource(Protocol):
    """Anything that draws ``n`` queries with a numpy ``Generator`` (``batch + (n,)`` arrays)."""

    def sample(self, n: int, rng: np.random.Generator, batch: tuple[int, ...] = ()) -> QueryBatch: ...


@lru_cache(maxsize=1)
def babi_prompt_sizes() -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes and words of every bAbI v1.2 test prompt (tasks 7, 8, 19 left out)."""
    with resources.files("mec_env.data").joinpath("babi_prompt_sizes.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    nbytes = np.array([int(r["prompt_bytes"]) for r in rows], dtype=np.int64)
    words = np.array([int(r["prompt_words"]) for r in rows], dtype=np.int64)
    return nbytes, words


class SyntheticQuerySource:
    """Prompt sizes from real bAbI prompts; alpha and correctness from a parametric model.

    See :class:`mec_env.config.QueryConfig` for the model and its parameters.
    """

    def __init__(self, cfg: QueryConfig | None = None) -> None:
        self.cfg = cfg or QueryConfig()
        self._bytes, self._words = babi_prompt_sizes()

    def accuracy_curves(self, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.cfg
        slm = np.clip(c.slm_acc_intercept + c.slm_acc_slope * alpha, 0.0, 1.0)
        llm = np.clip(c.llm_acc_intercept + c.llm_acc_slope * alpha, 0.0, 1.0)
        return slm, llm

    def sample(self, n: int, rng: np.random.Generator, batch: tuple[int, ...] = ()) -> QueryBatch:
        c = self.cfg
        size = tuple(batch) + (n,)
        idx = rng.integers(0, self._bytes.size, size=size)
        margin = rng.beta(c.alpha_beta_a, c.alpha_beta_b, size=size)
        u = rng.random(size)
        p_slm, p_llm = self.accuracy_curves(margin)
        noise = rng.normal(0.0, c.metric_noise, size=(2,) + size)
        uncertainty = {
            "margin": margin,
            "entropy": np.clip(margin + noise[0], 0.0, 1.0),
            "perplexity": np.clip(margin + noise[1], 0.0, 1.0),
        }
        return QueryBatch(
            uncertainty=uncertainty,
            slm_correct=u < p_slm,
            llm_correct=u < p_llm,
            prompt_bytes=self._bytes[idx],
            prompt_tokens=np.rint(self._words[idx] * TOKENS_PER_WORD).astype(np.int64),
            answer_tokens=np.ones(size, dtype=np.int64),
        )
