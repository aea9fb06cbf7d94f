"""PettingZoo's multi-agent API over ``MECSpecDecode-v0``: every user drafting tokens is an agent.

    from mec_env.multiagent import parallel_env
    par = parallel_env("MECSpecDecode-v0", n_users=20, association="action")

:class:`MECSpecDecodeParallelEnv` documents the MDP. PettingZoo is imported only here and in
:mod:`mec_env.multiagent` (the ``multiagent`` extra).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mec_env.envs.spec_decode import ENV_ID
from mec_env.errors import AssignmentError, short_repr
from mec_env.multiagent_base import UserAgents

OWN_KEYS = ("channel_gain_db", "energy_queue", "last_uncertainty", "local_capacity", "remaining")
SHARED_KEYS = ("es_capacity", "es_load")


class MECSpecDecodeParallelEnv(UserAgents):
    """
    ## Description

    Every user of ``MECSpecDecode-v0`` (token-level offloading: the device drafts, the ES verifies)
    as an agent ``user_i`` of a PettingZoo ``ParallelEnv``. A thin shell over the single-agent
    environment and its round evaluator: the agents' actions are assembled into the joint action and
    the environment plays one round.

    ## Action Space

    ``MultiDiscrete([L + 1, K, K])`` per agent, its own entries of the environment's action: draft
    budget (0: idle), upload level, exit level. With ``association="action"`` a fourth entry, the ES
    ``0..M-1`` that verifies its drafts (``MultiDiscrete([L + 1, K, K, M])``): the agent's own choice
    of edge server. An agent absent from the action dict idles this round. An action of the wrong
    length, or with an entry out of its range, or for an agent not in ``agents``, raises
    :class:`~mec_env.errors.AssignmentError` naming the agent and the value.

    ## Observation Space

    A float32 ``Box`` per agent, ``3 M + 4`` entries: its own, then those every agent shares (the
    ESs broadcast them); ``observation_layout()`` gives the slices.

    | Key               | Shape | Meaning                                                          | Min | Max |
    |-------------------|-------|------------------------------------------------------------------|-----|-----|
    | `channel_gain_db` | (M,)  | its row of normalised channel gains this round                   | -5  | 5   |
    | `energy_queue`    | (1,)  | its virtual energy queue Z_i / budget                            | 0   | 100 |
    | `last_uncertainty`| (1,)  | normalised uncertainty of its last drafted token                 | 0   | 1   |
    | `local_capacity`  | (1,)  | its device's C_L,i / ``local_capacity_flops``                    | 0   | hi  |
    | `remaining`       | (1,)  | tokens left of its session / ``draft_length``                    | 0   | 64  |
    | `es_capacity`     | (M,)  | every ES's C_j / ``es_capacity_flops`` (shared)                  | 0   | hi  |
    | `es_load`         | (M,)  | users that uploaded to each ES last round / N (shared)           | 0   | 1   |

    No agent sees another's channel, queue or tokens. ``state()`` is the environment's whole
    observation (every user's entries) with ``es_load``, flattened, in ``state_space`` (for
    centralised critics).

    ## Rewards

    Each agent gets its own rate: ``(tokens_i - (1 + mu) x errors_i) / (d_i x r0) - lambda x e_i /
    e_bar`` (the terms of the environment's reward; an idle agent gets 0 for its tokens), so the mean
    over the agents is the environment's reward. With ``timing="slot"`` ``d_i`` is the slot's time.
    ``team_reward=True`` gives every agent the environment's reward instead.

    ## Starting State

    The environment's: ``reset(seed=...)`` resets it and every agent of ``possible_agents`` is
    in ``agents``; ``es_load`` starts at 0.

    ## Episode End

    Every agent stays for the whole episode (an agent whose session is done keeps drafting nothing)
    and is truncated with the environment, after ``max_rounds`` rounds. The round's metrics (the
    environment's ``info``) are in the first agent's info.

    ## Arguments

    * ``team_reward``: every agent gets the environment's reward instead of its own.
    * ``render_mode``: the environment's.
    * any argument of ``MECSpecDecode-v0`` (scenario fields included); ``flat_obs`` is ignored.

    ## Example

    >>> from mec_env.multiagent import parallel_env
    >>> par = parallel_env("MECSpecDecode-v0", scenario="small", association="action", tokens="synthetic")
    >>> observations, infos = par.reset(seed=0)
    >>> len(par.agents), par.action_space("user_0"), observations["user_0"].shape
    (20, MultiDiscrete([ 9 19 19  2]), (10,))
    >>> actions = {agent: [2, 0, 18, 1] for agent in par.agents}  # draft 2, upload all, to ES 1
    >>> observations, rewards, terminations, truncations, infos = par.step(actions)
    >>> observations["user_0"][par.observation_layout()["es_load"]].tolist()
    [0.0, 1.0]
    """

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "name": "mec_spec_decode_parallel_v0",
                "is_parallelizable": True}

    def __init__(self, team_reward: bool = False, render_mode: str | None = None, **kwargs: Any) -> None:
        kwargs.pop("flat_obs", None)
        self.team_reward, self.render_mode = bool(team_reward), render_mode
        self.inner = gym.make(ENV_ID, render_mode=render_mode, **kwargs).unwrapped
        n, m = self.inner.cfg.n_users, self.inner.cfg.n_edge_servers
        self._n, self._m = n, m
        self.possible_agents = [f"user_{i}" for i in range(n)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._nvec = self.inner.action_space.nvec[:self.inner._per_user].copy()
        sizes = {"channel_gain_db": m, "energy_queue": 1, "last_uncertainty": 1, "local_capacity": 1,
                 "remaining": 1, "es_capacity": m, "es_load": m}
        starts = np.cumsum([0] + [sizes[k] for k in OWN_KEYS + SHARED_KEYS])
        self._layout = {k: slice(int(a), int(b)) for k, a, b in zip(OWN_KEYS + SHARED_KEYS, starts, starts[1:])}
        self._observation_space = spaces.Box(-np.inf, np.inf, (int(starts[-1]),), np.float32)
        self._action_space = spaces.MultiDiscrete(self._nvec)
        self.state_space = spaces.Box(-np.inf, np.inf, (n * (m + 4) + 2 * m,), np.float32)

    # --- the API -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.inner.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("step() after the episode ended: call reset()")
        inner = self.inner
        _, reward, terminated, truncated, info = inner.step(self._joint_action(actions).reshape(-1))
        if self.team_reward:
            rewards = dict.fromkeys(self.agents, float(reward))
        else:
            rewards = dict(zip(self.agents, self._own_rewards(inner.last, info).tolist()))
        observations = self._observations()
        terminations = dict.fromkeys(self.agents, bool(terminated))
        truncations = dict.fromkeys(self.agents, bool(truncated))
        infos = {a: {} for a in self.agents}
        infos[self.agents[0]] = info  # the round's metrics, once
        if terminated or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """Every user's entries of the environment's observation in its key order, then ``es_load``."""
        obs = self.inner.dict_observation()
        return np.concatenate([np.ravel(obs[k]) for k in sorted(obs)] + [self.inner.last_es_load()]).astype(np.float32)

    # --- helpers -------------------------------------------------------------------------------

    def _joint_action(self, actions: dict[str, Any]) -> np.ndarray:
        """(N, entries) the env's action from the agents' (absent: idle), each checked."""
        unknown = actions.keys() - self._index.keys()
        if unknown:
            raise AssignmentError(f"action for {short_repr(min(unknown, key=str))}, which is not an agent of this "
                                  f"episode; expected agents user_0 .. user_{self._n - 1}")
        joint = np.zeros((self._n, self._nvec.size), dtype=np.int64)
        joint[:, 2] = self._nvec[2] - 1  # an idle agent: no budget, never exits (nothing drafted either way)
        for agent, action in actions.items():
            joint[self._index[agent]] = self._checked_action(agent, action)
        return joint

    def _checked_action(self, agent: str, action: Any) -> np.ndarray:
        allowed = f"{self._nvec.size} integers, entry k in 0..{(self._nvec - 1).tolist()}[k]"
        try:
            a = np.asarray(action)
        except (ValueError, TypeError):
            a = np.zeros(0)
        ok = a.shape == self._nvec.shape and a.dtype.kind in "iuf" and bool(np.isfinite(a).all()) and \
            bool((a == np.round(a)).all()) and bool(((a >= 0) & (a < self._nvec)).all())
        if not ok:
            raise AssignmentError(f"action of {agent} = {short_repr(action)}; expected {allowed} "
                                  f"(budget, upload level, exit level{', ES' if self._nvec.size == 4 else ''})")
        return a.astype(np.int64)

    def _observations(self) -> dict[str, np.ndarray]:
        obs = self.inner.dict_observation()
        n = self._n
        own = [obs["channel_gain_db"]] + [obs[k][:, None] for k in OWN_KEYS[1:]]
        shared = np.broadcast_to(np.concatenate([obs["es_capacity"], self.inner.last_es_load()]), (n, 2 * self._m))
        rows = np.concatenate(own + [shared], axis=1).astype(np.float32)
        return dict(zip(self.agents, rows))

    def _own_rewards(self, ev: Any, info: dict) -> np.ndarray:
        """Each agent's terms of the environment's reward (class docstring)."""
        inner, o = self.inner, self.inner.options
        took = ev.emitted > 0
        time = ev.delay if o.timing == "user" else np.full(self._n, info["round_time_s"])
        net = ev.emitted - (1.0 + o.error_weight) * ev.unverified.sum(axis=1)
        rate = np.where(took & (time > 0), net / np.where(time > 0, time, 1.0), 0.0) / inner.r0
        return rate - o.energy_weight * ev.energy / o.energy_budget_j


__all__ = ["MECSpecDecodeParallelEnv"]
