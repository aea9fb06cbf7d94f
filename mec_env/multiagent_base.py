"""What every PettingZoo view of an environment here shares (:mod:`mec_env.multiagent`,
:mod:`mec_env.multiagent_spec`): PettingZoo is imported only with them (the ``multiagent`` extra)."""

from __future__ import annotations

import functools
from typing import Any

from gymnasium import spaces
from pettingzoo import ParallelEnv


class UserAgents(ParallelEnv):
    """What every PettingZoo view of an environment here shares: one agent a user, over ``self.inner`` (the
    single-agent env), each agent's spaces the same object every call (as PettingZoo's checks require), and
    its observation's slices in ``self._layout``."""

    _observation_space: spaces.Box
    _action_space: spaces.Space
    _layout: dict[str, slice]
    inner: Any

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> spaces.Box:
        return self._observation_space

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> spaces.Space:
        return self._action_space

    def observation_layout(self) -> dict[str, slice]:
        """Slices of an agent's observation, by observation key."""
        return dict(self._layout)

    def render(self):
        return self.inner.render()

    def close(self) -> None:
        self.inner.close()


__all__ = ["UserAgents"]
