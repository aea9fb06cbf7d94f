"""Difference rewards (mec_env.credit) against the evaluator run once per counterfactual, in the single and the
batched env and on numpy's path; and the PPO that trains on them (agents.difference_ppo)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th

import mec_env  # noqa: F401
from agents.difference_ppo import DifferencePPO
from agents.policies import EquivariantPolicy
from agents.ppo import ppo_model, training_envs
from agents.training import PPOConfig, load_config
from mec_env.errors import ConfigError

SMALL = {"scenario": "small", "n_users": 12, "flat_obs": True}


def slot_reward(seed: int, action: np.ndarray, **kw) -> float:
    env = gym.make("MECOffload-v0", **{**SMALL, **kw})
    env.reset(seed=seed)
    return env.step(action)[1]


@pytest.mark.parametrize("penalty", ["violations", "wrong_answers"])
def test_each_users_difference_reward_is_the_reward_lost_by_keeping_it_local(penalty):
    rng = np.random.default_rng(3)
    env = gym.make("MECOffload-v0", **SMALL, penalty=penalty, penalty_weight=2.0, difference_rewards=True)
    env.reset(seed=7)
    action = rng.integers(0, 3, 12)
    action[:2] = [0, 1]  # one user local, one offloaded at least
    _, reward, *_, info = env.step(action)
    credit = info["difference_rewards"]
    assert credit.shape == (12,)
    for i in range(12):
        local = action.copy()
        local[i] = 0
        assert credit[i] == pytest.approx(reward - slot_reward(7, local, penalty=penalty, penalty_weight=2.0),
                                          abs=1e-12)
    assert credit[0] == pytest.approx(0.0, abs=1e-12)  # already local: nothing to take back
    assert np.any(np.abs(credit) > 1e-6)


def test_batched_twin_and_numpy_path_give_the_single_envs_difference_rewards(monkeypatch):
    actions = np.random.default_rng(0).integers(0, 3, (3, 12))
    vec = gym.make_vec("MECOffload-v0", num_envs=3, vectorization_mode="vector_entry_point", **SMALL,
                       difference_rewards=True)
    vec.reset(seed=11)
    problem = vec.unwrapped.problem
    batched = vec.step(actions)[4]["difference_rewards"]
    assert batched.shape == (3, 12)
    from mec_env import credit, kernels
    from mec_env.envs.common import penalised_objective
    from mec_env.evaluator import evaluate, evaluate_batch

    j = penalised_objective(evaluate_batch(problem, actions), (problem.alpha * problem.local_delay).sum(-1),
                            "violations", 1.0)
    monkeypatch.setattr(kernels, "numba_enabled", lambda: False)
    monkeypatch.setattr(credit, "numba_enabled", lambda: False)
    numpy_path = credit.difference_rewards(problem, actions, j, (problem.alpha * problem.local_delay).sum(-1),
                                           "violations", 1.0)
    np.testing.assert_allclose(numpy_path, batched, atol=1e-12)
    for b in range(3):  # each copy alone, by brute force through the evaluator
        one = problem.instance(b)
        local_objective = float(one.alpha @ one.local_delay)
        j_b = penalised_objective(evaluate(one, actions[b]), local_objective, "violations", 1.0)
        for i in range(12):
            local = actions[b].copy()
            local[i] = 0
            j_i = penalised_objective(evaluate(one, local), local_objective, "violations", 1.0)
            assert batched[b, i] == pytest.approx(j_i - j_b, abs=1e-12)


def test_per_user_log_probabilities_sum_to_sb3s_joint_one():
    env = gym.make("MECOffload-v0", **SMALL)
    policy = EquivariantPolicy(env.observation_space, env.action_space, lambda _: 1e-3, hidden=8, pair_hidden=4)
    obs = th.as_tensor(np.stack([env.reset(seed=s)[0] for s in range(5)]))
    actions = th.as_tensor(np.stack([env.action_space.sample() for _ in range(5)]))
    _, joint, entropy = policy.evaluate_actions(obs, actions)
    per_user, user_entropy, values = policy.evaluate_user_actions(obs, actions)
    assert per_user.shape == values.shape == (5, 12)
    th.testing.assert_close(per_user.sum(dim=-1), joint)
    th.testing.assert_close(user_entropy.sum(dim=-1), entropy)


def test_difference_ppo_learns_to_keep_users_local_where_offloading_costs(tmp_path):
    # 8 users on the small scenario: training moves the per-user credit's policy away from uniform and its
    # value head towards the credits
    cfg = load_config(PPOConfig, "ppo", ["env_kwargs.scenario=small", "env_kwargs.n_users=8", "n_envs=4",
                                         "n_steps=16", "batch_size=32", "n_epochs=2", "learning_rate=3e-3",
                                         "anneal_lr=false"])
    model = ppo_model(cfg, training_envs(cfg, 0))
    assert isinstance(model, DifferencePPO)
    obs = th.as_tensor(np.stack([gym.make(cfg.env_id, **cfg.env_kwargs).reset(seed=s)[0] for s in range(8)]))
    before = model.policy.get_distribution(obs).entropy().mean().item()
    model.learn(512)
    after = model.policy.get_distribution(obs).entropy().mean().item()
    assert after < before - 0.2
    assert np.abs(model.user_rewards).sum() > 0  # the rollouts' credits were read


def test_difference_credit_refuses_a_discount_an_mlp_and_envs_without_credits():
    with pytest.raises(ConfigError, match="'gamma'"):
        load_config(PPOConfig, "ppo", ["gamma=0.9"])
    with pytest.raises(ConfigError, match="'policy'"):
        load_config(PPOConfig, "ppo", ["policy=mlp"])
    cfg = load_config(PPOConfig, "ppo", ["env_kwargs.scenario=small", "env_kwargs.n_users=8", "n_envs=2",
                                         "n_steps=8", "batch_size=16", "credit=team"])
    envs = training_envs(cfg, 0)  # credit=team: no difference rewards in the infos
    model = DifferencePPO(EquivariantPolicy, envs, n_steps=8, batch_size=16, gamma=0.0, device="cpu")
    with pytest.raises(ConfigError, match="difference_rewards"):
        model.learn(16)


def test_the_module_imports_first_in_a_fresh_process():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import mec_env.credit"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]  # the envs import it: it must not need them at import time
