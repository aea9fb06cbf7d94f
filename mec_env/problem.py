"""Problem instances: plain arrays describing one Monte Carlo draw (one time slot).

``sample_problem(cfg, rng)`` draws user positions, block fading over the path-loss gain (the
models of :mod:`mec_env.radio`, Rayleigh over free space by default), ES and local capacities and
one query per user. Everything downstream (baselines, environments, experiments) reads a
:class:`Problem` and hands assignments to :func:`mec_env.evaluator.evaluate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from mec_env import kernels
from mec_env.config import QueryConfig, ScenarioConfig
from mec_env.errors import ConfigError
from mec_env.radio import INTERFERENCE_MODELS, fading_model, path_loss_model
from mec_env.radio.link import floored_distance
from mec_env.queries import QueryBatch, QuerySource, SyntheticQuerySource, babi_prompt_sizes
from mec_env.traces import TraceQuerySource

INTERFERENCE_MODES = tuple(INTERFERENCE_MODELS)  # names of the models declared in mec_env.radio.link


@dataclass(frozen=True, eq=False)
class Problem:
    """One instance of the offloading problem (10)-(13). Arrays are indexed [user, ES].

    A batch of B independent instances (the batched environment's slots) is the same class
    with a leading axis on every array: ``gain`` (B, N, M), per-user arrays (B, N),
    ``es_capacity`` (B, M); the scalars are shared. The evaluator's batched functions
    (:func:`~mec_env.evaluator.user_delays`, :func:`~mec_env.evaluator.objective`) accept both.
    """

    gain: np.ndarray  # (N, M) |h_ij|^2: large-scale gain x Exp(1) fading, linear
    local_capacity: np.ndarray  # (N,) C_L,i in FLOP/s
    es_capacity: np.ndarray  # (M,) C_j in FLOP/s
    query_bits: np.ndarray  # (N,) D_i in bits
    workload_slm: np.ndarray  # (N,) W_i,SLM in FLOP
    workload_llm: np.ndarray  # (N,) W_i,LLM in FLOP
    alpha: np.ndarray  # (N,) uncertainty in [0, 1]
    slm_correct: np.ndarray  # (N,) bool
    llm_correct: np.ndarray  # (N,) bool
    c_max: float  # FLOP/s
    bandwidth_hz: float
    tx_power_w: float
    noise_power_w: float
    tau: float
    interference: str = "physical"
    min_rate_bps: float = 1.0
    user_xy: np.ndarray | None = field(default=None, repr=False)  # (N, 2) m
    es_xy: np.ndarray | None = field(default=None, repr=False)  # (M, 2) m

    def __post_init__(self) -> None:
        if self.gain.ndim < 2:
            raise ValueError(f"Problem.gain has shape {self.gain.shape}; expected (N, M) or (B, N, M)")
        *batch, n, m = self.gain.shape
        batch = tuple(batch)
        for name in ("local_capacity", "query_bits", "workload_slm", "workload_llm", "alpha",
                     "slm_correct", "llm_correct"):
            if getattr(self, name).shape != batch + (n,):
                raise ValueError(f"Problem.{name} has shape {getattr(self, name).shape}; expected {batch + (n,)}")
        if self.es_capacity.shape != batch + (m,):
            raise ValueError(f"Problem.es_capacity has shape {self.es_capacity.shape}; expected {batch + (m,)}")
        if self.interference not in INTERFERENCE_MODES:
            raise ValueError(f"Problem.interference is {self.interference!r}; expected one of {INTERFERENCE_MODES}")

    @property
    def n_users(self) -> int:
        return self.gain.shape[-2]

    @property
    def n_edge_servers(self) -> int:
        return self.gain.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """``()`` for one instance, ``(B,)`` for a batch."""
        return self.gain.shape[:-2]

    def instance(self, b: int) -> "Problem":
        """Instance ``b`` of a batch, as a one-instance problem (arrays are views)."""
        if not self.batch_shape:
            raise ValueError("instance() needs a batched problem; this one has no batch axis")
        # the batch was checked when built; slicing keeps every shape consistent, so skip the checks
        fields = self.__dict__
        out = object.__new__(Problem)
        out.__dict__.update({f: fields[f][b] for f in _ARRAY_FIELDS})
        out.__dict__.update({f: fields[f] for f in _SHARED_FIELDS})
        out.__dict__["user_xy"] = None if self.user_xy is None else self.user_xy[b]
        return out

    @property
    def local_delay(self) -> np.ndarray:
        """t^comp_L,i of eq. (7), seconds."""
        return self.workload_slm / self.local_capacity


_ARRAY_FIELDS = ("gain", "local_capacity", "es_capacity", "query_bits", "workload_slm", "workload_llm", "alpha",
                 "slm_correct", "llm_correct")
_SHARED_FIELDS = ("c_max", "bandwidth_hz", "tx_power_w", "noise_power_w", "tau", "interference", "min_rate_bps",
                  "es_xy")


def es_grid_positions(m: int, side: float) -> np.ndarray:
    """Cell centres of a near-square grid over the area, first ``m`` cells (a read-only array).

    M = 4 on a 500 m side gives the paper's (125,125), (125,375), (375,125), (375,375).
    """
    return _es_grid(int(m), float(side))


@lru_cache(maxsize=64)
def _es_grid(m: int, side: float) -> np.ndarray:
    cols = math.ceil(math.sqrt(m))
    rows = math.ceil(m / cols)
    xs = (np.arange(cols) + 0.5) * side / cols
    ys = (np.arange(rows) + 0.5) * side / rows
    grid = np.array([(x, y) for x in xs for y in ys], dtype=np.float64)[:m]
    grid.flags.writeable = False
    return grid


def path_gain(distance_m: np.ndarray, carrier_hz: float, model: str) -> np.ndarray:
    """Deterministic large-scale power gain (linear) of path-loss ``model`` (:mod:`mec_env.radio`) at
    the given distances: ``free_space`` (c / (4 pi f d))^2, ``3gpp_umi`` the NLOS formula of TR 38.901
    UMi, ``3gpp_umi_los`` its NLOS gain (a draw multiplies its LOS state and shadowing)."""
    return path_loss_model(model).gain(distance_m, carrier_hz)


def user_es_distance(user_xy: np.ndarray, es_xy: np.ndarray, min_distance_m: float) -> np.ndarray:
    """Horizontal distance of every user (..., N, 2) to every ES (M, 2), floored: (..., N, M)."""
    dx = user_xy[..., :, None, 0] - es_xy[:, 0]
    dy = user_xy[..., :, None, 1] - es_xy[:, 1]
    with np.errstate(over="ignore"):  # an astronomic area gives an infinite distance, hence a path gain of 0
        return floored_distance(dx, dy, min_distance_m)


def check_received_power(cfg: ScenarioConfig, gain: np.ndarray, n: int | None = None) -> None:
    """Every SINR and interference sum stays finite only if P x gain x N does; else a ConfigError.

    ``gain`` is a slot's (..., N, M) gains, or with ``n`` given any array holding the largest gain.
    """
    n = gain.shape[-2] if n is None else n
    if not math.isfinite(cfg.tx_power_w * n):
        raise ConfigError("tx_power_w", cfg.tx_power_w, f"a power at which P x N (N = {n}) stays finite")
    if not math.isfinite(cfg.tx_power_w * float(gain.max()) * n):
        # a path gain above 1 means the floor sits inside the near field: that is the setting to blame
        raise ConfigError("min_distance_m" if float(gain.max()) > 1.0 else "tx_power_w",
                          cfg.min_distance_m if float(gain.max()) > 1.0 else cfg.tx_power_w,
                          "a value at which the received power P x path gain x N stays finite (with "
                          f"min_distance_m = {cfg.min_distance_m:g}, carrier_hz = {cfg.carrier_hz:g}, "
                          f"tx_power_w = {cfg.tx_power_w:g}, N = {n})")


def finite_ratio(a: float, b: float) -> float:
    """``a / b``, infinite when ``b`` underflowed to 0 (a bound, not a value: no division by zero)."""
    return a / b if b > 0.0 else math.inf


def delay_bounds(cfg: ScenarioConfig, n: int, max_query_bits: float) -> dict[str, float]:
    """The largest delay of each kind any user can have (s), by the setting it is checked against:
    local ``W_SLM / (C_L x low)``, ES compute ``W_LLM / min(C_max, C x low / N)`` and uplink
    ``D_max / min_rate_bps`` (the rate floor caps a rate that underflows)."""
    work = cfg.flops_per_param_token * cfg.effective_tokens
    es_share = cfg.es_capacity_flops * cfg.es_capacity_low / n
    return {
        "local_capacity_flops": finite_ratio(work * cfg.slm_params, cfg.local_capacity_flops * cfg.local_capacity_low),
        ("c_max_flops" if cfg.c_max_flops < es_share else "es_capacity_flops"):
            finite_ratio(work * cfg.llm_params, min(cfg.c_max_flops, es_share)),
        "min_rate_bps": finite_ratio(max_query_bits, cfg.min_rate_bps),
    }


def largest_query_bits(cfg: ScenarioConfig, source: QuerySource) -> float | None:
    """The largest D_i (bits) ``source`` can draw: a trace table's or the bAbI prompts' largest; None
    for another source (its sizes are checked when drawn)."""
    if isinstance(source, TraceQuerySource):
        nbytes = source.table.prompt_bytes
    elif isinstance(source, SyntheticQuerySource):
        nbytes = babi_prompt_sizes()[0]
    else:
        return None
    most = float(nbytes.max())
    return most if cfg.query_size_unit == "bytes_as_bits" else 8.0 * most


def check_scenario(cfg: ScenarioConfig, source: QuerySource) -> None:
    """The checks :func:`problem_from_queries` makes on every draw, made once before any draw (an
    environment's construction), with the largest values a draw can take: worst-case delays with
    the source's largest query, received power at ``min_distance_m`` with the fading model's ``power_max``."""
    bits = largest_query_bits(cfg, source)
    if bits is not None:
        check_delay_bounds(cfg, cfg.n_users, bits)
    with np.errstate(over="ignore", divide="ignore"):
        large_scale = path_loss_model(cfg.path_loss)
        nearest = path_gain(np.array([cfg.min_distance_m]), cfg.carrier_hz, cfg.path_loss) \
            * fading_model(cfg.fading).power_max * large_scale.factor_max
    check_received_power(cfg, nearest, n=cfg.n_users)


def check_delay_bounds(cfg: ScenarioConfig, n: int, max_query_bits: float) -> None:
    """The largest delay any user can have (:func:`delay_bounds`), times N (the objective), must be
    finite; else a ConfigError."""
    work = cfg.flops_per_param_token * cfg.effective_tokens
    # a workload that overflows by itself is the workload's fault, not the capacity's
    for name, value in (("effective_tokens", work), ("slm_params", work * cfg.slm_params),
                        ("llm_params", work * cfg.llm_params)):
        if not math.isfinite(value * n):
            raise ConfigError(name, getattr(cfg, name), "a value that keeps the workload per query x N finite "
                              f"(flops_per_param_token x effective_tokens x params x N = {value * n:g} FLOP)")
    if not math.isfinite(max_query_bits * n):
        raise ConfigError("query_size_unit", cfg.query_size_unit, f"prompt sizes whose sum stays finite "
                          f"(largest D_i = {max_query_bits:g} bits, N = {n})")
    for name, worst in delay_bounds(cfg, n, max_query_bits).items():
        if not math.isfinite(worst * n):
            raise ConfigError(name, getattr(cfg, name), f"a value that keeps the worst-case delay finite "
                              f"(it is {worst:g} s with N = {n})")


def problem_from_queries(
    cfg: ScenarioConfig,
    rng: np.random.Generator,
    queries: QueryBatch,
    n_users: int | None = None,
    batch: tuple[int, ...] = (),
) -> Problem:
    """Draw the radio and compute side of an instance (or a ``batch`` of them) around given queries.

    With ``batch = (B,)`` the query arrays are (B, N) and every draw gets a leading axis; the
    draws are made in the same order, so ``batch = ()`` is the one-instance case.
    """
    n = cfg.n_users if n_users is None else n_users
    m = cfg.n_edge_servers
    es_xy = es_grid_positions(m, cfg.area_side_m)
    user_xy = rng.uniform(0.0, cfg.area_side_m, size=batch + (n, 2))
    fading = fading_model(cfg.fading).draw(rng, batch + (n, m), cfg)  # |h|^2, unit mean (Rayleigh: Exp(1))
    large_scale = path_loss_model(cfg.path_loss)
    if cfg.path_loss == "free_space" and kernels.numba_enabled():
        gain = kernels.free_space_gain_kernel(user_xy.reshape(-1, n, 2), es_xy, fading.reshape(-1, n, m),
                                              cfg.min_distance_m, cfg.carrier_hz).reshape(fading.shape)
    else:
        distance = user_es_distance(user_xy, es_xy, cfg.min_distance_m)
        gain = large_scale.gain(distance, cfg.carrier_hz) * fading
        if large_scale.draw_factor is not None:  # the link's LOS state and shadowing of this draw
            gain = gain * large_scale.draw_factor(rng, distance, cfg.carrier_hz)
    check_received_power(cfg, gain)
    es_capacity = cfg.es_capacity_flops * rng.uniform(cfg.es_capacity_low, cfg.es_capacity_high, size=batch + (m,))
    local_capacity = cfg.local_capacity_flops * rng.uniform(cfg.local_capacity_low, cfg.local_capacity_high,
                                                            size=batch + (n,))
    nbytes = queries.prompt_bytes.astype(np.float64)
    query_bits = nbytes if cfg.query_size_unit == "bytes_as_bits" else 8.0 * nbytes
    check_delay_bounds(cfg, n, float(query_bits.max()))
    flops_per_query = cfg.flops_per_param_token * cfg.effective_tokens
    return Problem(
        gain=gain,
        local_capacity=local_capacity,
        es_capacity=es_capacity,
        query_bits=query_bits,
        workload_slm=np.full(batch + (n,), flops_per_query * cfg.slm_params),
        workload_llm=np.full(batch + (n,), flops_per_query * cfg.llm_params),
        alpha=np.asarray(queries.alpha(cfg.queries.metric), dtype=np.float64),
        slm_correct=np.asarray(queries.slm_correct, dtype=bool),
        llm_correct=np.asarray(queries.llm_correct, dtype=bool),
        c_max=cfg.c_max_flops,
        bandwidth_hz=cfg.bandwidth_hz,
        tx_power_w=cfg.tx_power_w,
        noise_power_w=cfg.noise_power_w,
        tau=cfg.tau,
        interference=cfg.interference,
        min_rate_bps=cfg.min_rate_bps,
        user_xy=user_xy,
        es_xy=es_xy,
    )


def make_query_source(cfg: QueryConfig) -> QuerySource:
    """The query source a scenario names (a trace table loads once per path and is cached)."""
    if cfg.source == "synthetic":
        return SyntheticQuerySource(cfg)
    return TraceQuerySource(cfg.trace_path or None)


def sample_problem(
    cfg: ScenarioConfig,
    rng: np.random.Generator | int,
    n_users: int | None = None,
    source: QuerySource | None = None,
    batch: int | None = None,
) -> Problem:
    """Draw one problem instance, or ``batch`` independent ones along a leading axis.

    :param cfg: the scenario.
    :param rng: a numpy Generator, or an int seed (the paper's draws use seeds 42 + i).
    :param n_users: overrides ``cfg.n_users`` (sweeps over N reuse one config).
    :param source: query source; default the one ``cfg.queries`` names.
    :param batch: None (one instance) or B >= 1 (a batched :class:`Problem`; the batched
        environment draws its slots this way).
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    n = cfg.n_users if n_users is None else int(n_users)
    if n < 1:
        raise ValueError(f"n_users must be >= 1, got {n}")
    shape = () if batch is None else (int(batch),)
    if shape and shape[0] < 1:
        raise ValueError(f"batch must be None or >= 1, got {batch}")
    src = source if source is not None else make_query_source(cfg.queries)
    queries = src.sample(n, rng, shape)
    return problem_from_queries(cfg, rng, queries, n_users=n, batch=shape)
