"""Evaluate agents on ``MECSpecDecode-v0`` episodes: the one scorer of token-level strategies.

Each agent plays the same held-out episodes (same seeds: the same sessions and channel draws,
which no action changes), so differences are paired. Per episode:

* ``return``: the sum of the env's rewards;
* ``tokens_per_s``: the env's throughput over the episode (``info["throughput_tokens_per_s"]``):
  the sum over users of each user's tokens over its own elapsed time (``timing="user"``), or all
  users' tokens over the summed slots (``timing="slot"``, slots last until their slowest user is done);
* ``accepted_per_s``: the same without the errors (skipped tokens the LLM would have rejected);
* ``vs_hlm``: ``tokens_per_s`` over HLM's on the same episode (paired; needs an ``"HLM"`` agent);
* ``skip_fraction``: drafted tokens not uploaded (U-HLM's saving in uplinks and LLM work);
* ``accuracy``: answers right (the trace's hybrid answer, and no skipped token the LLM would have
  rejected) over answers completed; ``accuracy_vs_llm``: right answers over the answers the LLM
  alone gets right;
* ``energy_j``: device energy per user and round, averaged over the rounds after a burn-in (the
  first ``burn_in`` fraction), users done with their session counting 0 J; ``energy_vs_budget``
  its ratio to the long-term budget (per user and round, as the env's virtual queues count it);
* ``unverified_per_token``: skipped tokens the LLM would have rejected, per emitted token.

Reported as mean and 95 % CI half-width (1.96 s / sqrt(episodes)).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

import gymnasium as gym
import numpy as np

from agents.evaluation import EpisodeResults

SPEC_METRICS = ("return", "tokens_per_s", "accepted_per_s", "vs_hlm", "skip_fraction", "accuracy", "accuracy_vs_llm",
                "energy_j", "energy_vs_budget", "unverified_per_token", "rounds", "decision_ms")


class SpecResult(EpisodeResults):
    METRICS = SPEC_METRICS


def play_episode(env: gym.Env, agent: Any, seed: int, burn_in: float = 0.2) -> dict:
    """One episode of ``agent`` (anything with SB3's ``predict``) from ``reset(seed=seed)``: its totals."""
    obs, _ = env.reset(seed=seed)
    n, budget = env.unwrapped.cfg.n_users, env.unwrapped.options.energy_budget_j
    total = {"return": 0.0, "tokens": 0, "drafted": 0, "uploaded": 0, "unverified": 0, "decide": 0.0}
    energy: list[float] = []
    done = False
    while not done:
        t0 = time.perf_counter()
        action, _ = agent.predict(obs, deterministic=True)
        total["decide"] += time.perf_counter() - t0
        obs, reward, terminated, truncated, info = env.step(action)
        total["return"] += float(reward)
        total["tokens"] += info["tokens"]
        total["drafted"] += info["drafted"]
        total["uploaded"] += info["uploaded"]
        total["unverified"] += info["unverified_rejects"]
        energy.append(info["energy_j"] / n)
        done = terminated or truncated
    rounds = len(energy)
    after = np.asarray(energy[int(burn_in * rounds):] or energy)
    return {
        "return": total["return"], "tokens_per_s": info["throughput_tokens_per_s"],
        "accepted_per_s": info["accepted_tokens_per_s"],
        "skip_fraction": 1.0 - total["uploaded"] / max(1, total["drafted"]),
        "accuracy": info["answers_correct"] / info["answers"] if info["answers"] else float("nan"),
        "accuracy_vs_llm": info["answers_correct"] / info["answers_llm_correct"] if info["answers_llm_correct"]
        else float("nan"),
        "energy_j": float(after.mean()), "energy_vs_budget": float(after.mean()) / budget,
        "unverified_per_token": total["unverified"] / max(1, total["tokens"]), "rounds": rounds,
        "decision_ms": 1e3 * total["decide"] / rounds, "answers": info["answers"],
    }


def evaluate_spec_agents(make_env: Callable[[], gym.Env], agents: Mapping[str, Callable[[gym.Env], Any]],
                         seeds: Iterable[int], burn_in: float = 0.2, progress: bool = False) -> list[SpecResult]:
    """Every agent on one episode per seed; ``agents`` maps a name to ``env -> agent``."""
    seeds = list(seeds)
    per_agent: dict[str, list[dict]] = {}
    for name, factory in agents.items():
        env = make_env()
        agent = factory(env)
        it = seeds
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(seeds, desc=name, unit="episode", leave=False)
        per_agent[name] = [play_episode(env, agent, s, burn_in) for s in it]
        env.close()
    hlm = per_agent.get("HLM")
    results = []
    for name, episodes in per_agent.items():
        for k, e in enumerate(episodes):
            e["vs_hlm"] = e["tokens_per_s"] / hlm[k]["tokens_per_s"] if hlm and hlm[k]["tokens_per_s"] > 0 \
                else float("nan")
        results.append(SpecResult.of(name, episodes))
    return results


def print_spec_results(results: list[SpecResult], title: str) -> None:
    width = max([16] + [len(r.name) for r in results])
    print(f"\n{title}")
    print(f"  {'agent':{width}s} {'return':>15s} {'tokens/s':>9s} {'vs HLM':>14s} {'skipped':>8s} {'acc/LLM':>15s} "
          f"{'J/user-round':>13s} {'/budget':>8s}")
    for r in results:
        m, c = r.mean, r.ci95
        print(f"  {r.name:{width}s} {m['return']:7.2f} ± {c['return']:5.2f} {m['tokens_per_s']:9.1f} "
              f"{m['vs_hlm']:6.3f} ± {c['vs_hlm']:5.3f} {100 * m['skip_fraction']:7.1f}% "
              f"{100 * m['accuracy_vs_llm']:6.1f} ± {100 * c['accuracy_vs_llm']:4.1f}% {m['energy_j']:13.3f} "
              f"{m['energy_vs_budget']:8.3f}")


def print_paired_returns(results: list[SpecResult], agent: str) -> None:
    """``agent``'s return minus every other agent's, episode by episode (same seeds): mean and 95 % CI."""
    mine = next(r for r in results if r.name == agent)
    for r in results:
        if r.name != agent:
            diff = np.array([a["return"] - b["return"] for a, b in zip(mine.episodes, r.episodes)])
            half = 1.96 * diff.std(ddof=1) / np.sqrt(diff.size) if diff.size > 1 else float("nan")
            print(f"  {agent} - {r.name}: return {diff.mean():+.3f} ± {half:.3f} (paired)")


__all__ = ["SPEC_METRICS", "SpecResult", "play_episode", "evaluate_spec_agents", "print_spec_results",
           "print_paired_returns"]
