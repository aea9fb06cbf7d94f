"""Uncertainty traces from real LM inference, and the query source that samples them.

A trace table is a CSV, one row per bAbI test question, built by ``train/build_traces.py``:
the SLM's first-token uncertainties (margin, entropy, perplexity), whether the SLM and the
LLM answered correctly, and the prompt's size. It ships in ``mec_env/data/`` with a
``.manifest.json`` (models, data, metric definitions, command, date). Loading validates the
schema: a missing or repeated column or a value out of range is a :class:`TraceError` naming
the row and column (a UTF-8 byte-order mark, as spreadsheets save, is fine).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from mec_env.errors import MECOffloadError
from mec_env.queries import QueryBatch

DEFAULT_TRACE_PATH = Path(__file__).resolve().parent / "data" / "traces_babi.csv"
TRACE_COLUMNS = (
    "task", "story_id", "question_id", "answer", "prompt_bytes", "prompt_tokens", "answer_tokens",
    "margin", "entropy", "perplexity", "slm_correct", "llm_correct", "slm_output", "llm_output", "llm_margin",
)
UNCERTAINTY_COLUMNS = ("margin", "entropy", "perplexity", "llm_margin")
COUNT_COLUMNS = ("task", "story_id", "question_id", "prompt_bytes", "prompt_tokens", "answer_tokens")
COUNT_MAX = 2**53  # counts stay exact in float64 and far from int64's wrap-around
BOOL_COLUMNS = ("slm_correct", "llm_correct")


class TraceError(MECOffloadError):
    """A trace table is malformed: missing column, empty, or a value out of range."""


@dataclass(frozen=True)
class TraceTable:
    """Validated columns of a trace table (arrays of equal length)."""

    task: np.ndarray
    prompt_bytes: np.ndarray
    prompt_tokens: np.ndarray
    answer_tokens: np.ndarray
    uncertainty: Mapping[str, np.ndarray]  # margin, entropy, perplexity (of the SLM)
    slm_correct: np.ndarray
    llm_correct: np.ndarray
    path: str = ""

    def __len__(self) -> int:
        return self.task.size


def read_table(path: str | Path, kind: str, error: type[TraceError] = TraceError) -> list[dict[str, str]]:
    """The rows of a CSV table as dicts by column name; a UTF-8 byte-order mark is allowed.

    Not UTF-8, malformed CSV or a column named twice (one would silently shadow the other) is an
    ``error`` naming the file (and the column).
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: spreadsheets save a BOM first
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice:
                raise error(f"{path}: column {twice[0]!r} appears {header.count(twice[0])} times in the header; "
                            f"expected each column once in a {kind} table")
            return list(reader)
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); expected a UTF-8 CSV {kind} "
                    "table") from None
    except csv.Error as err:
        raise error(f"{path}: malformed CSV ({err}); expected a CSV {kind} table") from None


def validate_trace_rows(rows: Iterable[Mapping[str, object]], source: str = "traces") -> list[Mapping[str, object]]:
    """Check columns and ranges of raw rows; raise :class:`TraceError` at the first problem."""
    rows = list(rows)
    if not rows:
        raise TraceError(f"{source}: the trace table is empty; expected at least one row")
    missing = [c for c in TRACE_COLUMNS if c not in rows[0]]
    if missing:
        raise TraceError(f"{source}: missing column(s) {missing}; expected {list(TRACE_COLUMNS)}")
    for i, r in enumerate(rows, start=1):
        for c in UNCERTAINTY_COLUMNS:
            try:
                v = float(r[c])  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise TraceError(f"{source}: row {i}, column '{c}' = {r[c]!r}; expected a number in [0, 1]") from None
            if not (0.0 <= v <= 1.0) or math.isnan(v):
                raise TraceError(f"{source}: row {i}, column '{c}' = {v!r}; expected a number in [0, 1]")
        for c in COUNT_COLUMNS:
            try:
                v = int(r[c])  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise TraceError(f"{source}: row {i}, column '{c}' = {r[c]!r}; expected an integer >= 0") from None
            if v < (1 if c == "prompt_bytes" else 0) or v > COUNT_MAX:
                raise TraceError(f"{source}: row {i}, column '{c}' = {v}; expected an integer in "
                                 f"[{1 if c == 'prompt_bytes' else 0}, 2^53 = {COUNT_MAX}]")
        for c in BOOL_COLUMNS:
            if str(r[c]) not in ("0", "1"):
                raise TraceError(f"{source}: row {i}, column '{c}' = {r[c]!r}; expected 0 or 1")
    return rows


def load_traces(path: str | Path | None = None) -> TraceTable:
    """Load and validate a trace table (default: the shipped one)."""
    path = Path(path) if path else DEFAULT_TRACE_PATH
    return _load(str(path.resolve()), path.stat().st_mtime_ns if path.exists() else 0)


@lru_cache(maxsize=8)
def _load(path: str, _mtime: int) -> TraceTable:
    if not Path(path).is_file():
        raise TraceError(f"trace table {path} does not exist; build one with `python train/build_traces.py`")
    rows = validate_trace_rows(read_table(path, "trace"), source=path)

    def col(name: str, dtype) -> np.ndarray:
        if dtype is np.int64:  # exact: a count never goes through float
            return np.array([int(r[name]) for r in rows], dtype=dtype)
        return np.array([r[name] for r in rows]).astype(np.float64).astype(dtype)

    return TraceTable(
        task=col("task", np.int64),
        prompt_bytes=col("prompt_bytes", np.int64),
        prompt_tokens=col("prompt_tokens", np.int64),
        answer_tokens=col("answer_tokens", np.int64),
        uncertainty={m: col(m, np.float64) for m in ("margin", "entropy", "perplexity")},
        slm_correct=col("slm_correct", np.int64).astype(bool),
        llm_correct=col("llm_correct", np.int64).astype(bool),
        path=path,
    )


class TraceQuerySource:
    """Each user's query is a trace row drawn uniformly, with replacement."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.table = load_traces(path)

    def sample(self, n: int, rng: np.random.Generator, batch: tuple[int, ...] = ()) -> QueryBatch:
        t = self.table
        idx = rng.integers(0, len(t), size=tuple(batch) + (n,))
        return QueryBatch(
            uncertainty={m: v[idx] for m, v in t.uncertainty.items()},
            slm_correct=t.slm_correct[idx],
            llm_correct=t.llm_correct[idx],
            prompt_bytes=t.prompt_bytes[idx],
            prompt_tokens=t.prompt_tokens[idx],
            answer_tokens=t.answer_tokens[idx],
        )
