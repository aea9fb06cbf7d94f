"""The controllers of the two token-level systems, as pure functions.

**U-HLM** (uncertainty-aware skipping): with the empirical line ``rejection ~ slope * u + intercept``
between the SLM's uncertainty u and the LLM's rejection probability (fitted by
:func:`mec_env.lm.token_traces.rejection_correlations`), a token is skipped when its predicted
rejection is at most the tolerated risk rho, i.e. when ``u <= (rho - intercept) / slope``. The
risk-averse threshold takes rho = 0 (skip only where the line predicts no rejection at all); the
paper's derivation is not public here, so rho is a knob and we say so.

**GELATO** (energy-constrained drafting): a virtual energy queue ``Z <- max(Z + e - e_bar, 0)``
turns the long-term average budget ``e_bar`` per round into a per-round price. Each round the outer
loop picks the drafting budget L minimising the drift-plus-penalty bound
``-V * tokens(L) / time(L) + Z * (energy(L) - e_bar)`` (Neely's standard form: V trades throughput
against queue backlog; the time average energy then meets the budget up to O(1/V) while throughput
is within O(1/V) of the best); the inner loop stops drafting after the first token whose SLM
uncertainty (GELATO's entropy, or any metric of the env) exceeds eta. The paper's exact
equations are not public here: this is the standard form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


def uhlm_threshold(slope: float, intercept: float, risk: float = 0.0) -> float:
    """Uncertainty below which a token is skipped: predicted rejection ``slope u + intercept <= risk``.

    :returns: the threshold (``inf``: skip everything; ``-inf``: skip nothing) for a positive slope.
    :raises ValueError: for a slope <= 0 or not finite (uncertainty would not predict rejection).
    """
    if not (math.isfinite(slope) and slope > 0):
        raise ValueError(f"the uncertainty-rejection line must rise (slope > 0) for a threshold; got slope = {slope}")
    if not 0.0 <= risk <= 1.0:
        raise ValueError(f"risk is a probability in [0, 1], got {risk}")
    return (risk - intercept) / slope


def entropy_exit(entropies: np.ndarray, budget: int, eta: float) -> int:
    """GELATO's inner loop: tokens drafted under ``budget`` when drafting stops after the first entropy > eta."""
    e = np.asarray(entropies, dtype=np.float64)[:budget]
    above = np.flatnonzero(e > eta)
    return int(above[0] + 1) if above.size else int(e.size)


@dataclass
class VirtualEnergyQueue:
    """Z(t + 1) = max(Z(t) + e(t) - budget, 0): backlog of energy spent above the long-term budget per round."""

    budget: float
    backlog: float = 0.0

    def update(self, energy: float) -> float:
        self.backlog = max(self.backlog + float(energy) - self.budget, 0.0)
        return self.backlog


def drift_plus_penalty(backlog, tradeoff: float, rate, energy_excess):
    """The per-round drift-plus-penalty bound ``-V rate + Z (e - e_bar)`` (elementwise; the
    energy excess ``e - e_bar`` and the backlog Z in the same unit)."""
    return -tradeoff * rate + backlog * energy_excess


def drift_plus_penalty_budget(backlog: float, tradeoff: float, budget: float, candidates: Sequence[int],
                              expected: Callable[[int], tuple[float, float, float]]) -> int:
    """The drafting budget L of ``candidates`` minimising ``-V tokens(L)/time(L) + Z (energy(L) - budget)``.

    :param expected: ``L -> (expected tokens, expected time s, expected energy J)`` of a round with budget L.
    :param tradeoff: V >= 0, the weight of throughput against the energy backlog.
    """
    best, best_value = int(candidates[0]), math.inf
    for length in candidates:
        tokens, time_s, energy = expected(int(length))
        value = drift_plus_penalty(backlog, tradeoff, tokens / time_s if time_s > 0 else 0.0, energy - budget)
        if value < best_value:
            best, best_value = int(length), value
    return best


__all__ = ["uhlm_threshold", "entropy_exit", "VirtualEnergyQueue", "drift_plus_penalty", "drift_plus_penalty_budget"]
