"""Every user of ``MECSpecDecode-v0`` an agent of its own, trained for a long-term energy budget.

**The problem.** A user maximises its throughput (emitted tokens, less ``1 + mu`` for each kept
token the verifier would have rejected, per second of its own clock) with its device energy per
round of drafting at most ``e_bar``. Throughput is a ratio and the budget a constraint, so each
round pays the Lagrangian of the Dinkelbach form of the problem:

    r = tokens - (1 + mu) x errors - theta x time - lambda x (energy - e_bar) / e_bar

``lambda`` is the budget's multiplier; ``theta`` is the throughput the policy reaches at that
``lambda`` (maximising ``tokens - theta x time`` at theta equal to the best ratio gives the ratio's
maximiser). A new generation's prompt is booked as GELATO books it: its device prefill's time and
energy as a share of every emitted token, not as a lump in the round it comes in (the long run is
the same; the lump would make the round that starts a generation look like a loss, and a policy
would learn to put generations off).

**One policy for every budget.** ``lambda`` is drawn per user and episode, log-uniform in
``multipliers``, and observed; ``theta`` is kept per ``lambda`` bin from the rollouts
(:meth:`SpecUsersVecEnv.update_prices`). So a single run learns the best round for every price
of energy; meeting a budget then needs only the ``lambda`` whose energy meets it
(:func:`calibrate_multiplier`, a bisection on evaluation episodes, not the held-out ones).

**Users as SB3 envs.** :class:`SpecUsersVecEnv` runs ``n_envs`` token envs and shows each of their
N users to SB3 as one env of a ``VecEnv``: a user's own features in, its own (budget, upload
level, exit level) out, its own reward (parameter sharing, as in PettingZoo's SuperSuit
tutorials). The policy drafts 1..L tokens: an idle round earns nothing, spends no budget (the
budget is per round of drafting) and only adds a token's drafting time.

A user's observation (float32):

| entries | meaning |
|---|---|
| M | its channel gain to each ES (the env's scaled dB) |
| 1 | its best gain |
| M | the ESs' capacities (the env's scale) |
| 1 | uncertainty of its last drafted token |
| 1 | its device capacity (the env's scale) |
| 1 | tokens left of its generation / L |
| 1 | 1 when its next round starts a generation (sends a prompt) |
| 1 | tokens left of its session / L, clipped at 4 |
| 1 | ln lambda |

**The ES as each user's choice.** In a token env made with ``association="action"`` a user also
names the ES that verifies its drafts. It picks a rank, not an index: 0 is its strongest ES of the
round, 1 the next, and so on, so a policy that has learned nothing uploads where the default env
does, and the choice means the same at every position on the map. Its per-ES entries come in that
order, with two more the ESs broadcast: the share of the N users that uploaded to the ES in the
last round, and the share whose strongest ES it is this round. And one entry its strongest ES tells
it alone: where it stands among that ES's requesters by how much it would lose by moving (its best
gain over its second). Both come from one message a user before anyone drafts (its strongest ES
and that margin), the information GOA's greedy placement starts from, without its sequential
decisions: every user decides at once. No user sees another's channel, device or tokens. Such a
user's observation is ``4 M + 8`` values:

| entries | meaning |
|---|---|
| M | its channel gain to each ES, strongest first |
| M | those ESs' capacities |
| M | those ESs' last-round load: users that uploaded to it / N |
| M | those ESs' requests this round: users whose strongest ES it is / N |
| 1 | its standing among its strongest ES's requesters: the share with a smaller margin |
| 7 | as above, from "its best gain" to ln lambda |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from agents.training import PPOConfig, env_id_field, env_kwargs_field
from baselines.token_policies import PrefillBooking, es_order, greedy_association, standing
from mec_env.config import INF, config_field, inherited_field
from mec_env.errors import ConfigError
from mec_env.seeds import EVALUATION, HELD_OUT

MULTIPLIERS = (0.1, 10.0)  # the range lambda is drawn from: from drafting 4-8 tokens a round to one
PRICE_BINS = 8  # theta is kept per bin of ln lambda
SESSION_CLIP = 4.0


def user_features(env: Any, multiplier: np.ndarray) -> np.ndarray:
    """(N, 2 M + 7) float32, or (N, 4 M + 8) when the users choose their ES: each user's observation (module
    docstring) in ``env`` (a ``MECSpecDecode-v0``)."""
    u = env.unwrapped
    o = u.dict_observation()
    length = u.options.draft_length
    gain = o["channel_gain_db"]
    n, m = gain.shape
    capacity = np.broadcast_to(o["es_capacity"], (n, m))
    per_es = [gain, capacity]
    if u.options.association == "action":
        order = es_order(u)
        load = u.last_es_load()
        requests = np.bincount(order[:, 0], minlength=m) / n  # users whose strongest ES each one is this round
        per_es = [np.take_along_axis(column, order, axis=1)
                  for column in (gain, capacity, np.broadcast_to(load, (n, m)), np.broadcast_to(requests, (n, m)))]
        per_es.append(standing(order[:, 0], per_es[0][:, 0] - per_es[0][:, 1] if m > 1 else np.zeros(n))[:, None])
    columns = per_es + [gain.max(axis=1, keepdims=True), o["last_uncertainty"][:, None], o["local_capacity"][:, None],
                        (u.generation_left() / length)[:, None], (u.prompt_due() > 0)[:, None],
                        np.minimum(o["remaining"], SESSION_CLIP)[:, None],
                        np.log(np.broadcast_to(multiplier, (n,)))[:, None]]
    return np.concatenate(columns, axis=1).astype(np.float32)


def env_actions(env: Any, actions: np.ndarray) -> np.ndarray:
    """(N, 3 or 4) the env's action from a policy's per-user actions: budget 0..L-1 drafts 1..L, and a chosen ES
    rank (:func:`es_order`) becomes that ES's index."""
    a = np.array(actions, dtype=np.int64).reshape(env.unwrapped.cfg.n_users, -1)
    a[:, 0] += 1  # the policy drafts 1..L
    if a.shape[1] == 4:
        a[:, 3] = np.take_along_axis(es_order(env), a[:, 3:4], axis=1)[:, 0]
    return a


class SpecUsersVecEnv(VecEnv):
    """``n_envs`` token envs, each of their N users one SB3 env (module docstring).

    :param make_env: builds one ``MECSpecDecode-v0``.
    :param seed: env k's episode j is seeded ``seed + k + n_envs x j``; the multipliers of an episode are
        drawn from ``(seed, k, j)`` too.
    :param multipliers: ``(low, high)``, the range lambda is drawn from, log-uniform.
    :param theta: the starting price of time (tokens/s per user) of every lambda bin.
    """

    def __init__(self, make_env: Callable[[], gym.Env], n_envs: int, seed: int = 0,
                 multipliers: Sequence[float] = MULTIPLIERS, theta: float = 100.0) -> None:
        self.envs = [make_env().unwrapped for _ in range(n_envs)]
        first = self.envs[0]
        o, n, m = first.options, first.cfg.n_users, first.cfg.n_edge_servers
        self.n_users, self.seed_base, self.multipliers = n, int(seed), (float(multipliers[0]), float(multipliers[1]))
        self.error_weight, self.budget = o.error_weight, o.energy_budget_j
        self.booking = PrefillBooking(first)
        self.edges = np.linspace(math.log(self.multipliers[0]), math.log(self.multipliers[1]), PRICE_BINS + 1)[1:-1]
        self.theta = np.full(PRICE_BINS, float(theta))
        self._sums = np.zeros((PRICE_BINS, 2))  # tokens and seconds per bin since the last price update
        self.totals = np.zeros(4)  # energy J, drafting rounds, tokens, seconds since the last read
        self.episodes = np.zeros(n_envs, dtype=np.int64)
        self.lam = np.ones((n_envs, n))
        chooses_es = o.association == "action"
        observation = spaces.Box(-np.inf, np.inf, ((4 * m + 8) if chooses_es else (2 * m + 7),), np.float32)
        action = spaces.MultiDiscrete([o.draft_length, o.threshold_levels, o.threshold_levels] + [m] * chooses_es)
        super().__init__(n_envs * n, observation, action)
        self._actions = np.zeros((n_envs, n, len(action.nvec)), dtype=np.int64)

    def _start(self, k: int) -> np.ndarray:
        env, j = self.envs[k], int(self.episodes[k])
        env.reset(seed=self.seed_base + k + len(self.envs) * j)
        low, high = map(math.log, self.multipliers)
        rng = np.random.default_rng([self.seed_base, k, j])
        self.lam[k] = np.exp(rng.uniform(low, high, self.n_users))
        self.episodes[k] += 1
        return user_features(env, self.lam[k])

    def reset(self) -> np.ndarray:
        return np.concatenate([self._start(k) for k in range(len(self.envs))])

    def step_async(self, actions: np.ndarray) -> None:
        self._actions[:] = np.asarray(actions).reshape(self._actions.shape)

    def step_wait(self):
        observations, rewards, dones, infos = [], [], [], []
        for k, env in enumerate(self.envs):
            before = env.user_time.copy()
            sent = env.prompt_due()  # every unfinished user drafts: a prompt due is sent
            _, _, terminated, truncated, _ = env.step(env_actions(env, self._actions[k]).reshape(-1))
            ev = env.last
            took = ev.emitted > 0
            tokens = ev.emitted - (1.0 + self.error_weight) * ev.unverified.sum(axis=1)
            seconds = env.user_time - before + self.booking.time(sent, ev.emitted, env.problem.local_capacity)
            joules = ev.energy + self.booking.energy(sent, ev.emitted)
            lam = self.lam[k]
            bins = np.digitize(np.log(lam), self.edges)
            np.add.at(self._sums, bins, np.stack([tokens, seconds], axis=1))
            self.totals += (ev.energy.sum(), took.sum(), tokens.sum(), seconds.sum())
            reward = tokens - self.theta[bins] * seconds - lam * np.where(took, joules / self.budget - 1.0, 0.0)
            rewards.append(reward / (1.0 + lam))  # a user's scale: the same optimum, comparable advantages
            done = terminated or truncated
            features = user_features(env, lam)
            if done:
                infos += [{"terminal_observation": f, "TimeLimit.truncated": truncated and not terminated}
                          for f in features]
                features = self._start(k)
            else:
                infos += [{} for _ in range(self.n_users)]
            observations.append(features)
            dones.append(np.full(self.n_users, done))
        return (np.concatenate(observations), np.concatenate(rewards).astype(np.float32), np.concatenate(dones),
                infos)

    def update_prices(self, weight: float = 0.5) -> np.ndarray:
        """Move each bin's theta ``weight`` of the way to the throughput its users reached since the last
        update (Dinkelbach's step); returns the prices."""
        tokens, seconds = self._sums.T
        seen = seconds > 0
        self.theta[seen] += weight * (tokens[seen] / seconds[seen] - self.theta[seen])
        self._sums[:] = 0.0
        return self.theta.copy()

    def read_totals(self) -> dict[str, float]:
        """Energy per round of drafting (J), and throughput (tokens/s per user), since the last read."""
        joules, rounds, tokens, seconds = self.totals
        self.totals[:] = 0.0
        return {"energy_per_round_j": joules / max(rounds, 1.0), "tokens_per_s": tokens / max(seconds, 1e-12)}

    def state(self) -> dict:
        """What a resumed run needs besides the model: the prices and how many episodes each env has played."""
        return {"theta": self.theta.tolist(), "episodes": self.episodes.tolist()}

    def restore(self, state: dict | None) -> None:
        if state:
            self.theta[:] = state["theta"]
            self.episodes[:] = state["episodes"]

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list:
        return [getattr(self.envs[0], attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        for env in self.envs:
            setattr(env, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list:
        return [getattr(self.envs[0], method_name)(*args, **kwargs)] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def seed(self, seed: int | None = None) -> list:
        if seed is not None:
            self.seed_base = int(seed)
        return [None] * self.num_envs


class SpecUsersAgent:
    """A policy trained on :class:`SpecUsersVecEnv`, acting for every user of a token env at multiplier ``lambda``
    (deterministic: each user's most likely action).

    :param name: its name in the evaluator's tables.
    :param association: ``None``: each user on the ES it chooses; ``"strongest"`` or ``"greedy"``: the policy's
        drafting with the ES of that association instead (how much of its score is its choice of ES).
    """

    def __init__(self, model: Any, env: gym.Env, multiplier: float, name: str = "PPO",
                 association: str | None = None) -> None:
        self.model, self.env, self.name = model, env.unwrapped, name
        self.multiplier, self.association = float(multiplier), association
        if association not in (None, "strongest", "greedy"):
            raise ValueError(f"association must be None, 'strongest' or 'greedy', got {association!r}")

    def predict(self, observation: Any = None, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        action, _ = self.model.predict(user_features(self.env, np.float64(self.multiplier)), deterministic=True)
        a = env_actions(self.env, action)
        if self.association == "strongest":
            a[:, 3] = self.env.problem.gain.argmax(axis=1)
        elif self.association == "greedy":  # placed on what the policy drafts (every drafted token uploaded)
            a[:, 3] = greedy_association(self.env, np.minimum(a[:, 0], self.env.generation_left()), 1.0)
        return a.reshape(-1), state


def calibrate_multiplier(energy_at: Callable[[float], float], budget_j: float,
                         multipliers: Sequence[float] = MULTIPLIERS, steps: int = 8, margin: float = 0.005) -> float:
    """The smallest multiplier (the most energy) whose energy per round of drafting meets ``budget_j x (1 -
    margin)``, by bisection on ln lambda (a policy's energy falls as lambda rises).

    :param energy_at: ``lambda -> J`` per round of drafting, measured on evaluation episodes.
    :returns: the multiplier; ``multipliers[1]`` when even that one spends more than the target (the
        caller sees its energy in the final table).
    """
    target = budget_j * (1.0 - margin)
    low, high = map(math.log, multipliers)
    if energy_at(math.exp(low)) <= target:
        return math.exp(low)
    for _ in range(steps):  # invariant: energy(low) > target
        middle = 0.5 * (low + high)
        if energy_at(math.exp(middle)) <= target:
            high = middle
        else:
            low = middle
    return math.exp(high)


def _budgets(value: Any) -> str | None:
    ok = isinstance(value, list) and value and all(isinstance(v, (int, float)) and 0 < v < INF for v in value)
    return None if ok else "a non-empty list of energy budgets in J, each > 0"


@dataclass
class SpecBudgetPPOConfig(PPOConfig):
    """PPO with every user of the token env an agent, for long-term energy budgets (agents.spec_users): one policy
    for every multiplier of the budget, calibrated to each budget after training."""

    env_id: str = env_id_field("MECSpecDecode-v0")
    env_kwargs: dict = env_kwargs_field(n_users=20, max_rounds=128, session_tokens=1500, energy_budget_j=0.006)
    run_dir: str = config_field("runs/spec_budget_ppo", "folder of logs, checkpoints and models")
    policy: str = config_field("mlp", "SB3's MLP over one user's features (agents.spec_users)", choices=("mlp",))
    total_timesteps: int = inherited_field(PPOConfig, "total_timesteps", 6_000_000)
    n_envs: int = inherited_field(PPOConfig, "n_envs", 8)
    learning_rate: float = inherited_field(PPOConfig, "learning_rate", 1e-3)
    n_steps: int = inherited_field(PPOConfig, "n_steps", 64)
    batch_size: int = inherited_field(PPOConfig, "batch_size", 1024)
    n_epochs: int = inherited_field(PPOConfig, "n_epochs", 4)
    gamma: float = config_field(0.9, "discount; with the prompt's prefill booked per token a round shapes few later "
                                "ones", range=(0.0, 1.0))
    eval_freq: int = inherited_field(PPOConfig, "eval_freq", 500_000)
    eval_seeds: int = inherited_field(PPOConfig, "eval_seeds", 4)
    checkpoint_freq: int = inherited_field(PPOConfig, "checkpoint_freq", 1_000_000)
    multiplier_low: float = config_field(MULTIPLIERS[0], "smallest multiplier of the budget drawn in training",
                                         range=(0.0, INF), open_low=True)
    multiplier_high: float = config_field(MULTIPLIERS[1], "largest multiplier of the budget drawn in training",
                                          range=(0.0, INF), open_low=True)
    budgets: list = config_field(help="energy budgets (J per round of drafting) the policy is calibrated to and "
                                 "scored at", default_factory=lambda: [0.006, 0.0065, 0.007], check=_budgets)
    eval_rounds: int = config_field(1000, "rounds of each calibration and final episode", range=(1, 10**6))
    calibration_seeds: int = config_field(10, "evaluation episodes a calibration step plays, seeds 10_000 + k",
                                          range=(1, EVALUATION.size))
    final_eval_seeds: int = config_field(200, "held-out episodes of the final comparison, seeds 20_000 + k",
                                         range=(1, HELD_OUT.size))

    @property
    def chooses_es(self) -> bool:
        """Each user also names the ES that verifies its drafts (the token env's ``association="action"``)."""
        return self.env_kwargs.get("association") == "action"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.multiplier_high > self.multiplier_low:
            raise ConfigError("multiplier_high", self.multiplier_high,
                              f"a multiplier above multiplier_low = {self.multiplier_low}")


__all__ = ["SpecBudgetPPOConfig", "SpecUsersVecEnv", "SpecUsersAgent", "calibrate_multiplier",
           "user_features", "env_actions", "MULTIPLIERS"]
