"""Decentralised rules: each user decides from what it observes itself, with no message from the others.

A device knows its own query's uncertainty alpha_i, the threshold tau, its channel gains to the ESs and the
ESs' broadcast capacities; it does not know where the other users go. These rules are the scripted reference
for learned decentralised policies (``train/ppo.py --set policy=decentralised``), which see the same.
"""

from __future__ import annotations

import numpy as np

from mec_env.problem import Problem


def own_best_es(problem: Problem) -> np.ndarray:
    """Users with alpha > tau (constraint 11) offload to the ES with the largest ``|h_ij|^2 C_j``, their channel
    gain times the ES's capacity; the others stay local. Works on a batch of problems alike."""
    es = 1 + (problem.gain * np.asarray(problem.es_capacity)[..., None, :]).argmax(axis=-1)
    return np.where(problem.alpha > problem.tau, es, 0).astype(np.int64)


__all__ = ["own_best_es"]
