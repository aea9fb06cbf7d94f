"""The ES as a choice in ``MECSpecDecode-v0`` (``association="action"``): the fourth action entry routes each
user's uploads, the compiled step and the numpy reference agree on it, naming each user's strongest ES replays the
default env exactly, and the rules' greedy association places users on valid ESs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mec_env  # noqa: F401
from baselines.token_policies import greedy_association, rule_factory
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
