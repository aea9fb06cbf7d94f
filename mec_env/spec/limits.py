"""What settings of ``MECSpecDecode-v0`` can be simulated: rounds whose times, energies and rewards stay finite in
float64, and token arrays within the memory budget. Each refusal is a :class:`~mec_env.errors.ConfigError` naming
the field that sets the bound. ``o`` is the env's :class:`~mec_env.envs.spec_decode.SpecEnvConfig`."""

from __future__ import annotations

import math
from typing import Any

from mec_env.config import ScenarioConfig
from mec_env.errors import ConfigError


def check_round_bounds(cfg: ScenarioConfig, o: Any) -> None:
    """Refuse settings whose rounds cannot be simulated in finite float64 numbers, naming the field.

    Bounds of one user's round (the evaluator's terms, ``W = flops_per_param_token x params``):
    drafting at most ``L W_SLM / (C_L x low)`` s and at least ``W_SLM / (C_L x high)`` s a token
    (so at most ``C_L x high / W_SLM`` tokens per second), uplink at most ``L x token bits /
    min_rate_bps``, verification at most ``W_LLM (1 + (L - 1) verify_block_cost) / min(C_max, C x
    low / N)``, energy at most ``joule_per_flop x L W_SLM + P x uplink``. The users' rates with
    their ``1 + mu`` error weight, the clocks and queues over ``max_rounds`` and N users, and the
    reward's two terms must stay finite.
    """
    n, length, rounds = cfg.n_users, o.draft_length, o.max_rounds

    def refuse(name: str, what: str, value: float) -> None:
        owner = cfg if hasattr(cfg, name) else o
        raise ConfigError(name, getattr(owner, name), f"a value that keeps {what} finite (it is {value:g})")

    def div(a: float, b: float) -> float:
        return a / b if b > 0.0 else math.inf  # a denominator that underflowed to 0

    slm = cfg.flops_per_param_token * cfg.slm_params
    llm = cfg.flops_per_param_token * cfg.llm_params
    for name, work in (("slm_params", slm), ("llm_params", llm)):
        if not math.isfinite(work * length * n):
            refuse(name, "a round's work of N users (flops_per_param_token x params x L x N FLOP)", work * length * n)
    fastest = div(cfg.local_capacity_flops * max(cfg.local_capacity_high, 1.0), slm)  # tokens/s, r0 included
    if not math.isfinite(fastest * length * n):
        refuse("local_capacity_flops", "the fastest drafting rate of N users, C_L x high / W_SLM x L x N tokens/s",
               fastest * length * n)
    if not math.isfinite((1.0 + o.error_weight) * fastest * length * n):
        refuse("error_weight", "the weighted errors per second, (1 + mu) x C_L x high / W_SLM x L x N",
               (1.0 + o.error_weight) * fastest * length * n)
    upload = div(o.token_bits() * length, cfg.min_rate_bps)
    compute = min(cfg.c_max_flops, cfg.es_capacity_flops * cfg.es_capacity_low / n)
    times = {  # the longest time of each part of a round, by the field that sets it
        "local_capacity_flops": div(slm * length, cfg.local_capacity_flops * cfg.local_capacity_low),
        "min_rate_bps": upload,
        ("c_max_flops" if cfg.c_max_flops <= compute else "es_capacity_flops"):
            div(llm * (1.0 + o.verify_block_cost * (length - 1)), compute),
        "round_trip_s": o.round_trip_s,
    }
    longest = sum(times.values())
    if not math.isfinite(longest * rounds * n):
        name = max(times, key=times.get)
        refuse(name, "the longest round times max_rounds x N (s)", longest * rounds * n)
    energies = {"joule_per_flop": o.joule_per_flop * slm * length, "tx_power_w": cfg.tx_power_w * upload}
    most = sum(energies.values())
    if not math.isfinite(most * rounds * n):
        refuse(max(energies, key=energies.get), "the most energy of a round times max_rounds x N (J)",
               most * rounds * n)
    if not math.isfinite(o.energy_weight * most * n):
        refuse("energy_weight", "lambda x the most energy of a round of N users (J)", o.energy_weight * most * n)
    price = o.energy_weight * most * n / (n * o.energy_budget_j)
    if not math.isfinite(price):
        refuse("energy_budget_j", "the reward's energy term, lambda x the most energy of a round / energy_budget_j",
               price)
    rate = (1.0 + o.error_weight) * length * max(cfg.local_capacity_high, 1.0)  # the rate term in units of r0
    if not math.isfinite(rate + price):
        refuse("error_weight" if rate > price else "energy_weight", "the reward's rate and energy terms together",
               rate + price)


def check_session_memory(cfg: ScenarioConfig, o: Any, entries: int) -> None:
    """Refuse sessions whose (N, T) token arrays (``entries`` float64 in the largest) exceed ``max_array_bytes``."""
    size = 8.0 * entries
    if size > cfg.max_array_bytes:
        name = "session_tokens" if o.session_tokens > type(o).session_tokens else "n_users"  # past the default
        value = o.session_tokens if name == "session_tokens" else cfg.n_users
        raise ConfigError(name, value, f"a size whose token arrays fit the memory budget: N = {cfg.n_users} sessions "
                          f"of session_tokens = {o.session_tokens} from tokens = {o.tokens!r} need "
                          f"{size / 2**30:.3g} GiB in one array > max_array_bytes = "
                          f"{cfg.max_array_bytes / 2**30:.3g} GiB")


__all__ = ["check_round_bounds", "check_session_memory"]
