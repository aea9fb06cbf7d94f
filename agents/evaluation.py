"""Evaluate any agents on held-out seeds: per-slot delay, accuracy, objective, normalised score.

Each agent plays the same episodes (same seeds, hence the same slots). Metrics are per slot:
the joint env decides a slot per step, the sequential env per episode (its last ``info``).

``j_vs_goa_pct`` = 100 (J_agent / J_GOA - 1), paired slot by slot: below 0 beats GOA.

Normalised score = (J_local_all - J_agent) / |J_local_all - J_GOA|, with J the environment's
penalised objective averaged over slots: 0 is Local all, and GOA is 1 where it beats Local all
(the usual case) or -1 where it does not (GOA forced to offload under overload). The score falls
as J rises in every regime, so a higher score is always a better agent, and an agent beats GOA
exactly when its score is above GOA's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Mapping

import gymnasium as gym
import numpy as np

from baselines.experiments import mean_ci95

HELD_OUT_SEED0 = 20_000  # train/evaluate.py and train/transfer.py score on seeds 20_000 + k; training never uses them


@dataclass(frozen=True)
class EpisodeResults:
    """Per-episode metrics of one agent, their means and 95 % CI half-widths (``METRICS``, in table order)."""

    METRICS: ClassVar[tuple[str, ...]] = ()
    KEY: ClassVar[str] = "agent"  # the name's column in :meth:`row`

    name: str
    episodes: list[dict]
    mean: Mapping[str, float]
    ci95: Mapping[str, float]

    @classmethod
    def of(cls, name: str, episodes: list[dict]) -> "EpisodeResults":
        """Summarise ``episodes`` (dicts with every metric) as mean and 95 % CI half-width."""
        stats = {k: mean_ci95(np.array([e[k] for e in episodes], dtype=float)) for k in cls.METRICS}
        return cls(name, episodes, {k: v[0] for k, v in stats.items()}, {k: v[1] for k, v in stats.items()})

    def row(self, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {**extra, self.KEY: self.name, "episodes": len(self.episodes)}
        for k in self.METRICS:
            out[k], out[f"{k}_ci95"] = self.mean[k], self.ci95[k]
        return out


def held_out_seeds(count: int) -> list[int]:
    """The seeds of ``count`` held-out evaluation episodes."""
    return [HELD_OUT_SEED0 + k for k in range(count)]


SLOT_METRICS = ("penalised_objective", "mean_delay_ms", "accuracy", "offload_fraction", "violations", "objective",
                "decision_ms", "j_vs_goa_pct")


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
    """Per-slot ``info`` dicts of ``agent`` on one episode per seed, with ``decision_ms``.

    ``decision_ms`` is the wall time of the agent's ``predict`` calls for the slot (all N of them in
    the sequential env). One decision on a throwaway slot comes first, so compilation and caches
    warmed on first use are not counted.
    """
    slots: list[dict] = []
    sequential = hasattr(env.unwrapped, "current_user")
    seeds = [int(s) for s in seeds]
    if seeds:
        obs, _ = env.reset(seed=seeds[0] + 7_919)  # warm-up, not a held-out slot
        agent.predict(obs, state=None, episode_start=np.ones(1, dtype=bool), deterministic=deterministic)
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        state, start, done, spent = None, np.ones(1, dtype=bool), False, 0.0
        while not done:
            t0 = time.perf_counter()
            action, state = agent.predict(obs, state=state, episode_start=start, deterministic=deterministic)
            spent += time.perf_counter() - t0
            obs, _, terminated, truncated, info = env.step(action)
            start = np.zeros(1, dtype=bool)
            done = terminated or truncated
            if not sequential or done:
                slots.append({**info, "decision_ms": 1e3 * spent})
                spent = 0.0
    return slots


def summarise(name: str, slots: list[dict], goa_slots: list[dict] | None = None) -> AgentResult:
    """Means and 95 % CIs of the slot metrics; with GOA's slots (the same slots, in order) also the paired
    ``j_vs_goa_pct``, 100 (J / J_GOA - 1) slot by slot (J the penalised objective: violations count)."""
    mean, ci = {}, {}
    for k in SLOT_METRICS:
        if k == "j_vs_goa_pct":
            if goa_slots is None or len(goa_slots) != len(slots):
                mean[k] = ci[k] = math.nan
                continue
            values = [100.0 * (float(s["penalised_objective"]) / float(g["penalised_objective"]) - 1.0)
                      for s, g in zip(slots, goa_slots)]
        else:
            values = [float(s[k]) for s in slots]
        mean[k], ci[k] = mean_ci95(np.array(values))
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
    played = {}
    for name, factory in factories.items():
        env = make_env()
        try:
            played[name] = run_episodes(env, factory(env), seeds)
        finally:
            env.close()
    results = {name: summarise(name, slots, played["GOA"]) for name, slots in played.items()}
    j_local = results["Local all"].mean["penalised_objective"]
    j_goa = results["GOA"].mean["penalised_objective"]
    return [AgentResult(r.name, r.slots, r.mean, r.ci95,
                        normalised_score(r.mean["penalised_objective"], j_local, j_goa)) for r in results.values()]


def normalised_score(j_agent: float, j_local: float, j_goa: float) -> float:
    """``(J_local - J_agent) / |J_local - J_GOA|``: decreasing in ``j_agent`` whatever the sign of the gap."""
    scale = abs(j_local - j_goa)
    return (j_local - j_agent) / scale if scale > 0.0 else math.nan
