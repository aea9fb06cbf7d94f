"""``MECOffloadQueue-v0``: the query-level model as a true MDP, with arrivals, queues that carry
over between slots, device energy under a long-term budget and channels that evolve."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from mec_env.config import INF, ScenarioConfig, check_array_budget, config_field
from mec_env.envs.common import (
    EPISODE_LENGTH_MAX,
    HEADROOM,
    RENDER_MODES,
    EnvConfig,
    Picture,
    Scenario,
    allowed_actions,
    as_assignment,
    build_env_config,
    check_render_mode,
)
from mec_env.errors import ConfigError
from mec_env.problem import Problem, check_scenario, finite_ratio, largest_query_bits, \
    make_query_source, user_es_distance
from mec_env.radio import fading_model, path_loss_model
from mec_env.radio.link import fading_power
from mec_env.queries import QuerySource
from mec_env.queues import DISCIPLINES, JobPool, SlotOutcome, channel_kernel, jakes_correlation, \
    observation_kernel
from mec_env.layout import FlatLayout
from mec_env.queue_kernels import ObservationScales, slot_queries
from mec_env.slots import GAIN_DB_OFFSET, GAIN_DB_SCALE, GAIN_OBS_CLIP, QUERY_KBIT_MAX, SLOT_BLOCK, SlotBlocks, \
    check_mobility, nominal_local_delay

ENV_ID = "MECOffloadQueue-v0"
_SQRT_HALF = math.sqrt(0.5)
BACKLOG_OBS_MAX = 1000.0  # backlogs and energy queues are observed in slots of work / budget, clipped here
JOBS_OBS_MAX = 100.0  # jobs at an ES are observed per user, clipped here
TOTALS = ("slots", "time_s", "arrivals", "completed", "sojourn_s", "weighted_sojourn", "area", "weighted_area",
          "correct", "offloaded", "violations", "energy_j", "served_local")
OBS_KEYS = ("above_tau", "channel_gain_db", "energy_queue", "es_backlog", "es_capacity", "es_jobs", "has_query",
            "local_backlog", "local_capacity", "query_size", "uncertainty")  # gymnasium's Dict order (sorted)


def _probability_or_none(value: Any) -> str | None:
    ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0)
    return None if ok else "None or a number in [0, 1]"


@dataclass(frozen=True)
class QueueEnvConfig(EnvConfig):
    """Arguments of ``MECOffloadQueue-v0`` besides the scenario's (declared once: type, range, help)."""

    episode_length: int = config_field(200, "slots per episode T (then truncated)", range=(1, EPISODE_LENGTH_MAX))
    slot_seconds: float = config_field(0.02, "slot length dt (s): decisions are taken every dt",
                                       range=(0.0, INF), open_low=True)
    offered_load: float = config_field(0.9, "rho: offered LLM work over the ESs' mean capacity if every query "
                                       "were offloaded; sets the arrival probability", range=(0.0, INF),
                                       open_low=True)
    arrival_probability: float | None = config_field(None, "lambda: probability that a user issues a query in "
                                                     "a slot (Bernoulli); None = from offered_load",
                                                     check=_probability_or_none)
    discipline: str = config_field("fifo", "ES service: FIFO over ceil(C_j / C_max) LLM instances (work-conserving) "
                                   "or processor sharing with the paper's per-user share", choices=DISCIPLINES)
    channel_model: str = config_field("gauss_markov", "gauss_markov: users keep their positions (random walk) "
                                      "and the fading is first-order Gauss-Markov; iid: every slot is a fresh "
                                      "draw of the paper's", choices=("gauss_markov", "iid"))
    channel_correlation: float | None = config_field(None, "Gauss-Markov coefficient rho of the fading between "
                                                     "slots; None = Jakes J0(2 pi f_D dt) from the speed",
                                                     check=_probability_or_none)
    mobility_speed_mps: float = config_field(1.0, "user speed of the random walk (m/s), gauss_markov only",
                                             range=(0.0, INF))
    joule_per_flop: float = config_field(5e-11, "device energy per SLM FLOP: 4.6 W at the nominal 91 GFLOP/s",
                                         range=(0.0, INF))
    energy_budget_w: float = config_field(1.5, "each device's long-term average power budget (W)",
                                          range=(0.0, INF), open_low=True)
    energy_weight: float = config_field(0.01, "weight of the energy queues (in slots of budget) in the reward",
                                        range=(0.0, INF))
    flat_obs: bool = config_field(False, "one flat float32 Box observation (for MlpPolicy) instead of a Dict")


def arrival_probability(cfg: ScenarioConfig, options: QueueEnvConfig) -> float:
    """lambda of ``options``: given, or ``rho x sum_j E[C_j] x dt / (N x W_LLM)`` from the offered load."""
    if options.arrival_probability is not None:
        return float(options.arrival_probability)
    mean_capacity = cfg.n_edge_servers * cfg.es_capacity_flops * 0.5 * (cfg.es_capacity_low + cfg.es_capacity_high)
    work = cfg.flops_per_param_token * cfg.effective_tokens * cfg.llm_params
    lam = options.offered_load * mean_capacity * options.slot_seconds / (cfg.n_users * work)
    if not (0.0 < lam < INF):
        raise ConfigError("offered_load", options.offered_load, "a load whose arrival probability "
                          "rho x sum_j E[C_j] x dt / (N x W_LLM) is a positive finite number (it is "
                          f"{lam:g} with slot_seconds = {options.slot_seconds:g}); or set arrival_probability")
    if lam > 1.0:
        most = options.offered_load / lam
        raise ConfigError("offered_load", options.offered_load, f"a load of at most {most:.4g}: with N = "
                          f"{cfg.n_users} and slot_seconds = {options.slot_seconds:g} every user would issue "
                          f"{lam:.3g} > 1 queries a slot (shorten the slot or add users)")
    return lam


def check_queue_bounds(cfg: ScenarioConfig, options: QueueEnvConfig, lam: float, source: QuerySource) -> None:
    """Everything an episode of T slots computes stays finite, or a ConfigError at construction.

    Bounds: at most N x T queries enter an episode, each of work <= max(W_LLM, W_SLM), energy
    ``E_max = max(joule_per_flop x W_SLM, P x D_max / min_rate_bps)`` and sojourn <= T x dt; an
    energy queue holds at most T x E_max. The reward's terms are then at most ``N T dt / (N lambda t_L)``
    (holding cost), ``penalty_weight`` and ``energy_weight x T E_max / e_bar``; the observations
    divide by e_bar, the nominal ES's and the slowest device's work per slot, which must be > 0.
    """
    o, n, t, dt = options, cfg.n_users, options.episode_length, options.slot_seconds
    e_bar = o.energy_budget_w * dt
    if not e_bar > 0.0:
        raise ConfigError("energy_budget_w", o.energy_budget_w, "a budget whose energy per slot e_bar = "
                          f"energy_budget_w x slot_seconds ({dt:g} s) does not underflow to 0")
    for what, per_slot in (("the nominal ES", cfg.es_capacity_flops * dt),
                           ("the slowest device", cfg.local_capacity_flops * cfg.local_capacity_low * dt)):
        if not per_slot > 0.0:  # the backlog observations are in slots of this work
            raise ConfigError("slot_seconds", dt, f"a slot in which {what} serves more than 0 FLOP (it underflows)")
    work = cfg.flops_per_param_token * cfg.effective_tokens * max(cfg.slm_params, cfg.llm_params)
    if not math.isfinite(HEADROOM * n * t * work):
        raise ConfigError("episode_length", t, f"a length over which the work admitted, N x T x W = {n} x {t} x "
                          f"{work:g} FLOP, stays finite")
    if not math.isfinite(HEADROOM * 1e3 * n * t * t * dt):  # the sojourn times summed over an episode, in ms
        raise ConfigError("slot_seconds", dt, f"a slot for which the sojourn times of an episode, at most "
                          f"N x T x T x dt (N = {n}, T = {t}), stay finite in ms")
    bits = largest_query_bits(cfg, source)
    local_energy = o.joule_per_flop * cfg.flops_per_param_token * cfg.effective_tokens * cfg.slm_params
    uplink_energy = 0.0 if bits is None else cfg.tx_power_w * bits / cfg.min_rate_bps
    e_max = max(local_energy, uplink_energy)
    if not math.isfinite(HEADROOM * n * t * e_max):
        name = "joule_per_flop" if local_energy >= uplink_energy else "tx_power_w"
        raise ConfigError(name, o.joule_per_flop if name == "joule_per_flop" else cfg.tx_power_w,
                          f"a value at which the device energy of an episode, at most N x T x E_max = {n} x {t} x "
                          f"{e_max:g} J, stays finite")
    delay = finite_ratio(n * t * dt, n * lam * nominal_local_delay(cfg)) if lam > 0.0 else 0.0
    queue = finite_ratio(t * e_max, e_bar)
    if not math.isfinite(HEADROOM * queue):  # the mean queue is in info and, times energy_weight, in the reward
        raise ConfigError("energy_budget_w", o.energy_budget_w, f"a budget at which the energy queues in slots of "
                          f"budget, at most T E_max / e_bar = {t} x {e_max:g} J / {e_bar:g} J, stay finite")
    energy = o.energy_weight * queue
    if not math.isfinite(HEADROOM * (delay + o.penalty_weight + energy)):
        if not math.isfinite(HEADROOM * delay):
            name = "offered_load" if o.arrival_probability is None else "arrival_probability"
            value, what = getattr(o, name), f"the holding cost, at most N T dt / (N lambda t_L) = {delay:g}"
        else:
            name = "energy_weight" if energy >= o.penalty_weight else "penalty_weight"
            value, what = getattr(o, name), f"the sum of the reward's terms (energy term up to {energy:g})"
        raise ConfigError(name, value, f"a value at which the reward stays finite: {what}")


def _with(problem: Problem, **arrays: Any) -> Problem:
    """``problem`` with some arrays replaced (shapes unchanged: no re-validation on the hot path)."""
    out = object.__new__(Problem)
    out.__dict__.update(problem.__dict__)
    out.__dict__.update(arrays)
    return out


class MECOffloadQueueEnv(gym.Env[dict[str, np.ndarray] | np.ndarray, np.ndarray]):
    """
    ## Description

    The offloading problem of Kim et al. over time. Users issue queries at random (Bernoulli,
    probability lambda per slot of ``slot_seconds``); each query is decided when it arrives: kept
    on the device (its SLM, one query at a time, first come first served) or offloaded to ES j,
    uploaded over the shared, interfered uplink (eqs. 2-5) and queued at the ES. Queries are
    served across as many slots as their work takes; a query's delay is its time in the system,
    uplink + waiting + service, so today's decisions load tomorrow's queues. The queues, the
    service disciplines and the static special case are those of :mod:`mec_env.queues`: FIFO
    over LLM instances of C_max each (default, work-conserving) or processor sharing with the
    paper's per-user share. Slots are drawn as ``MECOffload-v0`` draws them
    (:func:`mec_env.problem.sample_problem`: queries from the trace table, capacities); with
    ``channel_model="gauss_markov"`` (default) users keep their positions, walk at
    ``mobility_speed_mps`` and the fading evolves as ``h <- rho h + sqrt(1 - rho^2) w``
    (w ~ CN(0, 1), rho from Jakes' model by default); ``"iid"``
    redraws positions and fading every slot (the paper's Monte Carlo draws). In both, the ES and
    device capacities are the paper's per-slot draws (the compute available in that slot), so the
    offered load is set against the ESs' mean capacity and holds in every episode.

    Device energy: a local query costs ``joule_per_flop x W_SLM`` (5e-11 J/FLOP: 4.6 W at the
    nominal 91 GFLOP/s, the few watts measured for LLM inference on smartphone SoCs, e.g.
    Laskaridis et al., "MELTing point", MobiCom 2024), an offloaded one ``P x t_comm`` (P = 0.2 W,
    23 dBm, a 3GPP power class 3 UE). Each device's virtual queue
    ``Z_i <- max(Z_i + E_i - e_bar, 0)``, ``e_bar = energy_budget_w x dt``, tracks its long-term
    budget (GELATO's form): the budget holds on average when the queues stay bounded.

    ## Action Space

    ``MultiDiscrete([M + 1] * N)`` as ``MECOffload-v0``: ``action[i] = 0`` keeps user i's new query
    local, ``j`` offloads it to ES j. Users without a query this slot (``has_query = 0``) are idle:
    their entry is ignored. ``action_masks()``: all actions of a user with a query, only 0 for an
    idle user, and with ``enforce_constraint=True`` no local for alpha > tau.

    ## Observation Space

    | Key               | Shape  | Meaning                                                         | Min | Max  |
    |-------------------|--------|-----------------------------------------------------------------|-----|------|
    | `above_tau`       | (N,)   | 1 if the user's new query has alpha_i > tau                     | 0   | 1    |
    | `channel_gain_db` | (N, M) | (10 log10 abs(h_ij)^2 + 90) / 40 this slot, clipped             | -5  | 5    |
    | `energy_queue`    | (N,)   | Z_i / e_bar: energy owed, in slots of budget                    | 0   | 1000 |
    | `es_backlog`      | (M,)   | work queued at ES j / (``es_capacity_flops`` x dt)              | 0   | 1000 |
    | `es_capacity`     | (M,)   | C_j / ``es_capacity_flops``                                     | 0   | c_hi |
    | `es_jobs`         | (M,)   | queries at ES j / N                                             | 0   | 100  |
    | `has_query`       | (N,)   | 1 if the user issued a query this slot                          | 0   | 1    |
    | `local_backlog`   | (N,)   | work queued on the device / (C_L,i x dt)                        | 0   | 1000 |
    | `local_capacity`  | (N,)   | C_L,i / ``local_capacity_flops``                                | 0   | hi   |
    | `query_size`      | (N,)   | D_i of the new query, kbit (0 if none)                          | 0   | 1000 |
    | `uncertainty`     | (N,)   | alpha_i of the new query (0 if none)                            | 0   | 1    |

    float32; ``flat_obs=True`` concatenates them in this order into one Box.

    ## Rewards

    ``reward = -(A_t / (N lambda t_L) + penalty_weight x P_t + energy_weight x mean_i Z_i / e_bar)``

    ``A_t`` = sum over the queries in the system during the slot of alpha x the time each spent
    in it (s): summed over an episode, the alpha-weighted delay of every query (a holding cost, so
    a query that waits long costs in every slot it waits). ``t_L`` is the nominal device's SLM
    delay, so all local at low load scores about ``mean alpha``. ``P_t`` is the fraction of users
    whose new query breaks constraint (11) (``penalty="violations"``) or is answered wrongly
    (``"wrong_answers"``).

    ## Starting State

    Empty queues, zero energy queues, positions uniform, the first slot's queries.

    ## Episode End

    No terminal state; truncated after ``episode_length`` slots with whatever is still queued
    (``info["in_system"]``). Seeding: ``reset(seed=...)`` seeds the slots (the same stream as
    ``MECOffload-v0`` with that seed) and, through a child of the same seed, the arrivals and fading.

    ## Arguments

    ``scenario`` (name, path or :class:`~mec_env.config.ScenarioConfig`), ``render_mode`` (None,
    ``"ansi"``, ``"rgb_array"``, ``"human"``), the fields of :class:`QueueEnvConfig` (with
    ``penalty``, ``penalty_weight``, ``enforce_constraint`` of every env) and any scenario field.
    A bad value is a :class:`~mec_env.errors.ConfigError` naming it and its range; an
    ``offered_load`` that needs more than one query per user and slot names the largest possible.

    ## Static special case

    ``discipline="ps", arrival_probability=1, channel_model="iid", slot_seconds=1.0, energy_weight=0``
    (every user a query every slot, a slot long enough that all finish, so nothing carries over,
    and the paper's sharing of an ES): each slot's delays, objective (eq. 10) and accuracy equal
    ``MECOffload-v0``'s evaluator numbers, bit for bit, on the same draws (``tests/test_queue_env.py``).

    ## Info

    ``arrivals``, ``completed``, ``objective`` (sum of alpha x delay over the queries completed in
    the slot, s), ``weighted_area`` (A_t), ``mean_delay_ms`` (of those completed), ``accuracy``
    and ``violations`` of the new queries, ``offload_fraction``, ``in_system``, ``es_backlog_flop``
    (M,), ``es_jobs_count`` (M,), ``energy_j`` (mean over users of this slot's energy), ``mean_energy_queue``
    (mean Z_i / e_bar); no key repeats an observation's (toolkits such as TorchRL merge the two).
    Cumulative counts for Little's law and work conservation are in ``env.unwrapped.totals``.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4}

    def __init__(self, scenario: Scenario = "paper", render_mode: str | None = None, **kwargs: Any) -> None:
        self.cfg, self.options = build_env_config(QueueEnvConfig, f"{type(self).__name__}.__init__", scenario, kwargs)
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        o, cfg = self.options, self.cfg
        n, m = cfg.n_users, cfg.n_edge_servers
        check_array_budget(cfg, SLOT_BLOCK, f"{SLOT_BLOCK} slots drawn together")
        self.source = make_query_source(cfg.queries)  # built once: a trace table loads once
        check_scenario(cfg, self.source)  # at construction, not at the first draw
        if o.channel_model == "gauss_markov":
            check_mobility(cfg, o.mobility_speed_mps, o.slot_seconds)
        self.arrival_probability = arrival_probability(cfg, o)
        check_queue_bounds(cfg, o, self.arrival_probability, self.source)
        self.rho = (jakes_correlation(o.mobility_speed_mps, cfg.carrier_hz, o.slot_seconds)
                    if o.channel_correlation is None else float(o.channel_correlation))
        self.energy_per_slot = o.energy_budget_w * o.slot_seconds  # e_bar, J
        self.delay_scale = n * self.arrival_probability * nominal_local_delay(cfg)
        self.action_space = spaces.MultiDiscrete(np.full(n, m + 1, dtype=np.int64))
        box = lambda high, shape: spaces.Box(0.0, high, shape=shape, dtype=np.float32)  # noqa: E731
        self.dict_observation_space = spaces.Dict({
            "above_tau": box(1.0, (n,)),
            "channel_gain_db": spaces.Box(-GAIN_OBS_CLIP, GAIN_OBS_CLIP, shape=(n, m), dtype=np.float32),
            "energy_queue": box(BACKLOG_OBS_MAX, (n,)),
            "es_backlog": box(BACKLOG_OBS_MAX, (m,)),
            "es_capacity": box(cfg.es_capacity_high, (m,)),
            "es_jobs": box(JOBS_OBS_MAX, (m,)),
            "has_query": box(1.0, (n,)),
            "local_backlog": box(BACKLOG_OBS_MAX, (n,)),
            "local_capacity": box(cfg.local_capacity_high, (n,)),
            "query_size": box(QUERY_KBIT_MAX, (n,)),
            "uncertainty": box(1.0, (n,)),
        })
        self.layout = FlatLayout.from_space(self.dict_observation_space)  # the order observation_kernel writes
        self.observation_space = self.layout.box(self.dict_observation_space) if o.flat_obs \
            else self.dict_observation_space
        self.pool = JobPool(n, m, capacity=4 * n)
        self._obs_scales = tuple(ObservationScales(  # observation_kernel's constants, once per env
            self.energy_per_slot, cfg.es_capacity_flops * o.slot_seconds, cfg.es_capacity_flops, cfg.es_capacity_high,
            cfg.local_capacity_flops, cfg.local_capacity_high, o.slot_seconds, BACKLOG_OBS_MAX, JOBS_OBS_MAX,
            GAIN_DB_OFFSET, GAIN_DB_SCALE, GAIN_OBS_CLIP, QUERY_KBIT_MAX))
        self.energy_queue = np.zeros(n)
        self.has_query = np.zeros(n, dtype=bool)
        self.problem: Problem | None = None
        self._totals = np.zeros(len(TOTALS))
        self._served_es, self._energy_per_user = np.zeros(m), np.zeros(n)
        self.last_slot: tuple[Problem, np.ndarray, SlotOutcome] | None = None
        self._rng: np.random.Generator | None = None
        self._user_xy = self._fading = None
        self._slots = SlotBlocks(cfg, self.source)  # MECOffload-v0's slots, drawn as its SlotProcess draws them
        self._draws_pos = 0
        self._draws: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._picture = Picture(self.render_mode, cfg.area_side_m, m, ENV_ID, self.metadata["render_fps"])

    # --- gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or self._rng is None:
            self._slots.discard()  # a new seed starts new streams
            self._draws = None
            # the queueing draws (arrivals, fading, walk) use a child of the seed: the slots stay MECOffload-v0's
            self._rng = self.np_random.spawn(1)[0]
        n, m = self.cfg.n_users, self.cfg.n_edge_servers
        self.pool.clear()
        self.energy_queue = np.zeros(n)
        self._totals = np.zeros(len(TOTALS))
        self._served_es, self._energy_per_user = np.zeros(m), np.zeros(n)
        self.last_slot = None
        self._user_xy = self._fading = None
        self.slot = 0
        self._next_slot(first=True)
        return self._observation(), {"slot": 0}

    def step(self, action: np.ndarray):
        problem = self.problem
        if problem is None:
            raise ResetNeeded("call reset() before step()")
        o, cfg, pool = self.options, self.cfg, self.pool
        n, m = cfg.n_users, cfg.n_edge_servers
        a = as_assignment(action, n, m, f"{ENV_ID} action")
        # one compiled call: the evaluator's uplink among the slot's uploaders, the new jobs, energy, service
        out, energy, counts, sums = pool.decide_and_step(problem, a, self.has_query, self.energy_queue,
                                                         self.energy_per_slot, o.joule_per_flop, o.slot_seconds,
                                                         o.discipline)
        energy_sum, done_sum, served_local, queue_sum = (float(x) for x in sums)
        arrivals, offloaded, correct, violations = counts.tolist()
        pen = (violations if o.penalty == "violations" else arrivals - correct) / n
        queue_term = queue_sum / (n * self.energy_per_slot)
        # with lambda = 0 no query ever arrives: the holding cost is 0 (and its scale too)
        holding = out.weighted_area / self.delay_scale if self.delay_scale > 0.0 else 0.0
        reward = -(holding + o.penalty_weight * pen + o.energy_weight * queue_term)

        objective = float(out.done_alpha @ out.done_delay)  # numpy's dot, as the evaluator's eq. (10)
        completed = out.done_delay.size
        self._totals += (1, o.slot_seconds, arrivals, completed, done_sum, objective, out.area, out.weighted_area,
                         correct, offloaded, violations, energy_sum, served_local)
        self._served_es += out.served_es
        self._energy_per_user += energy

        info = {
            "slot": self.slot,
            "arrivals": arrivals,
            "completed": completed,
            "objective": objective,
            "weighted_area": out.weighted_area,
            "mean_delay_ms": 1e3 * done_sum / completed if completed else 0.0,
            "accuracy": correct / arrivals if arrivals else 1.0,
            "violations": violations,
            "offload_fraction": offloaded / arrivals if arrivals else 0.0,
            "in_system": pool.size,
            "es_backlog_flop": pool.es_work.copy(),
            "es_jobs_count": pool.es_jobs.copy(),  # not "es_jobs": the observation's (per ES) key
            "energy_j": energy_sum / n,
            "mean_energy_queue": queue_term,  # not "energy_queue": that is the (N,) observation's key
        }
        self.last_slot = (problem, a * self.has_query, out)
        self.slot += 1
        self._next_slot(first=False)
        truncated = self.slot >= o.episode_length
        if self.render_mode == "human":
            self.render()
        return self._observation(), reward, False, truncated, info

    def action_masks(self) -> np.ndarray:
        """Allowed actions, flattened user by user (N x (M + 1),): an idle user may only stay (0)."""
        if self.problem is None:
            raise ResetNeeded("call reset() before action_masks()")
        allowed = allowed_actions(self.problem, self.options.enforce_constraint)
        allowed[~self.has_query, 1:] = False
        allowed[~self.has_query, 0] = True
        return allowed.reshape(-1)

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() without a render_mode; make the env with render_mode='rgb_array', "
                            "'human' or 'ansi'")
            return None
        if self.problem is None:
            raise ResetNeeded("call reset() before render()")
        pool = self.pool
        caption = (f"{ENV_ID} slot {self.slot}/{self.options.episode_length}: {pool.size} queries in the "
                   f"system, {int(pool.local_jobs.sum())} on devices, per ES {pool.es_jobs.tolist()}")
        if self.render_mode == "ansi":
            return caption
        problem, a = (self.problem, None) if self.last_slot is None else self.last_slot[:2]
        return self._picture(problem, a, caption)

    def close(self) -> None:
        self._picture.close()
        super().close()

    @property
    def totals(self) -> dict[str, Any]:
        """Sums since ``reset``: slots, time (s), queries arrived and completed, their sojourn (s, plain
        and alpha-weighted), the job-seconds in the system (plain and alpha-weighted), answers right,
        offloaded, breaking (11), device energy (J), work served by devices (FLOP); per ES work
        admitted and served (FLOP, ``work_in_es``, ``served_es``); energy per user (J)."""
        out: dict[str, Any] = dict(zip(TOTALS, self._totals.tolist()))
        for key in ("slots", "arrivals", "completed", "correct", "offloaded", "violations"):
            out[key] = int(out[key])
        m = self.cfg.n_edge_servers
        out.update(served_es=self._served_es.copy(), work_in_es=self.pool.work_in[:m].copy(),
                   work_in_local=float(self.pool.work_in[m]), energy_per_user_j=self._energy_per_user.copy())
        return out

    # --- the slot process ------------------------------------------------------------------------

    def backlog_view(self) -> dict[str, np.ndarray]:
        """What queue-aware scripted policies read: work (FLOP) and jobs queued at each ES and device."""
        p = self.pool
        return {"es_work": p.es_work.copy(), "es_jobs": p.es_jobs.copy(), "local_work": p.local_work.copy(),
                "local_jobs": p.local_jobs.copy()}

    def _next_slot(self, first: bool) -> None:
        # fresh draws exactly as MECOffload-v0's SlotProcess makes them (32 slots a call, kept across resets)
        problem = self._slots.draw(self.np_random)[0]
        # the queueing draws (arrivals, fading innovations, walk directions), also 32 slots at a time
        if self._draws is None or self._draws_pos == SLOT_BLOCK:
            n, m = self.cfg.n_users, self.cfg.n_edge_servers
            rng = self._rng
            angle = rng.uniform(0.0, 2.0 * math.pi, size=(SLOT_BLOCK, n))
            self._draws = (rng.random((SLOT_BLOCK, n)) < self.arrival_probability,
                           # CN(0, 1) innovations, parts N(0, 1/2); float32 halves the draw's cost, and the
                           # channel's precision is set by the state h (float64), not by a slot's innovation
                           rng.standard_normal((SLOT_BLOCK, 2, n, m), dtype=np.float32) * np.float32(_SQRT_HALF),
                           np.stack([np.cos(angle), np.sin(angle)], axis=-1))
            self._draws_pos = 0
        k = self._draws_pos
        self._draws_pos += 1
        if self.options.channel_model == "gauss_markov":
            problem = self._evolve(problem, first, self._draws[1][k], self._draws[2][k])
        self.problem = problem
        self.has_query = self._draws[0][k]

    def _evolve(self, problem: Problem, first: bool, w: np.ndarray, direction: np.ndarray) -> Problem:
        """Positions that persist and walk, Gauss-Markov fading (capacities stay the slot's draw)."""
        cfg, o = self.cfg, self.options
        large_scale, small_scale = path_loss_model(cfg.path_loss), fading_model(cfg.fading)
        if first:  # h starts from its stationary law, CN(0, 1): the step with rho = 0 and no move
            self._user_xy = problem.user_xy
            self._fading = np.zeros((2,) + problem.gain.shape)
            # a random path-loss model's per-link state (LOS, shadowing) is drawn once and kept with the link
            self._large_scale_factor = None if large_scale.draw_factor is None else large_scale.draw_factor(
                self._rng, user_es_distance(self._user_xy, problem.es_xy, cfg.min_distance_m), cfg.carrier_hz)
        rho, step = (0.0, 0.0) if first else (self.rho, o.mobility_speed_mps * o.slot_seconds)
        gain = np.empty(problem.gain.shape)
        fused = cfg.path_loss == "free_space" and small_scale.amplitudes is None  # the default, in one kernel
        self._user_xy = channel_kernel(self._fading, w, rho, self._user_xy, direction, step, cfg.area_side_m,
                                       problem.es_xy, cfg.min_distance_m, cfg.carrier_hz, fused, gain)
        if not fused:
            if small_scale.amplitudes is not None:  # the scattered part evolves, the LOS part stays
                gain = fading_power(*small_scale.amplitudes(cfg), self._fading[0], self._fading[1])
            gain *= large_scale.gain(user_es_distance(self._user_xy, problem.es_xy, cfg.min_distance_m),
                                     cfg.carrier_hz)
            if self._large_scale_factor is not None:
                gain *= self._large_scale_factor
        return _with(problem, gain=gain, user_xy=self._user_xy)

    def _observation(self) -> dict[str, np.ndarray] | np.ndarray:
        p, o, pool = self.problem, self.options, self.pool
        flat = np.empty(self.layout.size, dtype=np.float32)
        observation_kernel(flat, self.has_query, slot_queries(p), self.energy_queue, pool.backlog_tuple,
                           self._obs_scales)
        if o.flat_obs:
            return flat
        return self.layout.unflatten(flat)


__all__ = ["MECOffloadQueueEnv", "QueueEnvConfig", "arrival_probability", "ENV_ID"]
