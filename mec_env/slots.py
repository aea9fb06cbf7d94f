"""The system core under every environment: how slots are drawn, what carries over from one
slot to the next (user positions, ES background load) and what an agent observes of a slot.

Environments are thin Gymnasium shells over :class:`SlotProcess` and the evaluator
(:mod:`mec_env.evaluator`); the joint environment, its batched twin and the sequential
environment all draw their slots here, for one copy or a batch of B copies as (B, N, M) arrays,
and the queueing environment draws the same i.i.d. slots through :class:`SlotBlocks`. The flat
observation's layout is :mod:`mec_env.layout`'s, derived from :func:`observation_spaces`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from gymnasium import spaces

from mec_env.config import ScenarioConfig, check_array_budget
from mec_env.errors import ConfigError
from mec_env.layout import FlatLayout
from mec_env.evaluator import local_objective
from mec_env.queries import QuerySource
from mec_env.problem import Problem, check_received_power, check_scenario, make_query_source, path_gain, \
    sample_problem, user_es_distance

SLOT_SECONDS = 1.0  # duration of a slot: a user at speed v moves v x SLOT_SECONDS per step
LOAD_MAX = 0.9  # background load fraction is kept in [0, LOAD_MAX]
LOAD_AR_COEF = 0.9  # AR(1) coefficient of the background load (slot-to-slot correlation)
LOAD_STD = 0.1  # stationary standard deviation of the background load around its mean
SLOT_BLOCK = 32  # slots drawn per sampler call by one copy: one batched draw amortises numpy's per-call cost

# Channel gains are observed in dB through a fixed affine map, (dB + 90) / 40, clipped to
# [-5, 5]: the paper scenario's gains (free space at 3.5 GHz, 10-500 m, Rayleigh fading)
# span roughly -130 dB .. -55 dB, i.e. about [-1, 1]. A fixed map (not per-slot
# standardisation) keeps an observation comparable across slots.
GAIN_DB_OFFSET = 90.0
GAIN_DB_SCALE = 40.0
GAIN_OBS_CLIP = 5.0
GAIN_FLOOR = 1e-30  # log10 guard; maps to -300 dB, i.e. the clip
RATIO_OBS_MAX = 10.0  # delay ratios (edge / local, local / nominal) are clipped to [0, 10]
QUERY_KBIT_MAX = 1000.0  # query sizes are observed in kbit, clipped here
OBS_KEYS = ("above_tau", "channel_gain_db", "es_background_load", "es_capacity", "local_capacity", "query_size",
            "uncertainty")  # gymnasium's Dict order (sorted)


# --- dynamics --------------------------------------------------------------------------------

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

    new, old = gain_at(user_xy), gain_at(problem.user_xy)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gain = problem.gain * (new / old)
    bad = ~np.isfinite(gain)
    if bad.any():  # a path gain that underflowed to 0 (astronomic distances): the fading is gain / old, or 0
        fading = np.divide(problem.gain, old, out=np.zeros_like(old), where=old > 0.0)
        gain = np.where(bad, fading * new, gain)
    check_received_power(cfg, gain)
    return dataclasses.replace(problem, gain=gain, user_xy=user_xy)


def stationary_load(rng: np.random.Generator, mean: float, shape: tuple[int, ...]) -> np.ndarray:
    """Background load fractions drawn from the AR(1) process's stationary law, clipped to [0, LOAD_MAX]."""
    return np.clip(mean + LOAD_STD * rng.standard_normal(shape), 0.0, LOAD_MAX)


def next_load(rng: np.random.Generator, mean: float, load: np.ndarray) -> np.ndarray:
    """One AR(1) step of the background load (any shape)."""
    innovation = LOAD_STD * math.sqrt(1.0 - LOAD_AR_COEF**2) * rng.standard_normal(load.shape)
    return np.clip(mean + LOAD_AR_COEF * (load - mean) + innovation, 0.0, LOAD_MAX)


def check_mobility(cfg: ScenarioConfig, speed_mps: float, slot_seconds: float) -> None:
    """A walk is reflected in ``[0, 2 L)``: the distance moved in a slot, ``v x dt``, plus ``2 L`` must stay
    finite (an infinite position makes every distance NaN); else a ConfigError."""
    step = speed_mps * slot_seconds
    if speed_mps > 0.0 and not math.isfinite(2.0 * cfg.area_side_m + step):
        name, value = ("mobility_speed_mps", speed_mps) if step >= cfg.area_side_m else ("area_side_m",
                                                                                         cfg.area_side_m)
        raise ConfigError(name, value, f"a value at which the distance moved in a slot plus twice the area side "
                          f"stays finite (v x dt = {speed_mps:g} m/s x {slot_seconds:g} s = {step:g} m, "
                          f"area_side_m = {cfg.area_side_m:g})")


def random_walk(rng: np.random.Generator, user_xy: np.ndarray, speed_mps: float, side_m: float) -> np.ndarray:
    """Every user (..., N, 2) moves ``speed x SLOT_SECONDS`` in a uniform direction, reflected at the border."""
    angle = rng.uniform(0.0, 2.0 * math.pi, size=user_xy.shape[:-1])
    step = speed_mps * SLOT_SECONDS * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    return _reflect(user_xy + step, side_m)


def slot_dynamics(problem: Problem, cfg: ScenarioConfig, rng: np.random.Generator, user_xy: np.ndarray | None,
                  mobility_speed_mps: float, background_load: float, es_background_load: np.ndarray
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
        problem = dataclasses.replace(problem, es_capacity=problem.es_capacity * (1.0 - es_background_load))
    return problem, user_xy


# --- observations ----------------------------------------------------------------------------

def normalised_gain_db(gain: np.ndarray) -> np.ndarray:
    """``clip((10 log10 |h|^2 + 90) / 40, -5, 5)`` as float32."""
    x = np.maximum(gain, GAIN_FLOOR)
    np.log10(x, out=x)  # in place: this runs on (B, N, M) arrays every step of the batched env
    x *= 10.0
    x += GAIN_DB_OFFSET
    x /= GAIN_DB_SCALE
    return np.clip(x, -GAIN_OBS_CLIP, GAIN_OBS_CLIP, out=x).astype(np.float32)


def normalised_local_capacity(local_capacity: np.ndarray, cfg: ScenarioConfig) -> np.ndarray:
    """``C_L,i / local_capacity_flops``, in ``[0, local_capacity_high]``, float32."""
    return np.clip(local_capacity / cfg.local_capacity_flops, 0.0, cfg.local_capacity_high).astype(np.float32)


def nominal_local_delay(cfg: ScenarioConfig) -> float:
    """SLM delay of one query on the nominal device (seconds): a fixed scale for observations only."""
    return cfg.flops_per_param_token * cfg.effective_tokens * cfg.slm_params / cfg.local_capacity_flops


def slot_features(problem: Problem, cfg: ScenarioConfig) -> dict[str, np.ndarray]:
    """The per-user observation entries of a slot (or a batch of slots), float32."""
    return {
        "above_tau": (problem.alpha > problem.tau).astype(np.float32),
        "channel_gain_db": normalised_gain_db(problem.gain),
        "local_capacity": normalised_local_capacity(problem.local_capacity, cfg),
        "query_size": np.clip(problem.query_bits / 1e3, 0.0, QUERY_KBIT_MAX).astype(np.float32),
        "uncertainty": np.clip(problem.alpha, 0.0, 1.0).astype(np.float32),
    }


def normalised_es_capacity(es_capacity: np.ndarray, cfg: ScenarioConfig) -> np.ndarray:
    """``C_j / es_capacity_flops`` (after the background load), in ``[0, es_capacity_high]``, float32."""
    return np.clip(es_capacity / cfg.es_capacity_flops, 0.0, cfg.es_capacity_high).astype(np.float32)


def observation_spaces(cfg: ScenarioConfig, flat: bool) -> tuple[spaces.Dict, spaces.Space]:
    """``(dict space, space observed)`` of one slot: the Dict, or its flattening with ``flat``."""
    n, m = cfg.n_users, cfg.n_edge_servers
    dict_space = spaces.Dict({
        "above_tau": spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
        "channel_gain_db": spaces.Box(-GAIN_OBS_CLIP, GAIN_OBS_CLIP, shape=(n, m), dtype=np.float32),
        "es_background_load": spaces.Box(0.0, 1.0, shape=(m,), dtype=np.float32),
        "es_capacity": spaces.Box(0.0, cfg.es_capacity_high, shape=(m,), dtype=np.float32),
        "local_capacity": spaces.Box(0.0, cfg.local_capacity_high, shape=(n,), dtype=np.float32),
        "query_size": spaces.Box(0.0, QUERY_KBIT_MAX, shape=(n,), dtype=np.float32),
        "uncertainty": spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
    })
    return dict_space, (FlatLayout.from_space(dict_space).box(dict_space) if flat else dict_space)


# --- the process -----------------------------------------------------------------------------

class SlotBlocks:
    """Fresh slots of :func:`mec_env.problem.sample_problem`, drawn ``block`` at a time (one batched draw
    amortises numpy's per-call cost) and handed out one by one; every env that draws i.i.d. slots for one
    copy draws them here, so equal seeds give equal slots across envs.

    :meth:`draw` returns ``(slot, k, batch)``: the slot, its index in the batch and the batch (a Problem
    with a leading axis of ``block``); :meth:`discard` drops the slots not yet used (a new seed).
    """

    def __init__(self, cfg: ScenarioConfig, source: QuerySource, block: int = SLOT_BLOCK) -> None:
        self.cfg, self.source, self.block = cfg, source, block
        self.batch: Problem | None = None
        self.pos = 0

    def discard(self) -> None:
        self.batch = None

    def draw(self, rng: np.random.Generator) -> tuple[Problem, int, Problem]:
        if self.batch is None or self.pos == self.block:
            self.batch = sample_problem(self.cfg, rng, source=self.source, batch=self.block)
            self.pos = 0
        k = self.pos
        self.pos += 1
        return self.batch.instance(k), k, self.batch


class SlotProcess:
    """The slots of the joint MDP for one copy (``num_copies=None``) or B copies at once.

    Each slot is a fresh draw of :func:`mec_env.problem.sample_problem` (i.i.d., the paper's
    Monte Carlo draws); with ``mobility_speed_mps > 0`` users keep their positions across the
    slots of an episode and take a random-walk step each slot; with ``background_load > 0``
    each ES has an AR(1) background load fraction that removes that share of its compute.
    Randomness comes from the generator the caller passes (the environment's ``np_random``).

    One copy draws ``block`` slots per sampler call (one batched draw amortises numpy's
    per-call cost; ``block=None`` draws them one by one); :meth:`discard_block` drops the
    slots not yet used (a new seed).

    After :meth:`start` or :meth:`advance`: ``problem`` (the current slot), ``features``
    (:func:`slot_features` of it), ``local_objective`` (eq. 10 of all local, the reward scale),
    ``es_background_load`` and ``slot`` (index in the episode).
    """

    def __init__(self, cfg: ScenarioConfig, mobility_speed_mps: float = 0.0, background_load: float = 0.0,
                 num_copies: int | None = None, block: int | None = SLOT_BLOCK) -> None:
        self.cfg = cfg
        self.mobility_speed_mps, self.background_load = mobility_speed_mps, background_load
        self.num_copies, self.block = num_copies, block
        copies = num_copies if num_copies is not None else (block or 1)
        if num_copies is None:
            check_array_budget(cfg, copies, f"{copies} slots drawn together")
        else:
            check_array_budget(cfg, copies, f"a step of {copies} copies", blame="num_envs")
        self.source = make_query_source(cfg.queries)  # built once: a trace table loads once
        check_scenario(cfg, self.source)  # at construction, not at the first draw
        check_mobility(cfg, mobility_speed_mps, SLOT_SECONDS)
        shape = (cfg.n_edge_servers,) if num_copies is None else (num_copies, cfg.n_edge_servers)
        self.es_background_load = np.zeros(shape)
        self.slot = 0
        self.problem: Problem | None = None
        self.features: dict[str, np.ndarray] = {}
        self.local_objective: float | np.ndarray = math.nan
        self._user_xy: np.ndarray | None = None
        self._blocks = SlotBlocks(cfg, self.source, block) if block is not None and num_copies is None else None
        self._block: Problem | None = None  # the batch _block_features and _block_local_objective were made of
        self._block_features: dict[str, np.ndarray] = {}
        self._block_local_objective = np.zeros(0)
        # where each entry sits in the flat observation (the Dict space's order)
        self.layout = FlatLayout.from_space(observation_spaces(cfg, flat=False)[0])

    def discard_block(self) -> None:
        if self._blocks is not None:
            self._blocks.discard()

    def start(self, rng: np.random.Generator) -> Problem:
        """A new episode: first slot, positions drawn afresh, background load from its stationary law."""
        self.slot = 0
        self._user_xy = None
        shape = self.es_background_load.shape
        self.es_background_load = (stationary_load(rng, self.background_load, shape) if self.background_load > 0.0
                                   else np.zeros(shape))
        return self._draw(rng)

    def advance(self, rng: np.random.Generator) -> Problem:
        """The next slot of the episode."""
        self.slot += 1
        if self.background_load > 0.0:
            self.es_background_load = next_load(rng, self.background_load, self.es_background_load)
        return self._draw(rng)

    def _draw(self, rng: np.random.Generator) -> Problem:
        features: dict[str, np.ndarray] | None = None
        scale: float | None = None
        if self.num_copies is not None:
            problem = sample_problem(self.cfg, rng, source=self.source, batch=self.num_copies)
        elif self._blocks is None:
            problem = sample_problem(self.cfg, rng, source=self.source)
        else:
            problem, k, batch = self._blocks.draw(rng)
            if batch is not self._block:  # a new batch: its features and scales, once
                self._block = batch
                self._block_features = slot_features(batch, self.cfg)
                self._block_local_objective = local_objective(batch)  # neither mobility nor load changes it
            features = {name: v[k] for name, v in self._block_features.items()}
            scale = float(self._block_local_objective[k])
        problem, self._user_xy = slot_dynamics(problem, self.cfg, rng, self._user_xy, self.mobility_speed_mps,
                                               self.background_load, self.es_background_load)
        if features is None or self.mobility_speed_mps > 0.0:  # the gains moved with the users
            features = slot_features(problem, self.cfg)
        self.local_objective = scale if scale is not None else local_objective(problem)
        self.problem, self.features = problem, features
        return problem

    def observation(self, flat: bool) -> dict[str, np.ndarray] | np.ndarray:
        """The current slot's observation (every entry with the leading batch axis for B copies)."""
        obs = {**self.features, "es_background_load": self.es_background_load.astype(np.float32),
               "es_capacity": normalised_es_capacity(self.problem.es_capacity, self.cfg)}
        if flat:
            return self.layout.flatten(obs, self.problem.batch_shape)
        return {k: obs[k] for k in OBS_KEYS}


__all__ = ["SlotProcess", "SlotBlocks", "slot_dynamics", "slot_features", "observation_spaces", "normalised_gain_db",
           "normalised_local_capacity", "normalised_es_capacity", "nominal_local_delay", "relocate", "random_walk",
           "check_mobility", "stationary_load", "next_load", "OBS_KEYS", "QUERY_KBIT_MAX", "GAIN_OBS_CLIP",
           "RATIO_OBS_MAX", "LOAD_MAX", "SLOT_SECONDS", "SLOT_BLOCK"]
