"""Agents from saved model files named on a command line: ``PATH`` or ``ALGO:PATH`` (``train/evaluate.py``,
``train/transfer.py``, ``train/rllib_ppo.py --agents``). A model whose policy is the permutation-equivariant
one is rebuilt for the evaluation env's size with the same weights; any other must match the env's spaces."""

from __future__ import annotations

from typing import Callable

import gymnasium as gym

from agents.agent import ModelAgent
from agents.model_zip import ALGORITHMS, load_model, load_vecnormalize


def model_spec(spec: str) -> tuple[str | None, str]:
    """``"ALGO:PATH"`` or ``"PATH"`` -> ``(algorithm or None, path)``."""
    head, sep, tail = spec.partition(":")
    return (head, tail) if sep and head in ALGORITHMS else (None, spec)


def model_factory(name: str, spec: str, vecnormalize: str | None = None) -> Callable[[gym.Env], ModelAgent]:
    """``env -> ModelAgent`` of the saved model ``spec`` (:func:`model_spec`), observations normalised by the
    ``VecNormalize`` statistics file ``vecnormalize`` if given."""
    algorithm, path = model_spec(spec)

    def factory(env: gym.Env):
        # nothing in the zip is unpickled; the env's spaces stand in for the saved ones where they are the same
        model = load_model(path, algorithm=algorithm, reference_env=env)
        if model.observation_space.shape != env.observation_space.shape or model.action_space != env.action_space:
            from agents.policies import EquivariantPolicy, env_sizes, transfer_policy
            from agents.model_zip import ModelLoadError

            if isinstance(model.observation_space, gym.spaces.Dict) != isinstance(env.observation_space,
                                                                                  gym.spaces.Dict):
                flat = not isinstance(model.observation_space, gym.spaces.Dict)
                raise ModelLoadError(f"{path} was trained on {'flat' if flat else 'Dict'} observations, this env "
                                     f"gives {'Dict' if flat else 'flat'} ones: evaluate with --set "
                                     f"flat_obs={str(flat).lower()}")
            if not isinstance(model.policy, EquivariantPolicy):
                raise ModelLoadError(f"{path} was trained on observations of shape {model.observation_space.shape} "
                                     f"({env_sizes(model.action_space)}), this env has "
                                     f"{env.observation_space.shape} ({env_sizes(env.action_space)}); only the "
                                     "equivariant policy transfers to another size")
            try:
                model = transfer_policy(model, env)
            except ValueError as err:
                raise ModelLoadError(f"{path}: {err}") from None
        normalize = None
        if vecnormalize is not None:
            spec = env.spec
            normalize = load_vecnormalize(vecnormalize, lambda: gym.make(spec))
        return ModelAgent(model, name, env=env, normalize=normalize)

    return factory


__all__ = ["model_spec", "model_factory"]
