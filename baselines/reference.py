"""What the fast solvers are checked against (``tests/``, ``bench/bench.py``): Algorithm 1 (GOA) exactly
as the paper prints it, every Delta_ij recomputed from scratch, and a generator of random paper-scenario
instances (random N, M, tau, interference model and query source). Slow on purpose: not a strategy."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from mec_env.config import load_scenario
from mec_env.model import evaluate
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
