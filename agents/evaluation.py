"""Evaluate any agents on held-out seeds: per-slot delay, accuracy, objective, normalised score.

Each agent plays the same episodes (same seeds, hence the same slots). Metrics are per slot:
the joint env decides a slot per step, the sequential env per episode (its last ``info``).

Normalised score = (J_local_all - J_agent) / |J_local_all - J_GOA|, with J the environment's
penalised objective averaged over slots: 0 is Local all, and GOA is 1 where it beats Local all
(the usual case) or -1 where it does not (GOA forced to offload under overload). The score falls
as J rises in every regime, so a higher score is always a better agent, and an agent beats GOA
exactly when its score is above GOA's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import gymnasium as gym
import numpy as np

from baselines.experiments import mean_ci95

SLOT_METRICS = ("penalised_objective", "mean_delay_ms", "accuracy", "offload_fraction", "violations", "objective")


@dataclass(frozen=True)
class AgentResult:
    """Mean and 95 % CI half-width of every slot metric for one agent."""

    name: str
    slots: int
    mean: Mapping[str, float]
    ci95: Mapping[str, float]
    normalised_score: float = math.nan

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"agent": self.name, "slots": self.slots, "normalised_score": self.normalised_score}
        for k in SLOT_METRICS:
            out[k] = self.mean[k]
            out[f"{k}_ci95"] = self.ci95[k]
        return out


def run_episodes(env: gym.Env, agent: Any, seeds: Iterable[int], deterministic: bool = True) -> list[dict]:
    """Per-slot ``info`` dicts of ``agent`` on one episode per seed."""
    slots: list[dict] = []
    sequential = hasattr(env.unwrapped, "current_user")
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        state, start, done = None, np.ones(1, dtype=bool), False
        while not done:
            action, state = agent.predict(obs, state=state, episode_start=start, deterministic=deterministic)
            obs, _, terminated, truncated, info = env.step(action)
            start = np.zeros(1, dtype=bool)
            done = terminated or truncated
            if not sequential or done:
                slots.append(info)
    return slots


def summarise(name: str, slots: list[dict]) -> AgentResult:
    mean, ci = {}, {}
    for k in SLOT_METRICS:
        mean[k], ci[k] = mean_ci95(np.array([float(s[k]) for s in slots]))
    return AgentResult(name=name, slots=len(slots), mean=mean, ci95=ci)


def evaluate_agents(
    make_env: Callable[[], gym.Env],
    agents: Mapping[str, Callable[[gym.Env], Any]],
    seeds: Iterable[int],
) -> list[AgentResult]:
    """Play every agent on the same seeds; add normalised scores against Local all and GOA.

    :param make_env: builds a fresh single environment.
    :param agents: name -> factory taking the env and returning an agent; "Local all" and
        "GOA" are added (as scripted agents) when missing, since the score needs them.
    """
    from agents.scripted import ScriptedAgent

    seeds = list(seeds)
    factories = dict(agents)
    for ref in ("Local all", "GOA"):
        factories.setdefault(ref, lambda env, ref=ref: ScriptedAgent(env, ref))
    results = {}
    for name, factory in factories.items():
        env = make_env()
        try:
            results[name] = summarise(name, run_episodes(env, factory(env), seeds))
        finally:
            env.close()
    j_local = results["Local all"].mean["penalised_objective"]
    j_goa = results["GOA"].mean["penalised_objective"]
    return [AgentResult(r.name, r.slots, r.mean, r.ci95,
                        normalised_score(r.mean["penalised_objective"], j_local, j_goa)) for r in results.values()]


def normalised_score(j_agent: float, j_local: float, j_goa: float) -> float:
    """``(J_local - J_agent) / |J_local - J_GOA|``: decreasing in ``j_agent`` whatever the sign of the gap."""
    scale = abs(j_local - j_goa)
    return (j_local - j_agent) / scale if scale > 0.0 else math.nan
