"""A per-user actor-critic for ``MECSpecDecode-v0`` (flat observations).

The users of the token env decide for themselves: a drafting budget, an upload level and an exit
level each, from their own device, channel, energy queue and tokens left. So every user is encoded
from its own features by one shared network, the encodings are pooled into a context (what the
other users look like, and the ES capacities), and one shared head turns each user's encoding and
the context into its three sets of logits. The value is read from the pooled encodings.

No weight depends on N: the policy runs at any number of users (the ESs, M, are fixed by the
width of a user's channel row), and permuting the users permutes their actions the same way. SB3's
MLP, by contrast, sees all N users in one vector and must learn each user's decision separately.
"""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from mec_env.envs.spec_decode import OBS_KEYS
from mec_env.errors import MECOffloadError
from mec_env.layout import FlatLayout

SPEC_OBS_KEYS = OBS_KEYS  # MECSpecDecode-v0's observation keys in the order of its flattening


def spec_obs_layout(n_users: int, n_edge_servers: int) -> dict[str, slice]:
    """Slices of ``MECSpecDecode-v0``'s flat observation (``flat_obs=True``)."""
    return FlatLayout.for_users(OBS_KEYS, n_users, n_edge_servers).slices


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class SpecUserExtractor(nn.Module):
    """SB3 ``mlp_extractor``: latent_pi = each user's logits (budget, upload level, exit level) in the
    action's order, latent_vf = a summary of all users and the ESs."""

    USER_DIM_EXTRA = 5  # best gain, log(1 + energy queue), last uncertainty, device capacity, tokens left

    def __init__(self, n_users: int, n_edge_servers: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        self.n, self.m, self.layout = n_users, n_edge_servers, spec_obs_layout(n_users, n_edge_servers)
        self.encoder = _mlp([n_edge_servers + self.USER_DIM_EXTRA, hidden, hidden])
        self.mixer = _mlp([2 * hidden + n_edge_servers, hidden, hidden])
        self.head = _mlp([hidden, hidden, n_actions])
        self.value = _mlp([hidden + n_edge_servers, hidden, hidden])
        self.latent_dim_pi = n_users * n_actions
        self.latent_dim_vf = hidden

    def _users(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``(user states (B, N, H), ES capacities (B, M))``."""
        b, lay = obs.shape[0], self.layout
        gain = obs[:, lay["channel_gain_db"]].reshape(b, self.n, self.m)
        es = obs[:, lay["es_capacity"]]
        x = th.cat([gain, th.stack([gain.max(dim=-1).values, th.log1p(obs[:, lay["energy_queue"]]),
                                    obs[:, lay["last_uncertainty"]], obs[:, lay["local_capacity"]],
                                    obs[:, lay["remaining"]] / 64.0], dim=-1)], dim=-1)
        h = self.encoder(x)
        context = th.cat([h.mean(dim=1), es], dim=-1)[:, None, :].expand(-1, self.n, -1)
        return h + self.mixer(th.cat([h, context], dim=-1)), es

    def forward_actor(self, obs: th.Tensor) -> th.Tensor:
        h, _ = self._users(obs)
        return self.head(h).reshape(obs.shape[0], -1)

    def forward_critic(self, obs: th.Tensor) -> th.Tensor:
        h, es = self._users(obs)
        return self.value(th.cat([h.mean(dim=1), es], dim=-1))

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        h, es = self._users(obs)
        return self.head(h).reshape(obs.shape[0], -1), self.value(th.cat([h.mean(dim=1), es], dim=-1))


class SpecUserPolicy(ActorCriticPolicy):
    """SB3 actor-critic whose actor is :class:`SpecUserExtractor` (PPO or A2C on ``MECSpecDecode-v0`` with
    ``flat_obs=True``).

    :param hidden: width of the user encoder, the head and the value network.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Any,
                 hidden: int = 64, **kwargs: Any) -> None:
        nvec = action_space.nvec.tolist() if isinstance(action_space, spaces.MultiDiscrete) else []
        per_user = nvec[:3]
        if not nvec or len(nvec) % 3 or nvec != per_user * (len(nvec) // 3):
            raise ValueError(f"{type(self).__name__} needs MECSpecDecode-v0's MultiDiscrete([L+1, K, K] * N) actions, "
                             f"got {action_space}")
        self.n_users = len(nvec) // 3
        size = observation_space.shape[0] if isinstance(observation_space, spaces.Box) else -1
        m, rest = divmod(size - 4 * self.n_users, self.n_users + 1)  # N M + M + 4 N values
        if m < 1 or rest or FlatLayout.for_users(OBS_KEYS, self.n_users, m).size != size:
            raise ValueError(f"{type(self).__name__} needs MECSpecDecode-v0's flat observation (N M + M + 4 N "
                             f"values, N = {self.n_users}); got {observation_space} (make the env with flat_obs=True)")
        self.n_edge_servers, self.n_actions, self.hidden = m, sum(per_user), hidden
        kwargs.setdefault("share_features_extractor", True)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = SpecUserExtractor(self.n_users, self.n_edge_servers, self.n_actions, self.hidden)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()  # the extractor emits the logits: no N-dependent layer on top
        nn.init.orthogonal_(self.mlp_extractor.head[-1].weight, gain=0.01)  # near-uniform first decisions
        nn.init.zeros_(self.mlp_extractor.head[-1].bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(hidden=self.hidden)
        return data


def sized_for(model: Any, env: Any) -> Any:
    """``model`` itself when it was trained on ``env``'s spaces; else the same per-user policy rebuilt for
    ``env``'s number of users, weights shared (none depends on N).

    :raises MECOffloadError: (a ValueError) when the spaces differ and the policy is not per-user, naming both sizes.
    """
    if model.observation_space.shape == env.observation_space.shape and model.action_space == env.action_space:
        return model
    policy = model.policy
    if not isinstance(policy, SpecUserPolicy):
        raise MECOffloadError(f"the model was trained on observations of shape {model.observation_space.shape}, this "
                              f"env has {env.observation_space.shape}; only the per-user policy "
                              f"(train/spec_ppo.py policy=per_user) runs at another number of users")
    new = type(model)(SpecUserPolicy, env, policy_kwargs={"hidden": policy.hidden}, device="cpu", seed=0)
    new.policy.load_state_dict(policy.state_dict())
    return new


__all__ = ["SpecUserPolicy", "SpecUserExtractor", "spec_obs_layout", "SPEC_OBS_KEYS", "sized_for"]
