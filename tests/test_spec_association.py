"""The ES as a choice in ``MECSpecDecode-v0`` (``association="action"``): the fourth action entry routes each
user's uploads, the compiled step and the numpy reference agree on it, naming each user's strongest ES replays the
default env exactly, and the rules' greedy association places users on valid ESs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mec_env  # noqa: F401
from baselines.token_policies import greedy_association, quota_association, rule_factory, standing
from mec_env.errors import AssignmentError

SMALL = {"scenario": "small", "n_users": 6, "tokens": "synthetic", "session_tokens": 24}


def play(env, actions) -> list[tuple]:
    env.reset(seed=4)
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((reward, info["tokens"], info["energy_j"], info["uploaded"], env.unwrapped.last_round[1].tolist()))
    return out


def test_naming_the_strongest_es_replays_the_default_env_and_the_chosen_es_is_used():
    default = gym.make("MECSpecDecode-v0", **SMALL)
    chosen = gym.make("MECSpecDecode-v0", association="action", **SMALL)
    n, m = 6, chosen.unwrapped.cfg.n_edge_servers
    assert chosen.action_space.shape == (4 * n,) and chosen.action_space.nvec[3] == m
    rng = np.random.default_rng(0)
    base = [np.stack([rng.integers(1, 9, n), rng.integers(0, 19, n), rng.integers(0, 19, n)], 1) for _ in range(6)]
    reference = play(default, [a.reshape(-1) for a in base])
    chosen.reset(seed=4)
    replay = []
    for a in base:  # each round, each user names its strongest ES of that round
        es = chosen.unwrapped.problem.gain.argmax(axis=1)
        obs, reward, terminated, truncated, info = chosen.step(np.column_stack([a, es]).reshape(-1))
        replay.append((reward, info["tokens"], info["energy_j"], info["uploaded"],
                       chosen.unwrapped.last_round[1].tolist()))
    assert replay == reference
    assert chosen.unwrapped.action_masks().shape == (n * (9 + 2 * 19 + m),)  # every ES allowed
    fixed = [np.column_stack([a, np.full(n, m - 1)]).reshape(-1) for a in base]
    assert all(r[4] == [m - 1] * n for r in play(chosen, fixed))  # everyone on the last ES, as named


def test_the_compiled_step_and_the_numpy_reference_agree_on_chosen_ess():
    rng = np.random.default_rng(1)
    env = gym.make("MECSpecDecode-v0", association="action", **SMALL)
    m = env.unwrapped.cfg.n_edge_servers
    actions = [np.stack([rng.integers(0, 9, 6), rng.integers(0, 19, 6), rng.integers(0, 19, 6),
                         rng.integers(0, m, 6)], 1).reshape(-1) for _ in range(8)]
    env.unwrapped.compiled = True
    compiled = play(env, actions)
    env.unwrapped.compiled = False
    reference = play(env, actions)
    assert [r[4] for r in reference] == [r[4] for r in compiled]  # the same ESs
    np.testing.assert_allclose([r[:4] for r in reference], [r[:4] for r in compiled], rtol=1e-9)


def test_an_es_out_of_range_is_refused_naming_the_entry():
    env = gym.make("MECSpecDecode-v0", association="action", **SMALL)
    env.reset(seed=0)
    a = np.tile([2, 0, 18, env.unwrapped.cfg.n_edge_servers], 6)
    with pytest.raises(AssignmentError, match="ES 0..1"):
        env.step(a)


def test_the_greedy_association_places_uploading_users_and_needs_the_choice_in_the_action():
    env = gym.make("MECSpecDecode-v0", association="action", **SMALL)
    env.reset(seed=2)
    inner = env.unwrapped
    es = greedy_association(inner, np.array([4, 4, 4, 0, 4, 4]), 1.0)
    assert es.shape == (6,) and ((0 <= es) & (es < inner.cfg.n_edge_servers)).all()
    assert es[3] == inner.problem.gain[3].argmax()  # a user drafting nothing keeps its strongest ES
    agent = rule_factory("HLM b=2 @greedy")(env)
    action, _ = agent.predict(None)
    assert action.reshape(6, 4)[:, 3].tolist() == greedy_association(inner, np.minimum(2, inner.generation_left()),
                                                                     1.0).tolist()
    assert np.isfinite(env.step(action)[1])
    with pytest.raises(ValueError, match="association='action'"):
        rule_factory("HLM b=2 @greedy")(gym.make("MECSpecDecode-v0", **SMALL))


def test_the_quota_association_moves_the_excess_that_loses_least_to_its_second_es():
    """Each user decides on its own: the users of an ES requested beyond its capacity share that lose least by
    moving (smallest best-over-second gain) go to their second strongest ES, the others stay."""
    env = gym.make("MECSpecDecode-v0", association="action", scenario="paper", n_users=40, tokens="synthetic")
    env.reset(seed=3)
    inner = env.unwrapped
    gain, capacity = inner.problem.gain, inner.problem.es_capacity
    drafted = np.ones(40, dtype=np.int64)
    drafted[:5] = 0  # idle users request nothing and keep their strongest ES
    es = quota_association(inner, drafted)
    order = np.argsort(-gain, axis=1)
    assert (es[:5] == order[:5, 0]).all() and np.isin(es, order[:, :2]).all()
    requests = np.bincount(order[5:, 0], minlength=4)
    quota = 35 * capacity / capacity.sum()
    for j in range(4):
        mine = np.flatnonzero((order[:, 0] == j) & (drafted > 0))
        moved = mine[es[mine] != j]
        assert moved.size == np.ceil(max(requests[j] - quota[j], 0.0) - 1e-9)  # the excess, rounded up
        margin = gain[mine, order[mine, 0]] / gain[mine, order[mine, 1]]
        stayed = np.setdiff1d(mine, moved)
        if moved.size and stayed.size:  # those that moved lose less than any that stayed
            assert margin[np.isin(mine, moved)].max() <= margin[np.isin(mine, stayed)].min()
    assert standing(np.array([0, 0, 1, 0]), np.array([3.0, 1.0, 5.0, 2.0])).tolist() == [2 / 3, 0.0, 0.0, 1 / 3]
    agent = rule_factory("HLM b=1 @quota")(env)
    assert agent.name == "HLM @quota" and np.isfinite(env.step(agent.predict(None)[0])[1])
