"""The PettingZoo view of MECSpecDecode-v0: PettingZoo's API and seed tests, each agent's own view and reward, its
choice of ES, and errors that name the agent."""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest

pytest.importorskip("pettingzoo")  # the multiagent extra: make test installs it

from pettingzoo.test import parallel_api_test  # noqa: E402
from pettingzoo.test.seed_test import parallel_seed_test  # noqa: E402

import mec_env.multiagent_spec as multiagent_spec  # noqa: E402
from mec_env.errors import AssignmentError  # noqa: E402
from mec_env.multiagent import parallel_env  # noqa: E402

KWARGS = {"scenario": "small", "n_users": 6, "max_rounds": 8, "session_tokens": 60, "tokens": "synthetic"}


@pytest.mark.parametrize("association", ["strongest", "action"])
def test_pettingzoo_api_and_seed_tests_pass(association):
    parallel_api_test(parallel_env("MECSpecDecode-v0", association=association, **KWARGS), num_cycles=20)
    parallel_seed_test(lambda: parallel_env("MECSpecDecode-v0", association=association, **KWARGS))


@pytest.mark.parametrize("timing", ["user", "slot"])
def test_own_rewards_average_to_the_env_reward_and_each_agent_sees_only_its_own_row(timing):
    own = parallel_env("MECSpecDecode-v0", association="action", timing=timing, **KWARGS)
    team = parallel_env("MECSpecDecode-v0", association="action", timing=timing, team_reward=True, **KWARGS)
    obs, _ = own.reset(seed=2)
    team.reset(seed=2)
    lay, inner = own.observation_layout(), own.inner.dict_observation()
    for i in (0, 4):
        mine = obs[f"user_{i}"]
        np.testing.assert_array_equal(mine[lay["channel_gain_db"]], inner["channel_gain_db"][i])
        np.testing.assert_array_equal(mine[lay["remaining"]], inner["remaining"][i:i + 1])
        np.testing.assert_array_equal(mine[lay["es_capacity"]], inner["es_capacity"])
    assert own.state().shape == own.state_space.shape
    rng = np.random.default_rng(0)
    while own.agents:  # agent user_5 absent: it idles
        actions = {a: [int(rng.integers(0, 4)), 0, 18, int(rng.integers(0, 2))] for a in own.agents[:-1]}
        obs, r_own, *_ = own.step(actions)
        _, r_team, *_ = team.step(actions)
        assert own.inner.last.emitted[-1] == 0 and r_own["user_5"] == pytest.approx(-0.0)
        assert np.mean(list(r_own.values())) == pytest.approx(r_team["user_0"], rel=1e-9, abs=1e-12)
        es = np.array([actions[f"user_{i}"][3] for i in range(5)])
        load = np.bincount(es[own.inner.last.emitted[:5] > 0], minlength=2) / 6  # the ES each agent chose
        np.testing.assert_allclose(obs["user_0"][lay["es_load"]], load)


def test_a_bad_action_names_the_agent_and_the_range():
    par = parallel_env("MECSpecDecode-v0", association="action", **KWARGS)
    par.reset(seed=0)
    with pytest.raises(AssignmentError, match=r"action of user_2 = .*4 integers.*ES"):
        par.step({"user_2": [1, 0, 18, 2]})  # ES 2 of 2
    with pytest.raises(AssignmentError, match="user_9.*not an agent"):
        par.step({"user_9": [1, 0, 18, 0]})


def test_the_docstring_runs_and_documents_every_key():
    result = doctest.testmod(multiagent_spec, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
    documented = re.findall(r"^\s*\| `(\w+)`", multiagent_spec.MECSpecDecodeParallelEnv.__doc__, re.M)
    par = parallel_env("MECSpecDecode-v0", **KWARGS)
    assert documented == list(par.observation_layout())
