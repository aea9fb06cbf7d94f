"""What the two environments share: argument checks, observation scaling, action checks and
the penalised objective that both rewards are built from.

The penalised objective of an assignment ``a`` on a slot's problem is

    J(a) = objective(a) / objective(all local) + penalty_weight * P(a)

with ``objective`` eq. (10) (``sum_i alpha_i d_i``, from :func:`mec_env.model.evaluate`) and
``P(a)`` either the fraction of users breaking constraint (11) (``penalty="violations"``) or
the fraction answered wrongly (``penalty="wrong_answers"``, i.e. ``1 - accuracy``). All local
therefore has a delay part of exactly 1, and ``-J`` is the reward.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from typing import Any, Mapping, Sequence

import numpy as np

from mec_env.config import ScenarioConfig, load_scenario
from mec_env.errors import AssignmentError, ConfigError
from mec_env.model import BatchEvaluation, Evaluation, validate_assignment

PENALTIES = ("violations", "wrong_answers")

# Channel gains are observed in dB through a fixed affine map, (dB + 90) / 40, clipped to
# [-5, 5]: the paper scenario's gains (free space at 3.5 GHz, 10-500 m, Rayleigh fading)
# span roughly -130 dB .. -55 dB, i.e. about [-1, 1]. A fixed map (not per-slot
# standardisation) keeps an observation comparable across slots.
GAIN_DB_OFFSET = 90.0
GAIN_DB_SCALE = 40.0
GAIN_OBS_CLIP = 5.0
GAIN_FLOOR = 1e-30  # log10 guard; maps to -300 dB, i.e. the clip
RATIO_OBS_MAX = 10.0  # delay ratios (edge / local, local / nominal) are clipped to [0, 10]

Scenario = str | os.PathLike | ScenarioConfig


# --- argument checks -----------------------------------------------------------------------

def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, else :class:`ConfigError` naming ``name``."""
    allowed = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(name, value, allowed)
    if value < low or (high is not None and value > high):
        raise ConfigError(name, value, allowed)
    return int(value)


def check_float(name: str, value: Any, low: float, high: float = math.inf) -> float:
    """``value`` as a finite float in ``[low, high]``, else :class:`ConfigError`."""
    allowed = f"a finite number in [{low:g}, {high:g}]" if math.isfinite(high) else f"a finite number >= {low:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(name, value, allowed)
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(name, value, allowed)
    return value


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise ConfigError(name, value, "one of " + ", ".join(repr(c) for c in choices))
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(name, value, "True or False")
    return bool(value)


def build_scenario(
    scenario: Scenario,
    n_users: int | None,
    n_edge_servers: int | None,
    tau: float | None,
    overrides: Mapping[str, Any],
    env_arguments: Sequence[str] = (),
) -> ScenarioConfig:
    """The validated scenario an environment runs: a name/path or a config, plus overrides.

    ``n_users``, ``n_edge_servers`` and ``tau`` (when not None) and ``overrides`` (field names,
    dotted keys for ``queries.*``) go through :meth:`ScenarioConfig.replace`, so a bad value
    raises the same :class:`ConfigError` as the YAML loader.
    """
    if not isinstance(scenario, (ScenarioConfig, str, os.PathLike)):
        raise ConfigError("scenario", scenario, "a scenario name, a YAML path or a ScenarioConfig")
    try:
        if isinstance(scenario, ScenarioConfig):
            cfg = scenario.replace(**overrides) if overrides else scenario
        else:
            cfg = load_scenario(scenario, **overrides)
    except ConfigError as err:
        if err.kind != "unknown field" or not env_arguments:
            raise
        # a keyword of gymnasium.make that is neither an argument of the env nor a scenario field
        raise ConfigError(err.field, err.value, "an argument of the environment (" + ", ".join(env_arguments)
                          + ") or a scenario field (" + err.allowed.removeprefix("a known field: ") + ")",
                          kind="unknown argument") from None
    changes = {k: (int(v) if isinstance(v, np.integer) else v)
               for k, v in (("n_users", n_users), ("n_edge_servers", n_edge_servers), ("tau", tau)) if v is not None}
    return cfg.replace(**changes) if changes else cfg


def env_arguments(env_class: type) -> tuple[str, ...]:
    """The keyword arguments of an environment's constructor (for error messages)."""
    params = inspect.signature(env_class.__init__).parameters
    return tuple(p for p, v in params.items() if p != "self" and v.kind is not inspect.Parameter.VAR_KEYWORD)


def check_render_mode(render_mode: str | None, modes: list[str]) -> str | None:
    if render_mode is not None and render_mode not in modes:
        raise ConfigError("render_mode", render_mode, "None or one of " + ", ".join(repr(m) for m in modes))
    return render_mode


# --- observations --------------------------------------------------------------------------

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


# --- actions -------------------------------------------------------------------------------

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


# --- reward and metrics --------------------------------------------------------------------

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
        f"{prefix}es_counts": np.array(ev.es_load, dtype=np.int64),
        f"{prefix}violations": ev.n_violations,
    }
