"""The scripts of ``examples/`` run with tiny arguments in another working directory and print what they claim:
the custom strategy keeps constraint (11), the reward wrapper's reward is the formula applied to the environment's
metrics, the CleanRL loop improves on its start. The first runs as a user runs it, in a fresh process; the two
that train run their ``__main__`` in this one, which has torch and SB3 imported already (seconds each)."""

from __future__ import annotations

import math
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NUMBER = r"[-+]?\d+(?:\.\d+)?"


def run_example(name: str, tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def run_example_here(name: str, tmp_path: Path, monkeypatch, capsys, *args: str) -> str:
    """The example's ``__main__`` block run in this process, from ``tmp_path``; what it printed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def table_rows(text: str, names: list[str]) -> dict[str, list[float]]:
    """The numbers of each named row of a printed table (a ``±`` / ``+-`` CI counts as its own number)."""
    rows = {}
    for name in names:
        match = re.search(rf"^\s+{re.escape(name)}\s+(.*)$", text, re.M)
        assert match, f"no row {name!r} in:\n{text}"
        rows[name] = [float(x) for x in re.findall(NUMBER, match.group(1).replace("%", " "))]
        assert rows[name] and all(math.isfinite(x) for x in rows[name]), f"row {name!r}: {match.group(0)}"
    return rows


def test_custom_strategy_keeps_constraint_11_and_is_scored_next_to_goa(tmp_path):
    out = run_example("custom_strategy.py", tmp_path, "--draws", "3", "--n-users", "40")
    rows = table_rows(out, ["Uncertainty first", "GOA", "GOA+LS", "Min delay"])
    # columns: delay ms ± ci, accuracy % ± ci, objective ± ci, obj vs GOA % ± ci, violations ± ci, ms/slot
    for name, row in rows.items():
        assert len(row) == 11, (name, row)
        assert 0 < row[0] < 1e3 and 0 <= row[2] <= 100 and row[4] > 0, (name, row)
    assert rows["Uncertainty first"][8] == 0 and rows["GOA"][8] == 0  # every alpha > tau user offloaded
    assert rows["GOA"][6] == 0  # GOA against itself
    assert rows["GOA+LS"][4] <= rows["GOA"][4]  # local search never worsens GOA's objective


def test_reward_wrapper_reward_is_the_tradeoff_of_the_envs_metrics(tmp_path, monkeypatch, capsys):
    out = run_example_here("reward_wrapper.py", tmp_path, monkeypatch, capsys, "--timesteps", "256",
                           "--eval-episodes", "1", "--delay-weight", "20")
    names = ["PPO 256 steps", "PPO untrained", "GOA", "Edge all", "Local all"]
    table, _, tradeoff = out.partition("trade-off reward")
    rows, rewards = table_rows(table, names), table_rows(tradeoff, names)
    for name in names:
        # J ± ci, vs GOA ± ci, delay ms, accuracy %, offload, violations, score, ms/decision
        j, _, _, _, delay_ms, accuracy_pct, _, violations, *_ = rows[name]
        expected = accuracy_pct / 100 - 20.0 * delay_ms / 1e3 - violations / 10
        assert rewards[name][0] == pytest.approx(expected, abs=2e-3), (name, rows[name], rewards[name])
        assert j > 0
    assert rewards["GOA"][0] > rewards["Local all"][0]


def test_cleanrl_ppo_improves_on_its_start_and_logs_tensorboard(tmp_path, monkeypatch, capsys):
    out = run_example_here("cleanrl_ppo.py", tmp_path, monkeypatch, capsys, "--total-timesteps", "2048",
                           "--eval-episodes", "1", "--tensorboard")
    progress = re.findall(rf"median J ({NUMBER}).*violations\s+({NUMBER})", out)
    assert len(progress) == 4, out
    (j_first, viol_first), (j_last, viol_last) = [tuple(map(float, p)) for p in (progress[0], progress[-1])]
    assert j_last < j_first and viol_last < viol_first, out  # it learns: fewer users kept local above tau
    rows = table_rows(out, ["CleanRL PPO", "GOA", "Local all"])
    assert rows["CleanRL PPO"][0] < rows["Local all"][0], out
    assert list((tmp_path / "runs" / "cleanrl_ppo").glob("*/events.out.tfevents.*")), "no TensorBoard events"
