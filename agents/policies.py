"""A permutation-equivariant per-user actor-critic for ``MECOffload-v0`` (flat observations).

Every user is encoded by one shared network from its own features (channel gains to the M
ESs, uncertainty alpha, local capacity); a mean over users plus the ES loads forms a context
vector; a shared head maps ``[user embedding, context]`` to that user's M + 1 logits. The
value is read from the context. No weight depends on N, so a policy trained at N = 20 runs at
N = 120 (:func:`transfer_policy`), and permuting the users permutes the logits the same way.
"""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from mec_env.errors import MECOffloadError


def flat_obs_layout(n_users: int, n_edge_servers: int) -> dict[str, slice]:
    """Slices of ``MECOffload-v0``'s flat observation (``flat_obs=True``), in its key order."""
    n, m = n_users, n_edge_servers
    return {
        "channel_gain_db": slice(0, n * m),
        "es_load": slice(n * m, n * m + m),
        "local_capacity": slice(n * m + m, n * m + m + n),
        "uncertainty": slice(n * m + m + n, n * m + m + 2 * n),
    }


def _mlp(sizes: list[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class PerUserExtractor(nn.Module):
    """SB3 ``mlp_extractor``: latent_pi = per-user logits (flattened), latent_vf = context."""

    def __init__(self, n_users: int, n_edge_servers: int, hidden: int = 64) -> None:
        super().__init__()
        self.n, self.m = n_users, n_edge_servers
        self.layout = flat_obs_layout(n_users, n_edge_servers)
        user_in = n_edge_servers + 2
        self.user_encoder = _mlp([user_in, hidden, hidden])
        self.head = _mlp([2 * hidden + n_edge_servers + user_in, hidden, n_edge_servers + 1])
        self.value = _mlp([hidden + n_edge_servers, hidden, hidden])
        self.latent_dim_pi = n_users * (n_edge_servers + 1)
        self.latent_dim_vf = hidden

    def _users(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        b, lay = obs.shape[0], self.layout
        gains = obs[:, lay["channel_gain_db"]].reshape(b, self.n, self.m)
        per_user = th.cat([gains, obs[:, lay["uncertainty"], None], obs[:, lay["local_capacity"], None]], dim=-1)
        return per_user, obs[:, lay["es_load"]]

    def _context(self, h: th.Tensor, es_load: th.Tensor) -> th.Tensor:
        return th.cat([h.mean(dim=1), es_load], dim=-1)

    def forward_actor(self, obs: th.Tensor) -> th.Tensor:
        x, es_load = self._users(obs)
        h = self.user_encoder(x)
        ctx = self._context(h, es_load)
        joint = th.cat([h, ctx[:, None, :].expand(-1, self.n, -1), x], dim=-1)
        return self.head(joint).reshape(obs.shape[0], -1)

    def forward_critic(self, obs: th.Tensor) -> th.Tensor:
        x, es_load = self._users(obs)
        return self.value(self._context(self.user_encoder(x), es_load))

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(obs), self.forward_critic(obs)


class EquivariantPolicy(ActorCriticPolicy):
    """SB3 actor-critic whose actor is :class:`PerUserExtractor` (use with PPO or A2C).

    Needs ``MECOffload-v0`` with ``flat_obs=True`` (a Box) and its ``MultiDiscrete`` actions.

    :param hidden: width of the per-user encoder, head and value networks.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Any,
                 hidden: int = 64, **kwargs: Any) -> None:
        if not isinstance(action_space, spaces.MultiDiscrete) or len(set(action_space.nvec.tolist())) != 1:
            raise ValueError(f"EquivariantPolicy needs MultiDiscrete([M+1]*N) actions, got {action_space}")
        self.n_users = int(action_space.nvec.size)
        self.n_edge_servers = int(action_space.nvec[0]) - 1
        expected = self.n_users * self.n_edge_servers + self.n_edge_servers + 2 * self.n_users
        if not isinstance(observation_space, spaces.Box) or observation_space.shape != (expected,):
            raise ValueError(f"EquivariantPolicy needs MECOffload-v0's flat observation of shape ({expected},); "
                             f"got {observation_space} (make the env with flat_obs=True)")
        self.hidden = hidden
        kwargs.setdefault("share_features_extractor", True)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = PerUserExtractor(self.n_users, self.n_edge_servers, self.hidden)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        # the extractor already emits the logits: no N-dependent linear layer on top
        self.action_net = nn.Identity()
        last = self.mlp_extractor.head[-1]
        nn.init.orthogonal_(last.weight, gain=0.01)
        nn.init.zeros_(last.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["hidden"] = self.hidden
        return data


def env_sizes(action_space: spaces.Space) -> str:
    """``"N = 20 users, M = 4 edge servers"`` read from ``MECOffload-v0``'s ``MultiDiscrete([M+1]*N)``
    (or ``"M = 4 edge servers"`` from ``MECOffloadSeq-v0``'s ``Discrete(M+1)``); else the space itself."""
    if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1 and action_space.nvec.size \
            and len(set(action_space.nvec.tolist())) == 1:
        return f"N = {action_space.nvec.size} users, M = {int(action_space.nvec[0]) - 1} edge servers"
    if isinstance(action_space, spaces.Discrete):
        return f"M = {int(action_space.n) - 1} edge servers"
    return str(action_space)


def transfer_policy(model: Any, env: Any) -> Any:
    """The same trained equivariant policy, rebuilt for ``env`` (another N); weights shared.

    The policy's weights depend on M (the logits per user are M + 1, the context holds the M ES
    loads), not on N: it transfers across the number of users only.

    :param model: a trained SB3 PPO/A2C model with :class:`EquivariantPolicy`.
    :param env: an env (or VecEnv) of another size, with ``flat_obs=True``.
    :raises MECOffloadError: (a ValueError) when the model's policy is not equivariant, or ``env`` has
        another M (both M named).
    """
    policy = getattr(model, "policy", None)
    if not isinstance(policy, EquivariantPolicy):
        raise MECOffloadError(f"only a model with the EquivariantPolicy transfers to another N; this one has "
                              f"{type(policy).__name__} (trained at {env_sizes(model.action_space)})")
    space = env.action_space
    if not isinstance(space, spaces.MultiDiscrete) or space.nvec.ndim != 1 or len(set(space.nvec.tolist())) != 1:
        raise MECOffloadError(f"the equivariant policy acts in MECOffload-v0 (MultiDiscrete([M+1]*N) actions); "
                              f"this env has {space}")
    m = int(space.nvec[0]) - 1
    if m != policy.n_edge_servers:
        raise MECOffloadError(f"the policy was trained with M = {policy.n_edge_servers} edge servers, this env has "
                              f"M = {m}: the equivariant policy transfers across N (the number of users), not "
                              f"across M; train one with n_edge_servers={m}")
    cls = type(model)
    new = cls(EquivariantPolicy, env, policy_kwargs={"hidden": policy.hidden}, device="cpu", seed=0)
    new.policy.load_state_dict(policy.state_dict())
    return new


__all__ = ["EquivariantPolicy", "PerUserExtractor", "env_sizes", "flat_obs_layout", "transfer_policy"]
