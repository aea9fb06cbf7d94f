"""Agents: one ``predict`` interface over scripted strategies and trained SB3 models.

Every agent answers ``predict(obs, state=None, episode_start=None, deterministic=True)`` with
``(action, state)``, as SB3 models do, so evaluation code treats them alike: :class:`ScriptedAgent`
plays a baseline strategy, :class:`ModelAgent` a trained model (loaded by
:func:`agents.model_zip.load_model`). Scripted agents read the slot's problem instance from the
environment (``env.unwrapped.problem``); they see the same slot the observation describes.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

import numpy as np

from baselines import STRATEGIES
from mec_env.errors import ConfigError


class Agent(Protocol):
    """What evaluation needs from an agent (SB3 models satisfy it)."""

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]: ...


class ScriptedAgent:
    """A baseline strategy (GOA, Min delay, Edge all, Local all, Random, GOA+LS) as an agent.

    Works on ``MECOffload-v0`` (returns the whole assignment) and ``MECOffloadSeq-v0``
    (solves the slot once when its first user comes up, then returns each user's decision).

    :param env: the (single, unvectorised) environment the agent acts in.
    :param strategy: a name in :data:`baselines.STRATEGIES`.
    :param seed: seed of the Random strategy's own stream.
    """

    def __init__(self, env: Any, strategy: str, seed: int = 0) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError("strategy", strategy, "one of " + ", ".join(repr(s) for s in STRATEGIES))
        self.env = env.unwrapped
        self.strategy = strategy
        self.name = strategy
        self.rng = np.random.default_rng(seed)
        self._problem: Any = None  # held, not its id(): a freed slot's id can come back for the next slot
        self._assignment: np.ndarray | None = None

    def assignment(self) -> np.ndarray:
        """The strategy's assignment of the environment's current slot (cached per slot)."""
        problem = self.env.problem
        if problem is None:
            raise RuntimeError("reset the environment before asking a scripted agent to act")
        if problem is not self._problem:
            self._assignment = np.asarray(STRATEGIES[self.strategy](problem, self.rng), dtype=np.int64)
            self._problem = problem
        return self._assignment

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        a = self.assignment()
        user = getattr(self.env, "current_user", None)
        if user is not None:  # sequential env: this user's decision
            return np.int64(a[user]), state
        return a.copy(), state


class ModelAgent:
    """A trained SB3 / sb3-contrib model as an agent.

    Maskable models (MaskablePPO) get the environment's ``action_masks()`` at every decision;
    with ``normalize`` (a loaded ``VecNormalize``) observations are normalised with its
    statistics first, as during training.

    :param model: the model.
    :param name: the name reports use.
    :param env: the (single) environment the agent acts in; needed for masks.
    :param normalize: a ``VecNormalize`` whose ``normalize_obs`` applies the training statistics.
    """

    def __init__(self, model: Any, name: str = "model", env: Any = None, normalize: Any = None) -> None:
        self.model, self.name, self.normalize = model, name, normalize
        self.env = None if env is None else env.unwrapped
        self.masked = "action_masks" in inspect.signature(model.predict).parameters
        if self.masked and self.env is None:
            raise ValueError(f"{name}: a maskable model needs the environment (for its action_masks())")

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        if self.normalize is not None:
            observation = self.normalize.normalize_obs(observation)
        extra = {"action_masks": self.env.action_masks()} if self.masked else {}
        return self.model.predict(observation, state=state, episode_start=episode_start,
                                  deterministic=deterministic, **extra)


__all__ = ["Agent", "ModelAgent", "ScriptedAgent"]
