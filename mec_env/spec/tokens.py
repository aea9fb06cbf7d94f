"""Token streams for token-level offloading: what a user's SLM drafts, and what the LLM would say of it.

An answer is a sequence of drafted tokens, each with the SLM's uncertainty (temperature
perturbation, entropy, margin) and the LLM's verdict on it (accepted or not, and the acceptance
probability ``min(1, q/p)``). Two sources give a batch of answers as padded arrays
(:class:`TokenStreams`):

* :class:`TokenTraceSource` replays real ones: the token and answer tables of
  ``train/build_token_traces.py`` (:mod:`mec_env.lm.token_traces`), validated on load: a missing
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

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from mec_env.errors import short_repr
from mec_env.traces import TraceError, read_table

_DATA = Path(__file__).resolve().parent.parent / "data"
# the shipped token tables, by the name ``tokens=`` takes: "generations" (train/build_generation_traces.py: one
# prompt and the verifier's own generation of tens to hundreds of tokens, a distilled drafter) and "babi"
# (train/build_token_traces.py: one-word bAbI answers of two SmolLM2 fine-tunes); each answer table beside
SHIPPED_TOKEN_TRACES = {"generations": _DATA / "spec_tokens_generations.csv", "babi": _DATA / "spec_tokens_babi.csv"}
DEFAULT_TOKEN_TRACES = SHIPPED_TOKEN_TRACES["generations"]  # what MECSpecDecode-v0 replays unless told
UNCERTAINTIES = ("slm_temperature_uncertainty", "slm_entropy", "slm_margin")  # what an SLM can measure itself
END_TOKEN = 2  # SmolLM2's <|im_end|>: it ends every answer of the shipped table, and is almost never rejected
KEY = ("task", "story_id", "question_id")
TOKEN_COLUMNS = KEY + (
    "position", "token", "slm_prob", "llm_prob", "accept_prob", "expected_rejection", "slm_entropy", "slm_margin",
    "slm_temperature_uncertainty", "slm_top1", "llm_top1", "slm_topk_probs", "accepted", "emitted",
)
ANSWER_COLUMNS = KEY + (
    "answer", "prompt_bytes", "prompt_tokens", "slm_output", "llm_output", "hybrid_output", "slm_correct",
    "llm_correct", "hybrid_correct", "slm_tokens", "llm_tokens", "hybrid_tokens", "drafted", "accepted",
)


class TokenTraceError(TraceError):
    """A token trace table is malformed: missing column, empty, a value out of range, a gap in positions."""


@dataclass(frozen=True)
class TokenStreams:
    """B users' sessions, padded to the longest: ``length`` (B,) tokens, and (B, T) arrays valid where
    ``t < length``. A session is answers back to back; (B, A) arrays are per answer of a session."""

    length: np.ndarray
    uncertainty: np.ndarray  # the chosen SLM uncertainty of each drafted token
    accepted: np.ndarray  # bool, the LLM's verdict
    accept_prob: np.ndarray  # min(1, q/p)
    answer: np.ndarray  # int, which answer of the session a token belongs to (0, 1, ...)
    answer_end: np.ndarray  # bool, the last token of its answer
    hybrid_correct: np.ndarray  # (B, A) bool, the answer as speculative decoding emitted it is correct
    llm_correct: np.ndarray  # (B, A) bool, the LLM's own (greedy) answer is correct
    slm_correct: np.ndarray  # (B, A) bool, the SLM's own (greedy) answer is correct
    prompt_tokens: np.ndarray  # (B, A) int, the prompt each answer (generation) starts with

    def __len__(self) -> int:
        return int(self.length.size)


def sessions(picks: np.ndarray, lengths: np.ndarray, tokens: dict[str, np.ndarray], correct: dict[str, np.ndarray],
             session_tokens: int, starts: np.ndarray, prompt_tokens: np.ndarray | None = None) -> TokenStreams:
    """Concatenate answers of a pool into sessions of at least ``session_tokens`` tokens each.

    A user's session is its answers one after the other; each answer is a generation of its own (the env
    drafts no further than an answer's end, and a new answer sends its prompt).

    :param picks: (B, A) pool indices, the answers each session may take, in order (A >= session_tokens
        suffices: an answer has at least one token).
    :param lengths: (P,) tokens of each pool answer; ``tokens`` flat arrays ``uncertainty``, ``accepted``,
        ``accept_prob`` holding answer p's tokens from ``starts[p]`` on (a ragged pool: no padding to
        the longest answer); ``correct`` (P,) bool ``hybrid``, ``llm``, ``slm``; ``prompt_tokens`` (P,)
        each answer's prompt (default 0: no prompt cost).
    """
    count = picks.shape[0]
    cum = np.cumsum(lengths[picks], axis=1)
    used = np.minimum((cum < session_tokens).sum(axis=1) + 1, picks.shape[1])  # answers until the target is met
    total = cum[np.arange(count), used - 1]
    t_max = int(total.max(initial=1))
    t = np.arange(t_max)
    slot = np.stack([np.searchsorted(row, t, side="right") for row in cum])  # (B, T): the answer of a position
    slot = np.minimum(slot, used[:, None] - 1)
    start = np.take_along_axis(np.concatenate([np.zeros((count, 1), np.int64), cum], axis=1), slot, axis=1)
    valid = t[None, :] < total[:, None]
    answer = np.take_along_axis(picks, slot, axis=1)
    offset = np.where(valid, t[None, :] - start, 0)
    flat = starts[answer] + offset
    arrays = {k: np.where(valid, v[flat], 0) for k, v in tokens.items()}
    end = valid & (offset == lengths[answer] - 1)
    a_max = int(used.max(initial=1))
    answers = picks[:, :a_max]
    taken = np.arange(a_max)[None, :] < used[:, None]
    prompt = np.zeros(lengths.shape, dtype=np.int64) if prompt_tokens is None else prompt_tokens
    return TokenStreams(total, arrays["uncertainty"].astype(np.float64), arrays["accepted"].astype(bool),
                        arrays["accept_prob"].astype(np.float64), np.where(valid, slot, 0), end,
                        *(correct[k][answers] & taken for k in ("hybrid", "llm", "slm")),
                        np.where(taken, prompt[answers], 0).astype(np.int64))


@dataclass(frozen=True)
class SyntheticTokenSource:
    """Answers drawn from a linear uncertainty-rejection relation (U-HLM's finding); see the module docstring.

    Correctness is synthetic too: the LLM's and the hybrid's answers are right, the SLM's is right
    when the LLM accepts all of its tokens.
    """

    slope: float = 0.6
    intercept: float = 0.02
    beta_a: float = 0.7
    beta_b: float = 2.0
    mean_length: float = 9.0

    def rejection_line(self) -> tuple[float, float]:
        """``(slope, intercept)`` of the rejection probability against the uncertainty."""
        return self.slope, self.intercept

    def mean_accept(self) -> float:
        """Mean acceptance probability of a drafted token: 1 - E[clip(slope u + intercept, 0, 1)]."""
        u = np.random.default_rng(0).beta(self.beta_a, self.beta_b, size=100_000)
        return float(1.0 - np.clip(self.slope * u + self.intercept, 0.0, 1.0).mean())

    @property
    def longest_answer(self) -> int:
        """Tokens of the longest answer a draw makes in practice: 10 standard deviations above the mean."""
        return 1 + math.ceil(self.mean_length + 10.0 * math.sqrt(self.mean_length))

    def draw_size(self, count: int, session_tokens: int) -> int:
        """Entries of the largest array a draw of ``count`` sessions makes: each session's pool of
        answers padded to the longest (estimated by :attr:`longest_answer`)."""
        target = max(1, int(session_tokens))
        return count * max(self._answers_drawn(target) * self.longest_answer, target + self.longest_answer)

    def _answers_drawn(self, target: int) -> int:
        return min(target, 2 * math.ceil(target / self.mean_length) + 4)  # enough answers, almost surely

    def sample(self, rng: np.random.Generator, count: int, session_tokens: int = 1) -> TokenStreams:
        target = max(1, int(session_tokens))
        per = self._answers_drawn(target)
        length = 1 + rng.poisson(self.mean_length - 1.0, size=(count, per))
        while per < target and (length.sum(axis=1) < target).any():  # else draw more (answers have >= 1 token)
            length = np.concatenate([length, 1 + rng.poisson(self.mean_length - 1.0, size=(count, per))], axis=1)
            per = length.shape[1]
        length = length.reshape(-1)
        t = int(length.max(initial=1))
        u = rng.beta(self.beta_a, self.beta_b, size=(count * per, t))
        reject = np.clip(self.slope * u + self.intercept, 0.0, 1.0)
        valid = np.arange(t)[None, :] < length[:, None]
        accepted = (rng.random((count * per, t)) >= reject) & valid
        right = np.ones(count * per, dtype=bool)
        return sessions(np.arange(count * per).reshape(count, per), length,
                        {"uncertainty": np.where(valid, u, 0.0).ravel(), "accepted": accepted.ravel(),
                         "accept_prob": np.where(valid, 1.0 - reject, 0.0).ravel()},
                        {"hybrid": right, "llm": right, "slm": (accepted | ~valid).all(axis=1)}, session_tokens,
                        np.arange(count * per) * t)


class TokenTraceSource:
    """Answers replayed from a token trace table (``tokens-*.csv`` of ``train/build_token_traces.py``)
    and its answer table (the ``answers-*.csv`` next to it: the three answers' correctness).

    :param metric: the uncertainty an agent sees, one of :data:`UNCERTAINTIES`.
    :param answers_csv: the answer table, if not the token table's name with ``tokens`` -> ``answers``.
    """

    def __init__(self, tokens_csv: str | Path, metric: str = "slm_temperature_uncertainty",
                 answers_csv: str | Path | None = None) -> None:
        if metric not in UNCERTAINTIES:
            raise TokenTraceError(f"metric {metric!r} is not a token uncertainty; expected one of {UNCERTAINTIES}")
        self.path, self.metric = Path(tokens_csv), metric
        rows = _read(self.path, TOKEN_COLUMNS, "token")
        keys, order = {}, []
        for k, r in enumerate(rows, start=2):  # line numbers, header = 1
            key = (r["task"], r["story_id"], r["question_id"])
            if key not in keys:
                keys[key] = []
                order.append(key)
            keys[key].append((k, r))
        self.keys = order
        self.length = np.array([len(keys[key]) for key in order], dtype=np.int64)
        # the pool is ragged: answer a's tokens are the flat arrays' [start[a], start[a] + length[a]) (one long
        # answer costs its own tokens, not the table's answer count times its length)
        self.start = np.cumsum(self.length) - self.length
        self.uncertainty = np.zeros(len(rows))
        self.accepted = np.zeros(len(rows), dtype=bool)
        self.accept_prob = np.zeros(len(rows))
        for a, key in enumerate(order):
            for pos, (line, r) in enumerate(keys[key], start=int(self.start[a])):
                expected = pos - int(self.start[a])
                if r["position"] != str(expected):
                    raise TokenTraceError(f"{self.path} line {line}, column 'position': position {r['position'][:40]} "
                                          f"of answer {key}; expected {expected} (an answer's tokens are "
                                          "consecutive, from 0)")
                self.uncertainty[pos] = _number(r, metric, line, self.path, 0.0, np.inf)
                self.accept_prob[pos] = _number(r, "accept_prob", line, self.path, 0.0, 1.0)
                self.accepted[pos] = _flag(r, "accepted", line, self.path)
        self.answers_path = Path(answers_csv) if answers_csv is not None else \
            self.path.with_name(self.path.name.replace("tokens", "answers", 1))
        correct = {key: None for key in order}
        prompts = {}
        for line, r in enumerate(_read(self.answers_path, ANSWER_COLUMNS, "answer"), start=2):
            key = (r["task"], r["story_id"], r["question_id"])
            if key in correct:
                correct[key] = tuple(_flag(r, f"{m}_correct", line, self.answers_path)
                                     for m in ("hybrid", "llm", "slm"))
                prompts[key] = int(_number(r, "prompt_tokens", line, self.answers_path, 0, 1 << 20))
        missing = [key for key, v in correct.items() if v is None]
        if missing:
            raise TokenTraceError(f"{self.answers_path} has no row for {len(missing)} answers of {self.path}, "
                                  f"e.g. (task, story_id, question_id) = {missing[0]}")
        flags = np.array([correct[key] for key in order], dtype=bool).reshape(len(order), 3)
        self.hybrid_correct, self.llm_correct, self.slm_correct = flags.T.copy()
        self.prompt_tokens = np.array([prompts[key] for key in order], dtype=np.int64)
        manifest = self.path.with_name(self.path.name.replace(".csv", ".manifest.json"))
        self.model_parameters: tuple[int, int] | None = None  # (drafter, verifier), where the manifest says
        if manifest.exists():  # a shipped table: it must be the one its manifest describes
            try:
                meta = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise TokenTraceError(f"{manifest}: unreadable manifest ({err}); expected the JSON that "
                                      f"train/build_token_traces.py writes beside {self.path.name}") from None
            if not isinstance(meta, dict) or \
                    (meta.get("token_rows"), meta.get("answers")) != (len(rows), len(order)):
                meta = meta if isinstance(meta, dict) else {}
                raise TokenTraceError(f"{self.path} has {len(rows)} token rows of {len(order)} answers; its manifest "
                                      f"{manifest.name} says {meta.get('token_rows')} of {meta.get('answers')}")
            sizes = [m.get("parameters") if isinstance(m := meta.get(model), dict) else None
                     for model in ("drafter", "verifier")]
            if all(isinstance(v, int) and v > 0 for v in sizes):
                self.model_parameters = (sizes[0], sizes[1])

    def __len__(self) -> int:
        return int(self.length.size)

    @property
    def longest_answer(self) -> int:
        """Tokens of the table's longest answer."""
        return int(self.length.max())

    def draw_size(self, count: int, session_tokens: int) -> int:
        """Entries of the largest array a draw of ``count`` sessions makes: (count, T) padded to the
        longest session, at most ``session_tokens - 1`` tokens plus the longest answer."""
        return count * (max(1, session_tokens) + self.longest_answer)

    def rejection_line(self) -> tuple[float, float]:
        """``(slope, intercept)`` of the least-squares line of ``1 - accept_prob`` on the uncertainty
        over every token (U-HLM's empirical relation, as :func:`rejection_correlations` fits it)."""
        slope, intercept = np.polyfit(self.uncertainty, 1.0 - self.accept_prob, 1)
        return float(slope), float(intercept)

    def mean_accept(self) -> float:
        """Mean acceptance probability ``min(1, q/p)`` of the table's drafted tokens."""
        return float(self.accept_prob.mean())

    def sample(self, rng: np.random.Generator, count: int, session_tokens: int = 1) -> TokenStreams:
        picks = rng.integers(0, len(self), size=(count, max(1, int(session_tokens))))
        return sessions(picks, self.length,
                        {"uncertainty": self.uncertainty, "accepted": self.accepted, "accept_prob": self.accept_prob},
                        {"hybrid": self.hybrid_correct, "llm": self.llm_correct, "slm": self.slm_correct},
                        session_tokens, self.start, self.prompt_tokens)


def load_token_traces(tokens: str | Path, metric: str = "slm_temperature_uncertainty") -> TokenTraceSource:
    """A shipped table by name (:data:`SHIPPED_TOKEN_TRACES`: ``"generations"``, ``"babi"``) or a token table's
    path, parsed once per file version and metric."""
    path = SHIPPED_TOKEN_TRACES.get(str(tokens), Path(tokens)).resolve()
    return _cached_source(str(path), path.stat().st_mtime_ns if path.exists() else 0, metric)


@functools.lru_cache(maxsize=8)
def _cached_source(path: str, _mtime: int, metric: str) -> TokenTraceSource:
    return TokenTraceSource(path, metric)


def rejection_correlations(token_rows: Iterable[dict], bins: int = 10, end_token: int = END_TOKEN
                           ) -> dict[str, dict[str, float]]:
    """How well each SLM uncertainty predicts the LLM's rejection probability (U-HLM's linear relation).

    For each metric: Pearson r against ``1 - accept_prob`` (the rejection probability of the drafted
    token) over all tokens, r of the means over ``bins`` equal-count bins of the metric, and the
    least-squares line ``rejection ~ slope * u + intercept`` that U-HLM's threshold is read from.
    Pearson r also over the content tokens alone (``end_token`` excluded: a sure, never rejected end token
    drives much of the all-token r) and over each answer's first token (``pearson_r_content``,
    ``pearson_r_first``).
    """
    rows = list(token_rows)
    rejection = np.array([1.0 - float(r["accept_prob"]) for r in rows])
    # rows without a token id or a position (a table of uncertainties alone) count as content, as no first token
    content = np.array([int(r.get("token", -1)) != end_token for r in rows], dtype=bool)
    first = np.array([int(r.get("position", -1)) == 0 for r in rows], dtype=bool)
    out: dict[str, dict[str, float]] = {}
    for metric in UNCERTAINTIES:
        u = np.array([float(r[metric]) for r in rows])
        order = np.argsort(u, kind="stable")
        groups = [g for g in np.array_split(order, min(bins, len(u))) if g.size]
        mu, mr = np.array([u[g].mean() for g in groups]), np.array([rejection[g].mean() for g in groups])
        slope, intercept = np.polyfit(u, rejection, 1) if np.ptp(u) > 0 else (math.nan, math.nan)
        out[metric] = {"pearson_r": _pearson(u, rejection), "binned_r": _pearson(mu, mr), "slope": float(slope),
                       "intercept": float(intercept), "tokens": len(rows),
                       "pearson_r_content": _pearson(u[content], rejection[content]),
                       "pearson_r_first": _pearson(u[first], rejection[first]), "content_tokens": int(content.sum())}
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _read(path: Path, columns: tuple[str, ...], kind: str) -> list[dict]:
    if not path.is_file():
        raise TokenTraceError(f"{kind} trace table {path} does not exist (train/build_token_traces.py makes one)")
    rows = read_table(path, f"{kind} trace", TokenTraceError)
    if not rows:
        raise TokenTraceError(f"{path} has no {kind} rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise TokenTraceError(f"{path} lacks columns {missing}; a {kind} table has {list(columns)}")
    for line, r in enumerate(rows, start=2):  # a short row reads as None, a long one adds a None key
        if None in r or any(r[c] is None for c in columns):
            raise TokenTraceError(f"{path} line {line}: {'more' if None in r else 'fewer'} fields than the header's "
                                  f"{len(columns)} columns; expected one value per column")
    return rows


def _flag(row: dict, column: str, line: int, path: Path) -> bool:
    flag = row[column]
    if flag not in ("0", "1"):
        raise TokenTraceError(f"{path} line {line}, column {column!r}: {short_repr(flag)}; expected 0 or 1")
    return flag == "1"


def _number(row: dict, column: str, line: int, path: Path, low: float, high: float) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        raise TokenTraceError(f"{path} line {line}, column {column!r}: {short_repr(row[column])} is not a number; "
                              f"expected a number in [{low}, {high}]") from None
    if not low <= value <= high:
        raise TokenTraceError(f"{path} line {line}, column {column!r}: {value} is out of range [{low}, {high}]")
    return value


__all__ = ["DEFAULT_TOKEN_TRACES", "SHIPPED_TOKEN_TRACES", "TokenStreams", "sessions", "SyntheticTokenSource",
           "TokenTraceSource",
           "load_token_traces", "TokenTraceError", "rejection_correlations", "TOKEN_COLUMNS", "ANSWER_COLUMNS",
           "UNCERTAINTIES", "KEY"]
