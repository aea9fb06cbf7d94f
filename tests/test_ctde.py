"""Centralised training, decentralised execution (``policy=decentralised``): each user's decision reads its own
observation only, the critic reads the whole state, and a short training of the critic and the actors keeps both
true; the users' own masks hold constraint (11)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

th = pytest.importorskip("torch")  # the train extra
pytest.importorskip("stable_baselines3")
pytest.importorskip("pettingzoo")  # the multiagent extra: the agents' own observations

import mec_env  # noqa: E402, F401
from agents.difference_ppo import DifferencePPO  # noqa: E402
from agents.policies import EquivariantPolicy, decentralised_actions  # noqa: E402
from agents.vector import SB3VecEnv  # noqa: E402
from mec_env.layout import FlatLayout  # noqa: E402
from mec_env.multiagent import parallel_env  # noqa: E402

SMALL = {"scenario": "small", "n_users": 12}


def decentralised_model(seed: int = 0) -> DifferencePPO:
    venv = gym.make_vec("MECOffload-v0", num_envs=8, vectorization_mode="vector_entry_point", flat_obs=True,
                        difference_rewards=True, **SMALL)
    return DifferencePPO(EquivariantPolicy, SB3VecEnv(venv), policy_kwargs={"hidden": 16, "decentralised": True},
                         n_steps=4, batch_size=16, n_epochs=2, gamma=0.0, learning_rate=3e-3, device="cpu", seed=seed)


def others_private_entries(layout: FlatLayout, user: int, n: int) -> np.ndarray:
    """Indices of the flat observation (the state) holding other users' own entries."""
    index = np.zeros(layout.size, dtype=bool)
    for key in layout.user_keys:
        sl = layout.slices[key]
        per_user = (sl.stop - sl.start) // n
        rows = np.arange(sl.start, sl.stop).reshape(n, per_user)
        index[np.delete(rows, user, axis=0).ravel()] = True
    return np.flatnonzero(index)


def check_actor_reads_only_its_own_observation_and_critic_reads_all(model, seed: int, env_id: str = "MECOffload-v0",
                                                                   kwargs: dict = SMALL) -> None:
    par = parallel_env(env_id, **kwargs)
    observations, _ = par.reset(seed=seed)
    for _ in range(3):  # a few slots in: the queueing env's backlogs are not all zero
        observations, *_ = par.step({a: 1 for a in par.agents})
    state = th.as_tensor(par.state()[None])
    ext, layout, n = model.policy.mlp_extractor, par._flat, par._n
    with th.no_grad():
        logits = ext.forward_actor(state).reshape(n, -1)
        # decentralised execution: every agent from its own PettingZoo observation, one at a time
        own = [ext.agent_logits(ext.read_agent(th.as_tensor(observations[a][None]), par.observation_layout()))[0, 0]
               for a in par.agents]
        assert th.allclose(logits, th.stack(own), atol=1e-5)
        acting = decentralised_actions(model.policy, observations, par.observation_layout())
        assert list(acting.values()) == logits.argmax(dim=-1).tolist()
        assert par.step(acting)[0]  # the env takes them as the agents' actions
        values = ext.user_values(*ext._states(state)[1:])[0]
        rng = np.random.default_rng(seed)
        deciding = [i for i in range(n) if "has_query" not in layout.slices
                    or state[0, layout.slices["has_query"].start + i] > 0.5]  # an idle user's logits are fixed
        assert deciding, "no user decides at this state"
        for user in sorted({deciding[0], deciding[len(deciding) // 2], deciding[-1]}):
            noisy = state.clone()
            others = others_private_entries(layout, user, n)
            noisy[0, others] += th.as_tensor(rng.normal(0.0, 1.0, others.size), dtype=noisy.dtype)
            assert th.equal(ext.forward_actor(noisy).reshape(n, -1)[user], logits[user])  # blind to the others
            assert not th.allclose(ext.user_values(*ext._states(noisy)[1:])[0, user], values[user])  # sees them
            mine = state.clone()
            mine[0, layout.slices["channel_gain_db"].start + user * ext.m] += 0.5  # its gain to ES 1
            assert not th.allclose(ext.forward_actor(mine).reshape(n, -1)[user], logits[user])


def test_the_actors_read_only_their_own_observation_and_the_critic_the_whole_state():
    check_actor_reads_only_its_own_observation_and_critic_reads_all(decentralised_model(), seed=5)


def test_a_few_iterations_train_the_centralised_critic_and_keep_execution_decentralised():
    model = decentralised_model(seed=1)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(4 * 8 * 6)  # six rollouts of 4 steps x 8 copies, two epochs each
    after = model.policy.state_dict()
    critic = [k for k in after if "user_value" in k or "es_encoders" in k or "user_messages" in k]  # per-user values
    actor = [k for k in after if k.startswith("mlp_extractor.") and ("local_head" in k or "es_head" in k)]
    assert critic and actor
    assert all(not th.equal(before[k], after[k]) for k in critic + actor)  # both trained
    assert np.isfinite(model.logger.name_to_value.get("train/value_loss", 0.0))
    check_actor_reads_only_its_own_observation_and_critic_reads_all(model, seed=7)
    # each user's own mask holds (11): a user with alpha > tau never samples local
    env = gym.make("MECOffload-v0", flat_obs=True, **SMALL)
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        problem = env.unwrapped.problem
        for _ in range(20):
            action, _ = model.predict(obs, deterministic=False)
            assert (action[problem.alpha > problem.tau] > 0).all()


def test_a_decentralised_model_saves_loads_and_stays_decentralised(tmp_path):
    from agents.model_zip import load_model

    model = decentralised_model()
    model.save(tmp_path / "ctde.zip")
    loaded = load_model(tmp_path / "ctde.zip", reference_env=gym.make("MECOffload-v0", flat_obs=True, **SMALL))
    assert loaded.policy.decentralised and loaded.policy.mlp_extractor.decentralised
    obs = np.random.default_rng(0).random((3, model.observation_space.shape[0]), dtype=np.float32)
    with th.no_grad():
        assert th.allclose(loaded.policy.mlp_extractor.forward_actor(th.as_tensor(obs)),
                           model.policy.mlp_extractor.forward_actor(th.as_tensor(obs)))


def test_the_queueing_envs_decentralised_actors_read_only_their_own_observation():
    from stable_baselines3 import PPO

    from agents.queue_policy import QueueEquivariantPolicy

    kwargs = {"n_users": 12, "n_edge_servers": 2, "slot_seconds": 0.005, "episode_length": 20}
    env = gym.make("MECOffloadQueue-v0", flat_obs=True, **kwargs)
    model = PPO(QueueEquivariantPolicy, env, policy_kwargs={"hidden": 16, "decentralised": True}, n_steps=8,
                batch_size=8, device="cpu", seed=0)
    check_actor_reads_only_its_own_observation_and_critic_reads_all(model, 3, "MECOffloadQueue-v0", kwargs)


def test_distillation_teaches_decentralised_users_the_teachers_decisions():
    from stable_baselines3 import PPO

    from agents.distill import decentralised_student, distil
    from agents.queue_policy import QueueEquivariantPolicy

    kwargs = {"n_users": 8, "n_edge_servers": 2, "slot_seconds": 0.005, "episode_length": 30, "flat_obs": True}
    env = gym.make("MECOffloadQueue-v0", **kwargs)
    teacher = PPO(QueueEquivariantPolicy, env, policy_kwargs={"hidden": 16, "rounds": 1}, device="cpu", seed=3)
    student = decentralised_student(teacher, env)
    assert student.policy.decentralised and not teacher.policy.decentralised
    venv = gym.make_vec("MECOffloadQueue-v0", num_envs=4, vectorization_mode="sync", **kwargs)
    rounds = distil(teacher, student, venv, rounds=3, steps=40, epochs=4, learning_rate=3e-3)
    assert [r.round for r in rounds] == [0, 1, 2] and rounds[-1].decisions > rounds[0].decisions > 0
    assert rounds[-1].agreement_after > rounds[0].agreement_before  # it learned the teacher's decisions
    assert all(r.agreement_after >= r.agreement_before - 0.05 for r in rounds)
    check_actor_reads_only_its_own_observation_and_critic_reads_all(student, 3, "MECOffloadQueue-v0",
                                                                   {k: v for k, v in kwargs.items() if k != "flat_obs"})
