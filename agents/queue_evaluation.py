"""What is measured on ``MECOffloadQueue-v0`` episodes: the queue level of the one evaluation loop.

    from agents.evaluation import evaluate_agents, print_table
    from agents.queue_evaluation import QUEUE
    results = evaluate_agents(make_env, {"GOA": lambda env: QueuePolicyAgent(env, queue_goa)}, seeds, level=QUEUE)

Every policy plays the same episodes (same seeds: the same arrivals, queries, channels), so
differences are paired. A record per episode (after ``burn_in`` of its slots, which start from
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
* ``return``: the sum of the env's rewards;
* ``in_system_trace``: queries in the system at every slot's end (for plots; not averaged).

Reported as mean and 95 % CI half-width (1.96 s / sqrt(episodes)).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.evaluation import Column, Episode, EvaluationResult, Level, evaluate_agents, paired_difference, print_table
from mec_env.io import atomic_write_csv
from mec_env.seeds import held_out_seeds

QUEUE_METRICS = ("objective_ms", "delay_ms", "accuracy", "violations", "offloaded", "power_w", "energy_vs_budget",
                 "worst_energy_vs_budget", "in_system", "es_backlog_s", "growth", "return")


class QueueEpisode(Episode):
    """The running sums of one queue episode; its record (module docstring) at the end."""

    def __init__(self, env: gym.Env, burn_in: float) -> None:
        self.env, self.burn_in = env.unwrapped, burn_in
        self.total, self.in_system, self.backlog = 0.0, [], []

    def step(self, reward: float, info: dict, seconds: float, done: bool) -> None:
        self.total += float(reward)
        self.in_system.append(info["in_system"])
        self.backlog.append(float(info["es_backlog_flop"].sum()))

    def end(self, info: dict) -> dict:
        u = self.env
        t = u.totals
        start = int(self.burn_in * len(self.in_system))
        q = np.asarray(self.in_system[start:], dtype=float)
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
            "es_backlog_s": float(np.mean(self.backlog[start:])) / nominal,
            "growth": float(slope),
            "return": self.total,
            "in_system_trace": np.asarray(self.in_system),  # per slot, for plots (not aggregated)
        }


class QueueLevel(Level):
    """The queue level (module docstring); ``burn_in`` the share of an episode's slots left out of its queue
    statistics."""

    metrics = QUEUE_METRICS
    key = "policy"
    columns = (
        Column("objective ms", "objective_ms", "9.2f", 16, ci="4.2f"),
        Column("accuracy", "accuracy", "9.3f", 16, ci=".3f"),
        Column("energy/budget", "energy_vs_budget", "14.2f", 14),
        Column("in system", "in_system", "10.1f", 10),
    )
    name_width = 14
    name_align = ">"
    indent = ""

    def __init__(self, burn_in: float = 0.2) -> None:
        self.burn_in = burn_in

    def episode(self, env: gym.Env) -> QueueEpisode:
        return QueueEpisode(env, self.burn_in)


QUEUE = QueueLevel()


def scripted_agents() -> dict[str, Any]:
    """The queue-aware scripted policies every learned queueing policy is compared with."""
    from baselines.queue_policies import drift_plus_penalty, myopic_goa, queue_agent, queue_goa, queue_min_delay

    policies = {"GOA": queue_goa, "Min delay": queue_min_delay, "GOA (myopic)": myopic_goa,
                "DPP V=0.1": lambda env: drift_plus_penalty(env, v=0.1)}
    return {name: queue_agent(policy, name) for name, policy in policies.items()}


def compare(model: Any, cfg: Any, seeds: list[int], progress: bool = False, scripted: bool = True,
            name: str = "PPO") -> list[EvaluationResult]:
    """``model`` (named ``name``) and, with ``scripted``, the scripted policies on the episodes of ``seeds`` of
    ``cfg``'s environment."""
    from agents.agent import ModelAgent

    agents = scripted_agents() if scripted else {}
    agents[name] = lambda env: ModelAgent(model, name, env=env)
    return evaluate_agents(lambda: gym.make(cfg.env_id, **cfg.env_kwargs), agents, seeds, level=QUEUE,
                           progress=progress)


def final_comparison(model: Any, cfg: Any, out_dir: Path, what: str, name: str = "PPO") -> list[EvaluationResult]:
    """``model`` and the scripted policies on ``final_eval_seeds`` held-out episodes (seeds 20_000 + k): the
    table, the model's paired relative difference in objective to each, and ``{out_dir}/comparison.csv``."""
    results = compare(model, cfg, held_out_seeds(cfg.final_eval_seeds), progress=True, name=name)
    print_table(results, f"{cfg.env_id} {cfg.env_kwargs}, {cfg.final_eval_seeds} held-out episodes ({what})")
    by_name = {r.name: r for r in results}
    for other, (mean, half) in paired_difference(results, name, "objective_ms", relative=True).items():
        print(f"  {name} vs {other}: objective {100 * mean:+.1f} % ± {100 * half:.1f} % (paired), "
              f"accuracy {by_name[name].mean['accuracy'] - by_name[other].mean['accuracy']:+.3f}")
    atomic_write_csv(out_dir / "comparison.csv", [r.row() for r in results])
    return results


__all__ = ["QUEUE_METRICS", "QueueEpisode", "QueueLevel", "QUEUE", "compare", "final_comparison", "scripted_agents"]
