"""Beyond the paper: the exact optimum of (10)-(13) for small N.

``optimum`` enumerates every feasible assignment (users with alpha > tau choose among the M
ESs, the others among local and the M ESs) in batches through the batched evaluator, so it
is exact by construction; at M = 4 it handles N <= 10 (at most 5^10 ~ 9.8 M assignments,
a few seconds). ``goa_local_search`` starts from GOA and applies the best single-user move
or pairwise swap on the true objective until none improves it.
"""

from __future__ import annotations


import numpy as np

from mec_env.evaluator import objective
from mec_env.problem import Problem

MAX_EXACT_ASSIGNMENTS = 50_000_000


def _feasible_choices(problem: Problem) -> list[np.ndarray]:
    m = problem.n_edge_servers
    forced = problem.alpha > problem.tau
    return [np.arange(1, m + 1) if f else np.arange(0, m + 1) for f in forced]


def optimum(problem: Problem, batch_size: int = 65_536) -> tuple[np.ndarray, float]:
    """The assignment minimising objective (10) subject to (11)-(13), by exhaustive search.

    :returns: ``(assignment, objective)``; ties go to the first in lexicographic order.
    :raises ValueError: when the feasible set exceeds :data:`MAX_EXACT_ASSIGNMENTS`.
    """
    choices = _feasible_choices(problem)
    sizes = np.array([c.size for c in choices], dtype=np.int64)
    total = int(np.prod(sizes, dtype=np.float64))
    if total > MAX_EXACT_ASSIGNMENTS:
        raise ValueError(f"exact search over {total} assignments exceeds {MAX_EXACT_ASSIGNMENTS}; "
                         f"use N <= 10 at M = 4 (got N = {problem.n_users}, M = {problem.n_edge_servers})")
    # mixed-radix decoding of a flat index into one choice per user (user 0 most significant)
    strides = np.array([int(np.prod(sizes[i + 1:])) for i in range(sizes.size)], dtype=np.int64)
    lookup = np.full((sizes.size, int(sizes.max())), -1, dtype=np.int64)
    for i, c in enumerate(choices):
        lookup[i, : c.size] = c
    best_value, best = np.inf, None
    for start in range(0, total, batch_size):
        flat = np.arange(start, min(start + batch_size, total), dtype=np.int64)
        digits = (flat[:, None] // strides[None, :]) % sizes[None, :]
        assignments = lookup[np.arange(sizes.size)[None, :], digits]
        values = objective(problem, assignments)
        k = int(np.argmin(values))
        if values[k] < best_value:
            best_value, best = float(values[k]), assignments[k].copy()
    assert best is not None
    return best, best_value
