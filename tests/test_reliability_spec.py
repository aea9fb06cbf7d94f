"""Reliability of the token-level env (``MECSpecDecode-v0``) and the PettingZoo env: settings that
cannot be simulated finitely or that would not fit in memory are refused when the env is made,
actions that are not integers of their range are refused naming the value, the env's ``info`` does
not shadow an observation key, ``action_masks()`` works with MaskablePPO, and a property test drives
both over drawn valid configs."""

from __future__ import annotations

import csv
import dataclasses
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mec_env  # noqa: F401
from mec_env.config import ScenarioConfig
from mec_env.errors import AssignmentError, ConfigError

SPEC = "MECSpecDecode-v0"
TINY = {"n_users": 2, "n_edge_servers": 2, "max_rounds": 3, "tokens": "synthetic", "session_tokens": 40}
SCENARIO_FIELDS = {f.name for f in dataclasses.fields(ScenarioConfig)}


# --- settings that overflow are refused at gym.make, naming the field ---------------------------

@pytest.mark.parametrize("field, value", [("energy_budget_j", 1e-320), ("joule_per_flop", 1e300),
                                          ("energy_weight", 1e308), ("error_weight", 1e308),
                                          ("round_trip_s", 1e308), ("local_capacity_flops", 1e-300)])
def test_a_setting_whose_rounds_overflow_is_refused_when_the_env_is_made(field, value):
    with pytest.raises(ConfigError) as err:
        gym.make(SPEC, **TINY, **{field: value})
    assert err.value.field == field and "finite" in str(err.value)


def test_the_largest_accepted_budgets_and_weights_still_give_finite_rewards():
    env = gym.make(SPEC, **TINY, energy_budget_j=1e-290, joule_per_flop=1e-280, error_weight=1e100)
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(3):
        obs, reward, *_ = env.step(env.action_space.sample())
        assert math.isfinite(reward) and env.observation_space.contains(obs)


# --- memory: the token arrays are under max_array_bytes ------------------------------------------

def test_sessions_past_the_memory_budget_are_refused_with_the_number():
    with pytest.raises(ConfigError, match=r"'session_tokens'.*48\.\d GiB in one array > max_array_bytes = 2 GiB"):
        gym.make(SPEC, n_users=100_000, session_tokens=65536)
    with pytest.raises(ConfigError, match="'n_users'"):
        gym.make(SPEC, n_users=1000, tokens="synthetic", max_array_bytes=2.0**20)


def token_tables(tmp_path, lengths: list[int], name: str = "tokens-long.csv"):
    """A token table and its answer table: one answer per entry of ``lengths``, of that many tokens."""
    from mec_env.spec.tokens import ANSWER_COLUMNS, TOKEN_COLUMNS

    path = tmp_path / name
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(TOKEN_COLUMNS)
        for q, length in enumerate(lengths):
            base = {c: "0" for c in TOKEN_COLUMNS} | {"task": 1, "story_id": 1, "question_id": q, "accept_prob": 0.5,
                                                      "slm_temperature_uncertainty": 0.3, "accepted": 1}
            w.writerows([[base | {"position": p}][0][c] for c in TOKEN_COLUMNS] for p in range(length))
    with open(path.with_name(name.replace("tokens", "answers")), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(ANSWER_COLUMNS)
        for q in range(len(lengths)):
            row = {c: "1" for c in ANSWER_COLUMNS} | {"task": 1, "story_id": 1, "question_id": q}
            w.writerow([row[c] for c in ANSWER_COLUMNS])
    return path


def test_one_long_answer_costs_its_own_tokens_not_the_table_times_its_length(tmp_path):
    from mec_env.spec.tokens import TokenTraceSource

    path = token_tables(tmp_path, [5000] + [2] * 199)
    source = TokenTraceSource(path)
    assert source.uncertainty.size == source.accept_prob.size == 5000 + 2 * 199  # not 200 x 5000 padded
    streams = source.sample(np.random.default_rng(0), 3, session_tokens=10)
    assert (streams.length >= 10).all() and streams.uncertainty.shape[1] == int(streams.length.max())
    # the sessions a long answer pads are bounded by the budget, named at gym.make
    with pytest.raises(ConfigError, match="'n_users'.*max_array_bytes"):
        gym.make(SPEC, n_users=1000, tokens=str(path), max_array_bytes=2.0**24)


# --- actions ----------------------------------------------------------------------------------

def test_a_non_integer_action_is_refused_not_truncated():
    env = gym.make(SPEC, **TINY)
    env.reset(seed=0)
    with pytest.raises(AssignmentError, match="1.9.*non-integer"):
        env.step(np.full(6, 1.9))
    with pytest.raises(AssignmentError, match="non-integer"):
        env.step(np.full(6, np.nan))
    env.step(np.full(6, 1.0))  # an integer-valued float is an integer


# --- info does not shadow an observation key (TorchRL merges the two) --------------------------

def test_the_info_mean_energy_queue_does_not_shadow_the_observation_key():
    env = gym.make(SPEC, **TINY)
    obs, _ = env.reset(seed=0)
    obs, _, _, _, info = env.step(env.action_space.sample())
    assert not set(info) & set(obs)
    assert info["mean_energy_queue"] == pytest.approx(float(env.unwrapped.queue.mean()))


# --- action masks ------------------------------------------------------------------------------

def test_action_masks_allow_budgets_up_to_the_tokens_left_as_maskable_ppo_reads_them():
    pytest.importorskip("sb3_contrib")
    from sb3_contrib.common.maskable.distributions import MaskableMultiCategoricalDistribution
    from sb3_contrib.common.maskable.utils import get_action_masks

    env = gym.make(SPEC, **TINY | {"session_tokens": 3, "draft_length": 4})
    env.reset(seed=0)
    u = env.unwrapped
    for _ in range(2):  # four tokens a round, none uploaded: the short sessions are nearly done
        env.step(np.array([4, 18, 18] * 2))
    masks = get_action_masks(env)
    assert masks.shape == (int(env.action_space.nvec.sum()),)
    per_user = masks.reshape(2, -1)
    left = u.streams.length - u.position
    assert (left < 4).all()
    np.testing.assert_array_equal(per_user[:, :5], np.arange(5)[None, :] <= left[:, None])
    assert per_user[:, 5:].all()  # every upload and exit level
    # MaskablePPO's distribution under the mask: sampled budgets never exceed the tokens left
    th = pytest.importorskip("torch")
    dist = MaskableMultiCategoricalDistribution(env.action_space.nvec.tolist())
    dist.proba_distribution(th.zeros(1, masks.size))
    dist.apply_masking(masks[None])
    th.manual_seed(0)
    budgets = th.stack([dist.sample()[0].reshape(2, 3)[:, 0] for _ in range(50)]).numpy()
    assert (budgets <= left).all() and (budgets == left).any(axis=0).all()


# --- property: every valid config is refused at gym.make or stays finite inside its spaces -----

def log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: 10.0 ** e)


SPEC_CONFIGS = st.fixed_dictionaries({
    "n_users": st.integers(1, 6), "n_edge_servers": st.integers(1, 3), "draft_length": st.integers(1, 16),
    "threshold_levels": st.integers(4, 20), "session_tokens": st.integers(1, 60),
    "timing": st.sampled_from(["user", "slot"]), "flat_obs": st.booleans(),
    "tokens": st.sampled_from(["synthetic", "babi"]),
    "uncertainty_metric": st.sampled_from(["slm_temperature_uncertainty", "slm_entropy", "slm_margin"]),
}, optional={
    "energy_budget_j": log_uniform(1e-323, 1e300), "joule_per_flop": log_uniform(1e-300, 1e300),
    "energy_weight": log_uniform(1e-300, 1e300), "error_weight": log_uniform(1e-300, 1e300),
    "round_trip_s": log_uniform(1e-300, 1e300), "top_k": st.integers(1, 2**24), "prob_bits": st.integers(1, 64),
    "vocab_size": st.integers(2, 10**300), "verify_block_cost": st.floats(0.0, 1.0),
    "slm_params": log_uniform(1e-100, 1e100), "llm_params": log_uniform(1e-100, 1e100),
    "flops_per_param_token": log_uniform(1e-100, 1e100), "local_capacity_flops": log_uniform(1e-100, 1e100),
    "local_capacity_high": log_uniform(1.0, 1e30), "es_capacity_flops": log_uniform(1e-100, 1e100),
    "c_max_flops": log_uniform(1e-100, 1e100), "min_rate_bps": log_uniform(1e-100, 1e100),
    "bandwidth_hz": log_uniform(1e-200, 1e150), "tx_power_w": log_uniform(1e-200, 1e100),
    "area_side_m": log_uniform(1e-3, 1e300), "noise_psd_w_per_hz": log_uniform(1e-200, 1e10),
})


def drive(env, obs_space_of, seed: int, steps: int = 3) -> None:
    """Step ``env`` with sampled actions; every reward finite, every observation inside its space."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's overflow warnings on astronomic distances are expected
        obs, _ = env.reset(seed=seed)
        for _ in range(steps):
            obs_space_of(obs)
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            assert np.all(np.isfinite(reward)), reward
            if terminated or truncated:
                break
        obs_space_of(obs)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=SPEC_CONFIGS, seed=st.integers(0, 2**31))
def test_any_valid_token_env_config_is_refused_at_make_or_gives_finite_rewards_inside_its_spaces(fields, seed):
    try:
        env = gym.make(SPEC, max_rounds=3, **fields)
    except ConfigError:
        return  # refused with the field named: nothing to drive
    env.action_space.seed(seed)

    def inside(obs):
        assert env.observation_space.contains(obs), "observation outside its space"

    try:
        drive(env, inside, seed)
    except ConfigError as err:  # the scenario's checks that need a channel draw (received power)
        assert err.field in SCENARIO_FIELDS, err


PETTINGZOO_CONFIGS = st.fixed_dictionaries({
    "n_users": st.integers(1, 6), "n_edge_servers": st.integers(1, 3), "team_reward": st.booleans(),
}, optional={
    "bandwidth_hz": log_uniform(1e-200, 1e150), "tx_power_w": log_uniform(1e-200, 1e100),
    "area_side_m": log_uniform(1e-3, 1e300), "es_capacity_flops": log_uniform(1e-100, 1e100),
    "c_max_flops": log_uniform(1e-3, 1e100), "local_capacity_flops": log_uniform(1e-100, 1e100),
    "min_rate_bps": log_uniform(1e-100, 1e100), "penalty_weight": log_uniform(1e-300, 1e300),
})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=PETTINGZOO_CONFIGS, env_id=st.sampled_from(["MECOffload-v0", "MECOffloadQueue-v0"]),
       seed=st.integers(0, 2**31))
def test_any_valid_pettingzoo_config_is_refused_at_make_or_gives_finite_rewards_inside_its_spaces(fields, env_id,
                                                                                                  seed):
    pytest.importorskip("pettingzoo")
    from mec_env.multiagent import parallel_env

    extra = {"episode_length": 3} | ({"offered_load": 0.01} if env_id == "MECOffloadQueue-v0" else {})
    try:
        par = parallel_env(env_id, **fields, **extra)
    except ConfigError:
        return
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            obs, _ = par.reset(seed=seed)
        except ConfigError as err:  # a check that needs a channel draw
            assert err.field in SCENARIO_FIELDS, err
            return
        for _ in range(3):
            assert all(par.observation_space(a).contains(o) for a, o in obs.items()), "observation outside its space"
            assert par.state_space.contains(par.state())
            obs, rewards, _, _, _ = par.step({a: int(rng.integers(0, par._m + 1)) for a in par.agents})
            assert np.isfinite(list(rewards.values())).all(), rewards
            if not par.agents:
                break
