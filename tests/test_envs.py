"""The Gymnasium environments: API contracts (Gymnasium and SB3 checkers), seeding, action
checks, rewards against the evaluator, and the sequential env's telescoping return."""

from __future__ import annotations

import doctest
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import mec_env
from baselines import goa, min_delay
from baselines.wrappers import StrategyInfo
from mec_env.envs import MECOffloadEnv, MECOffloadSeqEnv, joint, sequential
from mec_env.errors import AssignmentError, ConfigError
from mec_env.evaluator import evaluate

SMALL = {"scenario": "small"}  # 8 users, 2 ESs, synthetic queries
ENV_CLASSES = [MECOffloadEnv, MECOffloadSeqEnv]


def penalised_objective(problem, assignment, weight=1.0, penalty="violations"):
    """J of the reward definition, straight from the evaluator."""
    ev = evaluate(problem, assignment)
    local = evaluate(problem, np.zeros(problem.n_users, dtype=np.int64))
    pen = ev.n_violations / problem.n_users if penalty == "violations" else 1.0 - ev.accuracy
    return ev.objective / local.objective + weight * pen


def rollout(env: gym.Env, seed: int, n_steps: int) -> tuple[list, list[float]]:
    """Observations and rewards of ``n_steps`` seeded random steps, resetting when an episode ends."""
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for _ in range(n_steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
            observations.append(obs)
    return observations, rewards


def flat(obs) -> np.ndarray:
    return np.concatenate([obs[k].ravel() for k in sorted(obs)]) if isinstance(obs, dict) else obs


# --- API contracts -------------------------------------------------------------------------

@pytest.mark.parametrize("env_id, kwargs", [
    ("MECOffload-v0", {}),
    ("MECOffload-v0", {"flat_obs": True}),
    ("MECOffload-v0", {"mobility_speed_mps": 5.0, "background_load": 0.4, "enforce_constraint": True}),
    ("MECOffloadSeq-v0", {}),
])
def test_envs_pass_the_gymnasium_and_sb3_checkers(env_id, kwargs):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, **SMALL, **kwargs).unwrapped  # made, so the checker can try render modes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any Gymnasium checker warning is a failure
        gym_check_env(env)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env, warn=True)
    # the one advisory SB3 gives is on the (N, M) gain matrix of the Dict observation, which its
    # MultiInputPolicy flattens anyway; the flat variant gets none
    messages = [str(w.message) for w in caught if "channel_gain_db has an unconventional shape" not in str(w.message)]
    assert messages == []


@pytest.mark.parametrize("env_id", ["MECOffload-v0", "MECOffloadSeq-v0", "mec_env:MECOffload-v0",
                                    "mec_env:MECOffloadSeq-v0", "MECOffload-N10-v0"])
def test_gymnasium_make_builds_every_id_with_kwargs(env_id):
    env = gym.make(env_id, n_users=8, scenario="small")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.unwrapped.problem.n_users == 8
    env.step(env.action_space.sample())
    env.close()


def test_registration_is_idempotent():
    import importlib

    importlib.reload(mec_env.registration)  # a second registration must neither fail nor warn twice
    assert set(mec_env.registration.ENV_IDS) <= set(gym.registry)


def test_docstring_examples_run():
    from mec_env.envs import vector

    for module in (joint, sequential, vector):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_spaces_follow_the_scenario_size():
    env = MECOffloadEnv(**SMALL, n_users=5, n_edge_servers=3)
    assert env.action_space == gym.spaces.MultiDiscrete([4] * 5)
    assert env.observation_space["channel_gain_db"].shape == (5, 3)
    assert MECOffloadEnv(**SMALL, flat_obs=True).observation_space.shape == (8 * 2 + 2 * 2 + 4 * 8,)
    seq = MECOffloadSeqEnv(**SMALL, n_edge_servers=3)
    assert seq.action_space == gym.spaces.Discrete(4)
    assert seq.observation_space.shape == (3 * 3 + 5,)


def test_flat_observation_is_gymnasium_flatten_of_the_dict():
    dict_env = MECOffloadEnv(**SMALL)
    flat_env = MECOffloadEnv(**SMALL, flat_obs=True)
    obs, _ = dict_env.reset(seed=3)
    flat_obs, _ = flat_env.reset(seed=3)
    np.testing.assert_array_equal(flat_obs, gym.spaces.flatten(dict_env.observation_space, obs))


def test_observation_describes_the_current_problem():
    env = MECOffloadEnv(**SMALL)
    obs, _ = env.reset(seed=1)
    p = env.unwrapped.problem
    np.testing.assert_allclose(obs["uncertainty"], p.alpha, rtol=1e-6)
    np.testing.assert_allclose(obs["channel_gain_db"], (10 * np.log10(p.gain) + 90) / 40, rtol=1e-5)
    np.testing.assert_array_equal(obs["es_background_load"], 0.0)  # background load is off by default


# --- seeding -------------------------------------------------------------------------------

@pytest.mark.parametrize("env_cls, kwargs", [
    (MECOffloadEnv, {}),
    (MECOffloadEnv, {"mobility_speed_mps": 3.0, "background_load": 0.5}),
    (MECOffloadSeqEnv, {}),
])
def test_same_seed_gives_identical_observations_and_rewards(env_cls, kwargs):
    obs_a, rew_a = rollout(env_cls(**SMALL, **kwargs), seed=7, n_steps=200)
    obs_b, rew_b = rollout(env_cls(**SMALL, **kwargs), seed=7, n_steps=200)
    assert rew_a == rew_b
    for a, b in zip(obs_a, obs_b, strict=True):
        np.testing.assert_array_equal(flat(a), flat(b))
    obs_c, rew_c = rollout(env_cls(**SMALL, **kwargs), seed=8, n_steps=200)
    assert rew_c != rew_a
    assert not np.array_equal(flat(obs_c[0]), flat(obs_a[0]))


def test_reset_with_a_seed_reseeds_a_used_env():
    env = MECOffloadEnv(**SMALL)
    fresh, _ = MECOffloadEnv(**SMALL).reset(seed=2)
    env.reset(seed=1)
    env.step(env.action_space.sample())
    again, _ = env.reset(seed=2)
    np.testing.assert_array_equal(flat(again), flat(fresh))


# --- malformed actions ---------------------------------------------------------------------

JOINT_BAD_ACTIONS = {
    "wrong length": np.zeros(7, dtype=np.int64),
    "value M+1": np.array([0, 0, 0, 3, 0, 0, 0, 0]),
    "negative": np.array([0, -1, 0, 0, 0, 0, 0, 0]),
    "non-integer float": np.full(8, 0.5),
    "batched": np.zeros((2, 8), dtype=np.int64),
}


@pytest.mark.parametrize("name", JOINT_BAD_ACTIONS)
def test_joint_env_rejects_a_malformed_action_and_stays_usable(name):
    env = MECOffloadEnv(**SMALL)
    env.reset(seed=0)
    problem = env.unwrapped.problem
    with pytest.raises(AssignmentError, match="action"):
        env.step(JOINT_BAD_ACTIONS[name])
    assert env.unwrapped.problem is problem  # nothing moved on
    _, reward, _, _, _ = env.step(np.zeros(8, dtype=np.int64))
    assert reward == pytest.approx(-penalised_objective(problem, np.zeros(8, dtype=np.int64)))


@pytest.mark.parametrize("action", [3, -1, 0.5, np.array([0, 1]), "1", True])
def test_sequential_env_rejects_a_malformed_action_and_stays_usable(action):
    env = MECOffloadSeqEnv(**SMALL)
    obs, _ = env.reset(seed=0)
    with pytest.raises(AssignmentError, match="action"):
        env.step(action)
    assert env.unwrapped.current_user == 0
    np.testing.assert_array_equal(env.unwrapped._observation(), obs)
    env.step(1)
    assert env.unwrapped.current_user == 1


def test_integer_valued_floats_and_numpy_scalars_are_accepted():
    env = MECOffloadEnv(**SMALL)
    env.reset(seed=0)
    env.step(np.ones(8, dtype=np.float32))
    seq = MECOffloadSeqEnv(**SMALL)
    seq.reset(seed=0)
    for action in (np.int64(1), 2.0, np.array([0])):
        seq.step(action)
    assert seq.unwrapped.state.assignment[:3].tolist() == [1, 2, 0]


def test_stepping_past_the_last_user_asks_for_reset():
    env = MECOffloadSeqEnv(**SMALL)
    env.reset(seed=0)
    for _ in range(8):
        env.step(0)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


# --- rewards -------------------------------------------------------------------------------

def test_goa_action_earns_minus_its_penalised_objective():
    env = MECOffloadEnv(**SMALL)
    env.reset(seed=4)
    for _ in range(5):
        problem = env.unwrapped.problem
        action = goa(problem)
        _, reward, terminated, truncated, info = env.step(action)
        assert reward == pytest.approx(-penalised_objective(problem, action), rel=1e-12)
        assert info["violations"] == 0  # GOA offloads every user above tau
        ev = evaluate(problem, action)
        assert info["objective"] == ev.objective
        assert info["mean_delay_ms"] == pytest.approx(1e3 * ev.mean_delay)
        assert info["accuracy"] == ev.accuracy
        assert info["es_users"].tolist() == ev.es_users.tolist()
        assert not terminated and not truncated


def test_local_all_scores_one_plus_the_violation_share():
    env = MECOffloadEnv(**SMALL, penalty_weight=2.0)
    env.reset(seed=5)
    problem = env.unwrapped.problem
    _, reward, _, _, info = env.step(np.zeros(8, dtype=np.int64))
    n_high = int((problem.alpha > problem.tau).sum())
    assert reward == pytest.approx(-(1.0 + 2.0 * n_high / 8))
    assert info["violations"] == n_high and info["offload_fraction"] == 0.0


def test_wrong_answers_penalty_counts_realised_errors():
    env = MECOffloadEnv(**SMALL, penalty="wrong_answers", penalty_weight=0.5)
    env.reset(seed=6)
    problem = env.unwrapped.problem
    action = goa(problem)
    _, reward, _, _, _ = env.step(action)
    ev = evaluate(problem, action)
    local = evaluate(problem, np.zeros(8, dtype=np.int64))
    assert reward == pytest.approx(-(ev.objective / local.objective + 0.5 * (1.0 - ev.accuracy)), rel=1e-12)


@pytest.mark.parametrize("env_id", ["MECOffload-v0", "MECOffloadSeq-v0"])
def test_strategy_info_wrapper_reports_goa_on_the_slot_the_action_decided(env_id):
    env = StrategyInfo(gym.make(env_id, **SMALL), strategies=("GOA", "Min delay"))
    env.reset(seed=0)
    problem = env.unwrapped.problem
    done, info = False, {}
    while not done:  # the joint env decides the slot in one step, the sequential one user by user
        _, _, terminated, truncated, info = env.step(env.action_space.sample() * 0)
        done = terminated or truncated or env_id == "MECOffload-v0"
    assert info["goa_penalised_objective"] == pytest.approx(penalised_objective(problem, goa(problem)))
    assert info["min_delay_objective"] == pytest.approx(evaluate(problem, min_delay(problem)).objective)
    plain = gym.make("MECOffload-v0", **SMALL)  # the environments themselves never run a strategy
    plain.reset(seed=0)
    assert not any(k.startswith("goa_") for k in plain.step(np.zeros(8, dtype=np.int64))[4])


def test_episode_truncates_after_episode_length_slots_with_a_new_problem_each_slot():
    env = MECOffloadEnv(**SMALL, episode_length=3)
    env.reset(seed=0)
    seen = [env.unwrapped.problem]
    flags = []
    for _ in range(3):
        _, _, terminated, truncated, _ = env.step(np.zeros(8, dtype=np.int64))
        flags.append((terminated, truncated))
        seen.append(env.unwrapped.problem)
    assert flags == [(False, False), (False, False), (False, True)]
    assert not np.array_equal(seen[0].alpha, seen[1].alpha)


def test_mobility_moves_users_a_bounded_step_inside_the_area():
    env = MECOffloadEnv(**SMALL, mobility_speed_mps=20.0)
    env.reset(seed=0)
    before = env.unwrapped.problem.user_xy.copy()
    env.step(np.zeros(8, dtype=np.int64))
    after = env.unwrapped.problem.user_xy
    step = np.linalg.norm(after - before, axis=1)
    assert np.all(step <= 20.0 + 1e-9) and np.any(step > 0)
    assert np.all((after >= 0) & (after <= env.unwrapped.cfg.area_side_m))


def test_background_load_removes_compute_and_is_observed():
    env = MECOffloadEnv(**SMALL, background_load=0.5)
    obs, _ = env.reset(seed=0)
    load = obs["es_background_load"]
    assert np.all((load >= 0) & (load <= 0.9)) and np.any(load > 0)
    base = MECOffloadEnv(**SMALL)
    base.reset(seed=0)
    cap = env.unwrapped.problem.es_capacity
    # the slot's capacities are within the scenario's range, scaled by 1 - load
    lo, hi = 0.6 * 15.13e12, 1.4 * 15.13e12
    assert np.all(cap <= hi * (1 - load.astype(np.float64)) * (1 + 1e-6))
    assert np.all(cap >= lo * (1 - load.astype(np.float64)) * (1 - 1e-6))


# --- sequential env ------------------------------------------------------------------------

@pytest.mark.parametrize("penalty", ["violations", "wrong_answers"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequential_return_is_the_improvement_over_local_all(penalty, seed):
    env = MECOffloadSeqEnv(**SMALL, penalty=penalty, penalty_weight=1.5)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    total, done = 0.0, False
    while not done:
        _, reward, done, _, info = env.step(int(rng.integers(0, 3)))
        total += reward
    problem, final = env.unwrapped.problem, env.unwrapped.state.assignment
    j_final = penalised_objective(problem, final, 1.5, penalty)
    j_local = penalised_objective(problem, np.zeros(8, dtype=np.int64), 1.5, penalty)
    assert total == pytest.approx(j_local - j_final, rel=1e-12, abs=1e-12)
    assert info["penalised_objective"] == pytest.approx(j_final, rel=1e-12)


def test_sequential_goa_order_matches_goa_metrics():
    env = StrategyInfo(MECOffloadSeqEnv(**SMALL))
    env.reset(seed=3)
    action = goa(env.unwrapped.problem)
    for a in action:
        _, _, done, _, info = env.step(int(a))
    assert done
    # deciding users in index order reaches the same assignment, so the same metrics
    assert info["penalised_objective"] == pytest.approx(info["goa_penalised_objective"], rel=1e-12)
    assert info["es_users"].tolist() == info["goa_es_users"].tolist()


def test_sequential_join_delays_say_when_offloading_beats_local():
    env = MECOffloadSeqEnv(**SMALL, area_side_m=50.0)  # close to the ESs: offloading pays
    obs, _ = env.reset(seed=0)
    lay = env.unwrapped.layout
    problem = env.unwrapped.problem
    ratio = obs[lay["join_delay_ratio"]]
    expected = evaluate(problem, np.array([1] + [0] * 7)).delay[0] / problem.local_delay[0]
    assert ratio[0] == pytest.approx(expected, rel=1e-5)
    assert obs[lay["progress"]][0] == 0.0
    obs, *_ = env.step(1)
    assert obs[lay["es_users"]].tolist() == [pytest.approx(1 / 8), 0.0]
    assert obs[lay["progress"]][0] == pytest.approx(1 / 8)


# --- constructor arguments -----------------------------------------------------------------

@pytest.mark.parametrize("env_cls", ENV_CLASSES)
@pytest.mark.parametrize("field, value", [
    ("n_users", 0), ("tau", 2.0), ("penalty", "foo"), ("penalty_weight", -1.0), ("n_edge_servers", 0),
    ("render_mode", "video"), ("enforce_constraint", "yes"), ("area_side_m", -5.0), ("not_an_argument", 1),
])
def test_bad_constructor_argument_raises_config_error_naming_it(env_cls, field, value):
    with pytest.raises(ConfigError) as err:
        env_cls(**SMALL, **{field: value})
    assert err.value.field == field


@pytest.mark.parametrize("field, value", [
    ("episode_length", 0), ("episode_length", 2.5), ("flat_obs", 1), ("mobility_speed_mps", -1.0),
    ("mobility_speed_mps", float("inf")), ("background_load", 0.95),
])
def test_bad_joint_argument_raises_config_error_naming_it(field, value):
    with pytest.raises(ConfigError) as err:
        MECOffloadEnv(**SMALL, **{field: value})
    assert err.value.field == field


def test_scenario_must_be_a_name_or_a_config():
    with pytest.raises(ConfigError, match="scenario"):
        MECOffloadEnv(scenario="no_such_scenario")
    with pytest.raises(ConfigError, match="scenario"):
        MECOffloadEnv(scenario=42)
    cfg = mec_env.load_scenario("small")
    assert MECOffloadEnv(scenario=cfg, tau=0.3).cfg.tau == 0.3


def test_make_passes_bad_kwargs_through_to_config_error():
    with pytest.raises(ConfigError, match="episode_length"):
        gym.make("MECOffload-v0", scenario="small", episode_length=0)
