"""``MECOffload-v0``: every user's offloading decision of a time slot in one step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from mec_env.envs.common import (
    RENDER_MODES,
    Picture,
    Scenario,
    SlotEnvConfig,
    SlotShell,
    as_assignment,
    build_env_config,
    check_render_mode,
    check_reward_scale,
    slot_caption,
    slot_metrics,
)
from mec_env.credit import difference_rewards
from mec_env.evaluator import Evaluation, evaluate_valid
from mec_env.problem import Problem
from mec_env.slots import SlotProcess, observation_spaces

ENV_ID = "MECOffload-v0"


class MECOffloadEnv(SlotShell, gym.Env[dict[str, np.ndarray] | np.ndarray, np.ndarray]):
    """
    ## Description

    Mobile-edge LLM offloading of Kim et al., "Accuracy-Delay Trade-Off in LLM Offloading via
    Token-Level Uncertainty". Each of N users holds a query; it can answer it with its on-device
    small model (SLM) or upload it to one of M edge servers (ES) running the large model (LLM).
    Users on an ES share its bandwidth and compute and are interfered by users on other ESs.
    One step is one time slot: the agent assigns every user at once, the slot is evaluated by
    :func:`mec_env.evaluator.evaluate` (paper eqs. 2-11) and a new slot is drawn by the system
    core, :class:`mec_env.slots.SlotProcess`.

    ## Action Space

    ``MultiDiscrete([M + 1] * N)``: ``action[i] = 0`` keeps user i local, ``j`` in 1..M
    offloads it to ES j. A malformed action (wrong shape, out of range, non-integer) raises
    :class:`mec_env.errors.AssignmentError` before the environment changes.
    ``action_masks()`` gives the allowed actions as sb3-contrib's MaskablePPO expects them
    (N x (M + 1) booleans, user by user): all of them, or with ``enforce_constraint=True``
    every action but local for the users with alpha > tau, so that a masked agent holds
    constraint (11) by construction. Every action of the space is still accepted (an action
    outside the mask is evaluated and its violations penalised as usual).

    ## Observation Space

    A ``Dict`` (or, with ``flat_obs=True``, one float32 ``Box`` concatenating these flattened,
    in this order, equal to ``gymnasium.spaces.flatten`` of the Dict):

    | Key                  | Shape  | Meaning                                              | Min  | Max  |
    |----------------------|--------|------------------------------------------------------|------|------|
    | `above_tau`          | (N,)   | 1 if alpha_i > tau (constraint 11 forces offloading) | 0    | 1    |
    | `channel_gain_db`    | (N, M) | (10 log10 abs(h_ij)^2 + 90) / 40, clipped            | -5   | 5    |
    | `es_background_load` | (M,)   | background load fraction L_j of each ES (0 when off) | 0    | 1    |
    | `es_capacity`        | (M,)   | C_j (after background load) / ``es_capacity_flops``  | 0    | c_hi |
    | `local_capacity`     | (N,)   | C_L,i / scenario ``local_capacity_flops``            | 0    | hi   |
    | `query_size`         | (N,)   | D_i, the query's uplink size, in kbit                | 0    | 1000 |
    | `uncertainty`        | (N,)   | SLM uncertainty alpha_i of the user's query          | 0    | 1    |

    All entries are float32; ``hi`` and ``c_hi`` are the scenario's ``local_capacity_high`` and
    ``es_capacity_high`` (1.5 and 1.4 in the paper). The flat vector has N M + 2 M + 4 N entries
    (``env.unwrapped.layout``, a :class:`~mec_env.layout.FlatLayout`, gives the slices).

    ## Rewards

    ``reward = -J(a)`` with the penalised objective

        J(a) = objective(a) / objective(all local) + penalty_weight * P(a),

    ``objective`` = eq. (10), ``sum_i alpha_i d_i``; ``P(a)`` = fraction of users breaking
    constraint (11) (alpha_i > tau but local) for ``penalty="violations"``, or fraction of wrong
    answers, ``1 - accuracy``, for ``penalty="wrong_answers"``. All local scores
    ``J = 1 + penalty_weight * P``; GOA scores ``J < 1`` with ``P = 0`` on violations.

    ## Starting State

    ``reset`` draws the first slot with :func:`mec_env.problem.sample_problem`: user positions
    uniform over the area, Rayleigh fading, ES and local capacities, one query per user. The
    background load (if on) starts from its stationary distribution.

    ## Episode End

    No terminal state; the episode is truncated after ``episode_length`` slots. Every slot
    is a new problem (fading, positions, queries) drawn from ``self.np_random`` (drawn 32
    slots at a time by one batched sampler call, for speed; ``reset(seed=...)`` starts a new
    stream). With ``mobility_speed_mps > 0`` users instead keep their positions and take a
    random-walk step of ``speed x 1 s`` per slot, reflected at the area border (the fading is
    still redrawn). With ``background_load > 0`` each ES has an AR(1) background load fraction
    ``L_j`` in [0, 0.9] (mean ``background_load``, coefficient 0.9, stationary std 0.1) that
    removes that share of its compute: ``C_j <- C_j (1 - L_j)``. The bandwidth is a
    scenario-wide scalar of the model, so it is not reduced. Both options are off by default
    and in the paper scenario, where slots are i.i.d. Monte Carlo draws.

    ## Arguments

    * ``scenario``: scenario name (``configs/scenario/{name}.yaml``, shipped with the package),
      YAML path or :class:`~mec_env.config.ScenarioConfig`; default ``"paper"``.
    * ``render_mode``: None, ``"ansi"`` (a text line about the last slot), ``"rgb_array"`` (a
      picture of it: the area, the ESs, users coloured by their decision and sized by alpha,
      users per ES as bars) or ``"human"`` (that picture in a window, drawn every step).
    * the fields of :class:`~mec_env.envs.common.SlotEnvConfig` (each with its type, range
      and help): ``episode_length`` (10), ``penalty`` ("violations"), ``penalty_weight``
      (1.0), ``enforce_constraint`` (False), ``flat_obs`` (False), ``mobility_speed_mps``
      (0.0), ``background_load`` (0.0), ``difference_rewards`` (False);
    * any scenario field, e.g. ``n_users=20``, ``tau=0.8``, ``area_side_m=300.0`` or
      ``**{"queries.source": "synthetic"}`` (``n_users``, ``n_edge_servers``, ``tau`` may be
      None: the scenario's).

    A bad value raises :class:`mec_env.errors.ConfigError` naming the argument; an unknown
    keyword raises :class:`mec_env.errors.UnknownArgumentError`, a ``ConfigError`` and a
    ``TypeError`` (so toolkits that probe optional keywords, as SB3's ``make_vec_env`` and
    TorchRL's ``GymEnv`` do, fall back as they do for any environment).

    ## Vectorised

    ``gymnasium.make_vec("MECOffload-v0", num_envs=B, vectorization_mode="vector_entry_point")``
    gives the numpy-batched twin :class:`mec_env.envs.vector.MECOffloadVectorEnv`.

    ## Info

    After each step: ``mean_delay_ms``, ``objective`` (eq. 10, s), ``penalised_objective`` (J),
    ``accuracy``, ``offload_fraction``, ``es_users`` (M,: n_j, users offloaded to each ES),
    ``violations`` (count), ``slot``; with ``difference_rewards=True`` also ``difference_rewards`` (N,),
    each user's reward(a) - reward(a with that user local) (:mod:`mec_env.credit`; about 0.6 ms a slot at
    N = 120), the per-user credit :mod:`agents.difference_ppo` trains on. The current slot's
    :class:`~mec_env.problem.Problem` is ``env.unwrapped.problem`` (for scripted agents);
    :class:`baselines.wrappers.StrategyInfo` adds a scripted strategy's metrics on the same slot (``goa_*`` keys).

    ## Example

    >>> import gymnasium as gym
    >>> import mec_env
    >>> env = gym.make("MECOffload-v0", scenario="small")
    >>> obs, info = env.reset(seed=0)
    >>> obs["channel_gain_db"].shape, env.action_space
    ((8, 2), MultiDiscrete([3 3 3 3 3 3 3 3]))
    >>> from baselines import goa
    >>> obs, reward, terminated, truncated, info = env.step(goa(env.unwrapped.problem))
    >>> bool(reward > -1.0), info["violations"], terminated, truncated
    (True, 0, False, False)
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 1}

    def __init__(self, scenario: Scenario = "paper", render_mode: str | None = None, **kwargs: Any) -> None:
        self.cfg, self.options = build_env_config(SlotEnvConfig, f"{type(self).__name__}.__init__", scenario, kwargs)
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        o = self.options
        self.core = SlotProcess(self.cfg, o.mobility_speed_mps, o.background_load)
        check_reward_scale(self.cfg, o.penalty_weight, self.core.source)

        n, m = self.cfg.n_users, self.cfg.n_edge_servers
        self.action_space = spaces.MultiDiscrete(np.full(n, m + 1, dtype=np.int64))
        self.dict_observation_space, self.observation_space = observation_spaces(self.cfg, o.flat_obs)
        self.layout = self.core.layout  # where each entry sits in the flat observation

        # the slot decided by the last step: its problem, evaluation and ES background load (for render)
        self.last_slot: tuple[Problem, Evaluation, np.ndarray] | None = None
        self._picture = Picture(self.render_mode, self.cfg.area_side_m, m, ENV_ID, self.metadata["render_fps"])

    # --- gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.core.discard_block()  # a new seed starts a new stream of slots
        self.last_slot = None
        self.core.start(self.np_random)
        if self.render_mode == "human":
            self.render()
        return self.core.observation(self.options.flat_obs), {"slot": self.core.slot}

    def step(self, action: np.ndarray):
        problem = self.problem
        if problem is None:
            raise ResetNeeded("call reset() before step()")
        o = self.options
        assignment = as_assignment(action, self.cfg.n_users, self.cfg.n_edge_servers, f"{ENV_ID} action")

        ev = evaluate_valid(problem, assignment)
        info = slot_metrics(ev, self.core.local_objective, o.penalty, o.penalty_weight)
        info["slot"] = self.core.slot
        if o.difference_rewards:
            info["difference_rewards"] = difference_rewards(problem, assignment, info["penalised_objective"],
                                                            self.core.local_objective, o.penalty, o.penalty_weight)
        self.last_slot = (problem, ev, self.core.es_background_load)

        # draw the next slot even at truncation: the final observation is a real next state
        self.core.advance(self.np_random)
        truncated = self.core.slot >= o.episode_length
        if self.render_mode == "human":
            self.render()
        return self.core.observation(o.flat_obs), -float(info["penalised_objective"]), False, truncated, info

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() without a render_mode; make the env with render_mode='rgb_array', "
                            "'human' or 'ansi'")
            return None
        n, m = self.cfg.n_users, self.cfg.n_edge_servers
        where = f"{ENV_ID} slot {self.core.slot}/{self.options.episode_length}, N = {n}, M = {m}"
        problem, ev, load = self.last_slot or (self.problem, None, self.core.es_background_load)
        if self.render_mode == "ansi":
            return slot_caption(ev, where) + ("" if ev is None else f", users per ES {ev.es_users.tolist()}")
        if problem is None:
            raise ResetNeeded("call reset() before render()")
        return self._picture(problem, None if ev is None else ev.assignment, slot_caption(ev, where),
                             es_background_load=load if self.options.background_load > 0.0 else None)

    def close(self) -> None:
        self._picture.close()
        super().close()
