"""Gymnasium environments: ``MECOffload-v0`` (joint, one slot per step), its numpy-batched
twin (``MECOffloadVectorEnv``, the id's ``vector_entry_point``) and ``MECOffloadSeq-v0`` (one
user per step). ``import mec_env`` registers the ids."""

from mec_env.envs.joint import MECOffloadEnv
from mec_env.envs.sequential import MECOffloadSeqEnv
from mec_env.envs.vector import MECOffloadVectorEnv

__all__ = ["MECOffloadEnv", "MECOffloadSeqEnv", "MECOffloadVectorEnv"]
