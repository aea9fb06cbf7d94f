"""The one flat-observation layout (mec_env.layout) against every env id's Dict space and observations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import mec_env  # noqa: F401  (registers the ids)
from mec_env.envs.sequential import flat_layout
from mec_env.layout import FlatLayout
from mec_env.registration import ENV_IDS

DICT_IDS = [i for i in ENV_IDS if not i.startswith("MECOffloadSeq")]
SEED = 7


def _make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, disable_env_checker=True, **kwargs)


@pytest.mark.parametrize("env_id", DICT_IDS)
def test_layout_tiles_the_flat_box(env_id: str) -> None:
    env = _make(env_id, flat_obs=True)
    u = env.unwrapped
    space = u.dict_observation_space
    layout = FlatLayout.from_space(space)
    assert layout == u.layout  # the env reads its flat vector through the same layout
    assert layout.keys == tuple(space.keys())
    start = 0
    for key in layout.keys:  # every key's slice has the key's size, in order, without gaps
        s = layout.slices[key]
        assert (s.start, s.stop - s.start) == (start, int(np.prod(space[key].shape)))
        start = s.stop
    box = spaces.flatten_space(space)
    assert start == layout.size == box.shape[0] == u.observation_space.shape[0]
    assert u.observation_space == box and u.observation_space.dtype == np.float32
    for key in layout.keys:  # the flat bounds are each key's bounds, where its slice says
        np.testing.assert_array_equal(box.low[layout.slices[key]], space[key].low.ravel())
        np.testing.assert_array_equal(box.high[layout.slices[key]], space[key].high.ravel())
    n, m = u.cfg.n_users, u.cfg.n_edge_servers
    assert layout.es_keys and all(space[k].shape == (m,) for k in layout.es_keys)
    assert all(space[k].shape[0] == n for k in layout.user_keys)
    # what a policy builds from N and M alone is the env's layout
    assert FlatLayout.for_users(layout.keys, n, m) == layout


@pytest.mark.parametrize("env_id", ["MECOffload-N10-v0", "MECSpecDecode-N10-v0", "MECOffloadQueue-v0"])
def test_flat_observation_is_gymnasium_flatten_of_the_dict(env_id: str) -> None:
    kwargs = {"n_users": 7, "arrival_probability": 0.5} if env_id == "MECOffloadQueue-v0" else {}
    flat_env, dict_env = _make(env_id, flat_obs=True, **kwargs), _make(env_id, **kwargs)
    flat, _ = flat_env.reset(seed=SEED)
    obs, _ = dict_env.reset(seed=SEED)
    space = dict_env.unwrapped.dict_observation_space
    layout = flat_env.unwrapped.layout
    for _ in range(3):
        assert flat.dtype == np.float32
        np.testing.assert_array_equal(flat, spaces.flatten(space, obs))
        np.testing.assert_array_equal(layout.flatten(obs), flat)
        back = layout.unflatten(flat)
        for key in layout.keys:
            assert back[key].shape == space[key].shape
            np.testing.assert_array_equal(back[key], obs[key])
        action = flat_env.action_space.sample()
        flat = flat_env.step(action)[0]
        obs = dict_env.step(action)[0]


def test_batched_flatten_keeps_the_leading_axis() -> None:
    layout = FlatLayout.for_users(("a", "channel_gain_db", "es_b"), 3, 2)
    rng = np.random.default_rng(0)
    obs = {"a": rng.random((4, 3)), "channel_gain_db": rng.random((4, 3, 2)), "es_b": rng.random((4, 2))}
    flat = layout.flatten(obs, (4,))
    assert flat.shape == (4, 3 + 6 + 2) and flat.dtype == np.float32
    for b in range(4):
        np.testing.assert_array_equal(flat[b], layout.flatten({k: v[b] for k, v in obs.items()}))
    np.testing.assert_array_equal(layout.unflatten(flat)["channel_gain_db"], obs["channel_gain_db"].astype(np.float32))


def test_layout_rejects_a_dict_in_another_order() -> None:
    layout = FlatLayout({"b": (2,), "a": (1,)})
    with pytest.raises(ValueError, match="keys"):
        layout.box(spaces.Dict({"a": spaces.Box(0, 1, (1,)), "b": spaces.Box(0, 1, (2,))}))


def test_sequential_layout_is_the_box() -> None:
    env = _make("MECOffloadSeq-N10-v0")
    u = env.unwrapped
    m = u.cfg.n_edge_servers
    assert flat_layout(m).size == u.observation_space.shape[0] == 3 * m + 5
    assert flat_layout(m).slices == u.layout


def test_agent_layout_gives_each_user_its_rows_and_the_es_entries() -> None:
    env = _make("MECOffloadQueue-v0", n_users=5, arrival_probability=0.5)
    obs, _ = env.reset(seed=SEED)
    layout = env.unwrapped.layout
    agent = layout.agent_layout()
    assert agent.keys == layout.user_keys + layout.es_keys
    rows = layout.per_agent(obs, 5)
    assert rows.shape == (5, agent.size) and rows.dtype == np.float32
    for i in range(5):
        for key in layout.user_keys:
            np.testing.assert_array_equal(rows[i, agent.slices[key]], np.ravel(obs[key][i]))
        for key in layout.es_keys:
            np.testing.assert_array_equal(rows[i, agent.slices[key]], obs[key])
    box = layout.agent_box(env.unwrapped.dict_observation_space)
    assert box.shape == (agent.size,) and box.contains(rows[0])


def test_policies_slice_the_env_layout() -> None:
    pytest.importorskip("stable_baselines3")
    from agents.policies import flat_obs_layout, flat_obs_size
    from agents.queue_policy import QueueUserExtractor
    from agents.spec_policy import spec_obs_layout

    for env_id, make_layout in (("MECOffload-N10-v0", flat_obs_layout), ("MECSpecDecode-N10-v0", spec_obs_layout),
                                ("MECOffloadQueue-v0", QueueUserExtractor.make_layout)):
        extra = {"arrival_probability": 0.5} if env_id == "MECOffloadQueue-v0" else {}
        u = _make(env_id, n_users=6, n_edge_servers=3, **extra).unwrapped
        assert make_layout(6, 3) == u.layout.slices, env_id
    assert flat_obs_size(6, 3) == 6 * 3 + 2 * 3 + 4 * 6


def test_queue_observation_kernel_writes_each_key_where_the_layout_says() -> None:
    from mec_env.slots import normalised_es_capacity, normalised_gain_db, normalised_local_capacity

    env = _make("MECOffloadQueue-v0", n_users=6, arrival_probability=0.5)
    obs, _ = env.reset(seed=SEED)
    for _ in range(4):
        obs = env.step(env.action_space.sample())[0]
    u = env.unwrapped
    p, cfg, q = u.problem, u.cfg, u.has_query
    np.testing.assert_array_equal(obs["has_query"], q.astype(np.float32))
    np.testing.assert_array_equal(obs["above_tau"], (q & (p.alpha > p.tau)).astype(np.float32))
    np.testing.assert_allclose(obs["uncertainty"], np.where(q, p.alpha, 0.0), rtol=1e-6)
    np.testing.assert_allclose(obs["query_size"], np.where(q, np.minimum(p.query_bits / 1e3, 1e3), 0.0), rtol=1e-6)
    np.testing.assert_allclose(obs["channel_gain_db"], normalised_gain_db(p.gain.copy()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(obs["es_capacity"], normalised_es_capacity(p.es_capacity, cfg), rtol=1e-6)
    np.testing.assert_allclose(obs["local_capacity"], normalised_local_capacity(p.local_capacity, cfg), rtol=1e-6)
    np.testing.assert_allclose(obs["es_jobs"], u.pool.es_jobs / 6, rtol=1e-6)
    np.testing.assert_allclose(obs["energy_queue"], np.minimum(u.energy_queue / u.energy_per_slot, 1e3), rtol=1e-6)
