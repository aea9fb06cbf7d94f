"""One ``predict`` interface over scripted strategies and trained SB3 models.

Every agent answers ``predict(obs, state=None, episode_start=None, deterministic=True)`` with
``(action, state)``, as SB3 models do, so evaluation code treats them alike. Scripted agents
read the slot's problem instance from the environment (``env.unwrapped.problem``); they see
the same slot the observation describes.
"""

from __future__ import annotations

from pathlib import Path
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
        self._problem_id: int | None = None
        self._assignment: np.ndarray | None = None

    def assignment(self) -> np.ndarray:
        """The strategy's assignment of the environment's current slot (cached per slot)."""
        problem = self.env.problem
        if problem is None:
            raise RuntimeError("reset the environment before asking a scripted agent to act")
        if self._problem_id != id(problem):
            self._assignment = np.asarray(STRATEGIES[self.strategy](problem, self.rng), dtype=np.int64)
            self._problem_id = id(problem)
        return self._assignment

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        a = self.assignment()
        user = getattr(self.env, "current_user", None)
        if user is not None:  # sequential env: this user's decision
            return np.int64(a[user]), state
        return a.copy(), state


class ModelAgent:
    """A trained SB3 model as an agent (a thin shell that names it)."""

    def __init__(self, model: Any, name: str = "model") -> None:
        self.model, self.name = model, name

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        return self.model.predict(observation, state=state, episode_start=episode_start,
                                  deterministic=deterministic)


def load_model(path: str | Path, env: Any = None) -> Any:
    """Load a saved PPO or DQN model (``.zip``), telling which from the file itself.

    :raises FileNotFoundError: with the path when it does not exist.
    """
    from stable_baselines3 import DQN, PPO

    path = Path(path)
    if not path.exists() and path.with_suffix(".zip").exists():
        path = path.with_suffix(".zip")
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path} (expected an SB3 .zip from train/ppo.py or train/dqn.py)")
    errors = []
    for cls in (PPO, DQN):
        try:
            return cls.load(path, env=env, device="cpu")
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            errors.append(f"{cls.__name__}: {exc}")
    raise ValueError(f"{path} is not a PPO or DQN model: " + "; ".join(errors))
