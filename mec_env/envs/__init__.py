"""Gymnasium environments: ``MECOffload-v0`` (joint, one slot per step) and
``MECOffloadSeq-v0`` (one user per step). ``import mec_env`` registers both ids."""

from mec_env.envs.joint import MECOffloadEnv
from mec_env.envs.sequential import MECOffloadSeqEnv

__all__ = ["MECOffloadEnv", "MECOffloadSeqEnv"]
