"""The permutation-equivariant actor-critic of :mod:`agents.policies` for ``MECOffloadQueue-v0``.

The same message passing (users and ESs as sets, expected new ES loads and interference), with the
queue state in its inputs: each user is encoded from its query (alpha, the alpha > tau flag, its
size), its device (capacity, queued work, energy queue) and its best and mean channel gain; each
(user, ES) pair from the gain and the ES's capacity, queued work and queries; each ES state from
those and the load the current decision probabilities send it. Users without a query take no
decision: their logits force action 0 (probability 1, so they add nothing to PPO's log-likelihood
or entropy); local stays masked for alpha > tau (constraint 11). No weight depends on N or M.
"""

from __future__ import annotations

import torch as th

from agents.policies import EquivariantPolicy, PerUserExtractor
from mec_env.envs.queue import OBS_KEYS
from mec_env.layout import FlatLayout


class QueueUserExtractor(PerUserExtractor):
    """:class:`~agents.policies.PerUserExtractor` over ``MECOffloadQueue-v0``'s flat observation."""

    USER_DIM, PAIR_DIM, ES_DIM = 9, 5, 7

    @staticmethod
    def make_layout(n_users: int, n_edge_servers: int) -> dict[str, slice]:
        return FlatLayout.for_users(OBS_KEYS, n_users, n_edge_servers).slices

    def inputs(self, o: dict[str, th.Tensor]) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        gain = o["channel_gain_db"]
        best = gain.max(dim=-1).values
        user_x = th.stack([o["uncertainty"], o["above_tau"], o["has_query"], o["local_capacity"],
                           th.log1p(o["local_backlog"]), th.log1p(o["energy_queue"]),
                           th.log10(o["query_size"] + 1e-3), best, gain.mean(dim=-1)], dim=-1)
        es = th.stack([o["es_capacity"], th.log1p(o["es_backlog"]), th.log1p(self.n * o["es_jobs"])], dim=-1)
        pair_x = th.cat([th.stack([gain, gain - best[..., None]], dim=-1),
                         es[:, None, :, :].expand(-1, gain.shape[1], -1, -1)], dim=-1)  # every user read
        return user_x, pair_x, o["has_query"] < 0.5

    def es_inputs(self, o: dict[str, th.Tensor], load: th.Tensor, interference: th.Tensor,
                  alpha_load: th.Tensor) -> th.Tensor:
        capacity, jobs = o["es_capacity"], self.n * o["es_jobs"]
        return th.stack([capacity, th.log1p(o["es_backlog"]), th.log1p(jobs), th.log1p(load),
                         10.0 * capacity / (1.0 + load + jobs), (th.log10(interference + 1e-20) + 9.0) / 4.0,
                         alpha_load], dim=-1)


class QueueEquivariantPolicy(EquivariantPolicy):
    """SB3 actor-critic with :class:`QueueUserExtractor` (PPO, A2C); ``MECOffloadQueue-v0`` with ``flat_obs=True``."""

    EXTRACTOR = QueueUserExtractor
    ENV_ID = "MECOffloadQueue-v0"


__all__ = ["QueueEquivariantPolicy", "QueueUserExtractor"]
