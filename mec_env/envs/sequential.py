"""``MECOffloadSeq-v0``: one user's offloading decision per step, users in index order."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from mec_env.envs.common import (
    RENDER_MODES,
    EnvConfig,
    Picture,
    Scenario,
    SlotShell,
    allowed_actions,
    as_choice,
    build_env_config,
    check_render_mode,
    check_reward_scale,
    penalised_objective,
    slot_caption,
    slot_metrics,
)
from mec_env.layout import FlatLayout
from mec_env.evaluator import Evaluation, GreedyState, evaluate_valid, join_delays
from mec_env.slots import (
    GAIN_OBS_CLIP,
    RATIO_OBS_MAX,
    SlotProcess,
    nominal_local_delay,
    normalised_gain_db,
    normalised_local_capacity,
)

ENV_ID = "MECOffloadSeq-v0"


def flat_layout(m: int) -> FlatLayout:
    """The observation vector's entries (length 3M + 5), in its order (not sorted: the current user's, then
    the ES loads, the progress and the join delays)."""
    return FlatLayout({"channel_gain_db": (m,), "uncertainty": (1,), "local_capacity": (1,), "local_delay": (1,),
                       "above_tau": (1,), "es_users": (m,), "progress": (1,), "join_delay_ratio": (m,)})


def observation_layout(m: int) -> dict[str, slice]:
    """Where each feature sits in the observation vector (length 3M + 5)."""
    return flat_layout(m).slices


class MECOffloadSeqEnv(SlotShell, gym.Env[np.ndarray, np.int64]):
    """
    ## Description

    The offloading problem of :class:`mec_env.envs.joint.MECOffloadEnv` decided one user at a
    time, for agents with a ``Discrete`` action (DQN and the like). An episode is one time
    slot: users 0, 1, ..., N-1 are decided in index order, each seeing the loads and
    interference the decisions so far have created.

    ## Action Space

    ``Discrete(M + 1)`` for the current user: 0 = local, j in 1..M = ES j. A malformed action
    (not one integer, out of range, non-integer float) raises
    :class:`mec_env.errors.AssignmentError` before the environment changes. ``action_masks()``
    gives the current user's M + 1 allowed actions (MaskablePPO's shape for ``Discrete``): all
    of them, or with ``enforce_constraint=True`` all but local when its alpha > tau
    (constraint (11)); an action outside the mask is still accepted and penalised as usual.

    ## Observation Space

    A float32 ``Box`` of length 3M + 5 (``observation_layout(M)`` gives the slices); i is the
    current user, k the number of users decided:

    | Index             | Meaning                                                        | Min | Max  |
    |-------------------|----------------------------------------------------------------|-----|------|
    | 0 .. M-1          | (10 log10 abs(h_ij)^2 + 90) / 40 to each ES j, clipped         | -5  | 5    |
    | M                 | uncertainty alpha_i                                            | 0   | 1    |
    | M+1               | C_L,i / scenario ``local_capacity_flops``                      | 0   | hi   |
    | M+2               | local delay t_L,i / nominal local delay (see below), clipped   | 0   | 10   |
    | M+3               | 1 if alpha_i > tau (constraint 11 asks to offload) else 0      | 0   | 1    |
    | M+4 .. 2M+3       | n_j / N: users offloaded to each ES so far, over N             | 0   | 1    |
    | 2M+4              | progress k / N                                                 | 0   | 1    |
    | 2M+5 .. 3M+4      | edge delay if i joined ES j now / t_L,i, clipped               | 0   | 10   |

    ``hi`` is the scenario's ``local_capacity_high``. The nominal local delay is the SLM
    workload of one query over the scenario's nominal local capacity (a fixed scale). The edge
    delays come from :func:`mec_env.evaluator.join_delays` with the current loads and
    interference, so a value below 1 means offloading to that ES now is faster than staying
    local. After the last user the user features and edge delays are 0 and the progress is 1.

    ## Rewards

    With J the penalised objective of the joint environment,
    ``J(a) = objective(a) / objective(all local) + penalty_weight * P(a)``, evaluated on the
    partial assignment ``a_k`` in which undecided users are local, the reward of step k is
    ``-(J(a_k) - J(a_{k-1}))``. Undecided users count as local for the penalty too (a user
    with alpha > tau counts as a violation until it is offloaded), so ``a_0`` is all local and
    the sum telescopes exactly: an episode's return is ``J(all local) - J(final assignment)``,
    the improvement over Local all, with J the same as in ``MECOffload-v0``.

    ## Starting State

    ``reset`` draws the slot with :func:`mec_env.problem.sample_problem`; no user is decided.

    ## Episode End

    Terminated after the N-th decision. ``info`` then carries the metrics of the final
    assignment, with the keys of the joint environment.

    ## Arguments

    ``scenario``, ``render_mode`` (the picture shows the decisions so far and rings the user
    to decide next) and scenario fields as in :class:`~mec_env.envs.joint.MECOffloadEnv`; the
    fields of :class:`~mec_env.envs.common.EnvConfig`: ``penalty``, ``penalty_weight``,
    ``enforce_constraint``.

    ## Info

    Every step: ``user`` (the user just decided) and ``penalised_objective`` (J of the
    partial assignment). At the end also ``mean_delay_ms``, ``objective``, ``accuracy``,
    ``offload_fraction``, ``es_users``, ``violations``. The slot's problem is
    ``env.unwrapped.problem``.

    ## Example

    >>> import gymnasium as gym
    >>> import mec_env
    >>> env = gym.make("MECOffloadSeq-v0", scenario="small")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.action_space
    ((11,), Discrete(3))
    >>> total, done = 0.0, False
    >>> while not done:
    ...     obs, reward, done, truncated, info = env.step(0)
    ...     total += reward
    >>> total, info["offload_fraction"]
    (0.0, 0.0)
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4}

    def __init__(self, scenario: Scenario = "paper", render_mode: str | None = None, **kwargs: Any) -> None:
        self.cfg, self.options = build_env_config(EnvConfig, f"{type(self).__name__}.__init__", scenario, kwargs)
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.core = SlotProcess(self.cfg, block=None)  # one slot per episode, drawn on reset
        check_reward_scale(self.cfg, self.options.penalty_weight, self.core.source)
        self._delay_scale = nominal_local_delay(self.cfg)

        m = self.cfg.n_edge_servers
        self.layout = observation_layout(m)
        size = flat_layout(m).size
        low = np.zeros(size, dtype=np.float32)
        high = np.ones(size, dtype=np.float32)
        low[self.layout["channel_gain_db"]] = -GAIN_OBS_CLIP
        high[self.layout["channel_gain_db"]] = GAIN_OBS_CLIP
        high[self.layout["local_capacity"]] = self.cfg.local_capacity_high
        high[self.layout["local_delay"]] = RATIO_OBS_MAX
        high[self.layout["join_delay_ratio"]] = RATIO_OBS_MAX
        self.action_space = spaces.Discrete(m + 1)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

        self.state: GreedyState | None = None  # the partial assignment, users per ES and interference
        self.last_evaluation: Evaluation | None = None  # of the partial assignment after the last step
        self._k = 0  # users decided so far; the current user is self._k
        self._j_prev = math.nan  # J of the partial assignment before the current decision
        self._picture = Picture(self.render_mode, self.cfg.area_side_m, m, ENV_ID, self.metadata["render_fps"])

    @property
    def current_user(self) -> int | None:
        """Index of the user to decide next; None once every user is decided."""
        return self._k if self.problem is not None and self._k < self.problem.n_users else None

    def action_masks(self) -> np.ndarray:
        """Allowed actions of the current user: (M + 1,) bool (all of them once every user is decided)."""
        if self.problem is None:
            raise ResetNeeded("call reset() before action_masks()")
        i = self.current_user
        if i is None:
            return np.ones(self.cfg.n_edge_servers + 1, dtype=bool)
        return allowed_actions(self.problem, self.options.enforce_constraint)[i]

    def _j(self, assignment: np.ndarray) -> tuple[Evaluation, float]:
        ev = evaluate_valid(self.problem, assignment)
        return ev, penalised_objective(ev, self.core.local_objective, self.options.penalty,
                                       self.options.penalty_weight)

    def _observation(self) -> np.ndarray:
        p, lay, n = self.problem, self.layout, self.problem.n_users
        obs = np.zeros(self.observation_space.shape, dtype=np.float64)
        obs[lay["es_users"]] = self.state.es_users / n
        obs[lay["progress"]] = self._k / n
        i = self._k
        if i < n:
            t_local = p.local_delay[i]
            obs[lay["channel_gain_db"]] = normalised_gain_db(p.gain[i])
            obs[lay["uncertainty"]] = p.alpha[i]
            obs[lay["local_capacity"]] = normalised_local_capacity(p.local_capacity[i:i + 1], self.cfg)
            obs[lay["local_delay"]] = t_local / self._delay_scale
            obs[lay["above_tau"]] = float(p.alpha[i] > p.tau)
            edge = join_delays(p, np.array([i]), self.state.es_users, self.state.interference)[0]
            obs[lay["join_delay_ratio"]] = edge / t_local
        return np.clip(obs, self.observation_space.low, self.observation_space.high).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.core.start(self.np_random)
        self.state = GreedyState.empty(self.problem)
        self._k = 0
        self.last_evaluation, self._j_prev = self._j(self.state.assignment)  # J(all local)
        if self.render_mode == "human":
            self.render()
        return self._observation(), {"user": 0}

    def step(self, action: int | np.integer | np.ndarray):
        if self.problem is None:
            raise ResetNeeded("call reset() before step()")
        es = as_choice(action, self.cfg.n_edge_servers, f"{ENV_ID} action")  # raises before any state changes
        n = self.problem.n_users
        if self._k >= n:
            raise ResetNeeded(f"all {n} users are decided; call reset() to start a new slot")
        user = self._k
        if es > 0:
            self.state.offload(self.problem, user, es - 1)
        self._k += 1
        ev, j = self._j(self.state.assignment)
        reward = -(j - self._j_prev)
        self._j_prev, self.last_evaluation = j, ev

        terminated = self._k == n
        info: dict[str, Any] = {"user": user, "penalised_objective": j}
        if terminated:
            info.update(slot_metrics(ev, self.core.local_objective, self.options.penalty, self.options.penalty_weight))
        if self.render_mode == "human":
            self.render()
        return self._observation(), float(reward), terminated, False, info

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None or self.problem is None:
            return None
        n = self.problem.n_users
        where = f"{ENV_ID} user {self._k}/{n}"
        if self.render_mode == "ansi":
            return (f"{where}, users per ES {self.state.es_users.tolist()}, decisions so far "
                    f"{self.state.assignment[: self._k].tolist()}, J = {self._j_prev:.4f}")
        decided = np.where(np.arange(n) < self._k, self.state.assignment, -1)  # -1: not decided yet
        return self._picture(self.problem, decided, slot_caption(self.last_evaluation, where),
                             current_user=self.current_user)

    def close(self) -> None:
        self._picture.close()
        super().close()
