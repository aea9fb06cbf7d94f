"""The token env's round-number sharing against processor sharing in continuous time, on the rounds a strategy plays.

``MECSpecDecode-v0`` with ``timing="user"`` runs each user on its own clock but shares the uplink band and the ES
among the users in the same round number (:func:`mec_env.timeline.round_number_timeline`). This module replays
the rounds a scripted strategy plays in the env (its drafts, uploads and emitted tokens, which do not depend on the
timing) under both time models, :func:`mec_env.timeline.shared_timeline` being the exact one, and reports each
model's throughput. The channel of the episode's first round is held for the whole horizon: a time model needs one
channel over time, where the env redraws it every round number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from baselines.token_policies import rule_factory
from mec_env.timeline import RoundPhases, Timeline, round_number_timeline, shared_timeline


@dataclass(frozen=True)
class PlayedRounds:
    """The rounds one episode played: the first round's problem, each user's ES, the phases and the tokens each
    round emitted (N, R)."""

    problem: Any
    es: np.ndarray
    phases: RoundPhases
    emitted: np.ndarray


def play_rounds(strategy: str, seed: int, rounds: int, **env_kwargs: Any) -> PlayedRounds:
    """Play ``rounds`` rounds of ``strategy`` (:data:`baselines.token_policies.RULES`) in ``MECSpecDecode-v0`` from
    ``seed`` and read each user's phases off the round evaluator: drafting time, the uplink's bits (uploaded tokens
    and a new generation's prompt), the ES's FLOPs (the verified block and the prompt's prefill) and the round
    trip; a user that drafts nothing with tokens left sits out one token's
    drafting time, as the env charges it."""
    env = gym.make("MECSpecDecode-v0", timing="user", **env_kwargs)
    u = env.unwrapped
    obs, _ = env.reset(seed=seed)
    agent = rule_factory(strategy)(env)
    n = u.cfg.n_users
    local, bits, flops, wait, emitted = (np.zeros((n, rounds)) for _ in range(5))
    problem = es = None
    for k in range(rounds):
        clock = u.user_time.copy()
        action, _ = agent.predict(obs)
        obs, _, terminated, truncated, _ = env.step(action)
        ev = u.last
        if problem is None:
            problem, es = u.last_round[0], u.last_round[1].copy()
        # a user that drafted nothing: the time the env charged it (one token's drafting while it has work left)
        local[:, k] = np.where(ev.draft_time > 0, ev.draft_time, u.user_time - clock)
        bits[:, k] = ev.bits
        flops[:, k] = ev.es_flops
        wait[:, k] = ev.wait_time
        emitted[:, k] = ev.emitted
        if terminated or truncated:
            local, bits, flops, wait, emitted = (x[:, :k + 1] for x in (local, bits, flops, wait, emitted))
            break
    env.close()
    return PlayedRounds(problem, es, RoundPhases(local, bits, flops, wait), emitted)


def throughput(timeline: Timeline, emitted: np.ndarray) -> float:
    """Tokens per second summed over users, each user's tokens over its own elapsed time (the env's metric)."""
    elapsed = timeline.round_end[:, -1]
    tokens = emitted.sum(axis=1)
    return float(np.where(elapsed > 0, tokens / np.where(elapsed > 0, elapsed, 1.0), 0.0).sum())


def compare(strategy: str, seed: int, rounds: int, **env_kwargs: Any) -> dict:
    """One episode of ``strategy`` under both time models: throughputs (tokens/s) and their ratio."""
    played = play_rounds(strategy, seed, rounds, **env_kwargs)
    exact = shared_timeline(played.problem, played.es, played.phases)
    approx = round_number_timeline(played.problem, played.es, played.phases)
    t_exact, t_approx = throughput(exact, played.emitted), throughput(approx, played.emitted)
    return {"strategy": strategy, "seed": seed, "rounds": played.emitted.shape[1],
            "throughput_round_number": t_approx, "throughput_continuous": t_exact,
            "ratio": t_approx / t_exact if t_exact > 0 else float("nan"), "events": exact.events}


__all__ = ["PlayedRounds", "compare", "play_rounds", "throughput"]
