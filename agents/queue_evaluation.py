"""Evaluate policies on ``MECOffloadQueue-v0`` episodes: the one scorer of the dynamic env.

Every policy plays the same episodes (same seeds: the same arrivals, queries, channels), so
differences are paired. A policy is a scripted ``policy(env) -> assignment`` (``baselines.queue``)
or anything with SB3's ``predict``. Per episode (after ``burn_in`` of its slots, which start from
empty queues and are dropped from the queue statistics but not from the objective):

* ``objective_ms``: the long-run objective, alpha-weighted time in the system per query,
  ``sum alpha x time in system / queries`` (queries still queued at the end count the time they
  have spent): what the reward's delay part sums;
* ``delay_ms``: the same without the weights (mean time in the system per query);
* ``accuracy``: queries answered right / queries; ``violations``: share breaking (11);
* ``offloaded``: share of queries offloaded;
* ``power_w``: mean device power over the users and the episode, ``energy_vs_budget`` its ratio to
  the budget, ``worst_energy_vs_budget`` the largest user's ratio;
* ``in_system``: mean queries in the system at slot ends after burn-in, ``es_backlog_s`` mean ES
  work queued (s of nominal ES compute) after burn-in, ``growth`` the backlog's slope over the
  episode after burn-in (queries per 1,000 slots, least squares: ~0 when stable);
* ``return``: the sum of the env's rewards.

Reported as mean and 95 % CI half-width (1.96 s / sqrt(episodes)).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import gymnasium as gym
import numpy as np

from agents.evaluation import EpisodeResults

QUEUE_METRICS = ("objective_ms", "delay_ms", "accuracy", "violations", "offloaded", "power_w", "energy_vs_budget",
                 "worst_energy_vs_budget", "in_system", "es_backlog_s", "growth", "return")


class QueueResult(EpisodeResults):
    """Per-episode metrics of one policy, their means and 95 % CI half-widths."""

    METRICS = QUEUE_METRICS
    KEY = "policy"


def _act(policy: Any, env: gym.Env, obs: Any) -> np.ndarray:
    if hasattr(policy, "predict"):
        return policy.predict(obs, deterministic=True)[0]
    return policy(env.unwrapped)


def play_episode(env: gym.Env, policy: Any, seed: int, burn_in: float = 0.2) -> dict:
    """One episode of ``policy`` from ``reset(seed=seed)``: the module docstring's metrics."""
    obs, _ = env.reset(seed=seed)
    u = env.unwrapped
    total, in_system, backlog = 0.0, [], []
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(_act(policy, env, obs))
        total += float(reward)
        in_system.append(info["in_system"])
        backlog.append(float(info["es_backlog_flop"].sum()))
        done = terminated or truncated
    t = u.totals
    start = int(burn_in * len(in_system))
    q = np.asarray(in_system[start:], dtype=float)
    slope = np.polyfit(np.arange(q.size), q, 1)[0] * 1000.0 if q.size > 1 else 0.0
    arrivals = max(1, t["arrivals"])
    per_user_w = t["energy_per_user_j"] / t["time_s"]
    budget = u.options.energy_budget_w
    nominal = u.cfg.es_capacity_flops * u.cfg.n_edge_servers
    return {
        "objective_ms": 1e3 * t["weighted_area"] / arrivals,
        "delay_ms": 1e3 * t["area"] / arrivals,
        "accuracy": t["correct"] / arrivals,
        "violations": t["violations"] / arrivals,
        "offloaded": t["offloaded"] / arrivals,
        "power_w": float(per_user_w.mean()),
        "energy_vs_budget": float(per_user_w.mean()) / budget,
        "worst_energy_vs_budget": float(per_user_w.max()) / budget,
        "in_system": float(q.mean()),
        "es_backlog_s": float(np.mean(backlog[start:])) / nominal,
        "growth": float(slope),
        "return": total,
        "in_system_trace": np.asarray(in_system),  # per slot, for plots (not aggregated)
    }


def evaluate_queue_policies(make_env: Callable[[], gym.Env], policies: Mapping[str, Any], seeds: Iterable[int],
                            burn_in: float = 0.2, progress: bool = False) -> list[QueueResult]:
    """Every policy (a scripted ``policy(env)`` or anything with SB3's ``predict``) on the same episodes;
    one :class:`QueueResult` each, in ``policies`` order."""
    seeds = list(seeds)
    results = []
    for name, policy in policies.items():
        env = make_env()
        episodes = [play_episode(env, policy, seed, burn_in) for seed in _progress(seeds, f"{name:>16s}", progress)]
        env.close()
        results.append(QueueResult.of(name, episodes))
    return results


def print_queue_results(results: list[QueueResult], title: str) -> None:
    """The comparison table: objective (ms a query, 95 % CI), accuracy, energy over budget, queries in the system."""
    print(f"\n{title}")
    print(f"{'policy':>14s} {'objective ms':>16s} {'accuracy':>16s} {'energy/budget':>14s} {'in system':>10s}")
    for r in results:
        m, c = r.mean, r.ci95
        print(f"{r.name:>14s} {m['objective_ms']:9.2f} ± {c['objective_ms']:4.2f} {m['accuracy']:9.3f} ± "
              f"{c['accuracy']:.3f} {m['energy_vs_budget']:14.2f} {m['in_system']:10.1f}")


def _progress(items: list, desc: str, show: bool) -> Iterable:
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


__all__ = ["QUEUE_METRICS", "QueueResult", "evaluate_queue_policies", "play_episode", "print_queue_results"]
