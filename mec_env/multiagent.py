"""PettingZoo's multi-agent API over the offloading environments: every user is an agent.

    from mec_env.multiagent import parallel_env, env
    par = parallel_env("MECOffload-v0", n_users=20)          # pettingzoo.ParallelEnv
    aec = env("MECOffloadQueue-v0", team_reward=True)        # the AEC version (PettingZoo's converter)

A thin shell over the single-agent environment (the same system core and evaluator): the joint
action is assembled from the agents' actions and stepped once. Agent ``user_i``:

* **action** ``Discrete(M + 1)``: 0 keeps its query local, j offloads it to ES j (an agent absent from
  the action dict stays local); an action that is not an integer in 0..M, or one for an agent not
  in ``agents``, is an :class:`~mec_env.errors.AssignmentError` naming the agent and the value;
* **observation** a float32 ``Box``: its own entries of the env's observation (its row of channel
  gains, its query's uncertainty and alpha > tau flag, its device's capacity, query size, and in
  the queueing env whether it has a query, its device backlog and energy queue), then the
  broadcast ES entries (capacities, background load or backlog and queries queued), each in the
  env's key order; ``observation_layout()`` names the slices;
* **reward** its own share: in ``MECOffload-v0``,
  ``-(N alpha_i d_i / objective(all local) + penalty_weight x P_i)``, whose mean over the agents
  is the env's reward; in ``MECOffloadQueue-v0``, ``-(sum of alpha x delay of its queries completed
  in the slot / (lambda t_L) + penalty_weight x P_i + energy_weight x Z_i / e_bar)``, whose sum
  over an episode tracks the env's (the holding cost counts queries still queued at the end, this
  does not); ``P_i`` is 1 if its new query breaks (11) (or is answered wrongly, with
  ``penalty="wrong_answers"``). With ``team_reward=True`` every agent gets the env's reward.

Agents stay for the whole episode (PettingZoo does not let an agent come back once it is done): in
the queueing env a user without a query this slot is idle, its ``has_query`` entry 0 and its
action ignored. Every agent is truncated together when the episode is.

``state()`` is the env's whole observation, flattened (for centralised critics); ``state_space``
its Box.

PettingZoo is imported only here (the ``multiagent`` extra); ``import mec_env`` does not import it.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from mec_env.envs.common import as_choice
from mec_env.errors import AssignmentError, short_repr
from mec_env.layout import FlatLayout

ENV_IDS = ("MECOffload-v0", "MECOffloadQueue-v0")


class MECOffloadParallelEnv(ParallelEnv):
    """Every user of ``MECOffload-v0`` or ``MECOffloadQueue-v0`` as an agent (module docstring).

    :param env_id: the single-agent environment.
    :param team_reward: every agent gets the env's reward instead of its own share.
    :param kwargs: the environment's arguments (scenario fields included); ``flat_obs`` is the shell's.
    """

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "name": "mec_offload_parallel_v0",
                "is_parallelizable": True}

    def __init__(self, env_id: str = "MECOffload-v0", team_reward: bool = False, render_mode: str | None = None,
                 **kwargs: Any) -> None:
        if env_id not in ENV_IDS:
            raise ValueError(f"env_id must be one of {ENV_IDS}, got {env_id!r}")
        kwargs.pop("flat_obs", None)
        self.env_id, self.team_reward, self.render_mode = env_id, bool(team_reward), render_mode
        self.inner = gym.make(env_id, render_mode=render_mode, **kwargs).unwrapped
        n, m = self.inner.cfg.n_users, self.inner.cfg.n_edge_servers
        self.queueing = env_id == "MECOffloadQueue-v0"
        self.possible_agents = [f"user_{i}" for i in range(n)]
        self.agents: list[str] = []
        space = self.inner.dict_observation_space
        self._flat = inner_layout(self.inner)
        self._layout = self._flat.agent_layout().slices
        self._observation_space = self._flat.agent_box(space)
        self._action_space = spaces.Discrete(m + 1)
        self.state_space = self._flat.box(space)
        self._n, self._m = n, m
        self._index = {a: i for i, a in enumerate(self.possible_agents)}  # an agent's user, found in O(1)

    # --- spaces (the same object every call, as PettingZoo's checks require) ---------------------

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> spaces.Box:
        return self._observation_space

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> spaces.Discrete:
        return self._action_space

    def observation_layout(self) -> dict[str, slice]:
        """Slices of an agent's observation, by the env's observation key."""
        return dict(self._layout)

    # --- the API -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, _ = self.inner.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        return self._observations(obs), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("step() after the episode ended: call reset()")
        inner = self.inner
        joint = self._joint_action(actions)
        problem = inner.problem
        has_query = inner.has_query.copy() if self.queueing else np.ones(self._n, dtype=bool)
        scale = None if self.queueing else inner.core.local_objective  # the slot's reward scale, before it moves on
        obs, reward, terminated, truncated, info = inner.step(joint)
        if self.team_reward:
            rewards = dict.fromkeys(self.agents, float(reward))
        else:
            rewards = dict(zip(self.agents, self._shares(problem, joint, has_query, scale).tolist()))
        observations = self._observations(obs)
        terminations = dict.fromkeys(self.agents, bool(terminated))
        truncations = dict.fromkeys(self.agents, bool(truncated))
        infos = {a: {} for a in self.agents}
        if infos:
            infos[self.agents[0]] = info  # the slot's metrics, once
        if terminated or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def render(self):
        return self.inner.render()

    def close(self) -> None:
        self.inner.close()

    def state(self) -> np.ndarray:
        """The whole observation of the env, flattened into ``state_space`` (for centralised critics)."""
        obs = self.inner._observation() if self.queueing else self.inner.core.observation(flat=False)
        return self._flat.flatten(obs)

    # --- helpers -------------------------------------------------------------------------------

    def _joint_action(self, actions: dict[str, Any]) -> np.ndarray:
        """The env's (N,) action from the agents' (absent: 0), each checked; O(N) with numpy's speed."""
        unknown = actions.keys() - self._index.keys()  # every agent stays for the whole episode
        if unknown:
            raise AssignmentError(f"action for {short_repr(min(unknown, key=str))}, which is not an agent of this "
                                  f"episode; expected agents user_0 .. user_{self._n - 1}")
        joint = np.zeros(self._n, dtype=np.int64)
        rows = [self._index[a] for a in actions]
        try:
            values = np.array(list(actions.values()))
        except (ValueError, TypeError, OverflowError):  # ragged or odd entries: checked one by one below
            values = np.zeros((0, 0))
        if values.dtype.kind in "iu" and values.ndim == 1 and values.size and 0 <= values.min() and \
                values.max() <= self._m and not any(isinstance(v, (bool, np.bool_)) for v in actions.values()):
            joint[rows] = values  # the common case: plain integers in range
        else:
            for agent, action in actions.items():  # find and name the bad one
                joint[self._index[agent]] = self._checked_action(agent, action)
        return joint

    def _checked_action(self, agent: str, action: Any) -> int:
        """One agent's action as an integer in 0..M (an integer-valued float too); else an AssignmentError."""
        allowed = f"one integer 0 (local) .. M = {self._m} (ES index)"
        if isinstance(action, (bool, np.bool_, str, bytes)):  # True would be ES 1, "2" ES 2: refused
            raise AssignmentError(f"action of {agent} = {short_repr(action)}; expected {allowed}")
        try:
            return as_choice(action, self._m, f"action of {agent}")
        except AssignmentError:
            raise AssignmentError(f"action of {agent} = {short_repr(action)}; expected {allowed}") from None

    def _observations(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.agents, self._flat.per_agent(obs, self._n)))

    def _shares(self, problem, joint: np.ndarray, has_query: np.ndarray, scale: float | None) -> np.ndarray:
        """Each agent's own reward (module docstring)."""
        inner, o = self.inner, self.inner.options
        a = joint * has_query
        offloaded = a > 0
        if o.penalty == "violations":
            pen = (problem.alpha > problem.tau) & ~offloaded
        else:
            pen = ~np.where(offloaded, problem.llm_correct, problem.slm_correct)
        pen = pen & has_query
        if not self.queueing:
            ev = inner.last_slot[1]
            delay = self._n * problem.alpha * ev.delay / scale if scale > 0.0 else np.zeros(self._n)
            return -(delay + o.penalty_weight * pen)
        out = inner.last_slot[2]
        own = np.bincount(out.done_user, weights=out.done_alpha * out.done_delay, minlength=self._n)
        energy = o.energy_weight * inner.energy_queue / inner.energy_per_slot
        # own / (lambda t_L): their mean over the agents is the env's A_t / (N lambda t_L)
        return -(self._n * own / inner.delay_scale + o.penalty_weight * pen + energy)


def agent_observations(env: gym.Env, observation: Any) -> np.ndarray:
    """``(N, d)`` float32: every user's agent observation (row i is ``user_i``'s) from the single-agent
    env's observation, dict or flat; how a policy trained on the ``ParallelEnv`` acts in ``env`` itself
    (one batch for all users, e.g. under the project's evaluator)."""
    inner = env.unwrapped
    layout = inner_layout(inner)
    obs = observation if isinstance(observation, dict) else layout.unflatten(np.asarray(observation))
    return layout.per_agent(obs, inner.cfg.n_users)


def inner_layout(inner: gym.Env) -> FlatLayout:
    """The flat layout of a single-agent env (built once with it; derived from its Dict space)."""
    layout = getattr(inner, "layout", None)
    return layout if isinstance(layout, FlatLayout) else FlatLayout.from_space(inner.dict_observation_space)


def parallel_env(env_id: str = "MECOffload-v0", **kwargs: Any) -> MECOffloadParallelEnv:
    """The PettingZoo ``ParallelEnv`` of ``env_id`` (``MECOffload-v0`` or ``MECOffloadQueue-v0``)."""
    return MECOffloadParallelEnv(env_id, **kwargs)


def env(env_id: str = "MECOffload-v0", **kwargs: Any):
    """The AEC version, through PettingZoo's ``parallel_to_aec``."""
    return parallel_to_aec(parallel_env(env_id, **kwargs))


__all__ = ["MECOffloadParallelEnv", "agent_observations", "parallel_env", "env", "ENV_IDS"]
