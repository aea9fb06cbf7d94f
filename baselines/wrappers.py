"""Scripted strategies next to any agent, on the same slots: a Gymnasium wrapper.

    env = StrategyInfo(gym.make("MECOffload-v0", n_users=20), strategies=("GOA", "Min delay"))
    obs, reward, terminated, truncated, info = env.step(action)
    info["goa_mean_delay_ms"], info["min_delay_penalised_objective"]

The environments know nothing of the strategies (the strategies are built on them); this
wrapper reads the slot the action decides (``env.unwrapped.problem``) before the step, solves
it with each strategy and evaluates the result with the one evaluator, under the
environment's own reward settings. The joint environment reports on every step, the
sequential one on the step that ends the slot.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from baselines import STRATEGIES
from mec_env.envs.common import slot_metrics
from mec_env.errors import ConfigError
from mec_env.evaluator import evaluate


def info_prefix(strategy: str) -> str:
    """``"Min delay"`` -> ``"min_delay_"``: the prefix of that strategy's ``info`` keys."""
    return strategy.lower().replace(" ", "_").replace("+", "_") + "_"


class StrategyInfo(gym.Wrapper):
    """Adds each strategy's slot metrics to ``info`` (``goa_mean_delay_ms``, ...).

    :param env: ``MECOffload-v0`` or ``MECOffloadSeq-v0`` (wrapped or not).
    :param strategies: names in :data:`baselines.STRATEGIES`; default GOA.
    :param seed: seed of the Random strategy's own stream.
    """

    def __init__(self, env: gym.Env, strategies: Sequence[str] = ("GOA",), seed: int = 0) -> None:
        super().__init__(env)
        for name in strategies:
            if name not in STRATEGIES:
                raise ConfigError("strategies", name, "names among " + ", ".join(repr(s) for s in STRATEGIES))
        self.strategies = tuple(strategies)
        self._rng = np.random.default_rng(seed)

    def step(self, action: Any):
        base = self.env.unwrapped
        problem, scale = base.problem, base.core.local_objective  # the slot this action decides
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "mean_delay_ms" in info:  # the slot is decided (every joint step; the sequential env's last)
            o = base.options
            for name in self.strategies:
                ev = evaluate(problem, STRATEGIES[name](problem, self._rng))
                info.update(slot_metrics(ev, scale, o.penalty, o.penalty_weight, prefix=info_prefix(name)))
        return obs, reward, terminated, truncated, info
