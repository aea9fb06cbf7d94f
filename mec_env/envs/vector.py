"""``MECOffload-v0`` batched: B copies of the joint environment stepped as numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from mec_env.envs.common import Scenario, build_scenario, check_int, env_arguments, slot_metrics
from mec_env.envs.joint import (
    ENV_ID,
    check_slot_args,
    next_load,
    observation_spaces,
    slot_dynamics,
    slot_observation,
    stationary_load,
)
from mec_env.errors import AssignmentError, ConfigError
from mec_env.model import BatchEvaluation, evaluate_batch, local_objective
from mec_env.problem import Problem, sample_problem
from mec_env.queries import make_query_source


class MECOffloadVectorEnv(VectorEnv):
    """
    The batched twin of :class:`~mec_env.envs.joint.MECOffloadEnv`: ``num_envs`` independent
    copies whose slots are drawn and evaluated as (B, N, M) numpy arrays by the same sampler
    (:func:`mec_env.problem.sample_problem` with ``batch=B``) and the same evaluator
    (:func:`mec_env.model.evaluate_batch`). The MDP of each copy is the single environment's:
    same spaces, reward, dynamics (mobility, background load) and arguments; see its docstring.

    ``gymnasium.make_vec("MECOffload-v0", num_envs=B, vectorization_mode="vector_entry_point")``
    builds it; :class:`agents.vector.SB3VecEnv` hands it to Stable-Baselines3.

    Differences from ``SyncVectorEnv`` over B single environments, all of them documented
    Gymnasium options:

    * Randomness comes from one ``self.np_random`` for the whole batch (as CartPole's vector
      env), so copy ``b`` does not replay the single environment seeded alike; each copy's
      slots are still i.i.d. draws of the same law, and a seed fixes the whole batch.
    * Every copy starts together and episodes have a fixed length, so all copies truncate on the
      same step. Autoreset is ``SAME_STEP``: the step that truncates returns the new episode's
      first observation, with the observation that would have followed in
      ``info["final_obs"]`` (mask ``info["_final_obs"]``) and that step's metrics in ``info``.
    * ``info`` holds one array per key with a leading batch axis (Gymnasium's vector info), no
      ``_key`` masks for the per-step metrics, which every copy has on every step.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 64,
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
        render_mode: str | None = None,
        **scenario_overrides: Any,
    ) -> None:
        self.num_envs = check_int("num_envs", num_envs, 1)
        self.cfg = build_scenario(scenario, n_users, n_edge_servers, tau, scenario_overrides,
                                  env_arguments(type(self)))
        vars(self).update(check_slot_args(episode_length, penalty, penalty_weight, flat_obs, mobility_speed_mps,
                                          background_load))
        if render_mode is not None:
            raise ConfigError("render_mode", render_mode, "None (the batched environment does not render)")
        self.render_mode = None
        self._source = make_query_source(self.cfg.queries)

        n, m = self.cfg.n_users, self.cfg.n_edge_servers
        self.single_action_space = spaces.MultiDiscrete(np.full(n, m + 1, dtype=np.int64))
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.dict_observation_space, self.single_observation_space = observation_spaces(self.cfg, self.flat_obs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

        self.problem: Problem | None = None  # batched: every array has a leading axis B
        self.last_evaluation: BatchEvaluation | None = None
        self._local_objective = np.full(self.num_envs, np.nan)
        self._slot = 0
        self._load = np.zeros((self.num_envs, m))
        self._user_xy: np.ndarray | None = None

    # --- slot dynamics (the single environment's, over a batch axis) ------------------------

    def _draw_slots(self) -> None:
        problem = sample_problem(self.cfg, self.np_random, source=self._source, batch=self.num_envs)
        self.problem, self._user_xy = slot_dynamics(problem, self.cfg, self.np_random, self._user_xy,
                                                    self.mobility_speed_mps, self.background_load, self._load)
        self._local_objective = local_objective(self.problem)

    def _start_episodes(self) -> None:
        self._slot = 0
        self._user_xy = None
        m = self.cfg.n_edge_servers
        self._load = (stationary_load(self.np_random, self.background_load, (self.num_envs, m))
                      if self.background_load > 0.0 else np.zeros((self.num_envs, m)))
        self._draw_slots()

    def _observation(self):
        return slot_observation(self.problem, self._load, self.cfg, self.flat_obs)

    # --- gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.last_evaluation = None
        self._start_episodes()
        return self._observation(), {"slot": np.zeros(self.num_envs, dtype=np.int64)}

    def step(self, actions: np.ndarray):
        if self.problem is None:
            raise ResetNeeded("call reset() before step()")
        a = np.asarray(actions)
        shape = (self.num_envs, self.cfg.n_users)
        if a.shape != shape:
            raise AssignmentError(f"{ENV_ID} batched actions have shape {a.shape}; expected (B, N) = {shape}: "
                                  f"one assignment per copy, 0 (local) .. M = {self.cfg.n_edge_servers} (ES index)")
        ev = evaluate_batch(self.problem, a)  # validates the entries before any state changes
        info = slot_metrics(ev, self._local_objective, self.penalty, self.penalty_weight)
        info["slot"] = np.full(self.num_envs, self._slot, dtype=np.int64)
        rewards = -np.asarray(info["penalised_objective"], dtype=np.float64)
        self.last_evaluation = ev

        self._slot += 1
        if self.background_load > 0.0:
            self._load = next_load(self.np_random, self.background_load, self._load)
        self._draw_slots()
        obs = self._observation()
        truncated = self._slot >= self.episode_length
        if truncated:
            info["final_obs"] = obs
            info["_final_obs"] = np.ones(self.num_envs, dtype=bool)
            self._start_episodes()
            obs = self._observation()
        return (obs, rewards, np.zeros(self.num_envs, dtype=bool), np.full(self.num_envs, truncated), info)
