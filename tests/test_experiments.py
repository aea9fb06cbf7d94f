"""Monte Carlo runner, query source, bAbI reader and the reproduction command."""

from __future__ import annotations

import csv
from importlib import resources
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mec_env.babi import EXCLUDED_TASKS, parse_babi_lines, read_babi_dir
from mec_env.config import QueryConfig, load_scenario
from baselines.experiments import Point, monte_carlo, summarize
from mec_env.queries import SyntheticQuerySource, babi_prompt_sizes

ROOT = Path(__file__).resolve().parent.parent
BABI = ROOT / "tests" / "fixtures" / "babi"  # the first 3 stories of every test file


def test_babi_reader_on_hand_written_lines():
    lines = ["1 Mary moved to the bathroom.\n", "2 John went to the hallway.\n",
             "3 Where is Mary? \tbathroom\t1\n", "4 Daniel went back to the hallway.\n",
             "5 Where is Daniel? \thallway\t4\n", "1 Sandra went to the garden.\n",
             "2 Where is Sandra?\tgarden\t1\n"]
    qs = list(parse_babi_lines(lines, task=1))
    assert [q.answer for q in qs] == ["bathroom", "hallway", "garden"]
    assert qs[1].story == ("Mary moved to the bathroom.", "John went to the hallway.",
                           "Daniel went back to the hallway.")
    assert qs[2].story_id == 1 and qs[2].supporting_ids == (1,)
    assert qs[0].prompt.endswith("Question: Where is Mary?\nAnswer(only one word):")
    with pytest.raises(ValueError, match="line 1"):
        list(parse_babi_lines(["x Mary moved.\n"]))


def test_shipped_prompt_sizes_match_the_real_babi_test_prompts():
    qs = read_babi_dir(BABI, "test")
    assert {q.task for q in qs} == set(range(1, 21)) - EXCLUDED_TASKS and len(qs) > 17 * 3
    with resources.files("mec_env.data").joinpath("babi_prompt_sizes.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    nbytes, _ = babi_prompt_sizes()
    assert len(rows) == nbytes.size == 17_000  # 1,000 test questions of each of the 17 tasks
    at = {(int(r["task"]), int(r["story_id"]), int(r["question_id"])): k for k, r in enumerate(rows)}
    tasks = sorted(set(range(1, 21)) - EXCLUDED_TASKS)
    for q in qs:  # every fixture question's prompt has the shipped size, at its own row
        k = at[(q.task, q.story_id, q.question_id)]
        # the table is read_babi_dir's order: 1,000 questions a task, tasks ascending, question_id counts per file
        assert k == tasks.index(q.task) * 1000 + q.question_id, (q.task, q.question_id, k)
        assert nbytes[k] == q.prompt_bytes == len(q.prompt.encode("utf-8")), (q.task, q.story_id, q.question_id)


def test_synthetic_source_accuracy_falls_with_uncertainty():
    batch = SyntheticQuerySource(QueryConfig()).sample(20_000, np.random.default_rng(0))
    alpha = batch.alpha("margin")
    assert alpha.min() >= 0 and alpha.max() <= 1
    low, high = alpha < np.quantile(alpha, 0.2), alpha > np.quantile(alpha, 0.8)
    assert batch.slm_correct[low].mean() > 2 * batch.slm_correct[high].mean()
    assert batch.llm_correct.mean() > batch.slm_correct.mean() + 0.05
    for metric in ("entropy", "perplexity"):
        assert np.corrcoef(alpha, batch.alpha(metric))[0, 1] > 0.9


def test_monte_carlo_does_not_depend_on_worker_count():
    cfg = load_scenario("small")
    points = [Point(6, 0.6), Point(10, 0.8)]
    kwargs = dict(strategies=["GOA", "Random", "Min delay"], runs=6, progress=False)
    one = monte_carlo(cfg, points, workers=1, **kwargs)
    two = monte_carlo(cfg, points, workers=2, **kwargs)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "runtime_ms"} for r in rows]  # noqa: E731
    assert strip(one) == strip(two)
    summary = summarize(one)
    assert len(summary) == 6 and all(r["runs"] == 6 for r in summary)


def test_reproduce_fig3_writes_csv_and_plots(tmp_path):
    cmd = [sys.executable, str(ROOT / "train" / "reproduce.py"), "fig3", "--runs", "3", "--n", "8", "12",
           "--workers", "1", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows = list(csv.DictReader(open(tmp_path / "fig3.csv")))
    assert {r["strategy"] for r in rows} == {"Local all", "Edge all", "Min delay", "GOA", "Random"}
    assert {r["n_users"] for r in rows} == {"8", "12"}
    for png in ("fig3a_accuracy.png", "fig3b_delay.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_reproduce_rejects_a_bad_override(tmp_path):
    cmd = [sys.executable, str(ROOT / "train" / "reproduce.py"), "fig3", "--runs", "3", "--set", "tau=2",
           "--out", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode != 0 and "'tau'" in res.stderr and "[0, 1]" in res.stderr


def test_paper_point_n120_reproduces_the_published_delays_and_orderings():
    """Fig. 3 at N = 120, tau = 0.6 on 100 draws (the README reports the 500-draw run), with the
    synthetic query model calibrated to the paper's Llama pair."""
    cfg = load_scenario("paper", **{"queries.source": "synthetic"})
    names = ["Local all", "Edge all", "Min delay", "GOA", "Random"]
    rows = summarize(monte_carlo(cfg, [Point(120, 0.6)], names, runs=100, progress=False))
    s = {r["strategy"]: r for r in rows}
    delay = {k: v["delay_ms_mean"] for k, v in s.items()}
    acc = {k: v["accuracy_pct_mean"] for k, v in s.items()}
    for name, paper in (("Local all", 35.9), ("Edge all", 44.2), ("Min delay", 25.4)):
        assert abs(delay[name] - paper) <= 0.1 * paper, (name, delay[name])
    assert delay["Min delay"] < delay["GOA"] < delay["Edge all"]
    assert delay["Random"] > delay["GOA"] and acc["Random"] < acc["GOA"]
    assert acc["Edge all"] >= acc["GOA"] > acc["Min delay"] > acc["Local all"]
