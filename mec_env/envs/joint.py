"""``MECOffload-v0``: every user's offloading decision of a time slot in one step."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from mec_env.config import ScenarioConfig
from mec_env.envs.common import (
    env_arguments,
    PENALTIES,
    GAIN_OBS_CLIP,
    Scenario,
    as_assignment,
    build_scenario,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_render_mode,
    normalised_gain_db,
    normalised_local_capacity,
    slot_metrics,
)
from mec_env.model import Evaluation, evaluate, local_objective
from mec_env.problem import Problem, check_received_power, path_gain, sample_problem, user_es_distance
from mec_env.queries import make_query_source

ENV_ID = "MECOffload-v0"
OBS_KEYS = ("channel_gain_db", "es_load", "local_capacity", "uncertainty")  # gymnasium's Dict order (sorted)

SLOT_SECONDS = 1.0  # duration of a slot: a user at speed v moves v x SLOT_SECONDS per step
LOAD_MAX = 0.9  # background load fraction is kept in [0, LOAD_MAX]
LOAD_AR_COEF = 0.9  # AR(1) coefficient of the background load (slot-to-slot correlation)
LOAD_STD = 0.1  # stationary standard deviation of the background load around its mean
SLOT_BLOCK = 32  # slots drawn per sampler call: one batched draw amortises numpy's per-call cost


def _reflect(x: np.ndarray, side: float) -> np.ndarray:
    """Fold coordinates back into [0, side] as if reflected at the border (any step length)."""
    x = np.mod(x, 2.0 * side)
    return np.where(x > side, 2.0 * side - x, x)


def relocate(problem: Problem, cfg: ScenarioConfig, user_xy: np.ndarray) -> Problem:
    """The same problem with users moved to ``user_xy``: large-scale gain recomputed.

    The slot's small-scale fading is kept: ``gain`` is rescaled by the ratio of the path gains
    (:func:`mec_env.problem.path_gain`) at the new and the drawn distances, both floored at
    ``cfg.min_distance_m`` as in :func:`mec_env.problem.problem_from_queries`.
    """
    if problem.user_xy is None or problem.es_xy is None:
        raise ValueError("relocate needs a problem with user_xy and es_xy (one from sample_problem)")

    def gain_at(xy: np.ndarray) -> np.ndarray:
        return path_gain(user_es_distance(xy, problem.es_xy, cfg.min_distance_m), cfg.carrier_hz, cfg.path_loss)

    gain = problem.gain * (gain_at(user_xy) / gain_at(problem.user_xy))
    check_received_power(cfg, gain)
    return dataclasses.replace(problem, gain=gain, user_xy=user_xy)


def stationary_load(rng: np.random.Generator, mean: float, shape: tuple[int, ...]) -> np.ndarray:
    """Background load fractions drawn from the AR(1) process's stationary law, clipped to [0, LOAD_MAX]."""
    return np.clip(mean + LOAD_STD * rng.standard_normal(shape), 0.0, LOAD_MAX)


def next_load(rng: np.random.Generator, mean: float, load: np.ndarray) -> np.ndarray:
    """One AR(1) step of the background load (any shape)."""
    innovation = LOAD_STD * math.sqrt(1.0 - LOAD_AR_COEF**2) * rng.standard_normal(load.shape)
    return np.clip(mean + LOAD_AR_COEF * (load - mean) + innovation, 0.0, LOAD_MAX)


def random_walk(rng: np.random.Generator, user_xy: np.ndarray, speed_mps: float, side_m: float) -> np.ndarray:
    """Every user (..., N, 2) moves ``speed x SLOT_SECONDS`` in a uniform direction, reflected at the border."""
    angle = rng.uniform(0.0, 2.0 * math.pi, size=user_xy.shape[:-1])
    step = speed_mps * SLOT_SECONDS * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    return _reflect(user_xy + step, side_m)


def slot_dynamics(problem: Problem, cfg: ScenarioConfig, rng: np.random.Generator, user_xy: np.ndarray | None,
                  mobility_speed_mps: float, background_load: float, load: np.ndarray
                  ) -> tuple[Problem, np.ndarray | None]:
    """Mobility and background load on top of a freshly drawn slot (or batch of slots).

    With mobility, positions persist across slots: the episode's first slot keeps its drawn
    positions (``user_xy`` None), later ones take a random-walk step from ``user_xy``. With a
    background load, each ES loses that fraction of its compute. Returns ``(problem, user_xy)``.
    """
    if mobility_speed_mps > 0.0:
        user_xy = problem.user_xy if user_xy is None else random_walk(rng, user_xy, mobility_speed_mps,
                                                                      cfg.area_side_m)
        problem = relocate(problem, cfg, user_xy)
    if background_load > 0.0:
        problem = dataclasses.replace(problem, es_capacity=problem.es_capacity * (1.0 - load))
    return problem, user_xy


def check_slot_args(episode_length: Any, penalty: Any, penalty_weight: Any, flat_obs: Any, mobility_speed_mps: Any,
                    background_load: Any) -> dict[str, Any]:
    """The joint MDP's arguments, checked (shared by the single and the batched environment)."""
    return {
        "episode_length": check_int("episode_length", episode_length, 1),
        "penalty": check_choice("penalty", penalty, PENALTIES),
        "penalty_weight": check_float("penalty_weight", penalty_weight, 0.0),
        "flat_obs": check_bool("flat_obs", flat_obs),
        "mobility_speed_mps": check_float("mobility_speed_mps", mobility_speed_mps, 0.0),
        "background_load": check_float("background_load", background_load, 0.0, LOAD_MAX),
    }


def slot_features(problem: Problem, cfg: ScenarioConfig) -> dict[str, np.ndarray]:
    """The per-user observation entries of a slot (or a batch of slots), float32."""
    return {
        "channel_gain_db": normalised_gain_db(problem.gain),
        "local_capacity": normalised_local_capacity(problem.local_capacity, cfg),
        "uncertainty": np.clip(problem.alpha, 0.0, 1.0).astype(np.float32),
    }


def slot_observation(problem: Problem, load: np.ndarray, cfg: ScenarioConfig, flat: bool,
                     features: dict[str, np.ndarray] | None = None):
    """The observation of a slot (or a batch of slots: every entry gets the leading axis).

    ``features``: :func:`slot_features` of ``problem`` if already computed (for a block of slots).
    """
    features = features if features is not None else slot_features(problem, cfg)
    obs = {k: features[k] if k != "es_load" else load.astype(np.float32) for k in OBS_KEYS}
    if flat:
        batch = problem.batch_shape
        return np.concatenate([obs[k].reshape(batch + (-1,)) for k in OBS_KEYS], axis=-1)
    return obs


def observation_spaces(cfg: ScenarioConfig, flat: bool) -> tuple[spaces.Dict, spaces.Space]:
    """``(dict space, space observed)`` of one slot: the Dict, or its flattening with ``flat``."""
    n, m = cfg.n_users, cfg.n_edge_servers
    dict_space = spaces.Dict({
        "channel_gain_db": spaces.Box(-GAIN_OBS_CLIP, GAIN_OBS_CLIP, shape=(n, m), dtype=np.float32),
        "es_load": spaces.Box(0.0, 1.0, shape=(m,), dtype=np.float32),
        "local_capacity": spaces.Box(0.0, cfg.local_capacity_high, shape=(n,), dtype=np.float32),
        "uncertainty": spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
    })
    return dict_space, (spaces.flatten_space(dict_space) if flat else dict_space)


class MECOffloadEnv(gym.Env[dict[str, np.ndarray] | np.ndarray, np.ndarray]):
    """
    ## Description

    Mobile-edge LLM offloading of Kim et al., "Accuracy-Delay Trade-Off in LLM Offloading via
    Token-Level Uncertainty". Each of N users holds a query; it can answer it with its on-device
    small model (SLM) or upload it to one of M edge servers (ES) running the large model (LLM).
    Users on an ES share its bandwidth and compute and are interfered by users on other ESs.
    One step is one time slot: the agent assigns every user at once, the slot is evaluated by
    :func:`mec_env.model.evaluate` (paper eqs. 2-11) and a new slot is drawn.

    ## Action Space

    ``MultiDiscrete([M + 1] * N)``: ``action[i] = 0`` keeps user i local, ``j`` in 1..M
    offloads it to ES j. A malformed action (wrong shape, out of range, non-integer) raises
    :class:`mec_env.errors.AssignmentError` before the environment changes.

    ## Observation Space

    A ``Dict`` (or, with ``flat_obs=True``, one float32 ``Box`` concatenating these flattened,
    in this order, equal to ``gymnasium.spaces.flatten`` of the Dict):

    | Key               | Shape  | Meaning                                                 | Min  | Max  |
    |-------------------|--------|---------------------------------------------------------|------|------|
    | `channel_gain_db` | (N, M) | (10 log10 abs(h_ij)^2 + 90) / 40, clipped               | -5   | 5    |
    | `es_load`         | (M,)   | background load fraction of each ES this slot (0 off)   | 0    | 1    |
    | `local_capacity`  | (N,)   | C_L,i / scenario ``local_capacity_flops``               | 0    | hi   |
    | `uncertainty`     | (N,)   | SLM uncertainty alpha_i of the user's query             | 0    | 1    |

    All entries are float32; ``hi`` is the scenario's ``local_capacity_high`` (1.5 in the paper).

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
    stream); with
    ``mobility_speed_mps > 0`` users instead keep their positions and take a random-walk step
    of ``speed x 1 s`` per slot, reflected at the area border (the fading is still redrawn).
    With ``background_load > 0`` each ES has an AR(1) background load fraction ``L_j`` in
    [0, 0.9] (mean ``background_load``, coefficient 0.9, stationary std 0.1) that removes that
    share of its compute: ``C_j <- C_j (1 - L_j)``. The bandwidth is a scenario-wide scalar of
    the model, so it is not reduced. Both options are off by default and in the paper
    scenario, where slots are i.i.d. Monte Carlo draws.

    ## Arguments

    * ``scenario``: scenario name (``configs/scenario/{name}.yaml``), YAML path or
      :class:`~mec_env.config.ScenarioConfig`; default ``"paper"``.
    * ``n_users``, ``n_edge_servers``, ``tau``: override the scenario's N, M and tau.
    * ``episode_length``: slots per episode T, default 10.
    * ``penalty``: ``"violations"`` (default) or ``"wrong_answers"``.
    * ``penalty_weight``: lambda >= 0, default 1.0.
    * ``flat_obs``: one Box observation (for SB3's ``MlpPolicy``), default False.
    * ``mobility_speed_mps``: user speed in m/s; 0 (default) = positions redrawn every slot.
    * ``background_load``: mean background load fraction in [0, 0.9]; 0 (default) = off.
    * ``info_baselines``: also report GOA's metrics on the same slot (``goa_*`` keys); costly.
    * ``render_mode``: None or ``"ansi"`` (a text summary of the last slot).
    * ``**scenario_overrides``: scenario fields, e.g. ``area_side_m=300.0`` or
      ``**{"queries.source": "synthetic"}``.

    Bad values raise :class:`mec_env.errors.ConfigError` naming the argument.

    ## Vectorised

    ``gymnasium.make_vec("MECOffload-v0", num_envs=B, vectorization_mode="vector_entry_point")``
    gives the numpy-batched twin :class:`mec_env.envs.vector.MECOffloadVectorEnv`.

    ## Info

    After each step: ``mean_delay_ms``, ``objective`` (eq. 10, s), ``penalised_objective`` (J),
    ``accuracy``, ``offload_fraction``, ``es_counts`` (M,), ``violations`` (count), ``slot``;
    with ``info_baselines=True`` the same keys prefixed ``goa_``. The current slot's
    :class:`~mec_env.problem.Problem` is ``env.unwrapped.problem`` (for scripted agents).

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

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        scenario: Scenario = "paper",
        n_users: int | None = None,
        n_edge_servers: int | None = None,
        tau: float | None = None,
        episode_length: int = 10,
        penalty: str = "violations",
        penalty_weight: float = 1.0,
        flat_obs: bool = False,
        mobility_speed_mps: float = 0.0,
        background_load: float = 0.0,
        info_baselines: bool = False,
        render_mode: str | None = None,
        **scenario_overrides: Any,
    ) -> None:
        self.cfg = build_scenario(scenario, n_users, n_edge_servers, tau, scenario_overrides,
                                  env_arguments(type(self)))
        vars(self).update(check_slot_args(episode_length, penalty, penalty_weight, flat_obs, mobility_speed_mps,
                                          background_load))
        self.info_baselines = check_bool("info_baselines", info_baselines)
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self._source = make_query_source(self.cfg.queries)  # built once: a trace table loads once

        n, m = self.cfg.n_users, self.cfg.n_edge_servers
        self.action_space = spaces.MultiDiscrete(np.full(n, m + 1, dtype=np.int64))
        self.dict_observation_space, self.observation_space = observation_spaces(self.cfg, self.flat_obs)

        self.problem: Problem | None = None  # the current slot
        self.last_evaluation: Evaluation | None = None  # the slot decided by the last step
        self._local_objective = math.nan  # objective(all local) of the current slot
        self._slot = 0
        self._load = np.zeros(m)
        self._user_xy: np.ndarray | None = None
        self._block: Problem | None = None  # drawn slots not yet used (batched), see _draw_slot
        self._block_features: dict[str, np.ndarray] = {}
        self._block_local_objective = np.zeros(0)
        self._block_pos = 0
        self._features: dict[str, np.ndarray] = {}

    # --- slot dynamics ---------------------------------------------------------------------

    def _draw_slot(self) -> None:
        """Draw the current slot's problem; mobility and background load act on top of it.

        Slots come from blocks of ``SLOT_BLOCK`` i.i.d. draws (one batched
        :func:`~mec_env.problem.sample_problem` call); ``reset(seed=...)`` discards the block.
        """
        if self._block is None or self._block_pos == SLOT_BLOCK:
            self._block = sample_problem(self.cfg, self.np_random, source=self._source, batch=SLOT_BLOCK)
            self._block_pos = 0
            self._block_features = slot_features(self._block, self.cfg)
            self._block_local_objective = local_objective(self._block)  # neither mobility nor load changes it
        problem = self._block.instance(self._block_pos)
        features = {k: v[self._block_pos] for k, v in self._block_features.items()}
        self._block_pos += 1
        problem, self._user_xy = slot_dynamics(problem, self.cfg, self.np_random, self._user_xy,
                                               self.mobility_speed_mps, self.background_load, self._load)
        if self.mobility_speed_mps > 0.0:
            features = slot_features(problem, self.cfg)  # the gains moved with the users
        self.problem = problem
        self._features = features
        self._local_objective = float(self._block_local_objective[self._block_pos - 1])

    def _observation(self) -> dict[str, np.ndarray] | np.ndarray:
        return slot_observation(self.problem, self._load, self.cfg, self.flat_obs, self._features)

    # --- gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._block = None  # a new seed starts a new stream of slots
        self._slot = 0
        self._user_xy = None
        m = self.cfg.n_edge_servers
        self._load = stationary_load(self.np_random, self.background_load, (m,)) if self.background_load > 0.0 \
            else np.zeros(m)
        self.last_evaluation = None
        self._draw_slot()
        return self._observation(), {"slot": self._slot}

    def step(self, action: np.ndarray):
        if self.problem is None:
            raise ResetNeeded("call reset() before step()")
        n, m = self.cfg.n_users, self.cfg.n_edge_servers
        assignment = as_assignment(action, n, m, f"{ENV_ID} action")  # raises before any state changes

        ev = evaluate(self.problem, assignment)
        info = slot_metrics(ev, self._local_objective, self.penalty, self.penalty_weight)
        info["slot"] = self._slot
        if self.info_baselines:
            from baselines.greedy import goa  # baselines build on mec_env; import on use

            goa_ev = evaluate(self.problem, goa(self.problem))
            info.update(slot_metrics(goa_ev, self._local_objective, self.penalty, self.penalty_weight, prefix="goa_"))
        reward = -info["penalised_objective"]
        self.last_evaluation = ev

        # draw the next slot even at truncation: the final observation is a real next state
        self._slot += 1
        if self.background_load > 0.0:
            self._load = next_load(self.np_random, self.background_load, self._load)
        self._draw_slot()
        truncated = self._slot >= self.episode_length
        return self._observation(), float(reward), False, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        n, m = self.cfg.n_users, self.cfg.n_edge_servers
        head = f"{ENV_ID} slot {self._slot}/{self.episode_length}, N = {n}, M = {m}"
        ev = self.last_evaluation
        if ev is None:
            return head + ": no slot decided yet"
        return (f"{head}: last slot mean delay {1e3 * ev.mean_delay:.2f} ms, accuracy {ev.accuracy:.3f}, "
                f"offloaded {ev.n_offloaded}/{n}, per ES {ev.es_load.tolist()}, violations {ev.n_violations}")
