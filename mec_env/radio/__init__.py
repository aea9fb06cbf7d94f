"""Radio models: the link physics (``link``) and the registries of large-scale (path loss) and
small-scale (fading) channel models, each model one module of this package.

A module registers its model on import (:func:`register_path_loss` / :func:`register_fading`);
every module here is imported below (``pkgutil``), so adding a model is adding one module. The
scenario config's ``path_loss`` and ``fading`` choices are the registries' names, and
:func:`mec_env.problem.problem_from_queries` draws through them, so every env, the vector twin,
the PettingZoo env and the Monte Carlo use a new model without edits elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mec_env.radio.link import INTERFERENCE_MODELS


@dataclass(frozen=True)
class PathLoss:
    """A large-scale gain model.

    ``gain(distance_m, carrier_hz)``: its deterministic gain (linear) at horizontal distances;
    ``draw_factor(rng, distance_m, carrier_hz)``: the random per-link factor of one large-scale
    draw on top of ``gain`` (LOS state, shadow fading), None for a deterministic model (no draw);
    ``factor_max``: a bound of that factor the configuration checks assume.
    """

    name: str
    gain: Callable[[np.ndarray, float], np.ndarray]
    draw_factor: Callable[[np.random.Generator, np.ndarray, float], np.ndarray] | None = None
    factor_max: float = 1.0


@dataclass(frozen=True)
class Fading:
    """A small-scale fading model: ``draw(rng, shape, cfg)`` gives |h|^2 with unit mean; ``power_max``
    a value a draw exceeds with negligible probability (the configuration checks); ``amplitudes(cfg)``
    the ``(LOS, scattered)`` amplitudes of h = LOS + scattered x CN(0, 1), for channels that evolve
    the scattered part in time (the queueing env's Gauss-Markov fading); None is Rayleigh, (0, 1)."""

    name: str
    draw: Callable[[np.random.Generator, tuple[int, ...], Any], np.ndarray]
    power_max: float = 64.0  # a Rayleigh draw |h|^2 ~ Exp(1) exceeds this with probability e^-64
    amplitudes: Callable[[Any], tuple[float, float]] | None = None


PATH_LOSS: dict[str, PathLoss] = {}
FADING: dict[str, Fading] = {}


def register_path_loss(model: PathLoss) -> PathLoss:
    PATH_LOSS[model.name] = model
    return model


def register_fading(model: Fading) -> Fading:
    FADING[model.name] = model
    return model


def path_loss_model(name: str) -> PathLoss:
    try:
        return PATH_LOSS[name]
    except KeyError:
        raise ValueError(f"path_loss must be one of {tuple(PATH_LOSS)}, got {name!r}") from None


def fading_model(name: str) -> Fading:
    try:
        return FADING[name]
    except KeyError:
        raise ValueError(f"fading must be one of {tuple(FADING)}, got {name!r}") from None


for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["PathLoss", "Fading", "PATH_LOSS", "FADING", "INTERFERENCE_MODELS", "register_path_loss",
           "register_fading", "path_loss_model", "fading_model"]
