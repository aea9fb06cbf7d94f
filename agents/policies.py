"""A permutation-equivariant, load-aware actor-critic for ``MECOffload-v0`` (flat observations).

Users and edge servers are sets: every user is encoded from its own features (uncertainty
alpha, the alpha > tau flag, local capacity, query size, its best and mean channel gain), every
(user, ES) pair from that encoding, the pair's channel gain and the ES's capacity and background
load. A few rounds of message passing then let each user see what the others are about to do,
as the greedy algorithms do through n_j and the interference: the current decision
probabilities give each ES its expected load, its per-user compute share and the interference
from users expected elsewhere; an ES encoder turns those into an ES state that updates every
pair and every user. The logits of user i are ``local(h_i)`` and ``es(e_ij)`` for j = 1..M;
local is masked (logit -1e8) for users with alpha > tau, so the policy keeps constraint (11)
by construction, in training and evaluation alike. The value is read from the mean user and
ES states.

No weight depends on N or M: a policy trained at N = 120, M = 4 runs at any N and M
(:func:`transfer_policy`); permuting the users (or the ESs) permutes the logits the same way.
"""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from mec_env.errors import MECOffloadError

MASKED_LOGIT = -1e8  # local for alpha > tau users: probability exactly 0 in float32


def flat_obs_layout(n_users: int, n_edge_servers: int) -> dict[str, slice]:
    """Slices of ``MECOffload-v0``'s flat observation (``flat_obs=True``), in its key order."""
    from mec_env.slots import OBS_KEYS

    n, m = n_users, n_edge_servers
    sizes = {"above_tau": n, "channel_gain_db": n * m, "es_background_load": m, "es_capacity": m,
             "local_capacity": n, "query_size": n, "uncertainty": n}
    layout, start = {}, 0
    for key in OBS_KEYS:
        layout[key] = slice(start, start + sizes[key])
        start += sizes[key]
    return layout


def flat_obs_size(n_users: int, n_edge_servers: int) -> int:
    """Length of ``MECOffload-v0``'s flat observation: N M + 2 M + 4 N."""
    return n_users * n_edge_servers + 2 * n_edge_servers + 4 * n_users


def _mlp(sizes: list[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class PerUserExtractor(nn.Module):
    """SB3 ``mlp_extractor``: latent_pi = per-user logits (flattened, N x (M + 1)), latent_vf = state summary.

    :param rounds: message-passing rounds through the expected ES loads and interference.
    """

    def __init__(self, n_users: int, n_edge_servers: int, hidden: int = 64, rounds: int = 2) -> None:
        super().__init__()
        self.n, self.m, self.rounds = n_users, n_edge_servers, rounds
        self.layout = flat_obs_layout(n_users, n_edge_servers)
        self.user_encoder = _mlp([6, hidden, hidden])
        self.pair_encoder = _mlp([4 + hidden, hidden, hidden])
        self.es_encoders = nn.ModuleList(_mlp([6, hidden, hidden]) for _ in range(rounds))
        self.pair_updates = nn.ModuleList(_mlp([2 * hidden, hidden, hidden]) for _ in range(rounds))
        self.user_updates = nn.ModuleList(_mlp([2 * hidden, hidden, hidden]) for _ in range(rounds))
        self.local_head = _mlp([hidden, hidden, 1])
        self.es_head = _mlp([hidden, hidden, 1])
        self.value = _mlp([2 * hidden, hidden, hidden])
        self.latent_dim_pi = n_users * (n_edge_servers + 1)
        self.latent_dim_vf = hidden

    def _read(self, obs: th.Tensor) -> dict[str, th.Tensor]:
        b, lay = obs.shape[0], self.layout
        out = {k: obs[:, sl] for k, sl in lay.items()}
        out["channel_gain_db"] = out["channel_gain_db"].reshape(b, self.n, self.m)
        return out

    def _logits(self, h: th.Tensor, e: th.Tensor, above_tau: th.Tensor) -> th.Tensor:
        local = self.local_head(h)  # (B, N, 1)
        local = local.masked_fill(above_tau[..., None] > 0.5, MASKED_LOGIT)
        return th.cat([local, self.es_head(e)[..., 0]], dim=-1)  # (B, N, M + 1)

    def _states(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """``(logits (B, N, M+1), user states (B, N, H), ES states (B, M, H))``."""
        o = self._read(obs)
        gain, alpha, above = o["channel_gain_db"], o["uncertainty"], o["above_tau"]
        capacity, background = o["es_capacity"], o["es_background_load"]
        best = gain.max(dim=-1).values
        user_x = th.stack([alpha, above, o["local_capacity"], th.log10(o["query_size"] + 1e-3), best,
                           gain.mean(dim=-1)], dim=-1)
        h = self.user_encoder(user_x)
        pair_x = th.stack([gain, gain - best[..., None], capacity[:, None, :].expand_as(gain),
                           background[:, None, :].expand_as(gain)], dim=-1)
        e = self.pair_encoder(th.cat([pair_x, h[:, :, None, :].expand(-1, -1, self.m, -1)], dim=-1))
        logits = self._logits(h, e, above)
        # linear |h_ij|^2 from the observed (dB + 90) / 40, for the expected interference
        linear_gain = th.pow(10.0, (40.0 * gain - 90.0) / 10.0)
        z = th.zeros(obs.shape[0], self.m, h.shape[-1], device=obs.device)
        for r in range(self.rounds):
            p = th.softmax(logits, dim=-1)
            p_es = p[..., 1:]  # (B, N, M)
            offloaded = 1.0 - p[..., :1]
            load = p_es.sum(dim=1)  # expected n_j
            interference = ((offloaded - p_es) * linear_gain).sum(dim=1)  # from users expected on other ESs
            es_x = th.stack([capacity, background, th.log1p(load), capacity / (1.0 + load),
                             (th.log10(interference + 1e-20) + 9.0) / 4.0,
                             (p_es * alpha[..., None]).sum(dim=1) / (load + 1e-6)], dim=-1)
            z = self.es_encoders[r](es_x)  # (B, M, H)
            e = e + self.pair_updates[r](th.cat([e, z[:, None, :, :].expand(-1, self.n, -1, -1)], dim=-1))
            h = h + self.user_updates[r](th.cat([h, th.einsum("bnm,bmh->bnh", p_es, z)], dim=-1))
            logits = self._logits(h, e, above)
        return logits, h, z

    def forward_actor(self, obs: th.Tensor) -> th.Tensor:
        return self._states(obs)[0].reshape(obs.shape[0], -1)

    def forward_critic(self, obs: th.Tensor) -> th.Tensor:
        _, h, z = self._states(obs)
        return self.value(th.cat([h.mean(dim=1), z.mean(dim=1)], dim=-1))

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        logits, h, z = self._states(obs)
        return logits.reshape(obs.shape[0], -1), self.value(th.cat([h.mean(dim=1), z.mean(dim=1)], dim=-1))


class EquivariantPolicy(ActorCriticPolicy):
    """SB3 actor-critic whose actor is :class:`PerUserExtractor` (use with PPO or A2C).

    Needs ``MECOffload-v0`` with ``flat_obs=True`` (a Box) and its ``MultiDiscrete`` actions.

    :param hidden: width of the per-user encoder, head and value networks.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Any,
                 hidden: int = 64, rounds: int = 2, **kwargs: Any) -> None:
        if not isinstance(action_space, spaces.MultiDiscrete) or len(set(action_space.nvec.tolist())) != 1:
            raise ValueError(f"EquivariantPolicy needs MultiDiscrete([M+1]*N) actions, got {action_space}")
        self.n_users = int(action_space.nvec.size)
        self.n_edge_servers = int(action_space.nvec[0]) - 1
        expected = flat_obs_size(self.n_users, self.n_edge_servers)
        if not isinstance(observation_space, spaces.Box) or observation_space.shape != (expected,):
            raise ValueError(f"EquivariantPolicy needs MECOffload-v0's flat observation of shape ({expected},); "
                             f"got {observation_space} (make the env with flat_obs=True)")
        self.hidden, self.rounds = hidden, rounds
        kwargs.setdefault("share_features_extractor", True)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = PerUserExtractor(self.n_users, self.n_edge_servers, self.hidden, self.rounds)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        # the extractor already emits the logits: no N-dependent linear layer on top
        self.action_net = nn.Identity()
        for head in (self.mlp_extractor.local_head, self.mlp_extractor.es_head):
            nn.init.orthogonal_(head[-1].weight, gain=0.01)  # near-uniform initial decisions, as SB3's action_net
            nn.init.zeros_(head[-1].bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _predict(self, observation: th.Tensor, deterministic: bool = False) -> th.Tensor:
        # SB3's MultiCategorical builds one torch Categorical per user (about 3 ms at N = 120); the same
        # independent per-user choice from one (B, N, M + 1) tensor
        features = self.extract_features(observation, self.pi_features_extractor)
        logits = self.mlp_extractor.forward_actor(features).reshape(observation.shape[0], self.n_users, -1)
        if deterministic:
            return logits.argmax(dim=-1)
        return th.distributions.Categorical(logits=logits).sample()

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(hidden=self.hidden, rounds=self.rounds)
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
    """The same trained equivariant policy, rebuilt for ``env`` (another N and/or M); weights shared.

    No weight depends on N or M (users and ESs are sets), so the policy runs at any size.

    :param model: a trained SB3 PPO/A2C model with :class:`EquivariantPolicy`.
    :param env: an env (or VecEnv) of another size, with ``flat_obs=True``.
    :raises MECOffloadError: (a ValueError) when the model's policy is not equivariant, or ``env`` is not
        ``MECOffload-v0``-like.
    """
    policy = getattr(model, "policy", None)
    if not isinstance(policy, EquivariantPolicy):
        raise MECOffloadError(f"only a model with the EquivariantPolicy transfers to another N; this one has "
                              f"{type(policy).__name__} (trained at {env_sizes(model.action_space)})")
    space = env.action_space
    if not isinstance(space, spaces.MultiDiscrete) or space.nvec.ndim != 1 or len(set(space.nvec.tolist())) != 1:
        raise MECOffloadError(f"the equivariant policy acts in MECOffload-v0 (MultiDiscrete([M+1]*N) actions); "
                              f"this env has {space}")
    cls = type(model)
    new = cls(EquivariantPolicy, env, policy_kwargs={"hidden": policy.hidden, "rounds": policy.rounds}, device="cpu",
              seed=0)
    new.policy.load_state_dict(policy.state_dict())
    return new


__all__ = ["EquivariantPolicy", "PerUserExtractor", "env_sizes", "flat_obs_layout", "flat_obs_size", "transfer_policy",
           "MASKED_LOGIT"]
