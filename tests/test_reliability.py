"""Regression tests of the adversarial findings of issue 12 on the model, the configs and the
trace tables, and a property test: any *valid* configuration drives all three environments with
observations inside their spaces and finite rewards, delays and objectives."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mec_env  # noqa: F401
from mec_env.config import load_scenario, parse_key_values, read_yaml
from mec_env.envs import MECOffloadVectorEnv
from mec_env.errors import ConfigError
from mec_env.problem import sample_problem
from mec_env.traces import COUNT_MAX, TRACE_COLUMNS, TraceError, load_traces

ROOT = Path(__file__).resolve().parent.parent


# --- 1. no NaN from a validated config ------------------------------------------------------

def test_a_noise_power_that_underflows_to_zero_is_refused_not_turned_into_nan():
    kwargs = dict(n_users=30, noise_psd_w_per_hz=1e-300, bandwidth_hz=1e-300, area_side_m=1e300)
    for env_id in ("MECOffload-v0", "MECOffloadSeq-v0"):
        with pytest.raises(ConfigError, match="noise_psd_w_per_hz"):
            gym.make(env_id, **kwargs)


@pytest.mark.parametrize("env_id", ["MECOffload-v0", "MECOffloadSeq-v0"])
def test_astronomic_distances_and_a_tiny_band_stay_finite_with_and_without_mobility(env_id):
    extra = {"mobility_speed_mps": 1e299} if env_id == "MECOffload-v0" else {}
    env = gym.make(env_id, n_users=30, noise_psd_w_per_hz=1e-200, bandwidth_hz=1e-100, area_side_m=1e300, **extra)
    obs, _ = env.reset(seed=0)
    for _ in range(12):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and math.isfinite(reward)
        if terminated or truncated:
            assert math.isfinite(info["mean_delay_ms"]) and math.isfinite(info["objective"])
            obs, _ = env.reset()


# --- 2. no integer wrap-around in a trace table ----------------------------------------------

def trace_table(tmp_path: Path, prompt_bytes: int) -> Path:
    row = {"task": 1, "story_id": 0, "question_id": 0, "prompt_bytes": prompt_bytes, "prompt_tokens": 50,
           "answer_tokens": 1, "margin": 0.5, "entropy": 0.4, "perplexity": 0.3, "slm_correct": 1, "llm_correct": 0,
           "llm_margin": 0.1}
    path = tmp_path / f"t{prompt_bytes}.csv"
    path.write_text(",".join(TRACE_COLUMNS) + "\n" + ",".join(str(row.get(c, "x")) for c in TRACE_COLUMNS) + "\n")
    return path


def test_a_prompt_size_past_2_to_the_53_is_a_trace_error_not_a_negative_delay(tmp_path):
    with pytest.raises(TraceError, match="prompt_bytes.*9223372036854775807"):
        load_traces(trace_table(tmp_path, 9223372036854775807))
    table = load_traces(trace_table(tmp_path, COUNT_MAX))  # the largest accepted count is kept exactly
    assert int(table.prompt_bytes[0]) == COUNT_MAX


def test_a_trace_table_that_is_not_utf8_is_a_trace_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(trace_table(tmp_path, 100).read_bytes().replace(b"x", b"\xe9"))
    with pytest.raises(TraceError, match="not UTF-8"):
        load_traces(path)


# --- 10. bounded errors ------------------------------------------------------------------------

def test_deep_yaml_nesting_is_a_config_error_not_a_recursion_error(tmp_path):
    with pytest.raises(ConfigError, match="nesting deeper"):
        parse_key_values(["n_users=" + "[" * 5000 + "]" * 5000])
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nesting deeper"):
        read_yaml(path)


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for k, name in enumerate("bcdefghi"):
        prev = "abcdefgh"[k]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")  # 9^9 = 387 million strings if expanded
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases"):
        load_scenario(path)
    assert time.perf_counter() - t0 < 1.0


def test_a_huge_bad_value_gives_a_short_message():
    with pytest.raises(ConfigError) as err:
        load_scenario("paper", name=["x" * 10_000] * 1000)
    assert len(str(err.value)) < 1_000


def test_an_overflowing_workload_names_the_workload_not_the_capacity():
    with pytest.raises(ConfigError, match="'slm_params'"):
        sample_problem(load_scenario("paper", n_users=20, slm_params=1e308), 0)
    with pytest.raises(ConfigError, match="'tx_power_w'"):
        sample_problem(load_scenario("paper", n_users=20, tx_power_w=1e307), 0)


def test_per_step_arrays_past_the_memory_budget_are_refused_with_the_number():
    with pytest.raises(ConfigError, match=r"5\.96 GiB > max_array_bytes = 2 GiB"):
        MECOffloadVectorEnv(num_envs=100_000, n_users=2000)
    with pytest.raises(ConfigError, match="32 slots drawn together"):
        gym.make("MECOffload-v0", n_users=100_000, n_edge_servers=100)  # one 32-slot block: 2.4 GiB
    with pytest.raises(ConfigError, match=r"one instance .* 0\.763 GiB > max_array_bytes = 0\.5 GiB"):
        load_scenario("paper", n_users=100_000, n_edge_servers=1024, max_array_bytes=2.0**29)
    assert gym.make("MECOffload-v0", n_users=2000, max_array_bytes=2.0**33).unwrapped.cfg.n_users == 2000


def test_evaluate_refuses_zero_seeds_instead_of_writing_an_all_nan_table(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "train" / "evaluate.py"), "--seeds", "0", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--seeds" in out.stderr and "expected an integer" in out.stderr
    assert not (tmp_path / "evaluation.csv").exists()


# --- property: every env id is refused at make or stays finite inside its spaces -------------------

def log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: 10.0 ** e)


SCENARIOS = st.fixed_dictionaries({
    "n_users": st.integers(1, 12), "n_edge_servers": st.integers(1, 6), "tau": st.floats(0.0, 1.0),
    "area_side_m": log_uniform(1e-3, 1e308), "bandwidth_hz": log_uniform(1e-200, 1e150),
    "noise_psd_w_per_hz": log_uniform(1e-200, 1e10), "tx_power_w": log_uniform(1e-200, 1e100),
    "carrier_hz": log_uniform(1e-3, 1e30), "min_distance_m": log_uniform(1e-3, 1e6),
    "es_capacity_flops": log_uniform(1e-100, 1e100), "c_max_flops": log_uniform(1e-100, 1e100),
    "local_capacity_flops": log_uniform(1e-100, 1e100), "effective_tokens": log_uniform(1e-50, 1e50),
    "es_capacity_high": log_uniform(1.4, 1e39), "local_capacity_high": log_uniform(1.5, 1e39),
    "local_capacity_low": log_uniform(1e-320, 0.5), "slm_params": log_uniform(1e-10, 1e200),
    "min_rate_bps": log_uniform(1e-100, 1e100), "path_loss": st.sampled_from(["free_space", "3gpp_umi"]),
    "interference": st.sampled_from(["physical", "paper", "none"]),
    "queries": st.fixed_dictionaries({"source": st.sampled_from(["synthetic", "traces"])}),
})
REWARD_WEIGHT = st.one_of(st.just(1.0), log_uniform(1e-300, 1e308))
SLOT_OPTIONS = st.fixed_dictionaries({
    "episode_length": st.integers(1, 4), "penalty_weight": REWARD_WEIGHT,
    "mobility_speed_mps": st.one_of(st.just(0.0), log_uniform(1e-3, 1e308)),
    "background_load": st.sampled_from([0.0, 0.5, 0.9]),
})
QUEUE_OPTIONS = st.fixed_dictionaries({
    "episode_length": st.one_of(st.integers(1, 4), st.just(10**9)), "penalty_weight": REWARD_WEIGHT,
    "slot_seconds": log_uniform(1e-300, 1e300), "offered_load": log_uniform(1e-300, 1e3),
    "arrival_probability": st.one_of(st.none(), st.just(0.0), st.just(1.0), log_uniform(1e-320, 1.0)),
    "discipline": st.sampled_from(["fifo", "ps"]), "channel_model": st.sampled_from(["gauss_markov", "iid"]),
    "channel_correlation": st.one_of(st.none(), st.floats(0.0, 1.0)),
    "mobility_speed_mps": st.one_of(st.just(0.0), log_uniform(1e-3, 1e308)),
    "joule_per_flop": log_uniform(1e-300, 1e300), "energy_budget_w": log_uniform(1e-320, 1e308),
    "energy_weight": st.one_of(st.just(0.0), log_uniform(1e-300, 1e308)),
})


def finite_numbers(info: dict) -> None:
    """Every number of an ``info`` (scalars and numeric arrays; nested observations are checked apart) is finite."""
    for key, value in info.items():
        if isinstance(value, (bool, int, float, np.number, np.ndarray)) and np.asarray(value).dtype.kind in "iuf":
            assert np.all(np.isfinite(value)), f"info[{key!r}] = {value}"


def drive_gym(env, seed: int, steps: int = 4) -> None:
    """Reset and step ``env`` (a Gymnasium env or vector env) on sampled actions: observations stay in
    their space, rewards and info numbers finite; a ConfigError after ``make`` fails the property."""
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(steps):
        assert env.observation_space.contains(obs), "observation outside its space"
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert np.all(np.isfinite(reward)), reward
        finite_numbers(info)
        if np.all(np.logical_or(terminated, truncated)) and not isinstance(env, gym.vector.VectorEnv):
            obs, _ = env.reset()
    assert env.observation_space.contains(obs), "observation outside its space"


@dataclasses.dataclass(frozen=True)
class Door:
    """One environment the property drives: its own arguments (drawn on top of a scenario's fields),
    how to build it from keywords, and how to drive it (asserting finite numbers inside the spaces)."""

    options: st.SearchStrategy[dict]
    make: Callable[[dict], object]
    drive: Callable[[object, int], None] = drive_gym


def gym_make(env_id: str) -> Callable[[dict], object]:
    return lambda kwargs: gym.make(env_id, **kwargs)


# Every env id and toolkit door: add one entry (its options strategy, its make, its drive if not a
# Gymnasium env) and the property below covers it.
DOORS: dict[str, Door] = {
    "MECOffload-v0": Door(SLOT_OPTIONS, gym_make("MECOffload-v0")),
    "MECOffloadSeq-v0": Door(SLOT_OPTIONS.map(lambda o: {"penalty_weight": o["penalty_weight"]}),
                             gym_make("MECOffloadSeq-v0")),
    "MECOffload-v0 vector": Door(SLOT_OPTIONS, lambda kwargs: gym.make_vec(
        "MECOffload-v0", num_envs=2, vectorization_mode="vector_entry_point", **kwargs)),
    "MECOffloadQueue-v0": Door(QUEUE_OPTIONS, gym_make("MECOffloadQueue-v0")),
}


@pytest.mark.parametrize("door", sorted(DOORS))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(fields=SCENARIOS, data=st.data(), seed=st.integers(0, 2**31))
def test_every_env_is_refused_at_make_or_gives_finite_numbers_inside_its_spaces(door, fields, data, seed):
    options = data.draw(DOORS[door].options, label="options")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's overflow warnings on inf distances are expected
        try:
            env = DOORS[door].make({**fields, **options})
        except ConfigError:
            return  # refused with a clear error: nothing to drive
        DOORS[door].drive(env, seed)
