"""``MECOffload-v0`` batched: B copies of the joint environment stepped as numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from mec_env.envs.common import (
    BatchedEnvConfig,
    Scenario,
    SlotShell,
    build_env_config,
    check_render_mode,
    check_reward_scale,
    slot_caption,
    slot_metrics,
)
from mec_env.envs.joint import ENV_ID
from mec_env.errors import AssignmentError
from mec_env.credit import difference_rewards
from mec_env.evaluator import BatchEvaluation, evaluate_batch_valid, evaluate_valid, validate_assignment
from mec_env.problem import Problem
from mec_env.slots import SlotProcess, observation_spaces


class MECOffloadVectorEnv(SlotShell, VectorEnv):
    """
    ## Description

    The batched twin of :class:`~mec_env.envs.joint.MECOffloadEnv`: ``num_envs`` = B independent
    copies whose slots are drawn and evaluated as (B, N, M) numpy arrays by the same system core
    (:class:`mec_env.slots.SlotProcess` with ``num_copies=B``) and the same evaluator
    (:func:`mec_env.evaluator.evaluate_batch`). The MDP of each copy is the single environment's:
    same spaces, reward, dynamics (mobility, background load) and action masks.
    ``gymnasium.make_vec("MECOffload-v0", num_envs=B, vectorization_mode="vector_entry_point")``
    builds it; :class:`agents.vector.SB3VecEnv` hands it to Stable-Baselines3.

    ## Action Space

    ``MultiDiscrete`` of shape (B, N), every entry in 0..M: row b is copy b's assignment
    (0 = local, j = ES j). ``action_masks()`` is (B, N x (M + 1)).

    ## Observation Space

    The single environment's ``Dict`` with a leading batch axis (or, with ``flat_obs=True``, a
    (B, N M + 2 M + 4 N) ``Box``):

    | Key                  | Shape     | Meaning                                              | Min  | Max  |
    |----------------------|-----------|------------------------------------------------------|------|------|
    | `above_tau`          | (B, N)    | 1 if alpha_i > tau (constraint 11 forces offloading) | 0    | 1    |
    | `channel_gain_db`    | (B, N, M) | (10 log10 abs(h_ij)^2 + 90) / 40, clipped            | -5   | 5    |
    | `es_background_load` | (B, M)    | background load fraction L_j of each ES (0 when off) | 0    | 1    |
    | `es_capacity`        | (B, M)    | C_j (after background load) / ``es_capacity_flops``  | 0    | c_hi |
    | `local_capacity`     | (B, N)    | C_L,i / scenario ``local_capacity_flops``            | 0    | hi   |
    | `query_size`         | (B, N)    | D_i, the query's uplink size, in kbit                | 0    | 1000 |
    | `uncertainty`        | (B, N)    | SLM uncertainty alpha_i of the user's query          | 0    | 1    |

    ## Rewards

    (B,): each copy's ``-J(a)``, as in the single environment.

    ## Episode End

    Every copy starts together and episodes have a fixed length (``episode_length`` slots), so all
    copies truncate on the same step. Autoreset is ``SAME_STEP``: the step that truncates returns the
    new episode's first observation, with the observation that would have followed in
    ``info["final_obs"]`` (mask ``info["_final_obs"]``) and that step's metrics in ``info``.

    ## Arguments

    The fields of :class:`~mec_env.envs.common.BatchedEnvConfig`: the joint environment's plus
    ``num_envs`` (default 64); ``render_mode`` None or ``"rgb_array"`` (``render()`` gives one
    picture per copy, a tuple, about 12 ms each at N = 120); any scenario field.

    ## Differences from ``SyncVectorEnv``

    All of them documented Gymnasium options:

    * Randomness comes from one ``self.np_random`` for the whole batch (as CartPole's vector
      env), so copy ``b`` does not replay the single environment seeded alike; each copy's
      slots are still i.i.d. draws of the same law, and a seed fixes the whole batch.
    * ``info`` holds one array per key with a leading batch axis (Gymnasium's vector info), no
      ``_key`` masks for the per-step metrics, which every copy has on every step.

    ## Example

    >>> import gymnasium as gym
    >>> import mec_env
    >>> venv = gym.make_vec("MECOffload-v0", num_envs=4, vectorization_mode="vector_entry_point",
    ...                     scenario="small")
    >>> obs, info = venv.reset(seed=0)
    >>> obs["channel_gain_db"].shape, venv.action_space.shape
    ((4, 8, 2), (4, 8))
    >>> obs, rewards, terminated, truncated, info = venv.step(venv.action_space.sample())
    >>> rewards.shape, info["violations"].shape
    ((4,), (4,))
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["rgb_array"]}

    def __init__(self, num_envs: int = 64, scenario: Scenario = "paper", render_mode: str | None = None,
                 **kwargs: Any) -> None:
        self._renderers: list = []  # first: VectorEnv.__del__ closes them even when a check below refuses
        self.cfg, self.options = build_env_config(BatchedEnvConfig, f"{type(self).__name__}.__init__", scenario,
                                                  {"num_envs": num_envs, **kwargs})
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        o = self.options
        self.num_envs = o.num_envs
        self.core = SlotProcess(self.cfg, o.mobility_speed_mps, o.background_load, num_copies=self.num_envs)
        check_reward_scale(self.cfg, o.penalty_weight, self.core.source)

        n, m = self.cfg.n_users, self.cfg.n_edge_servers
        self.single_action_space = spaces.MultiDiscrete(np.full(n, m + 1, dtype=np.int64))
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.dict_observation_space, self.single_observation_space = observation_spaces(self.cfg, o.flat_obs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

        self.last_slots: tuple[Problem, BatchEvaluation] | None = None  # the slots decided by the last step

    # --- gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.last_slots = None
        self.core.start(self.np_random)
        return self.core.observation(self.options.flat_obs), {"slot": np.zeros(self.num_envs, dtype=np.int64)}

    def step(self, actions: np.ndarray):
        problem = self.problem
        if problem is None:
            raise ResetNeeded("call reset() before step()")
        o, n, m = self.options, self.cfg.n_users, self.cfg.n_edge_servers
        a = np.asarray(actions)
        if a.shape != (self.num_envs, n):
            raise AssignmentError(f"{ENV_ID} batched actions have shape {a.shape}; expected (B, N) = "
                                  f"{(self.num_envs, n)}: one assignment per copy, 0 (local) .. M = {m} (ES index)")
        a = validate_assignment(a, n, m, f"{ENV_ID} batched actions")  # before any state changes
        ev = evaluate_batch_valid(problem, a)
        info = slot_metrics(ev, self.core.local_objective, o.penalty, o.penalty_weight)
        info["slot"] = np.full(self.num_envs, self.core.slot, dtype=np.int64)
        rewards = -np.asarray(info["penalised_objective"], dtype=np.float64)
        if o.difference_rewards:
            info["difference_rewards"] = difference_rewards(problem, a, info["penalised_objective"],
                                                            self.core.local_objective, o.penalty, o.penalty_weight)
        self.last_slots = (problem, ev)

        self.core.advance(self.np_random)
        obs = self.core.observation(o.flat_obs)
        truncated = self.core.slot >= o.episode_length
        if truncated:
            info["final_obs"] = obs
            info["_final_obs"] = np.ones(self.num_envs, dtype=bool)
            self.core.start(self.np_random)
            obs = self.core.observation(o.flat_obs)
        return obs, rewards, np.zeros(self.num_envs, dtype=bool), np.full(self.num_envs, truncated), info

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One picture per copy of the slots decided last (or the current ones before any step)."""
        if self.render_mode is None:
            return None
        if self.problem is None:
            raise ResetNeeded("call reset() before render()")
        from mec_env.envs.render import SlotRenderer  # matplotlib, imported on first use

        while len(self._renderers) < self.num_envs:
            self._renderers.append(SlotRenderer(self.cfg.area_side_m, self.cfg.n_edge_servers,
                                                title=f"{ENV_ID} copy {len(self._renderers)}"))
        problem, decided = self.last_slots or (self.problem, None)
        frames = []
        for b, renderer in enumerate(self._renderers):
            one = problem.instance(b)
            ev = None if decided is None else evaluate_valid(one, decided.assignment[b])
            renderer.draw(one, None if ev is None else ev.assignment, caption=slot_caption(ev, f"copy {b}"))
            frames.append(renderer.rgb_array())
        return tuple(frames)

    def close_extras(self, **kwargs: Any) -> None:
        for renderer in self._renderers:
            renderer.close()
        self._renderers = []
