"""PettingZoo's multi-agent API over the offloading environments: every user is an agent.

    from mec_env.multiagent import parallel_env, env
    par = parallel_env("MECOffload-v0", n_users=20)          # pettingzoo.ParallelEnv
    aec = env("MECOffloadQueue-v0", team_reward=True)        # the AEC version (PettingZoo's converter)

:class:`MECOffloadParallelEnv` documents the MDP. PettingZoo is imported only here and by the
``mec_env.multiagent_*`` modules (the ``multiagent`` extra); ``import mec_env`` does not import it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from mec_env.envs.common import as_choice
from mec_env.envs.spec_decode import ENV_ID as SPEC_ENV_ID
from mec_env.errors import AssignmentError, short_repr
from mec_env.layout import FlatLayout
from mec_env.multiagent_base import UserAgents

ENV_IDS = ("MECOffload-v0", "MECOffloadQueue-v0")  # the query-level envs; parallel_env also takes MECSpecDecode-v0


class MECOffloadParallelEnv(UserAgents):
    """
    ## Description

    Every user of ``MECOffload-v0`` (one slot a step) or ``MECOffloadQueue-v0`` (queues, arrivals and
    device energy) as an agent ``user_i`` of a PettingZoo ``ParallelEnv``. A thin shell over the
    single-agent environment, its system core and the evaluator: the agents' actions are assembled
    into the joint action and the environment is stepped once.

    ## Action Space

    ``Discrete(M + 1)`` per agent: 0 keeps its query local, j offloads it to ES j. An agent absent
    from the action dict stays local. An action that is not an integer in 0..M, or one for an agent
    not in ``agents``, raises :class:`~mec_env.errors.AssignmentError` naming the agent and the value.

    ## Observation Space

    A float32 ``Box`` per agent: its own entries of the environment's observation, then the entries
    every agent shares (broadcast), each group in the environment's key order;
    ``observation_layout()`` gives the slices. In ``MECOffload-v0`` (4 + 3 M entries):

    | Key                  | Shape | Meaning                                              | Min  | Max  |
    |----------------------|-------|------------------------------------------------------|------|------|
    | `above_tau`          | (1,)  | 1 if its alpha_i > tau (constraint 11)               | 0    | 1    |
    | `channel_gain_db`    | (M,)  | its row of normalised channel gains                  | -5   | 5    |
    | `local_capacity`     | (1,)  | its device's C_L,i / scenario's local capacity       | 0    | hi   |
    | `query_size`         | (1,)  | D_i in kbit                                          | 0    | 1000 |
    | `uncertainty`        | (1,)  | its query's SLM uncertainty alpha_i                  | 0    | 1    |
    | `es_background_load` | (M,)  | every ES's background load fraction (shared)         | 0    | 1    |
    | `es_capacity`        | (M,)  | every ES's C_j / ``es_capacity_flops`` (shared)      | 0    | c_hi |

    In ``MECOffloadQueue-v0`` the agent also sees ``energy_queue``, ``has_query`` and
    ``local_backlog`` (its own), and ``es_backlog`` and ``es_jobs`` (shared) in place of
    ``es_background_load``: 7 + 3 M entries. ``state()`` is the environment's whole observation,
    flattened (for centralised critics), in ``state_space``.

    ## Rewards

    Each agent gets its own share, or with ``team_reward=True`` the environment's reward:

    * ``MECOffload-v0``: ``-(N alpha_i d_i / objective(all local) + penalty_weight x P_i)``; the
      mean over the agents is the environment's reward;
    * ``MECOffloadQueue-v0``: ``-(sum of alpha x delay of its queries completed in the slot /
      (lambda t_L) + penalty_weight x P_i + energy_weight x Z_i / e_bar)``, whose sum over an
      episode tracks the environment's (whose holding cost also counts the queries still queued at
      the end).

    ``P_i`` is 1 if the agent's new query breaks constraint (11) (or, with
    ``penalty="wrong_answers"``, is answered wrongly).

    ## Starting State

    The environment's: ``reset(seed=...)`` resets it and every agent of ``possible_agents`` is
    in ``agents``.

    ## Episode End

    Agents stay for the whole episode (PettingZoo does not let an agent come back once it is done):
    in the queueing environment a user without a query this slot is idle, its ``has_query`` entry
    0 and its action ignored. Every agent is truncated together when the environment is. The
    slot's metrics (the environment's ``info``) are in the first agent's info.

    ## Arguments

    * ``env_id``: ``"MECOffload-v0"`` (default) or ``"MECOffloadQueue-v0"``.
    * ``team_reward``: every agent gets the environment's reward instead of its own share.
    * ``render_mode``: the environment's (``"ansi"``, ``"rgb_array"``, ``"human"``).
    * any argument of the environment (scenario fields included); ``flat_obs`` is ignored.

    ## Example

    >>> from mec_env.multiagent import parallel_env
    >>> par = parallel_env("MECOffload-v0", scenario="small")
    >>> observations, infos = par.reset(seed=0)
    >>> len(par.agents), par.action_space("user_0"), observations["user_0"].shape
    (8, Discrete(3), (10,))
    >>> actions = {agent: 1 for agent in par.agents}
    >>> observations, rewards, terminations, truncations, infos = par.step(actions)
    >>> len(rewards), "mean_delay_ms" in infos["user_0"], any(truncations.values())
    (8, True, False)
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


def parallel_env(env_id: str = "MECOffload-v0", **kwargs: Any) -> ParallelEnv:
    """The PettingZoo ``ParallelEnv`` of ``env_id``: ``MECOffload-v0`` or ``MECOffloadQueue-v0``
    (:class:`MECOffloadParallelEnv`), or ``MECSpecDecode-v0``
    (:class:`mec_env.multiagent_spec.MECSpecDecodeParallelEnv`)."""
    if env_id == SPEC_ENV_ID:
        from mec_env.multiagent_spec import MECSpecDecodeParallelEnv

        return MECSpecDecodeParallelEnv(**kwargs)
    return MECOffloadParallelEnv(env_id, **kwargs)


def env(env_id: str = "MECOffload-v0", **kwargs: Any):
    """The AEC version, through PettingZoo's ``parallel_to_aec``."""
    return parallel_to_aec(parallel_env(env_id, **kwargs))


__all__ = ["MECOffloadParallelEnv", "agent_observations", "parallel_env", "env", "ENV_IDS"]
