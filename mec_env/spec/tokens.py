"""Token streams for token-level offloading: what a user's SLM drafts, and what the LLM would say of it.

An answer is a sequence of drafted tokens, each with the SLM's uncertainty (temperature
perturbation, entropy, margin) and the LLM's verdict on it (accepted or not, and the acceptance
probability ``min(1, q/p)``). Two sources give a batch of answers as padded arrays
(:class:`TokenStreams`):

* :class:`TokenTraceSource` replays real ones: the token and answer tables of
  ``train/build_token_traces.py`` (:mod:`mec_env.lm.spec_decode`), validated on load: a missing
  column, a value out of range or a gap in an answer's positions is a :class:`TokenTraceError`
  naming the file, row and column.
* :class:`SyntheticTokenSource` draws them from U-HLM's empirical finding, a rejection
  probability linear in the SLM's uncertainty: ``u ~ Beta(a, b)``, ``P(reject) = clip(slope u +
  intercept, 0, 1)``, answer lengths ``1 + Poisson(mean - 1)``. Its defaults are placeholders until
  the shipped token table fits them.

A replayed answer keeps the trace's later tokens whatever an agent does with an earlier one; in
the trace a rejected token was followed by the LLM's resample, so skipping a token that would
have been rejected is counted as an unverified error, not re-simulated.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from mec_env.errors import MECOffloadError

UNCERTAINTIES = ("slm_temperature_uncertainty", "slm_entropy", "slm_margin")  # what an SLM can measure itself
KEY = ("task", "story_id", "question_id")
TOKEN_COLUMNS = KEY + (
    "position", "token", "slm_prob", "llm_prob", "accept_prob", "expected_rejection", "slm_entropy", "slm_margin",
    "slm_temperature_uncertainty", "slm_top1", "llm_top1", "slm_topk_probs", "accepted", "emitted",
)
ANSWER_COLUMNS = KEY + (
    "answer", "prompt_bytes", "prompt_tokens", "slm_output", "llm_output", "hybrid_output", "slm_correct",
    "llm_correct", "hybrid_correct", "slm_tokens", "llm_tokens", "hybrid_tokens", "drafted", "accepted",
)


class TokenTraceError(MECOffloadError):
    """A token trace table is malformed: missing column, empty, a value out of range, a gap in positions."""


@dataclass(frozen=True)
class TokenStreams:
    """B answers padded to the longest: ``length`` (B,), and (B, T) arrays valid where ``t < length``."""

    length: np.ndarray
    uncertainty: np.ndarray  # the chosen SLM uncertainty of each drafted token
    accepted: np.ndarray  # bool, the LLM's verdict
    accept_prob: np.ndarray  # min(1, q/p)

    def __len__(self) -> int:
        return int(self.length.size)


@dataclass(frozen=True)
class SyntheticTokenSource:
    """Answers drawn from a linear uncertainty-rejection relation (U-HLM's finding); see the module docstring."""

    slope: float = 0.6
    intercept: float = 0.02
    beta_a: float = 0.7
    beta_b: float = 2.0
    mean_length: float = 9.0

    def sample(self, rng: np.random.Generator, count: int) -> TokenStreams:
        length = 1 + rng.poisson(self.mean_length - 1.0, size=count)
        t = int(length.max(initial=1))
        u = rng.beta(self.beta_a, self.beta_b, size=(count, t))
        reject = np.clip(self.slope * u + self.intercept, 0.0, 1.0)
        accepted = rng.random((count, t)) >= reject
        valid = np.arange(t)[None, :] < length[:, None]
        return TokenStreams(length, np.where(valid, u, 0.0), accepted & valid, np.where(valid, 1.0 - reject, 0.0))


class TokenTraceSource:
    """Answers replayed from a token trace table (``tokens-*.csv`` of ``train/build_token_traces.py``).

    :param metric: the uncertainty an agent sees, one of :data:`mec_env.lm.spec_decode.UNCERTAINTIES`.
    """

    def __init__(self, tokens_csv: str | Path, metric: str = "slm_temperature_uncertainty") -> None:
        if metric not in UNCERTAINTIES:
            raise TokenTraceError(f"metric {metric!r} is not a token uncertainty; expected one of {UNCERTAINTIES}")
        self.path, self.metric = Path(tokens_csv), metric
        rows = _read(self.path)
        keys, order = {}, []
        for k, r in enumerate(rows, start=2):  # line numbers, header = 1
            key = (r["task"], r["story_id"], r["question_id"])
            if key not in keys:
                keys[key] = []
                order.append(key)
            keys[key].append((k, r))
        self.length = np.array([len(keys[key]) for key in order], dtype=np.int64)
        t = int(self.length.max())
        self.uncertainty = np.zeros((len(order), t))
        self.accepted = np.zeros((len(order), t), dtype=bool)
        self.accept_prob = np.zeros((len(order), t))
        for a, key in enumerate(order):
            for pos, (line, r) in enumerate(keys[key]):
                if int(r["position"]) != pos:
                    raise TokenTraceError(f"{self.path} line {line}: position {r['position']} of answer {key}; "
                                          f"expected {pos} (an answer's tokens are consecutive, from 0)")
                self.uncertainty[a, pos] = _number(r, metric, line, self.path, 0.0, np.inf)
                self.accept_prob[a, pos] = _number(r, "accept_prob", line, self.path, 0.0, 1.0)
                flag = r["accepted"]
                if flag not in ("0", "1"):
                    raise TokenTraceError(f"{self.path} line {line}, column 'accepted': {flag!r}; expected 0 or 1")
                self.accepted[a, pos] = flag == "1"

    def __len__(self) -> int:
        return int(self.length.size)

    def sample(self, rng: np.random.Generator, count: int) -> TokenStreams:
        pick = rng.integers(0, len(self), size=count)
        t = int(self.length[pick].max(initial=1))
        return TokenStreams(self.length[pick].copy(), self.uncertainty[pick, :t].copy(),
                            self.accepted[pick, :t].copy(), self.accept_prob[pick, :t].copy())


def rejection_correlations(token_rows: Iterable[dict], bins: int = 10) -> dict[str, dict[str, float]]:
    """How well each SLM uncertainty predicts the LLM's rejection probability (U-HLM's linear relation).

    For each metric: Pearson r against ``1 - accept_prob`` (the rejection probability of the drafted
    token) over all tokens, r of the means over ``bins`` equal-count bins of the metric, and the
    least-squares line ``rejection ~ slope * u + intercept`` that U-HLM's threshold is read from.
    """
    rows = list(token_rows)
    rejection = np.array([1.0 - float(r["accept_prob"]) for r in rows])
    out: dict[str, dict[str, float]] = {}
    for metric in UNCERTAINTIES:
        u = np.array([float(r[metric]) for r in rows])
        order = np.argsort(u, kind="stable")
        groups = [g for g in np.array_split(order, min(bins, len(u))) if g.size]
        mu, mr = np.array([u[g].mean() for g in groups]), np.array([rejection[g].mean() for g in groups])
        slope, intercept = np.polyfit(u, rejection, 1) if np.ptp(u) > 0 else (math.nan, math.nan)
        out[metric] = {"pearson_r": _pearson(u, rejection), "binned_r": _pearson(mu, mr), "slope": float(slope),
                       "intercept": float(intercept), "tokens": len(rows)}
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _read(path: Path) -> list[dict]:
    if not path.exists():
        raise TokenTraceError(f"token trace table {path} does not exist (train/build_token_traces.py makes one)")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in TOKEN_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise TokenTraceError(f"{path} lacks columns {missing}; a token table has {list(TOKEN_COLUMNS)}")
        rows = list(reader)
    if not rows:
        raise TokenTraceError(f"{path} has no token rows")
    return rows


def _number(row: dict, column: str, line: int, path: Path, low: float, high: float) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        raise TokenTraceError(f"{path} line {line}, column {column!r}: {row[column]!r} is not a number") from None
    if not low <= value <= high:
        raise TokenTraceError(f"{path} line {line}, column {column!r}: {value} is out of range [{low}, {high}]")
    return value


__all__ = ["TokenStreams", "SyntheticTokenSource", "TokenTraceSource", "TokenTraceError", "rejection_correlations",
           "TOKEN_COLUMNS", "ANSWER_COLUMNS", "UNCERTAINTIES", "KEY"]
