"""The shipped uncertainty trace table and its schema validation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mec_env.config import load_scenario
from mec_env.problem import sample_problem
from mec_env.traces import DEFAULT_TRACE_PATH, TRACE_COLUMNS, TraceError, TraceQuerySource, load_traces

GOOD = {"task": "1", "story_id": "0", "question_id": "0", "answer": "kitchen", "prompt_bytes": "180",
        "prompt_tokens": "60", "answer_tokens": "2", "margin": "0.4", "entropy": "0.5", "perplexity": "0.3",
        "slm_correct": "1", "llm_correct": "1", "slm_output": " kitchen", "llm_output": "kitchen",
        "llm_margin": "0.1"}


def write(path, rows, columns=TRACE_COLUMNS):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"margin": "1.5"}, r"row 2, column 'margin' = 1.5; expected a number in \[0, 1\]"),
        ({"entropy": "nan"}, r"column 'entropy' = nan"),
        ({"perplexity": "high"}, r"column 'perplexity' = 'high'"),
        ({"slm_correct": "2"}, r"column 'slm_correct' = '2'; expected 0 or 1"),
        ({"prompt_bytes": "0"}, r"column 'prompt_bytes' = 0; expected an integer in \[1, 2\^53"),
        ({"prompt_tokens": "-3"}, r"column 'prompt_tokens' = -3"),
    ],
)
def test_bad_trace_value_is_a_clear_error(tmp_path, change, message):
    path = write(tmp_path / "t.csv", [GOOD, {**GOOD, **change}])
    with pytest.raises(TraceError, match=message):
        load_traces(path)


def test_missing_column_and_empty_table_are_clear_errors(tmp_path):
    with pytest.raises(TraceError, match=r"missing column\(s\) \['llm_correct'\]"):
        load_traces(write(tmp_path / "a.csv", [GOOD], [c for c in TRACE_COLUMNS if c != "llm_correct"]))
    with pytest.raises(TraceError, match="empty"):
        load_traces(write(tmp_path / "b.csv", []))
    with pytest.raises(TraceError, match="does not exist"):
        load_traces(tmp_path / "missing.csv")


def test_trace_source_feeds_the_simulator(tmp_path):
    rows = [{**GOOD, "question_id": str(i), "margin": f"{i / 10:.1f}", "slm_correct": str(i % 2)} for i in range(10)]
    path = write(tmp_path / "t.csv", rows)
    batch = TraceQuerySource(path).sample(500, np.random.default_rng(0))
    assert set(np.round(batch.alpha("margin"), 1)) <= {i / 10 for i in range(10)}
    assert np.array_equal(batch.slm_correct, np.isclose(batch.alpha("margin") * 10 % 2, 1))
    cfg = load_scenario("small", **{"queries.source": "traces", "queries.trace_path": str(path)})
    p = sample_problem(cfg, 0)
    assert p.query_bits.tolist() == [180.0] * cfg.n_users


def test_shipped_table_size_accuracy_gap_and_uncertainty_trend():
    table = load_traces()
    assert len(table) >= 1500 and len(set(table.task.tolist())) >= 15
    slm, llm = table.slm_correct.mean(), table.llm_correct.mean()
    assert llm >= slm + 0.10, (slm, llm)
    # the SLM is right less often the less certain it is, for every metric: accuracy in the
    # lowest-uncertainty quintile >= 2x that in the highest (README: 2.26x margin, 3.08x entropy,
    # 3.57x perplexity)
    for metric, ratio in (("margin", 2.0), ("entropy", 2.0), ("perplexity", 2.0)):
        alpha = table.uncertainty[metric]
        q20, q80 = np.quantile(alpha, [0.2, 0.8])
        low, high = table.slm_correct[alpha <= q20].mean(), table.slm_correct[alpha >= q80].mean()
        assert low >= ratio * high, (metric, low, high)
    manifest = json.loads(DEFAULT_TRACE_PATH.with_suffix(".manifest.json").read_text())
    assert manifest["rows"] == len(table) and "CC BY 3.0" in manifest["data"]["license"]
    assert {"margin", "entropy", "perplexity", "correct"} <= set(manifest["metrics"])
