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


def test_a_table_saved_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    plain = write(tmp_path / "plain.csv", [GOOD, {**GOOD, "margin": "0.7"}])
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())  # what spreadsheets save as "CSV UTF-8"
    a, b = load_traces(plain), load_traces(bom)
    assert len(b) == 2 and b.task.tolist() == a.task.tolist()
    np.testing.assert_array_equal(b.uncertainty["margin"], a.uncertainty["margin"])


def test_a_column_named_twice_is_refused_naming_it(tmp_path):
    path = tmp_path / "twice.csv"
    header = list(TRACE_COLUMNS) + ["margin"]
    path.write_text(",".join(header) + "\n" + ",".join([GOOD[c] for c in TRACE_COLUMNS] + ["0.9"]) + "\n")
    with pytest.raises(TraceError, match="column 'margin' appears 2 times"):
        load_traces(path)


def token_table(tmp_path, change: dict, bom: bool = False):
    """A one-answer token table (and its answer table) with ``change`` applied to its second token row."""
    from mec_env.spec.tokens import ANSWER_COLUMNS, TOKEN_COLUMNS

    rows = [{**dict.fromkeys(TOKEN_COLUMNS, "0"), "task": "1", "story_id": "1", "question_id": "1",
             "position": str(p), "accept_prob": "0.5", "slm_temperature_uncertainty": "0.2", "accepted": "1"}
            for p in range(2)]
    rows[1].update(change)
    path = tmp_path / "tokens-t.csv"
    text = ",".join(TOKEN_COLUMNS) + "\n" + "".join(",".join(r[c] for c in TOKEN_COLUMNS) + "\n" for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    answers = {**dict.fromkeys(ANSWER_COLUMNS, "1"), "task": "1", "story_id": "1", "question_id": "1"}
    write(tmp_path / "answers-t.csv", [answers], ANSWER_COLUMNS)
    return path


@pytest.mark.parametrize("change, message", [
    ({"position": "one"}, r"line 3, column 'position': position one"),
    ({"position": ""}, r"line 3, column 'position'"),
    ({"accept_prob": "abc"}, r"line 3, column 'accept_prob': 'abc' is not a number"),
    ({"slm_temperature_uncertainty": "nan"}, r"line 3, column 'slm_temperature_uncertainty': nan is out of range"),
    ({"accepted": "x" * 10_000}, r"line 3, column 'accepted': 'x+\.\.\.x+'; expected 0 or 1"),
])
def test_a_bad_token_table_field_is_a_trace_error_naming_line_and_column(tmp_path, change, message):
    from mec_env.spec.tokens import TokenTraceSource

    with pytest.raises(TraceError, match=message):
        TokenTraceSource(token_table(tmp_path, change))


def test_a_token_table_with_a_byte_order_mark_or_a_short_row_reads_or_names_the_line(tmp_path):
    from mec_env.spec.tokens import TokenTraceSource

    assert len(TokenTraceSource(token_table(tmp_path, {}, bom=True))) == 1
    path = token_table(tmp_path, {})
    path.write_text(path.read_text() + "1,1,1,2\n")
    with pytest.raises(TraceError, match="line 4: fewer fields than the header"):
        TokenTraceSource(path)


def test_the_content_token_correlation_leaves_the_sure_end_tokens_out():
    from mec_env.spec.tokens import END_TOKEN, rejection_correlations

    rng = np.random.default_rng(0)
    rows = []
    for answer in range(1000):  # a content token whose uncertainty says nothing, then a sure end token
        u = rng.uniform(0.2, 1.0)
        rows.append({"token": 17, "position": 0, "accept_prob": rng.uniform(0.0, 1.0), "slm_temperature_uncertainty": u,
                     "slm_entropy": u, "slm_margin": u})
        rows.append({"token": END_TOKEN, "position": 1, "accept_prob": 1.0, "slm_temperature_uncertainty": 0.0,
                     "slm_entropy": 0.0, "slm_margin": 0.0})
    c = rejection_correlations(rows)["slm_entropy"]
    assert c["pearson_r"] > 0.6  # the end tokens alone make the all-token r look strong
    assert abs(c["pearson_r_content"]) < 0.1 and c["content_tokens"] == 1000
    assert c["pearson_r_first"] == pytest.approx(c["pearson_r_content"])  # here the content tokens are the first
