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

With ``decentralised=True`` the same networks make a centralised-training, decentralised-execution
(CTDE) actor-critic: each user's logits come from its own observation alone (the encoding before any
message, the agent's observation of :mod:`mec_env.multiagent`: its own entries and the broadcast ES
state), so a device can act on what it observes, while the critic still passes messages over every
user's expected decision (the whole state) to value each user's credit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import MultiCategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from mec_env.errors import MECOffloadError
from mec_env.layout import FlatLayout, is_es_key
from mec_env.slots import OBS_KEYS

MASKED_LOGIT = -1e8  # local for alpha > tau users: probability exactly 0 in float32


def flat_obs_layout(n_users: int, n_edge_servers: int) -> dict[str, slice]:
    """Slices of ``MECOffload-v0``'s flat observation (``flat_obs=True``), in its key order."""
    return FlatLayout.for_users(OBS_KEYS, n_users, n_edge_servers).slices


def flat_obs_size(n_users: int, n_edge_servers: int) -> int:
    """Length of ``MECOffload-v0``'s flat observation: N M + 2 M + 4 N."""
    return FlatLayout.for_users(OBS_KEYS, n_users, n_edge_servers).size


def _mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class PerUserExtractor(nn.Module):
    """SB3 ``mlp_extractor``: latent_pi = per-user logits (flattened, N x (M + 1)), latent_vf = state summary.

    Its cost per sample is linear in N M with a small constant: only the users (N x hidden^2, once) and the
    ESs (M x hidden^2 a round) go through full-width layers. A pair (i, j) gets its logit from a narrow
    ``pair_hidden`` layer over the sum of three projections, of the user's state, of the pair's own
    features (computed once) and of the ES's state, as one wide MLP over their concatenation would start;
    a user's state takes the ESs' messages as a mixture of their projected states, weighted by its
    decision probabilities (a linear map commutes with the mixture, so no (user, ES) pair is projected).

    :param hidden: width of the user and ES states.
    :param rounds: message-passing rounds through the expected ES loads and interference.
    :param pair_hidden: width of the per-pair layer.
    :param decentralised: the logits are each user's own (round 0, from its observation alone) and one round of
        messages, through the loads and interference the users' decisions are expected to make, feeds only the
        critic (CTDE); ``rounds`` is then 1, as further rounds would see the same expected loads.

    Subclasses for other observations (``agents.queue_policy``) override :meth:`make_layout`,
    :meth:`inputs`, :meth:`es_inputs` and the input widths; the message passing is shared.
    """

    USER_DIM, PAIR_DIM, ES_DIM = 6, 4, 6  # widths of inputs(), es_inputs()

    def __init__(self, n_users: int, n_edge_servers: int, hidden: int = 64, rounds: int = 2,
                 pair_hidden: int = 16, decentralised: bool = False) -> None:
        super().__init__()
        rounds = 1 if decentralised else rounds
        self.n, self.m, self.rounds, self.decentralised = n_users, n_edge_servers, rounds, decentralised
        self.layout = self.make_layout(n_users, n_edge_servers)
        self.user_encoder = _mlp([self.USER_DIM, hidden, hidden])
        self.pair_input = nn.Linear(self.PAIR_DIM, pair_hidden)
        self.pair_from_user = nn.Linear(hidden, pair_hidden, bias=False)
        self.es_encoders = nn.ModuleList(_mlp([self.ES_DIM, hidden, hidden]) for _ in range(rounds))
        self.pair_from_es = nn.ModuleList(nn.Linear(hidden, pair_hidden, bias=False)
                                          for _ in range(0 if decentralised else rounds))  # messages reach no logit
        self.user_messages = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(rounds))
        self.local_head = _mlp([hidden, pair_hidden, 1])
        self.es_head = _mlp([pair_hidden, pair_hidden, 1])
        self.value = _mlp([2 * hidden, hidden, hidden])
        self.user_value = _mlp([2 * hidden, pair_hidden, 1])  # each user's own credit (agents.difference_ppo)
        self.latent_dim_pi = n_users * (n_edge_servers + 1)
        self.latent_dim_vf = hidden

    @staticmethod
    def make_layout(n_users: int, n_edge_servers: int) -> dict[str, slice]:
        return flat_obs_layout(n_users, n_edge_servers)

    def _read(self, obs: th.Tensor) -> dict[str, th.Tensor]:
        b, lay = obs.shape[0], self.layout
        out = {k: obs[:, sl] for k, sl in lay.items()}
        out["channel_gain_db"] = out["channel_gain_db"].reshape(b, self.n, self.m)
        return out

    def inputs(self, o: dict[str, th.Tensor]) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """``(user features (B, N, USER_DIM), pair features (B, N, M, PAIR_DIM), idle users (B, N) or None)``."""
        gain, alpha = o["channel_gain_db"], o["uncertainty"]
        best = gain.max(dim=-1).values
        user_x = th.stack([alpha, o["above_tau"], o["local_capacity"], th.log10(o["query_size"] + 1e-3), best,
                           gain.mean(dim=-1)], dim=-1)
        pair_x = th.stack([gain, gain - best[..., None], o["es_capacity"][:, None, :].expand_as(gain),
                           o["es_background_load"][:, None, :].expand_as(gain)], dim=-1)
        return user_x, pair_x, None

    def es_inputs(self, o: dict[str, th.Tensor], load: th.Tensor, interference: th.Tensor,
                  alpha_load: th.Tensor) -> th.Tensor:
        """ES features (B, M, ES_DIM) from the expected new load n_j, the interference at each ES and
        the expected alpha of the users heading there."""
        capacity = o["es_capacity"]
        return th.stack([capacity, o["es_background_load"], th.log1p(load), capacity / (1.0 + load),
                         (th.log10(interference + 1e-20) + 9.0) / 4.0, alpha_load], dim=-1)

    def _logits(self, h: th.Tensor, pair: th.Tensor, above_tau: th.Tensor, idle: th.Tensor | None) -> th.Tensor:
        """Logits (B, N, M + 1) from the user states h (B, N, H) and the pairs' pre-activations (B, N, M, Hp)."""
        local = self.local_head(h)  # (B, N, 1)
        local = local.masked_fill(above_tau[..., None] > 0.5, MASKED_LOGIT)
        logits = th.cat([local, self.es_head(th.relu(pair))[..., 0]], dim=-1)  # (B, N, M + 1)
        if idle is not None:  # users without a decision to take: local, with probability 1 (no gradient noise)
            forced = th.full_like(logits, MASKED_LOGIT)
            forced[..., 0] = 0.0
            logits = th.where(idle[..., None], forced, logits)
        return logits

    def _states(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """``(logits (B, N, M+1), user states (B, N, H), ES states (B, M, H))``."""
        o = self._read(obs)
        gain, alpha, above = o["channel_gain_db"], o["uncertainty"], o["above_tau"]
        user_x, pair_x, idle = self.inputs(o)
        h0 = self.user_encoder(user_x)  # (B, N, H)
        pair_own = self.pair_input(pair_x)  # (B, N, M, Hp), the same every round
        h = h0
        logits = self._logits(h, pair_own + self.pair_from_user(h)[:, :, None, :], above, idle)
        # linear |h_ij|^2 from the observed (dB + 90) / 40, for the expected interference
        linear_gain = th.pow(10.0, (40.0 * gain - 90.0) / 10.0)
        z = th.zeros(obs.shape[0], self.m, h.shape[-1], device=obs.device)
        for r in range(self.rounds):
            p = th.softmax(logits, dim=-1)
            p_es = p[..., 1:]  # (B, N, M)
            offloaded = 1.0 - p[..., :1]
            load = p_es.sum(dim=1)  # expected n_j
            interference = ((offloaded - p_es) * linear_gain).sum(dim=1)  # from users expected on other ESs
            alpha_load = (p_es * alpha[..., None]).sum(dim=1) / (load + 1e-6)
            z = self.es_encoders[r](self.es_inputs(o, load, interference, alpha_load))  # (B, M, H)
            h = h0 + th.relu(th.einsum("bnm,bmh->bnh", p_es, self.user_messages[r](z)))
            if self.decentralised:  # the users act on their own observations: the messages inform the critic only
                continue
            pair = pair_own + self.pair_from_user(h)[:, :, None, :] + self.pair_from_es[r](z)[:, None, :, :]
            logits = self._logits(h, pair, above, idle)
        return logits, h, z

    def forward_actor(self, obs: th.Tensor) -> th.Tensor:
        if self.decentralised:
            return self.agent_logits(self._read(obs)).reshape(obs.shape[0], -1)
        return self._states(obs)[0].reshape(obs.shape[0], -1)

    def agent_logits(self, o: dict[str, th.Tensor]) -> th.Tensor:
        """The decentralised logits (B, N', M + 1) of the users in ``o`` (N' of them: every user of a flat
        observation read by :meth:`_read`, or one agent's own observation read by :meth:`read_agent`): each from
        its own entries and the broadcast ES entries, with no message from the other users."""
        user_x, pair_x, idle = self.inputs(o)
        h0 = self.user_encoder(user_x)
        return self._logits(h0, self.pair_input(pair_x) + self.pair_from_user(h0)[:, :, None, :], o["above_tau"],
                            idle)

    def read_agent(self, obs: th.Tensor, layout: dict[str, slice]) -> dict[str, th.Tensor]:
        """One agent's observations (B, d) of :class:`mec_env.multiagent.MECOffloadParallelEnv` (``layout``: its
        ``observation_layout()``) read as :meth:`_read` reads a flat observation, for one user: its own entries
        (B, 1), its channel gains (B, 1, M), the broadcast ES entries (B, M)."""
        b = obs.shape[0]
        out = {k: obs[:, sl] for k, sl in layout.items()}
        for k, v in out.items():
            if not is_es_key(k):
                out[k] = v.reshape(b, 1, self.m) if k == "channel_gain_db" else v.reshape(b, 1)
        return out

    def forward_critic(self, obs: th.Tensor) -> th.Tensor:
        return self.value_latent(*self._states(obs)[1:])

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        logits, h, z = self._states(obs)
        return logits.reshape(obs.shape[0], -1), self.value_latent(h, z)

    def value_latent(self, h: th.Tensor, z: th.Tensor) -> th.Tensor:
        """The state's value features (SB3's latent_vf) from the mean user and ES states."""
        return self.value(th.cat([h.mean(dim=1), z.mean(dim=1)], dim=-1))

    def user_values(self, h: th.Tensor, z: th.Tensor) -> th.Tensor:
        """Each user's value (B, N), estimating its own difference reward (:mod:`agents.difference_ppo`) from its
        state and the ESs' mean state."""
        es_mean = z.mean(dim=1, keepdim=True).expand(-1, self.n, -1)
        return self.user_value(th.cat([h, es_mean], dim=-1))[..., 0]


class IndependentCategorical(MultiCategoricalDistribution):
    """SB3's ``MultiCategoricalDistribution`` for N choices of the same size k, as one torch Categorical
    of batch shape (B, N): the same log-likelihood, entropy and samples without N Categorical objects
    (SB3 builds one per user, several ms a forward pass at N = 120)."""

    def __init__(self, action_dims: list[int]) -> None:
        super().__init__(action_dims)
        self.choices = int(action_dims[0])

    def proba_distribution(self, action_logits: th.Tensor) -> "IndependentCategorical":
        self.distribution = th.distributions.Categorical(logits=action_logits.reshape(action_logits.shape[0], -1,
                                                                                     self.choices))
        return self

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        return self.distribution.log_prob(actions.long()).sum(dim=-1)

    def entropy(self) -> th.Tensor:
        return self.distribution.entropy().sum(dim=-1)

    def sample(self) -> th.Tensor:
        return self.distribution.sample()

    def mode(self) -> th.Tensor:
        return self.distribution.logits.argmax(dim=-1)


class EquivariantPolicy(ActorCriticPolicy):
    """SB3 actor-critic whose actor is :class:`PerUserExtractor` (use with PPO or A2C).

    Needs ``MECOffload-v0`` with ``flat_obs=True`` (a Box) and its ``MultiDiscrete`` actions.

    :param hidden: width of the user and ES states.
    :param rounds: message-passing rounds.
    :param pair_hidden: width of the per-pair layer.
    :param decentralised: each user decides from its own observation; the critic sees the whole state (CTDE).
    """

    EXTRACTOR: type[PerUserExtractor] = PerUserExtractor
    ENV_ID = "MECOffload-v0"

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Any,
                 hidden: int = 64, rounds: int = 2, pair_hidden: int = 16, decentralised: bool = False,
                 **kwargs: Any) -> None:
        if not isinstance(action_space, spaces.MultiDiscrete) or len(set(action_space.nvec.tolist())) != 1:
            raise ValueError(f"{type(self).__name__} needs MultiDiscrete([M+1]*N) actions, got {action_space}")
        self.n_users = int(action_space.nvec.size)
        self.n_edge_servers = int(action_space.nvec[0]) - 1
        layout = self.EXTRACTOR.make_layout(self.n_users, self.n_edge_servers)
        expected = max(sl.stop for sl in layout.values())
        if not isinstance(observation_space, spaces.Box) or observation_space.shape != (expected,):
            raise ValueError(f"{type(self).__name__} needs {self.ENV_ID}'s flat observation of shape ({expected},); "
                             f"got {observation_space} (make the env with flat_obs=True)")
        self.hidden, self.rounds, self.pair_hidden, self.decentralised = hidden, rounds, pair_hidden, decentralised
        kwargs.setdefault("share_features_extractor", True)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
        self.action_dist = IndependentCategorical(action_space.nvec.tolist())

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = self.EXTRACTOR(self.n_users, self.n_edge_servers, self.hidden, self.rounds,
                                            self.pair_hidden, self.decentralised)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        # the extractor already emits the logits: no N-dependent linear layer on top
        self.action_net = nn.Identity()
        for head in (self.mlp_extractor.local_head, self.mlp_extractor.es_head):
            nn.init.orthogonal_(head[-1].weight, gain=0.01)  # near-uniform initial decisions, as SB3's action_net
            nn.init.zeros_(head[-1].bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """SB3's ``(actions, values, joint log-probability)`` of a rollout step, from one (B, N, M + 1) tensor of
        logits; each user's log-probability and value of the step stay in ``rollout_user_stats`` for
        :mod:`agents.difference_ppo`, which would otherwise run the policy over the rollout once more."""
        features = self.extract_features(obs, self.pi_features_extractor)
        logits, h, z = self.mlp_extractor._states(features)
        dist = th.distributions.Categorical(logits=logits)
        actions = logits.argmax(dim=-1) if deterministic else dist.sample()
        user_log_prob = dist.log_prob(actions)
        self.rollout_user_stats = (user_log_prob, self.mlp_extractor.user_values(h, z))
        return actions, self.value_net(self.mlp_extractor.value_latent(h, z)), user_log_prob.sum(dim=-1)

    def _predict(self, observation: th.Tensor, deterministic: bool = False) -> th.Tensor:
        # SB3's MultiCategorical builds one torch Categorical per user (about 3 ms at N = 120); the same
        # independent per-user choice from one (B, N, M + 1) tensor
        features = self.extract_features(observation, self.pi_features_extractor)
        logits = self.mlp_extractor.forward_actor(features).reshape(observation.shape[0], self.n_users, -1)
        if deterministic:
            return logits.argmax(dim=-1)
        return th.distributions.Categorical(logits=logits).sample()

    def evaluate_user_actions(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Per user: ``(log-probability of its action, entropy, value)``, each (B, N); users choose independently,
        so the joint log-probability of SB3's :meth:`evaluate_actions` is the sum of the first over users."""
        features = self.extract_features(obs, self.pi_features_extractor)
        logits, h, z = self.mlp_extractor._states(features)
        dist = th.distributions.Categorical(logits=logits)
        return dist.log_prob(actions.long()), dist.entropy(), self.mlp_extractor.user_values(h, z)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(hidden=self.hidden, rounds=self.rounds, pair_hidden=self.pair_hidden,
                    decentralised=self.decentralised)
        return data


def decentralised_actions(policy: EquivariantPolicy, observations: dict[str, Any], layout: dict[str, slice],
                          deterministic: bool = True) -> dict[str, int]:
    """Each agent's action from its own observation alone, as a device would compute it: ``observations`` and
    ``layout`` are :class:`mec_env.multiagent.MECOffloadParallelEnv`'s (``reset``/``step``, ``observation_layout()``),
    ``policy`` a trained ``decentralised`` :class:`EquivariantPolicy` (``train/ppo.py --set policy=decentralised``,
    ``train/queue_ppo.py`` alike). The agents are stacked only to batch the arithmetic; none reads another's row."""
    if not policy.decentralised:
        raise MECOffloadError("decentralised_actions needs a policy trained with policy=decentralised; this one "
                              "reads every user's observation (its users exchange messages)")
    agents = list(observations)
    obs = th.as_tensor(np.stack([np.asarray(observations[a], dtype=np.float32) for a in agents]))
    ext = policy.mlp_extractor
    with th.no_grad():
        logits = ext.agent_logits(ext.read_agent(obs, layout))[:, 0]  # (agents, M + 1)
    chosen = logits.argmax(dim=-1) if deterministic else th.distributions.Categorical(logits=logits).sample()
    return dict(zip(agents, chosen.tolist()))


def env_sizes(action_space: spaces.Space) -> str:
    """``"N = 20 users, M = 4 edge servers"`` read from ``MECOffload-v0``'s ``MultiDiscrete([M+1]*N)``
    (or ``"M = 4 edge servers"`` from ``MECOffloadSeq-v0``'s ``Discrete(M+1)``); else the space itself."""
    if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1 and action_space.nvec.size \
            and len(set(action_space.nvec.tolist())) == 1:
        return f"N = {action_space.nvec.size} users, M = {int(action_space.nvec[0]) - 1} edge servers"
    if isinstance(action_space, spaces.Discrete):
        return f"M = {int(action_space.n) - 1} edge servers"
    return str(action_space)


def policy_kwargs(policy: "EquivariantPolicy") -> dict[str, Any]:
    """The widths (and the execution) that rebuild ``policy``'s architecture (a warm start, a transfer to another
    N)."""
    return {"hidden": policy.hidden, "rounds": policy.rounds, "pair_hidden": policy.pair_hidden,
            "decentralised": policy.decentralised}


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
    new = cls(type(policy), env, policy_kwargs=policy_kwargs(policy), device="cpu", seed=0)
    new.policy.load_state_dict(policy.state_dict())
    return new


__all__ = ["EquivariantPolicy", "PerUserExtractor", "decentralised_actions", "env_sizes", "policy_kwargs",
           "flat_obs_layout", "flat_obs_size", "transfer_policy", "MASKED_LOGIT"]
