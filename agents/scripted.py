"""One ``predict`` interface over scripted strategies and trained SB3 models.

Every agent answers ``predict(obs, state=None, episode_start=None, deterministic=True)`` with
``(action, state)``, as SB3 models do, so evaluation code treats them alike. Scripted agents
read the slot's problem instance from the environment (``env.unwrapped.problem``); they see
the same slot the observation describes.
"""

from __future__ import annotations

import importlib
import inspect
import json
import zipfile
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


# algorithm name -> "module:class"; imported only when a model of that kind is loaded
ALGORITHMS = {
    "PPO": "stable_baselines3:PPO", "A2C": "stable_baselines3:A2C", "DQN": "stable_baselines3:DQN",
    "SAC": "stable_baselines3:SAC", "TD3": "stable_baselines3:TD3", "DDPG": "stable_baselines3:DDPG",
    "MaskablePPO": "sb3_contrib:MaskablePPO", "RecurrentPPO": "sb3_contrib:RecurrentPPO",
    "TRPO": "sb3_contrib:TRPO", "QRDQN": "sb3_contrib:QRDQN", "ARS": "sb3_contrib:ARS",
    "CrossQ": "sb3_contrib:CrossQ", "TQC": "sb3_contrib:TQC",
}
# policy module (as SB3 writes it into the zip) -> algorithm, for the algorithms with their own policies
_POLICY_MODULES = (
    ("sb3_contrib.common.maskable", "MaskablePPO"), ("sb3_contrib.common.recurrent", "RecurrentPPO"),
    ("sb3_contrib.qrdqn", "QRDQN"), ("sb3_contrib.ars", "ARS"), ("sb3_contrib.tqc", "TQC"),
    ("sb3_contrib.crossq", "CrossQ"), ("stable_baselines3.dqn", "DQN"), ("stable_baselines3.sac", "SAC"),
)


def algorithm_class(name: str) -> type:
    """The SB3 / sb3-contrib algorithm class called ``name`` (a ConfigError lists the known ones)."""
    if name not in ALGORITHMS:
        raise ConfigError("algorithm", name, "one of " + ", ".join(ALGORITHMS))
    module, cls = ALGORITHMS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as err:
        raise ImportError(f"{name} needs the package {module}: pip install {module.replace('_', '-')}") from err


def detect_algorithm(path: str | Path) -> str:
    """The algorithm that saved ``path``, read from the zip's JSON ``data`` (nothing is unpickled).

    The policy's module names the algorithms with policies of their own (DQN, MaskablePPO,
    RecurrentPPO, ...); actor-critic models are told apart by their settings: TRPO has
    ``cg_max_steps``, PPO ``clip_range``, A2C neither. TD3 and DDPG share everything: pass
    ``DDPG:path`` for DDPG.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
        module = str(data["policy_class"].get("__module__", ""))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as err:
        raise ValueError(f"{path} is not a Stable-Baselines3 model zip ({type(err).__name__}: {err})") from None
    for prefix, algo in _POLICY_MODULES:
        if module.startswith(prefix):
            return algo
    if module.startswith("stable_baselines3.td3"):
        return "TD3"
    if "cg_max_steps" in data:
        return "TRPO"
    return "PPO" if "clip_range" in data else "A2C"


def load_model(path: str | Path, env: Any = None, algorithm: str | None = None) -> Any:
    """Load a saved SB3 or sb3-contrib model (``.zip``); the algorithm is read from the file unless given.

    :param algorithm: a name in :data:`ALGORITHMS`, e.g. ``"MaskablePPO"``; default: :func:`detect_algorithm`.
    :raises FileNotFoundError: with the path when it does not exist.
    """
    path = Path(path)
    if not path.exists() and path.with_suffix(".zip").exists():
        path = path.with_suffix(".zip")
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path} (expected an SB3 .zip, e.g. from train/ppo.py)")
    name = algorithm or detect_algorithm(path)
    return algorithm_class(name).load(path, env=env, device="cpu")


def load_vecnormalize(path: str | Path, make_env: Any) -> Any:
    """Observation statistics saved by ``VecNormalize.save``, frozen for evaluation (no updates)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    if not Path(path).is_file():
        raise FileNotFoundError(f"no VecNormalize statistics at {path} (expected a .pkl from VecNormalize.save)")
    stats = VecNormalize.load(str(path), DummyVecEnv([make_env]))
    stats.training, stats.norm_reward = False, False
    return stats
