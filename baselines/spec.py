"""Scripted strategies of ``MECSpecDecode-v0`` (token-level offloading), as agents with ``predict``.

* **SLM only**: draft ``L`` tokens a round, upload none (no verification).
* **HLM**: draft ``L``, upload every drafted token (speculative decoding without skipping).
* **U-HLM**: draft ``L``, upload a token only when its uncertainty reaches the threshold of
  :func:`mec_env.spec.control.uhlm_threshold` (the fitted uncertainty-rejection line and a
  tolerated risk; ``risk=0`` is the risk-averse variant).
* **GELATO**: each round and user, the drafting budget minimising the drift-plus-penalty bound
  (:func:`mec_env.spec.control.drift_plus_penalty_budget`) against the user's virtual energy
  queue, with the expected tokens, time and energy of each budget from the acceptance the fitted
  line predicts for the user's last uncertainty and the round's channel; every drafted token is
  uploaded and drafting stops after the first token above the exit threshold.

The uncertainty-rejection line defaults to the synthetic source's; pass the one fitted on the
token traces (:func:`mec_env.spec.tokens.rejection_correlations`) when replaying them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mec_env.model import delay_terms
from mec_env.spec.control import drift_plus_penalty_budget, uhlm_threshold
from mec_env.spec.tokens import SyntheticTokenSource

_SYNTHETIC = SyntheticTokenSource()


def _level(env: Any, threshold: float) -> int:
    """The smallest upload level whose threshold is at least ``threshold`` (K - 1: none)."""
    levels = env.thresholds
    above = np.flatnonzero(levels >= threshold)
    return int(above[0]) if above.size else len(levels) - 1


class SpecRuleAgent:
    """One of the strategies above, acting in a (single) ``MECSpecDecode-v0``.

    :param strategy: ``"SLM only"``, ``"HLM"``, ``"U-HLM"`` or ``"GELATO"``.
    :param slope, intercept: the uncertainty-rejection line (U-HLM's threshold, GELATO's expectations).
    :param risk: U-HLM's tolerated rejection probability of a skipped token.
    :param tradeoff: GELATO's V (throughput in units of ``r0`` against the energy backlog in units of the budget).
    :param exit_level: GELATO's early-exit level (uncertainty threshold index).
    """

    STRATEGIES = ("SLM only", "HLM", "U-HLM", "GELATO")

    def __init__(self, env: Any, strategy: str, slope: float = _SYNTHETIC.slope,
                 intercept: float = _SYNTHETIC.intercept, risk: float = 0.1, tradeoff: float = 1.0,
                 exit_level: int | None = None) -> None:
        if strategy not in self.STRATEGIES:
            raise ValueError(f"strategy must be one of {self.STRATEGIES}, got {strategy!r}")
        self.env, self.name = env.unwrapped, strategy
        self.slope, self.intercept, self.tradeoff = slope, intercept, tradeoff
        k = self.env.options.threshold_levels
        self.exit_level = k - 3 if exit_level is None else exit_level
        self.upload_level = {"SLM only": k - 1, "HLM": 0, "GELATO": 0,
                             "U-HLM": _level(self.env, uhlm_threshold(slope, intercept, risk))}[strategy]

    def predict(self, observation: Any = None, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        env, o = self.env, self.env.options
        n, k = env.cfg.n_users, o.threshold_levels
        budget = np.full(n, o.draft_length)
        exit_level = np.full(n, k - 1)
        if self.name == "GELATO":
            budget = self._gelato_budgets()
            exit_level[:] = self.exit_level
        action = np.stack([budget, np.full(n, self.upload_level), exit_level], axis=1)
        return action.reshape(-1).astype(np.int64), state

    def _gelato_budgets(self) -> np.ndarray:
        env, o, cfg = self.env, self.env.options, self.env.cfg
        p, n = env.problem, cfg.n_users
        accept = np.clip(1.0 - (self.slope * env.last_uncertainty + self.intercept), 0.05, 0.99)
        es = p.gain.argmax(axis=1)
        active = env.position < env.streams.length
        sharing = np.bincount(es[active], minlength=cfg.n_edge_servers)
        draft_s = cfg.flops_per_param_token * cfg.slm_params / p.local_capacity  # per token
        budgets = np.zeros(n, dtype=np.int64)
        for i in np.flatnonzero(active):
            def expected(b: int, i: int = i) -> tuple[float, float, float]:
                t_comm, t_verify = delay_terms(p, p.gain[i, es[i]], env.spec_config.token_bits() * b,
                                               cfg.flops_per_param_token * cfg.llm_params * b,
                                               p.es_capacity[es[i]], sharing[es[i]], 0.0)  # interference unknown ahead
                tokens = (1.0 - accept[i] ** b) / (1.0 - accept[i])
                time_s = b * draft_s[i] + float(t_comm) + float(t_verify)
                energy = o.joule_per_flop * cfg.flops_per_param_token * cfg.slm_params * b + p.tx_power_w * t_comm
                return tokens / env.r0, time_s, float(energy) / o.energy_budget_j

            budgets[i] = drift_plus_penalty_budget(env.queue[i] / o.energy_budget_j, self.tradeoff, 1.0,
                                                   range(1, o.draft_length + 1), expected)
        return budgets


__all__ = ["SpecRuleAgent"]
