"""What the environment shells share: their arguments (declared once, as config dataclasses),
action checks and masks, and the penalised objective that every reward is built from.

The penalised objective of an assignment ``a`` on a slot's problem is

    J(a) = objective(a) / objective(all local) + penalty_weight * P(a)

with ``objective`` eq. (10) (``sum_i alpha_i d_i``, from :func:`mec_env.evaluator.evaluate`) and
``P(a)`` either the fraction of users breaking constraint (11) (``penalty="violations"``) or
the fraction answered wrongly (``penalty="wrong_answers"``, i.e. ``1 - accuracy``). All local
therefore has a delay part of exactly 1, and ``-J`` is the reward.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from gymnasium.error import ResetNeeded

from mec_env.config import INF, QueryConfig, ScenarioConfig, build_config, config_field, load_scenario, validate
from mec_env.errors import AssignmentError, ConfigError, UnknownArgumentError
from mec_env.evaluator import BatchEvaluation, Evaluation, validate_assignment
from mec_env.problem import Problem, delay_bounds, finite_ratio, largest_query_bits
from mec_env.queries import QuerySource
from mec_env.slots import LOAD_MAX, SlotProcess

EPISODE_LENGTH_MAX = 10**9  # slots per episode: the finiteness checks multiply bounds by it
PENALTIES = ("violations", "wrong_answers")
RENDER_MODES = ["ansi", "human", "rgb_array"]

Scenario = str | os.PathLike | ScenarioConfig


# --- arguments -------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnvConfig:
    """Arguments of every MECOffload environment, besides ``scenario``, ``render_mode`` and scenario fields."""

    penalty: str = config_field("violations", "P(a) of the reward: fraction of users breaking constraint (11), "
                                "or of wrong answers", choices=PENALTIES)
    penalty_weight: float = config_field(1.0, "lambda, the weight of P(a) in the reward", range=(0.0, INF))
    enforce_constraint: bool = config_field(False, "constraint (11) through the action mask: action_masks() "
                                            "forbids staying local to users with alpha > tau")

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class SlotEnvConfig(EnvConfig):
    """Arguments of the joint environment (``MECOffload-v0``) and its batched twin."""

    episode_length: int = config_field(10, "slots per episode T (then truncated)", range=(1, EPISODE_LENGTH_MAX))
    flat_obs: bool = config_field(False, "one flat float32 Box observation (for MlpPolicy) instead of a Dict")
    mobility_speed_mps: float = config_field(0.0, "user speed of a random walk across slots (m/s); 0 = positions "
                                             "redrawn every slot", range=(0.0, INF))
    background_load: float = config_field(0.0, "mean AR(1) background load fraction of each ES's compute; 0 = off",
                                          range=(0.0, LOAD_MAX))
    difference_rewards: bool = config_field(False, "info['difference_rewards']: each user's reward(a) - reward(a "
                                            "with that user local), its own credit in the slot's reward")


@dataclass(frozen=True)
class BatchedEnvConfig(SlotEnvConfig):
    """Arguments of the batched twin: the joint environment's plus the number of copies."""

    num_envs: int = config_field(64, "copies B stepped together as (B, N, M) arrays", range=(1, INF))


# None means "the scenario's value" for these (the size variants and old callers pass them)
_OPTIONAL_SCENARIO_ARGS = ("n_users", "n_edge_servers", "tau")


def scenario_arguments() -> tuple[str, ...]:
    """The scenario fields an environment takes as keywords (``queries.*`` dotted)."""
    top = tuple(f.name for f in dataclasses.fields(ScenarioConfig) if f.name != "queries")
    return top + ("queries",) + tuple(f"queries.{f.name}" for f in dataclasses.fields(QueryConfig))


def environment_arguments(options: type) -> tuple[str, ...]:
    """Every keyword an environment with these ``options`` takes, besides scenario fields."""
    return ("scenario", "render_mode") + tuple(f.name for f in dataclasses.fields(options))


def build_env_config(options: type, owner: str, scenario: Scenario, kwargs: Mapping[str, Any]
                     ) -> tuple[ScenarioConfig, Any]:
    """Split an environment's keywords into its ``options`` dataclass and scenario overrides; check both.

    A keyword that is neither raises :class:`~mec_env.errors.UnknownArgumentError` (a
    ``TypeError`` too, as toolkits that probe optional keywords expect); a bad value raises the
    :class:`~mec_env.errors.ConfigError` of the field.
    """
    names = {f.name for f in dataclasses.fields(options)}
    known_scenario = set(scenario_arguments())
    for key, value in kwargs.items():
        if key not in names and key not in known_scenario:
            raise UnknownArgumentError.for_keyword(owner, key, value, environment_arguments(options),
                                                      scenario_arguments())
    overrides = {k: v for k, v in kwargs.items()
                 if k not in names and not (k in _OPTIONAL_SCENARIO_ARGS and v is None)}
    return build_scenario(scenario, overrides), build_config(options, {k: v for k, v in kwargs.items() if k in names})


def build_scenario(scenario: Scenario, overrides: Mapping[str, Any]) -> ScenarioConfig:
    """The validated scenario an environment runs: a name/path or a config, plus field overrides.

    ``overrides`` (field names, dotted keys for ``queries.*``) go through
    :meth:`ScenarioConfig.replace`, so a bad value raises the same :class:`ConfigError` as the
    YAML loader.
    """
    if not isinstance(scenario, (ScenarioConfig, str, os.PathLike)):
        raise ConfigError("scenario", scenario, "a scenario name, a YAML path or a ScenarioConfig")
    if isinstance(scenario, ScenarioConfig):
        return scenario.replace(**overrides) if overrides else scenario
    return load_scenario(scenario, **overrides)


def check_render_mode(render_mode: str | None, modes: list[str]) -> str | None:
    if render_mode is not None and render_mode not in modes:
        raise ConfigError("render_mode", render_mode, "None or one of " + ", ".join(repr(m) for m in modes))
    return render_mode


# --- what every shell has ------------------------------------------------------------------

class SlotShell:
    """The current slot of an environment shell over a :class:`~mec_env.slots.SlotProcess`, and its mask."""

    core: SlotProcess
    options: EnvConfig

    @property
    def problem(self) -> Problem | None:
        """The current slot's problem instance (batched in the batched twin): what the next action decides."""
        return self.core.problem

    def action_masks(self) -> np.ndarray:
        """Allowed actions of the current slot, flattened user by user: (N x (M + 1),), (B, N x (M + 1)) batched."""
        if self.problem is None:
            raise ResetNeeded("call reset() before action_masks()")
        allowed = allowed_actions(self.problem, self.options.enforce_constraint)
        return allowed.reshape(self.problem.batch_shape + (-1,))


class Picture:
    """An environment's matplotlib picture of a slot, made on first use (``rgb_array`` or ``human``)."""

    def __init__(self, render_mode: str | None, area_side_m: float, n_edge_servers: int, title: str,
                 fps: float) -> None:
        self.render_mode, self.fps = render_mode, fps
        self._args = (area_side_m, n_edge_servers, title)
        self._renderer = None

    def __call__(self, problem: Problem, assignment: np.ndarray | None, caption: str, **draw: Any
                 ) -> np.ndarray | None:
        """Draw; return the RGB array (``rgb_array``) or show it in a window and return None (``human``)."""
        if self._renderer is None:
            from mec_env.envs.render import SlotRenderer  # matplotlib, imported on first use

            self._renderer = SlotRenderer(*self._args)
        self._renderer.draw(problem, assignment, caption=caption, **draw)
        if self.render_mode == "human":
            self._renderer.show(self.fps)
            return None
        return self._renderer.rgb_array()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


# --- actions and masks -----------------------------------------------------------------------

def as_assignment(action: Any, n: int, m: int, what: str = "action") -> np.ndarray:
    """A joint action checked to be an assignment vector: shape (N,), integers in 0..M."""
    a = np.asarray(action)
    if a.shape != (n,):
        raise AssignmentError(f"{what} has shape {a.shape}; expected ({n},): one entry per user, "
                              f"0 (local) .. M = {m} (ES index)")
    return validate_assignment(a, n, m, what)


def as_choice(action: Any, m: int, what: str = "action") -> int:
    """A per-user action checked to be one integer in 0..M (a scalar or a length-1 array)."""
    a = np.asarray(action)
    if a.shape not in ((), (1,)):
        raise AssignmentError(f"{what} has shape {a.shape}; expected one integer 0 (local) .. M = {m} (ES index)")
    return int(validate_assignment(a.reshape(1), 1, m, what)[0])


def allowed_actions(problem: Problem, enforce_constraint: bool) -> np.ndarray:
    """``(..., N, M + 1)`` bool: may user i take action k (0 = local, j = ES j)?

    Every action is allowed unless ``enforce_constraint``, which forbids local (column 0) to
    users with alpha > tau, as constraint (11) asks: an agent that follows the mask
    (MaskablePPO) never breaks (11). The environments still accept every action of their
    space, as Gymnasium's contract and checker require; an action outside the mask is
    evaluated and its violations penalised like any other. Flattened over the last two axes,
    this is the mask sb3-contrib's MaskablePPO expects for ``MultiDiscrete([M + 1] * N)``.
    """
    allowed = np.ones(problem.alpha.shape + (problem.n_edge_servers + 1,), dtype=bool)
    if enforce_constraint:
        allowed[..., 0] = ~(problem.alpha > problem.tau)
    return allowed


# --- reward and metrics ----------------------------------------------------------------------

HEADROOM = 1.01  # a bound checked finite with this margin stays finite through the (relative) rounding of sums


def check_reward_scale(cfg: ScenarioConfig, penalty_weight: float, source: QuerySource) -> None:
    """J of every slot stays finite, or a ConfigError at construction.

    ``objective(a) / objective(all local) <= max_i d_i / t_L,i``: the worst-case delay of a user
    (:func:`~mec_env.problem.delay_bounds`, an ES left with 1 - ``LOAD_MAX`` of its compute by the
    background load) over the fastest local delay ``W_SLM / (C_L x high)``; J adds
    ``penalty_weight`` x a fraction. The nominal local delay scales observations: it must be > 0.
    """
    bits = largest_query_bits(cfg, source)
    if bits is None:  # a source of unknown query sizes: its draws are checked one by one
        return
    work_slm = cfg.flops_per_param_token * cfg.effective_tokens * cfg.slm_params
    nominal = finite_ratio(work_slm, cfg.local_capacity_flops)
    if not 0.0 < nominal < INF:
        raise ConfigError("local_capacity_flops", cfg.local_capacity_flops, "a value at which the nominal local "
                          f"delay W_SLM / C_L stays positive and finite (it is {nominal:g} s)")
    bounds = delay_bounds(cfg, cfg.n_users, bits)
    (local_name, local), (edge_name, edge), (_, uplink) = bounds.items()
    worst = max(local, edge / (1.0 - LOAD_MAX) + uplink)
    fastest = work_slm / (cfg.local_capacity_flops * cfg.local_capacity_high)
    ratio = finite_ratio(worst, fastest)
    if not math.isfinite(HEADROOM * ratio):
        # blame the end further from a second: an absurdly fast device or an absurdly slow ES / link
        slow = edge_name if edge >= uplink else "min_rate_bps"
        name = "local_capacity_flops" if fastest <= 0.0 or abs(math.log10(fastest)) > abs(math.log10(worst)) \
            else (slow if local < edge / (1.0 - LOAD_MAX) + uplink else local_name)
        raise ConfigError(name, getattr(cfg, name), "a value at which the reward's delay ratio stays finite "
                          f"(worst-case delay {worst:g} s over the fastest local delay {fastest:g} s)")
    if not math.isfinite(HEADROOM * (ratio + penalty_weight)):
        raise ConfigError("penalty_weight", penalty_weight, f"a weight at which the reward stays finite (the "
                          f"delay ratio reaches {ratio:g})")


def penalised_objective(ev: Evaluation | BatchEvaluation, local_objective: float | np.ndarray, penalty: str,
                        weight: float) -> float | np.ndarray:
    """J of the module docstring for an evaluated assignment (or a batch of them, then per slot).

    ``local_objective`` is ``objective(all local)`` of the same problem; it is 0 only when every
    alpha is 0, and then every objective is 0, so the delay part is taken as 0.
    """
    n = ev.assignment.shape[-1]
    pen = ev.n_violations / n if penalty == "violations" else 1.0 - ev.accuracy
    if isinstance(ev, BatchEvaluation):
        positive = local_objective > 0.0
        delay_part = np.where(positive, ev.objective / np.where(positive, local_objective, 1.0), 0.0)
    else:
        delay_part = ev.objective / local_objective if local_objective > 0.0 else 0.0
    return delay_part + weight * pen


def slot_metrics(ev: Evaluation | BatchEvaluation, local_objective: float | np.ndarray, penalty: str,
                 weight: float, prefix: str = "") -> dict[str, Any]:
    """The per-slot ``info`` entries: delays, objective, accuracy, offloading, violations.

    For a :class:`BatchEvaluation` every entry has a leading batch axis (Gymnasium's vector info).
    """
    return {
        f"{prefix}mean_delay_ms": 1e3 * ev.mean_delay,
        f"{prefix}objective": ev.objective,
        f"{prefix}penalised_objective": penalised_objective(ev, local_objective, penalty, weight),
        f"{prefix}accuracy": ev.accuracy,
        f"{prefix}offload_fraction": ev.n_offloaded / ev.assignment.shape[-1],
        f"{prefix}es_users": np.array(ev.es_users, dtype=np.int64),
        f"{prefix}violations": ev.n_violations,
    }


def slot_caption(ev: Evaluation | None, slot: str) -> str:
    """One line about a decided slot, for the text and picture renderings."""
    if ev is None:
        return f"{slot}: no decision yet"
    n = ev.assignment.shape[-1]
    return (f"{slot}: mean delay {1e3 * ev.mean_delay:.2f} ms, accuracy {100 * ev.accuracy:.1f} %, "
            f"offloaded {ev.n_offloaded}/{n}, violations {ev.n_violations}")
