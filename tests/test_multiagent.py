"""The PettingZoo API over both offloading envs: PettingZoo's own API and seed tests, the AEC
conversion, each agent's observation and reward, and that ``import mec_env`` leaves PettingZoo out."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pettingzoo")  # the multiagent extra: make test installs it

from pettingzoo.test import api_test, parallel_api_test  # the multiagent extra: make test installs it
from pettingzoo.test.seed_test import parallel_seed_test

from mec_env.multiagent import env, parallel_env

pytestmark = pytest.mark.xdist_group("queue")  # the worker that compiles the queueing kernels

CASES = [("MECOffload-v0", {"scenario": "small", "episode_length": 5}),
         ("MECOffloadQueue-v0", {"n_users": 12, "n_edge_servers": 2, "slot_seconds": 0.005, "episode_length": 20})]


@pytest.mark.parametrize("env_id, kwargs", CASES)
def test_pettingzoo_api_seed_and_aec_tests_pass(env_id, kwargs):
    parallel_api_test(parallel_env(env_id, **kwargs), num_cycles=40)
    parallel_seed_test(lambda: parallel_env(env_id, **kwargs))
    api_test(env(env_id, **kwargs), num_cycles=40)


@pytest.mark.parametrize("env_id, kwargs", CASES)
def test_an_agent_sees_its_own_entries_and_the_broadcast_es_state(env_id, kwargs):
    par = parallel_env(env_id, **kwargs)
    obs, _ = par.reset(seed=3)
    inner_obs = par.inner._observation() if par.queueing else par.inner.core.observation(flat=False)
    lay = par.observation_layout()
    for i in (0, 5):
        mine = obs[f"user_{i}"]
        np.testing.assert_array_equal(mine[lay["channel_gain_db"]], inner_obs["channel_gain_db"][i])
        np.testing.assert_array_equal(mine[lay["uncertainty"]], inner_obs["uncertainty"][i:i + 1])
        np.testing.assert_array_equal(mine[lay["es_capacity"]], inner_obs["es_capacity"])
        assert par.observation_space(f"user_{i}").contains(mine)


def test_own_rewards_average_to_the_env_reward_and_team_reward_shares_it():
    """MECOffload-v0: the mean of the agents' own rewards is the env's reward, slot by slot."""
    env_id, kwargs = CASES[0]
    own, team = parallel_env(env_id, **kwargs), parallel_env(env_id, team_reward=True, **kwargs)
    own.reset(seed=1)
    team.reset(seed=1)
    rng = np.random.default_rng(0)
    while own.agents:
        actions = {a: int(rng.integers(0, 3)) for a in own.agents}
        _, r_own, *_ = own.step(actions)
        _, r_team, *_ = team.step(actions)
        values = list(r_team.values())
        assert len(set(values)) == 1
        assert np.mean(list(r_own.values())) == pytest.approx(values[0], rel=1e-12)
        assert len(set(r_own.values())) > 1  # own shares differ between agents


def test_idle_users_of_the_queueing_env_stay_agents_with_their_action_ignored():
    env_id, kwargs = CASES[1]
    par = parallel_env(env_id, **kwargs)
    obs, _ = par.reset(seed=0)
    lay = par.observation_layout()
    idle = [a for a in par.agents if obs[a][lay["has_query"]][0] == 0]
    assert idle and len(par.agents) == 12
    _, _, _, _, _ = par.step({a: 1 for a in par.agents})
    decided = par.inner.last_slot[1]
    assert all(decided[int(a.split("_")[1])] == 0 for a in idle)


def test_import_mec_env_does_not_import_pettingzoo():
    code = "import sys, mec_env, gymnasium; gymnasium.make('MECOffloadQueue-v0'); print('pettingzoo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("action, shown", [(1.7, "1.7"), ("2", "'2'"), (True, "True"), (float("nan"), "nan"),
                                           (None, "None"), (2**70, str(2**70)), (3, "3"), (-1, "-1")])
def test_an_action_that_is_not_an_integer_in_range_is_refused_naming_the_agent_and_value(action, shown):
    from mec_env.errors import AssignmentError

    par = parallel_env(*CASES[0][:1], **CASES[0][1])
    par.reset(seed=0)
    with pytest.raises(AssignmentError) as err:
        par.step({"user_0": 1, "user_1": action})
    assert f"action of user_1 = {shown}; expected one integer 0 (local) .. M = 2" in str(err.value)
    _, rewards, *_ = par.step({"user_0": 1, "user_1": np.int64(2), "user_2": 1.0})  # integers of any kind
    assert len(rewards) == len(par.possible_agents)


def test_an_action_for_an_unknown_agent_is_refused_naming_it():
    from mec_env.errors import AssignmentError

    par = parallel_env(*CASES[0][:1], **CASES[0][1])
    par.reset(seed=0)
    with pytest.raises(AssignmentError, match="'user_99', which is not an agent"):
        par.step({"user_0": 1, "user_99": 1})


def test_a_step_of_twenty_thousand_agents_takes_linear_time():
    import time

    par = parallel_env("MECOffload-v0", n_users=20_000)
    par.reset(seed=0)
    actions = dict.fromkeys(par.agents, 1)
    start = time.perf_counter()
    par.step(actions)
    assert time.perf_counter() - start < 0.5  # a membership test on the agent list made it 1.9 s


@pytest.mark.parametrize("env_id, kwargs", CASES)
def test_pettingzoo_state_test_passes_and_the_state_lies_in_state_space(env_id, kwargs):
    from pettingzoo.test import state_test

    state_test(env(env_id, **kwargs), parallel_env(env_id, **kwargs))
    par = parallel_env(env_id, **kwargs)
    par.reset(seed=0)
    for _ in range(3):
        assert par.state_space.contains(par.state())
        par.step({a: 1 for a in par.agents})


def test_the_class_docstring_example_runs_and_its_observation_table_matches_the_layout():
    import doctest
    import re

    import mec_env.multiagent as multiagent

    result = doctest.testmod(multiagent, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
    documented = re.findall(r"^\s*\| `(\w+)`", multiagent.MECOffloadParallelEnv.__doc__, re.M)
    assert documented == list(parallel_env("MECOffload-v0", scenario="small").observation_layout())
