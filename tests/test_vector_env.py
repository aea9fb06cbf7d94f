"""The batched twin of MECOffload-v0: registration, spaces, seeding, rewards against the
evaluator, same-step autoreset, bad actions, and the SB3 adapter."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mec_env  # noqa: F401
from baselines import goa
from mec_env.envs.vector import MECOffloadVectorEnv
from mec_env.errors import AssignmentError, ConfigError
from mec_env.evaluator import evaluate, local_objective

SMALL = {"scenario": "small"}


def make(num_envs: int = 4, **kw) -> MECOffloadVectorEnv:
    return gym.make_vec("MECOffload-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                        **{**SMALL, **kw})


def test_make_vec_builds_the_batched_env_with_the_single_env_spaces():
    env = make(5)
    single = gym.make("MECOffload-v0", **SMALL)
    assert isinstance(env, MECOffloadVectorEnv)
    assert env.single_observation_space == single.observation_space
    assert env.single_action_space == single.action_space
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space
    assert info["slot"].shape == (5,)


@pytest.mark.parametrize("flat_obs", [False, True])
def test_observations_lie_in_the_batched_space(flat_obs):
    env = make(3, flat_obs=flat_obs, mobility_speed_mps=5.0, background_load=0.4)
    env.action_space.seed(1)
    obs, _ = env.reset(seed=1)
    for _ in range(25):
        obs, rewards, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs in env.observation_space
        assert rewards.shape == (3,) and np.all(np.isfinite(rewards))


def test_same_seed_same_batch_different_seed_different_batch():
    def run(seed):
        env = make(4)
        env.action_space.seed(seed)
        env.reset(seed=seed)
        return np.concatenate([env.step(env.action_space.sample())[1] for _ in range(30)])

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_rewards_are_the_evaluators_penalised_objective_per_copy():
    env = make(4, penalty_weight=2.0)
    env.reset(seed=7)
    for _ in range(12):
        problem = env.problem
        actions = np.stack([goa(problem.instance(b)) for b in range(4)])
        actions[:, 0] = 0  # break constraint (11) sometimes, so the penalty is exercised
        _, rewards, _, _, info = env.step(actions)
        for b in range(4):
            p = problem.instance(b)
            ev = evaluate(p, actions[b])
            expected = ev.objective / local_objective(p) + 2.0 * ev.n_violations / p.n_users
            assert rewards[b] == pytest.approx(-expected, rel=1e-12)
            assert info["accuracy"][b] == pytest.approx(ev.accuracy)
            np.testing.assert_array_equal(info["es_users"][b], ev.es_users)


def test_episodes_truncate_together_with_same_step_autoreset():
    env = make(3, episode_length=4)
    env.reset(seed=0)
    zeros = np.zeros((3, env.cfg.n_users), dtype=np.int64)
    for t in range(1, 9):
        obs, _, terminated, truncated, info = env.step(zeros)
        assert not terminated.any()
        assert truncated.all() == (t % 4 == 0) and truncated.any() == truncated.all()
        if t % 4 == 0:
            assert info["_final_obs"].all()
            assert not np.array_equal(info["final_obs"]["channel_gain_db"], obs["channel_gain_db"])
            assert info["slot"][0] == 3
        else:
            assert "final_obs" not in info
    assert env.core.slot == 0


@pytest.mark.parametrize("bad", [
    np.zeros((3, 8), dtype=np.int64),  # wrong batch
    np.zeros((4, 7), dtype=np.int64),  # wrong N
    np.full((4, 8), 3),  # ES 3 of M = 2
    np.full((4, 8), 0.5),  # not an integer
])
def test_malformed_batched_actions_raise_before_the_state_changes(bad):
    env = make(4)
    env.reset(seed=0)
    before = env.problem
    with pytest.raises(AssignmentError):
        env.step(bad)
    assert env.problem is before and env.core.slot == 0


def test_bad_arguments_name_the_field():
    with pytest.raises(ConfigError, match="num_envs"):
        MECOffloadVectorEnv(num_envs=0, **SMALL)
    with pytest.raises(ConfigError, match="background_load"):
        MECOffloadVectorEnv(num_envs=2, background_load=2.0, **SMALL)


def test_sb3_adapter_repacks_final_observations_and_trains_ppo():
    PPO = pytest.importorskip("stable_baselines3").PPO  # the train extra
    from agents.vector import SB3VecEnv

    venv = SB3VecEnv(make(4, episode_length=3))
    venv.seed(5)
    obs = venv.reset()
    assert obs["uncertainty"].shape == (4, 8)
    for t in range(3):
        obs, rewards, dones, infos = venv.step(np.zeros((4, 8), dtype=np.int64))
    assert dones.all() and all(i["TimeLimit.truncated"] for i in infos)
    assert infos[0]["terminal_observation"]["uncertainty"].shape == (8,)
    assert rewards.dtype == np.float32
    model = PPO("MultiInputPolicy", venv, n_steps=8, batch_size=32, n_epochs=1, seed=0)
    model.learn(64)
    assert model.num_timesteps == 64
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnv(gym.make_vec("MECOffload-v0", num_envs=2, vectorization_mode="sync", **SMALL))
