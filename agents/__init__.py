"""Agents behind one ``predict(obs, ...)`` interface: scripted strategies (:class:`ScriptedAgent`)
and trained SB3 models (:class:`ModelAgent`, :func:`load_model`).

The permutation-equivariant policy (``agents.policies``), evaluation on held-out seeds
(``agents.evaluation``) and the training helpers (``agents.training``) import torch and
Stable-Baselines3, so they are imported from their modules.
"""

from agents.agent import Agent, ModelAgent, ScriptedAgent
from agents.model_zip import load_model

__all__ = ["Agent", "ModelAgent", "ScriptedAgent", "load_model"]
