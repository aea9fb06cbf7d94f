"""Offloading strategies as pure functions ``solve(problem, ...) -> assignment``.

The paper's five (GOA, Min delay, Edge all, Local all, Random) and ours beyond it (the
exact optimum for small N, GOA + local search, GOA + iterated local search, and the decentralised "Own best
ES", each user deciding from its own observation). ``STRATEGIES`` maps the names used in
reports to callables taking ``(problem, rng)``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from baselines.decentralised import own_best_es
from baselines.local_search import goa_local_search, iterated_local_search
from baselines.optimum import optimum
from baselines.greedy import edge_all, goa, local_all, min_delay, random_offload
from mec_env.problem import Problem

Strategy = Callable[[Problem, np.random.Generator], np.ndarray]

STRATEGIES: dict[str, Strategy] = {
    "Local all": lambda p, rng: local_all(p),
    "Edge all": lambda p, rng: edge_all(p),
    "Min delay": lambda p, rng: min_delay(p),
    "GOA": lambda p, rng: goa(p),
    "Random": lambda p, rng: random_offload(p, rng),
    "GOA+LS": lambda p, rng: goa_local_search(p),
    "GOA+ILS": lambda p, rng: iterated_local_search(p, rng),
    "Own best ES": lambda p, rng: own_best_es(p),
}
PAPER_STRATEGIES = ("Local all", "Edge all", "Min delay", "GOA", "Random")

__all__ = ["STRATEGIES", "PAPER_STRATEGIES", "goa", "min_delay", "edge_all", "local_all", "random_offload",
           "optimum", "goa_local_search", "iterated_local_search", "own_best_es"]
