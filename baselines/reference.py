"""What the fast solvers are checked against (``tests/``, ``bench/bench.py``): Algorithm 1 (GOA) exactly
as the paper prints it, every Delta_ij recomputed from scratch, and a generator of random paper-scenario
instances (random N, M, tau, interference model and query source). Slow on purpose: not a strategy."""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

from mec_env.config import load_scenario
from baselines.greedy import goa
from mec_env.evaluator import evaluate, objective, violations
from mec_env.problem import Problem, sample_problem


def reference_goa(problem: Problem, tau: float | None = None) -> np.ndarray:
    """Algorithm 1 as printed: every Delta_ij recomputed from scratch through the evaluator.

    Delta_ij = alpha_i (d_i with i joined to ES j - t_L_i), where d_i comes from evaluating
    the current partial assignment with i added: exactly "as if i joined j now".
    """
    tau = problem.tau if tau is None else tau
    n, m = problem.n_users, problem.n_edge_servers
    x = np.zeros(n, dtype=np.int64)

    def gap(i: int, j: int) -> float:
        trial = x.copy()
        trial[i] = j + 1
        return problem.alpha[i] * (evaluate(problem, trial).delay[i] - problem.local_delay[i])

    def best(users: list[int]) -> tuple[float, int, int]:
        return min((gap(i, j), i, j) for i in users for j in range(m))

    i_off = [i for i in range(n) if problem.alpha[i] > tau]
    while i_off:
        _, i, j = best(i_off)
        x[i] = j + 1
        i_off.remove(i)
    i_rem = [i for i in range(n) if problem.alpha[i] <= tau]
    while i_rem:
        d, i, j = best(i_rem)
        if not d < 0:
            break
        x[i] = j + 1
        i_rem.remove(i)
    return x


def random_instances(count: int, seed: int, n_max: int = 60, m_max: int = 6) -> Iterator[Problem]:
    """``count`` paper-scenario draws with random N in [1, n_max], M in [1, m_max], tau, interference model
    and query source; instance k is drawn with seed ``seed * 10_000 + k``."""
    rng = np.random.default_rng(seed)
    base = load_scenario("paper")
    for k in range(count):
        cfg = base.replace(n_edge_servers=int(rng.integers(1, m_max + 1)), tau=float(rng.choice([0.0, 0.3, 0.6, 1.0])),
                           interference=str(rng.choice(["physical", "paper", "none"])),
                           **{"queries.source": str(rng.choice(["traces", "synthetic"]))})
        yield sample_problem(cfg, seed * 10_000 + k, n_users=int(rng.integers(1, n_max + 1)))


__all__ = ["reference_goa", "random_instances"]


def goa_local_search_reference(problem: Problem, max_rounds: int = 1000) -> np.ndarray:
    """:func:`baselines.local_search.goa_local_search` by brute force: every neighbour through the
    evaluator, every round."""
    a = goa(problem)
    n, m = problem.n_users, problem.n_edge_servers
    current = float(objective(problem, a))
    pairs = np.array(list(itertools.combinations(range(n), 2)), dtype=np.int64).reshape(-1, 2)
    for _ in range(max_rounds):
        moves = np.repeat(a[None, :], n * (m + 1), axis=0)
        moves[np.arange(n * (m + 1)), np.repeat(np.arange(n), m + 1)] = np.tile(np.arange(m + 1), n)
        swaps = np.repeat(a[None, :], len(pairs), axis=0)
        swaps[np.arange(len(pairs)), pairs[:, 0]] = a[pairs[:, 1]]
        swaps[np.arange(len(pairs)), pairs[:, 1]] = a[pairs[:, 0]]
        neighbours = np.concatenate([moves, swaps])
        feasible = ~violations(problem, neighbours).any(axis=-1)
        values = np.where(feasible, objective(problem, neighbours), np.inf)
        k = int(np.argmin(values))
        if not values[k] < current * (1 - 1e-12):
            break
        a, current = neighbours[k].copy(), float(values[k])
    return a
