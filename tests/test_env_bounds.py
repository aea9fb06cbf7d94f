"""Absurd magnitudes in the query-level and queueing environments: refused at ``gym.make`` with a
ConfigError naming the field, or simulated to finite numbers inside the spaces; bounded memory for
the FIFO instances and YAML configs; errors that name the right argument and show the value given."""

from __future__ import annotations

import time
import warnings

import gymnasium as gym
import numpy as np
import pytest

import mec_env  # noqa: F401
from mec_env.config import load_scenario, read_yaml
from mec_env.errors import AssignmentError, ConfigError
from mec_env.evaluator import validate_assignment
from mec_env.queues import JobPool, jakes_correlation

# a queueing system small enough to step in milliseconds, with queries arriving
QUEUE = {"n_users": 4, "n_edge_servers": 2, "arrival_probability": 0.5, "episode_length": 5}


def drive(env, steps: int = 6) -> list[dict]:
    """Step on sampled actions; every observation inside its space, every reward finite."""
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    infos = []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(reward), (obs, reward)
        infos.append(info)
        if terminated or truncated:
            obs, _ = env.reset()
    return infos


@pytest.mark.parametrize("env_id, kwargs, field", [
    ("MECOffloadQueue-v0", {**QUEUE, "joule_per_flop": 1e300}, "joule_per_flop"),  # energy = inf
    ("MECOffloadQueue-v0", {**QUEUE, "energy_budget_w": 1e-320}, "energy_budget_w"),  # e_bar underflows
    ("MECOffloadQueue-v0", {**QUEUE, "energy_weight": 1e308}, "energy_weight"),
    # energy queues / e_bar = inf, and 0 x inf = NaN in the reward even with energy_weight = 0
    ("MECOffloadQueue-v0", {**QUEUE, "energy_weight": 0.0, "joule_per_flop": 1e259, "energy_budget_w": 1e-49},
     "energy_budget_w"),
    ("MECOffloadQueue-v0", {**QUEUE, "arrival_probability": 1e-320}, "arrival_probability"),  # holding cost / 0
    ("MECOffloadQueue-v0", {**QUEUE, "mobility_speed_mps": 1e308, "slot_seconds": 10.0}, "mobility_speed_mps"),
    ("MECOffloadQueue-v0", {**QUEUE, "slot_seconds": 1e300, "episode_length": 10**9}, "slot_seconds"),
    ("MECOffload-v0", {"n_users": 4, "mobility_speed_mps": 1e308, "area_side_m": 1e308}, "mobility_speed_mps"),
    # a device 1e289 times faster than the ES: objective / objective(all local) overflows
    ("MECOffload-v0", {"n_users": 4, "local_capacity_flops": 1e300, "c_max_flops": 1e-280}, "c_max_flops"),
    ("MECOffloadSeq-v0", {"n_users": 4, "local_capacity_flops": 1e300, "c_max_flops": 1e-280}, "c_max_flops"),
])
def test_what_cannot_be_simulated_finitely_is_refused_at_make_naming_the_field(env_id, kwargs, field):
    with pytest.raises(ConfigError) as err:
        gym.make(env_id, **kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("kwargs", [
    {"slot_seconds": 1e-164},  # a Jakes correlation rounded past 1 made the fading NaN
    {"slot_seconds": 1e-300},
    {"mobility_speed_mps": 1e300},  # an infinite Doppler argument made the correlation NaN
])
def test_tiny_slots_and_huge_speeds_stay_finite_in_the_queue_env(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        drive(gym.make("MECOffloadQueue-v0", **{**QUEUE, **kwargs}))
    assert -1.0 <= jakes_correlation(1.0, 3.5e9, 1e-164) <= 1.0
    assert abs(jakes_correlation(1e300, 3.5e9, 0.02)) < 1e-100 and jakes_correlation(1e300, 1e30, 1e10) == 0.0


@pytest.mark.parametrize("env_id", ["MECOffload-v0", "MECOffloadSeq-v0", "MECOffloadQueue-v0"])
@pytest.mark.parametrize("field", ["local_capacity_high", "es_capacity_high"])
def test_capacity_bounds_past_float32_are_a_config_error_naming_them(env_id, field):
    with pytest.raises(ConfigError, match=rf"'{field}': 1e\+39; expected a value in \(0, 3\.40282e\+38\]"):
        gym.make(env_id, **{**QUEUE, field: 1e39} if env_id == "MECOffloadQueue-v0" else {"n_users": 4, field: 1e39})
    gym.make(env_id, **{**QUEUE, field: 1e38} if env_id == "MECOffloadQueue-v0" else {"n_users": 4, field: 1e38})


def test_no_arrivals_give_a_zero_reward_not_a_division_by_zero():
    env = gym.make("MECOffloadQueue-v0", **{**QUEUE, "arrival_probability": 0.0})
    env.reset(seed=0)
    for _ in range(3):
        _, reward, _, _, info = env.step(env.action_space.sample())
        assert reward == 0.0 and info["arrivals"] == 0 and info["in_system"] == 0


def test_fifo_instances_are_bounded_by_the_jobs_not_by_c_j_over_c_max():
    """C_j / C_max = 1e16 instances would take 80 PB; with fewer jobs than instances each job is
    served at C_max from the end of its upload, as every instance would serve it."""
    c_max, work = 1e-3, 2e-3
    pool = JobPool(n_users=3, n_edge_servers=1)
    out = pool.step(np.array([0, 1, 2]), np.array([0, 0, 0]), np.full(3, work), np.array([0.0, 0.5, 0.25]),
                    np.ones(3), np.array([1e13]), np.ones(3), c_max, 10.0, "fifo")
    np.testing.assert_allclose(out.done_delay, [2.0, 2.5, 2.25], rtol=1e-12)
    np.testing.assert_allclose(out.served_es, [3 * work], rtol=1e-12)
    env = gym.make("MECOffloadQueue-v0", **{**QUEUE, "c_max_flops": 1e-3, "discipline": "fifo"})
    drive(env)


def test_fifo_with_more_jobs_than_instances_still_queues_them():
    """Three jobs, two instances of C_max (C = 2 C_max): the third waits for the first free one."""
    c = 1e9
    pool = JobPool(n_users=3, n_edge_servers=1)
    out = pool.step(np.array([0, 1, 2]), np.array([0, 0, 0]), np.full(3, 1e9), np.zeros(3), np.ones(3),
                    np.array([2 * c]), np.ones(3), c, 10.0, "fifo")
    np.testing.assert_allclose(out.done_delay, [1.0, 1.0, 2.0], rtol=1e-12)


def test_a_yaml_config_past_one_mib_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n" + "# " + "x" * 2**20 + "\n", encoding="utf-8")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="at most 1048576 bytes"):
        read_yaml(path)
    with pytest.raises(ConfigError, match="at most 1048576 bytes"):
        load_scenario(path)
    assert time.perf_counter() - t0 < 1.0
    path.write_text("name: small\n", encoding="utf-8")
    assert read_yaml(path) == {"name": "small"}


def test_an_out_of_range_action_is_shown_as_given_not_wrapped_around():
    with pytest.raises(AssignmentError, match=r"assignment\[0\] = 1e\+20 is out of range") as err:
        validate_assignment(np.array([1e20, 0.0]), 2, 4)
    assert "-9223372036854775808" not in str(err.value)
    with pytest.raises(AssignmentError, match=r"\[1\] = 18446744073709551615 is out of range"):
        validate_assignment(np.array([0, 2**64 - 1], dtype=np.uint64), 2, 4)
    np.testing.assert_array_equal(validate_assignment(np.array([4.0, 0.0]), 2, 4), [4, 0])


@pytest.mark.parametrize("num_envs", [10**9, 10**400])
def test_too_many_copies_blame_num_envs(num_envs):
    with pytest.raises(ConfigError) as err:
        gym.make_vec("MECOffload-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", n_users=5)
    assert err.value.field == "num_envs" and "max_array_bytes" in str(err.value)


def test_queue_info_keys_do_not_shadow_observation_keys():
    """TorchRL merges ``info`` into the step's tensordict: a scalar ``energy_queue`` replaced the (N,)
    observation of that name."""
    env = gym.make("MECOffloadQueue-v0", **QUEUE)
    obs, _ = env.reset(seed=0)
    obs, _, _, _, info = env.step(env.action_space.sample())
    assert not set(info) & set(obs)
    assert np.isfinite(info["mean_energy_queue"]) and obs["energy_queue"].shape == (QUEUE["n_users"],)
