"""The flat observation layout: where each entry of an env's Dict observation sits in its flat vector.

Every env with ``flat_obs=True``, every per-user policy (``agents/*policy*.py``) and the PettingZoo
shell read the flat vector through :class:`FlatLayout`, the one place that works it out. The flat
vector concatenates the Dict's entries, each flattened row-major, in the Dict's key order (Gymnasium
sorts a Dict's keys), which is exactly ``gymnasium.spaces.flatten`` of the Dict: trained models and
the fingerprints depend on that order.

Entries are per user (leading axis N: ``(N,)`` or the ``(N, M)`` channel gains) or per edge server
(``(M,)``); a key starting with ``es_`` is per ES, by the envs' naming. A policy that knows only N
and M builds the same layout with :meth:`FlatLayout.for_users` (``tests/test_layout.py`` checks it
against every env's Dict space); the PettingZoo shell gives each agent its own rows of the per-user
entries and the per-ES entries broadcast (:meth:`FlatLayout.agent_layout`, :meth:`FlatLayout.per_agent`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from gymnasium import spaces

ES_PREFIX = "es_"  # the envs name every per-edge-server entry es_*
PAIR_KEYS = ("channel_gain_db",)  # the (N, M) per (user, ES) entries


def is_es_key(key: str) -> bool:
    """Whether ``key`` is a per-ES entry (broadcast to every agent), by the envs' naming."""
    return key.startswith(ES_PREFIX)


class FlatLayout:
    """Names -> slices of a flat observation, from the entries' shapes in flattening order.

    ``keys`` (flattening order), ``shapes``, ``slices``, ``size``; ``user_keys`` and ``es_keys``
    (each in flattening order).
    """

    __slots__ = ("keys", "shapes", "slices", "size", "user_keys", "es_keys", "_views")

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.keys = tuple(shapes)
        self.shapes = {k: tuple(int(d) for d in shapes[k]) for k in self.keys}
        self.slices: dict[str, slice] = {}
        start = 0
        for k in self.keys:
            size = int(np.prod(self.shapes[k], dtype=np.int64))
            self.slices[k] = slice(start, start + size)
            start += size
        self.size = start
        self.user_keys = tuple(k for k in self.keys if not is_es_key(k))
        self.es_keys = tuple(k for k in self.keys if is_es_key(k))
        # unflatten's plan: a 1-D entry of a 1-D vector is its slice as is (no reshape per step)
        self._views = tuple((k, self.slices[k], self.shapes[k] if len(self.shapes[k]) != 1 else None)
                            for k in self.keys)

    @classmethod
    def from_space(cls, space: spaces.Dict) -> FlatLayout:
        """The layout of ``gymnasium.spaces.flatten(space, obs)``: the Dict's keys in its order."""
        return cls({k: box.shape for k, box in space.items()})

    @classmethod
    def for_users(cls, keys: Iterable[str], n_users: int, n_edge_servers: int) -> FlatLayout:
        """The layout of an env whose Dict has ``keys`` (flattening order), for N users and M ESs, shapes by
        the naming: ``es_*`` (M,), the channel gains (N, M), every other entry (N,)."""
        n, m = n_users, n_edge_servers
        return cls({k: (m,) if is_es_key(k) else (n, m) if k in PAIR_KEYS else (n,) for k in keys})

    # --- the single-agent vector ------------------------------------------------------------

    def flatten(self, obs: Mapping[str, np.ndarray], batch_shape: tuple[int, ...] = ()) -> np.ndarray:
        """float32 ``(*batch_shape, size)``: the entries (arrays) concatenated in order, each with ``batch_shape``
        leading; for float32 entries exactly ``gymnasium.spaces.flatten`` of the Dict."""
        shape = batch_shape + (-1,)  # (the array method: np.reshape costs twice as much per call)
        return np.concatenate([obs[k].reshape(shape) for k in self.keys], axis=-1, dtype=np.float32)

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views of ``flat`` (last axis the layout) as the Dict's entries, in their shapes."""
        if flat.ndim == 1:
            return {k: flat[s] if shape is None else flat[s].reshape(shape) for k, s, shape in self._views}
        lead = flat.shape[:-1]
        return {k: flat[..., s].reshape(lead + self.shapes[k]) for k, s in self.slices.items()}

    def box(self, space: spaces.Dict) -> spaces.Box:
        """The flat Box of ``space`` (low, high and dtype of ``gymnasium.spaces.flatten_space``)."""
        if tuple(space.keys()) != self.keys:
            raise ValueError(f"the Dict's keys {tuple(space.keys())} are not this layout's {self.keys}")
        return spaces.flatten_space(space)

    # --- one agent per user ---------------------------------------------------------------

    def agent_layout(self) -> FlatLayout:
        """The layout of one user's agent observation: its own rows of the per-user entries, then the
        per-ES entries whole, each group in flattening order."""
        own = {k: self.shapes[k][1:] or (1,) for k in self.user_keys}
        return FlatLayout({**own, **{k: self.shapes[k] for k in self.es_keys}})

    def agent_box(self, space: spaces.Dict) -> spaces.Box:
        """The Box of :meth:`agent_layout` (a per-user entry's bounds are user 0's)."""
        low, high = [], []
        for k in self.user_keys + self.es_keys:
            box = space[k]
            part = (box.low[0], box.high[0]) if k in self.user_keys else (box.low, box.high)
            size = int(np.prod(part[0].shape)) if np.ndim(part[0]) else 1
            low.append(np.broadcast_to(part[0], (size,)).ravel())
            high.append(np.broadcast_to(part[1], (size,)).ravel())
        return spaces.Box(np.concatenate(low).astype(np.float32), np.concatenate(high).astype(np.float32),
                          dtype=np.float32)

    def per_agent(self, obs: Mapping[str, np.ndarray], n_users: int) -> np.ndarray:
        """``(N, d)`` float32: row i is user i's agent observation (:meth:`agent_layout`)."""
        n = n_users
        user = [np.asarray(obs[k], dtype=np.float32).reshape(n, -1) for k in self.user_keys]
        es = np.concatenate([np.asarray(obs[k], dtype=np.float32).ravel() for k in self.es_keys])
        return np.concatenate(user + [np.broadcast_to(es, (n, es.size))], axis=1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlatLayout) and self.keys == other.keys and self.shapes == other.shapes

    def __hash__(self) -> int:
        return hash((self.keys, tuple(self.shapes.values())))

    def __repr__(self) -> str:
        return f"FlatLayout({self.shapes})"


__all__ = ["FlatLayout", "is_es_key", "ES_PREFIX", "PAIR_KEYS"]
