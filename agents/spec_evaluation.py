"""What is measured on ``MECSpecDecode-v0`` episodes: the token level of the one evaluation loop.

    from agents.evaluation import evaluate_agents, print_table
    from agents.spec_evaluation import TOKENS
    results = evaluate_agents(make_env, {"HLM": rule_factory("HLM"), "GELATO": rule_factory("GELATO")}, seeds,
                              level=TOKENS)

Each agent plays the same held-out episodes (same seeds: the same sessions and channel draws,
which no action changes), so differences are paired. A record per episode:

* ``return``: the sum of the env's rewards;
* ``tokens_per_s``: the env's throughput over the episode (``info["throughput_tokens_per_s"]``):
  the sum over users of each user's tokens over its own elapsed time (``timing="user"``), or all
  users' tokens over the summed slots (``timing="slot"``, slots last until their slowest user is done);
* ``accepted_per_s``: the same without the errors (skipped tokens the LLM would have rejected);
* ``goodput_per_s``: the same with each error counting ``1 + mu`` tokens off (the env's ``error_weight``:
  a kept reject spoils its answer), the rate of the env's reward;
* ``vs_hlm``: ``tokens_per_s`` over HLM's on the same episode (paired; needs an ``"HLM"`` agent, or the
  level's ``reference`` agent: e.g. HLM at its best fixed drafting budget);
* ``skip_fraction``: drafted tokens not uploaded (U-HLM's saving in uplinks and LLM work);
* ``accuracy``: answers right (the trace's hybrid answer, and no skipped token the LLM would have
  rejected) over answers completed; ``accuracy_vs_llm``: right answers over the answers the LLM
  alone gets right;
* ``energy_j``: device energy per round of drafting (the users' energy over the rounds in which they
  drafted), over the rounds after a burn-in (the first ``burn_in`` fraction); ``energy_vs_budget``
  its ratio to the long-term budget (per round of drafting, as the env's virtual queues count it:
  an idle round, which takes a token's drafting time, neither spends nor earns budget);
* ``unverified_per_token``: skipped tokens the LLM would have rejected, per emitted token.

Reported as mean and 95 % CI half-width (1.96 s / sqrt(episodes)).
"""

from __future__ import annotations

import math

import gymnasium as gym

from agents.evaluation import Column, Episode, EvaluationResult, Level, paired_difference

SPEC_METRICS = ("return", "tokens_per_s", "accepted_per_s", "goodput_per_s", "vs_hlm", "skip_fraction", "accuracy",
                "accuracy_vs_llm", "energy_j", "energy_vs_budget", "unverified_per_token", "rounds", "decision_ms")


class SpecEpisode(Episode):
    """The running totals of one token-level episode; its record (module docstring) at the end."""

    def __init__(self, env: gym.Env, burn_in: float) -> None:
        self.budget = env.unwrapped.options.energy_budget_j
        self.error_weight = env.unwrapped.options.error_weight
        self.burn_in = burn_in
        self.total = {"return": 0.0, "tokens": 0, "drafted": 0, "uploaded": 0, "unverified": 0, "decide": 0.0}
        self.energy: list[float] = []
        self.drafting: list[int] = []

    def step(self, reward: float, info: dict, seconds: float, done: bool) -> None:
        total = self.total
        total["decide"] += seconds
        total["return"] += float(reward)
        total["tokens"] += info["tokens"]
        total["drafted"] += info["drafted"]
        total["uploaded"] += info["uploaded"]
        total["unverified"] += info["unverified_rejects"]
        self.energy.append(info["energy_j"])
        self.drafting.append(info["drafting_users"])

    def end(self, info: dict) -> dict:
        total, energy = self.total, self.energy
        rounds = len(energy)
        start = int(self.burn_in * rounds) if rounds > 1 else 0
        energy_j = sum(energy[start:]) / max(1, sum(self.drafting[start:]))
        return {
            "return": total["return"], "tokens_per_s": info["throughput_tokens_per_s"],
            "accepted_per_s": info["accepted_tokens_per_s"],
            "goodput_per_s": info["accepted_tokens_per_s"] - self.error_weight * (info["throughput_tokens_per_s"] -
                                                                                 info["accepted_tokens_per_s"]),
            "skip_fraction": 1.0 - total["uploaded"] / max(1, total["drafted"]),
            "accuracy": info["answers_correct"] / info["answers"] if info["answers"] else float("nan"),
            "accuracy_vs_llm": info["answers_correct"] / info["answers_llm_correct"] if info["answers_llm_correct"]
            else float("nan"),
            "energy_j": energy_j, "energy_vs_budget": energy_j / self.budget,
            "unverified_per_token": total["unverified"] / max(1, total["tokens"]), "rounds": rounds,
            "decision_ms": 1e3 * total["decide"] / rounds, "answers": info["answers"],
        }


class SpecLevel(Level):
    """The token level (module docstring); ``burn_in`` the share of an episode's rounds left out of its energy,
    ``reference`` the agent ``vs_hlm`` divides by."""

    metrics = SPEC_METRICS
    columns = (
        Column("return", "return", "7.2f", 15, ci="5.2f"),
        Column("tokens/s", "tokens_per_s", "9.1f", 9),
        Column("goodput", "goodput_per_s", "9.1f", 9),
        Column("vs HLM", "vs_hlm", "6.3f", 14, ci="5.3f"),
        Column("skipped", "skip_fraction", "7.1f", 8, scale=100.0, suffix="%"),
        Column("acc/LLM", "accuracy_vs_llm", "6.1f", 15, ci="4.1f", scale=100.0, suffix="%"),
        Column("kept rejects", "unverified_per_token", "6.2f", 12, scale=100.0, suffix="%"),
        Column("J/draft round", "energy_j", "13.3f", 13),
        Column("/budget", "energy_vs_budget", "8.3f", 8),
    )

    def __init__(self, burn_in: float = 0.2, reference: str = "HLM") -> None:
        self.burn_in, self.reference = burn_in, reference

    def episode(self, env: gym.Env) -> SpecEpisode:
        return SpecEpisode(env, self.burn_in)

    def pair(self, played: dict[str, list[dict]]) -> None:
        """``vs_hlm``: tokens per second over the reference's in the same episode (NaN without that agent)."""
        hlm = played.get(self.reference)
        for records in played.values():
            for k, e in enumerate(records):
                e["vs_hlm"] = e["tokens_per_s"] / hlm[k]["tokens_per_s"] if hlm and hlm[k]["tokens_per_s"] > 0 \
                    else math.nan


TOKENS = SpecLevel()


def print_paired_returns(results: list[EvaluationResult], agent: str) -> None:
    """``agent``'s return minus every other agent's, episode by episode (same seeds): mean and 95 % CI."""
    for name, (mean, half) in paired_difference(results, agent, "return").items():
        print(f"  {agent} - {name}: return {mean:+.3f} ± {half:.3f} (paired)")


__all__ = ["SPEC_METRICS", "SpecEpisode", "SpecLevel", "TOKENS", "print_paired_returns"]
