"""Registers the environments with Gymnasium; ``import mec_env`` runs it.

Entry points are strings, so registering imports neither the environments nor the
baselines they use. Size variants ``MECOffload-N{n}-v0`` / ``MECOffloadSeq-N{n}-v0`` are the
paper scenario with ``n_users = n`` (any keyword of the environment still overrides them).
"""

from __future__ import annotations

from typing import Any

import gymnasium

ENTRY_POINTS = {
    "MECOffload": "mec_env.envs.joint:MECOffloadEnv",
    "MECOffloadSeq": "mec_env.envs.sequential:MECOffloadSeqEnv",
    "MECSpecDecode": "mec_env.envs.spec_decode:MECSpecDecodeEnv",
    "MECOffloadQueue": "mec_env.envs.queue:MECOffloadQueueEnv",
}
# the queueing env's load is set against the ESs' capacity: it has no size variants (N sets lambda)
NO_SIZE_VARIANTS = ("MECOffloadQueue",)
# batched twins: ``gymnasium.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point")``
VECTOR_ENTRY_POINTS = {
    "MECOffload": "mec_env.envs.vector:MECOffloadVectorEnv",
}
SIZE_VARIANTS = (10, 20, 40)


def _register(env_id: str, entry_point: str, kwargs: dict[str, Any], vector_entry_point: str | None) -> None:
    if env_id in gymnasium.registry:  # re-imports and module reloads must not re-register
        return
    # the joint env truncates itself after episode_length slots; no TimeLimit wrapper
    gymnasium.register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point, kwargs=kwargs,
                       max_episode_steps=None)


def register_envs() -> list[str]:
    """Register every id (idempotent) and return them."""
    ids = []
    for name, entry_point in ENTRY_POINTS.items():
        vector = VECTOR_ENTRY_POINTS.get(name)
        _register(f"{name}-v0", entry_point, {}, vector)
        ids.append(f"{name}-v0")
        for n in () if name in NO_SIZE_VARIANTS else SIZE_VARIANTS:
            _register(f"{name}-N{n}-v0", entry_point, {"n_users": n}, vector)
            ids.append(f"{name}-N{n}-v0")
    return ids


ENV_IDS = tuple(register_envs())
