"""Scripted strategies of ``MECSpecDecode-v0`` (token-level offloading), as agents with ``predict``.

* **SLM only**: draft ``L`` tokens a round, upload none (no verification).
* **HLM**: draft ``L``, upload every drafted token (speculative decoding without skipping).
* **U-HLM**: draft ``L``, upload a token only when its uncertainty reaches the threshold of
  :func:`mec_env.spec.control.uhlm_threshold` (the fitted uncertainty-rejection line and a
  tolerated risk; ``risk=0`` is the risk-averse variant).
* **U-HLM opportunistic**: U-HLM's protocol (one token a round, skipped below the threshold), but
  a device drafts in a round only when the round's expected reward is positive: its expected
  rate (a skip takes the drafting time, an upload adds the uplink, verification and round trip
  priced by the round evaluator; a skip the LLM would have rejected counts ``1 + mu`` tokens off)
  against the energy price ``lambda x e / e_bar``. On a slow device in a round, drafting can
  cost more reward than it earns (users on their own clocks, ``timing="user"``, only).
* **GELATO**: each round, each device's drafting budget minimising the drift-plus-penalty bound
  (:func:`mec_env.spec.control.drift_plus_penalty`) against its virtual energy queue (one budget
  for all against their mean with ``timing="slot"``), with each budget's time and energy priced by
  the round evaluator on the round's channel, its expected tokens from the traces' runs of
  accepted drafts, and a new generation's prefill booked as a share of every emitted token, in
  the pricing and in GELATO's own queue, rather than as a lump in one round; every drafted token is uploaded
  and drafting stops after the first token whose uncertainty exceeds the exit threshold (the
  env's metric: temperature perturbation by default, GELATO's entropy with
  ``uncertainty_metric="slm_entropy"``). The default exit threshold is U-HLM's skip threshold
  read from the same fitted line at the same risk: drafting goes on while the SLM is as sure as
  U-HLM needs to keep a token unverified, and stops after the first token it is not. **GELATO no
  exit** drafts its whole budget: with a drafter whose surest tokens are still rejected more
  often than the risk (the long-generation traces: the fitted line's intercept is above 0.3), the
  exit stops every draft after one token.

**Association** (with ``association="action"``, where the action names each user's ES): every rule
uploads to the user's strongest ES of the round (``"strongest"``, what the env does by default), or, named
with ``" @greedy"`` (e.g. ``"HLM b=2 @greedy"``), to the ES GOA's greedy placement gives it on the round's
expected costs (:func:`greedy_association`), or, named with ``" @quota"``, by a rule each user applies on its
own from what the ESs broadcast (:func:`quota_association`).

The uncertainty-rejection line defaults to the env's token source's: the synthetic source's
parameters, or the least-squares line over the replayed token table (in the env's normalised
uncertainty). ``budget`` fixes the drafting budget of SLM only, HLM and U-HLM (default L).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from baselines.greedy import edge_all
from mec_env.spec.control import drift_plus_penalty, uhlm_threshold
from mec_env.spec.model import evaluate_round

ASSOCIATIONS = ("strongest", "greedy", "quota")
GREEDY_SUFFIX = " @greedy"  # a rule's name with it: the rule on the greedy association (rule_factory)
QUOTA_SUFFIX = " @quota"  # ... on the quota association


def greedy_association(env: Any, drafted: np.ndarray, upload_share: float) -> np.ndarray:
    """(N,) the ES (0..M-1) each user uploads to this round, by GOA's greedy placement on what the round is
    expected to cost at each ES.

    A user drafting ``drafted`` tokens is expected to upload ``drafted x upload_share`` of them (and its prompt,
    where a generation starts): those bits are its query and their verification (with the prompt's prefill)
    its ES workload. The uploading users are placed as GOA places them (Edge all's order: the smallest edge
    delay first, each on the ES where its delay is least given the users placed before it: the band and
    compute it would share, the interference it would meet), through the evaluator's delay model; a user that
    uploads nothing keeps its strongest ES. Only what a device knows before drafting is used."""
    o, cfg, problem = env.options, env.cfg, env.problem
    n = cfg.n_users
    prompt = np.where(drafted > 0, env.prompt_due(), 0)
    sent = drafted * upload_share
    bits = o.token_bits() * sent + o.prompt_token_bits() * prompt
    work = cfg.flops_per_param_token * cfg.llm_params * (o.verified_tokens(sent) + o.prefill_cost * prompt)
    uploading = (bits > 0) & (drafted > 0)
    view = dataclasses.replace(problem, query_bits=bits, workload_llm=work, workload_slm=np.zeros(n),
                               alpha=np.ones(n))  # the round's costs as a one-slot offloading problem
    placed = edge_all(view, users=uploading)
    return np.where(placed > 0, placed - 1, problem.gain.argmax(axis=1))


def es_order(env: Any) -> np.ndarray:
    """(N, M) each user's ESs from its strongest to its weakest this round."""
    return np.argsort(-env.unwrapped.problem.gain, axis=1, kind="stable")


def standing(strongest: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """(N,) each user's place among the users whose strongest ES is its own, by ``margin`` (what it loses by
    moving: its best gain over its second best): the share of them with a smaller margin, in [0, 1). The ES
    can tell each of its requesters this from one message a user (its margin)."""
    out = np.zeros(strongest.size)
    for j in np.unique(strongest):
        mine = np.flatnonzero(strongest == j)
        out[mine[np.argsort(margin[mine], kind="stable")]] = np.arange(mine.size) / mine.size
    return out


def quota_association(env: Any, drafted: np.ndarray) -> np.ndarray:
    """(N,) the ES each user uploads to this round, each user deciding at once from its own channel and what the
    ESs broadcast: how many uploading users request each ES (their strongest) and its capacity. An ES's quota
    is its share of the total capacity; a user of an ES requested beyond its quota moves to its second
    strongest ES when it stands among the excess share of that ES's requesters that lose least by moving
    (:func:`standing`), else it stays."""
    gain = env.problem.gain
    n, m = gain.shape
    order = es_order(env)
    strongest = order[:, 0]
    if m == 1:
        return strongest
    uploading = drafted > 0
    requests = np.bincount(strongest[uploading], minlength=m).astype(float)
    capacity = env.problem.es_capacity
    quota = requests.sum() * capacity / capacity.sum()
    excess = np.where(requests > 0, np.maximum(requests - quota, 0.0) / np.maximum(requests, 1.0), 0.0)
    margin = np.log(gain[np.arange(n), order[:, 0]] / gain[np.arange(n), order[:, 1]])
    place = standing(np.where(uploading, strongest, -1), margin)
    return np.where(uploading & (place < excess[strongest]), order[:, 1], strongest)


def _level(env: Any, threshold: float) -> int:
    """The largest upload level whose threshold is at most ``threshold``: the env skips a token when
    its uncertainty is <= the level's threshold, so every skipped token is within the risk."""
    return int(np.flatnonzero(env.thresholds <= threshold)[-1])  # thresholds[0] = -inf


class SpecRuleAgent:
    """One of the strategies above, acting in a (single) ``MECSpecDecode-v0``.

    :param strategy: ``"SLM only"``, ``"HLM"``, ``"U-HLM"``, ``"U-HLM opportunistic"`` or ``"GELATO"``.
    :param slope, intercept: the uncertainty-rejection line U-HLM's threshold is read from; default
        the env's token source's, in normalised uncertainty.
    :param risk: U-HLM's tolerated rejection probability of a skipped token (and GELATO's exit: after the
        first token whose predicted rejection exceeds it).
    :param tradeoff: GELATO's V (throughput in units of ``r0`` against the energy backlog in units of the budget).
    :param exit_level: GELATO's early-exit level (uncertainty threshold index); default U-HLM's skip level at ``risk``.
    :param budget: tokens drafted a round by SLM only, HLM and U-HLM (default L, the most).
    :param association: ``"strongest"`` or ``"greedy"`` (:func:`greedy_association`; needs the env's
        ``association="action"``), the ES each user uploads to.
    """

    STRATEGIES = ("SLM only", "HLM", "U-HLM", "U-HLM opportunistic", "GELATO")

    def __init__(self, env: Any, strategy: str, slope: float | None = None, intercept: float | None = None,
                 risk: float = 0.1, tradeoff: float = 100.0, exit_level: int | None = None,
                 budget: int | None = None, association: str = "strongest") -> None:
        if strategy not in self.STRATEGIES:
            raise ValueError(f"strategy must be one of {self.STRATEGIES}, got {strategy!r}")
        self.env, self.name, self.strategy = env.unwrapped, strategy, strategy
        self.chooses_es = self.env.options.association == "action"
        self.association = "strongest"
        if slope is None or intercept is None:
            fit_slope, fit_intercept = self.env.source.rejection_line()
            slope = fit_slope * self.env.uncertainty_scale if slope is None else slope  # per normalised unit
            intercept = fit_intercept if intercept is None else intercept
        length = self.env.options.draft_length
        if budget is not None and not 0 <= budget <= length:
            raise ValueError(f"budget must be in 0..L = {length}, got {budget}")
        self.budget = length if budget is None else int(budget)
        self.slope, self.intercept, self.tradeoff = slope, intercept, tradeoff
        k = self.env.options.threshold_levels
        threshold = uhlm_threshold(slope, intercept, risk)
        self.exit_level = _level(self.env, threshold) if exit_level is None else exit_level
        if not 0 <= self.exit_level < k:
            raise ValueError(f"exit_level must be in 0..K-1 = {k - 1}, got {self.exit_level}")
        self.threshold = threshold if strategy.startswith("U-HLM") else None
        self.upload_level = {"SLM only": k - 1, "HLM": 0, "GELATO": 0}.get(strategy) if self.threshold is None \
            else _level(self.env, self.threshold)
        if strategy == "GELATO":
            self.survival = accepted_run_survival(self.env)
            self.booking = PrefillBooking(self.env)
            self._backlog, self._sent = None, np.zeros(self.env.cfg.n_users)
        self.upload_share = 1.0  # of drafted tokens, as the greedy association expects them (set by associate)
        if strategy == "U-HLM opportunistic":
            if self.env.options.timing != "user":
                raise ValueError("U-HLM opportunistic prices each device's own round: it needs timing='user'")
            self.budget = 1
            self.skip, self.skip_error = self._skip_statistics()
        if association != "strongest":
            self.associate(association)

    def predict(self, observation: Any = None, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        env, o = self.env, self.env.options
        n, k = env.cfg.n_users, o.threshold_levels
        budget = np.full(n, self.budget)
        exit_level = np.full(n, k - 1)
        if self.strategy == "GELATO":
            budget = self._gelato_budgets()
            exit_level[:] = self.exit_level
        elif self.strategy == "U-HLM opportunistic":
            budget = np.where(self._round_value() > 0, 1, 0)
        columns = [budget, np.full(n, self.upload_level), exit_level]
        if self.chooses_es:  # GELATO's budgets were priced on its ESs of the round
            columns.append(self._priced_es if self.strategy == "GELATO" else self._es(budget))
        return np.stack(columns, axis=1).reshape(-1).astype(np.int64), state

    def associate(self, association: str) -> "SpecRuleAgent":
        """The same rule with another association (``"strongest"`` or ``"greedy"``); returns the agent."""
        if association not in ASSOCIATIONS:
            raise ValueError(f"association must be one of {ASSOCIATIONS}, got {association!r}")
        if association != "strongest" and not self.chooses_es:
            raise ValueError(f"the {association} association names each user's ES in the action: make the env "
                             "with association='action'")
        self.association = association
        if association == "greedy":
            self.upload_share = self._upload_share()
        self.name = self.strategy if association == "strongest" else f"{self.strategy} @{association}"
        return self

    def _es(self, drafted: np.ndarray) -> np.ndarray:
        """(N,) the ES each user uploads to this round when it drafts ``drafted`` tokens (its association)."""
        if self.association == "greedy":
            return greedy_association(self.env, np.minimum(drafted, self.env.generation_left()), self.upload_share)
        if self.association == "quota":
            return quota_association(self.env, np.minimum(drafted, self.env.generation_left()))
        return self.env.problem.gain.argmax(axis=1)

    def _upload_share(self) -> float:
        """The share of drafted tokens the rule uploads: all (HLM, GELATO), none (SLM only), or those above U-HLM's
        threshold among the tokens of :meth:`_sample_tokens`."""
        k = self.env.options.threshold_levels
        if self.upload_level in (0, k - 1):
            return 1.0 if self.upload_level == 0 else 0.0
        return float((self._sample_tokens()[0] > self.env.thresholds[self.upload_level]).mean())

    def _sample_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """``(normalised uncertainty, accepted)`` of every token of 256 sessions of the env's token source (a fixed
        seed: the rules are deterministic)."""
        env = self.env
        streams = env.source.sample(np.random.default_rng(0), 256, 64)
        valid = np.arange(streams.uncertainty.shape[1])[None, :] < streams.length[:, None]
        return np.clip(streams.uncertainty[valid] / env.uncertainty_scale, 0.0, 1.0), streams.accepted[valid]

    def _skip_statistics(self) -> tuple[float, float]:
        """``(fraction of drafted tokens skipped at the upload level, fraction of those the LLM rejects)``,
        over 256 sessions of the env's token source (a fixed seed: the rule is deterministic)."""
        u, accepted = self._sample_tokens()
        skipped = u <= self.env.thresholds[self.upload_level]
        rejected = ~accepted[skipped]
        return float(skipped.mean()), float(rejected.mean()) if rejected.size else 0.0

    def _round_value(self) -> np.ndarray:
        """(N,) expected reward of drafting one token this round, per user, in the env's units."""
        env, o, cfg = self.env, self.env.options, self.env.cfg
        n = cfg.n_users
        active = env.position < env.streams.length
        draft_time = cfg.flops_per_param_token * cfg.slm_params / env.problem.local_capacity
        upload = np.ones((n, 1), dtype=bool)
        prompt = env.prompt_due()
        ev = evaluate_round(env.problem, env.spec_config, active.astype(np.int64), upload, upload,
                            self._es(active.astype(np.int64)), cfg.flops_per_param_token, cfg.slm_params,
                            cfg.llm_params, check=False, prompt_tokens=prompt)
        s = self.skip  # a skipped token: one token (or 1 + mu off) in the drafting time; an upload: one token
        rate = s * (1.0 - (1.0 + o.error_weight) * self.skip_error) / draft_time \
            + (1.0 - s) / np.maximum(ev.delay, 1e-12)
        energy = o.joule_per_flop * cfg.flops_per_param_token * cfg.slm_params * (1.0 + o.prefill_cost * prompt) \
            + (1.0 - s) * cfg.tx_power_w * ev.comm_time
        return np.where(active, rate / env.r0 - o.energy_weight * energy / o.energy_budget_j, -np.inf)

    def _gelato_budgets(self) -> np.ndarray:
        """The drafting budgets, 1 to L, minimising the drift-plus-penalty bound of the round.

        For each candidate b the round evaluator prices the round in which every unfinished user
        drafts b tokens, cut at the end of its generation, and uploads them all (this round's channel
        and ES sharing). A user's expected tokens are ``sum_{k < b} S(k)``, S(k) the traces' chance
        that a draft's first k tokens are all accepted (:func:`accepted_run_survival`: easy tokens
        come in runs, so this is above the mean acceptance's ``a^k``). A new generation's prompt is
        priced as what it is in the long run, a share of each emitted token (its prefill's time and
        energy over the generation's mean length), not as a lump in the round it happens to fall in:
        the lump comes whatever b is, while a larger b reaches the next prompt sooner. Queues and
        energy are in units of the budget, rates in units of ``r0``.

        * ``timing="user"`` (each user on its own clock, as a GELATO device): every user picks its own
          b minimising ``-V x tokens_i / (delay_i x r0) + Z_i (e_i / e_bar - 1)``.
        * ``timing="slot"`` (a round lasts until its slowest user is done): one b for the round,
          minimising ``-V x tokens / (round time x N x r0) + mean_i Z_i (e_i / e_bar - 1)``, since a user
          drafting longer than the others makes them all wait.
        """
        env, o, cfg = self.env, self.env.options, self.env.cfg
        n, length = cfg.n_users, o.draft_length
        left = env.generation_left()
        active = left > 0
        es = self._priced_es = self._es(left)  # placed as if every user drafted all it may; budgets priced there
        upload = np.ones((n, length), dtype=bool)

        def price(drafted: np.ndarray, prompt: np.ndarray | None = None):
            return evaluate_round(env.problem, env.spec_config, drafted, upload, upload, es, cfg.flops_per_param_token,
                                  cfg.slm_params, cfg.llm_params, check=False, prompt_tokens=prompt)

        booking = self.booking
        plain, prompted = price(active.astype(np.int64)), price(active.astype(np.int64), booking.prompt * active)
        prefill_delay = (prompted.delay - plain.delay) / booking.generation  # per emitted token
        prefill_energy = booking.joules * booking.share
        self._book(n, o.energy_budget_j)
        tokens, delay, excess = np.empty((length, n)), np.empty((length, n)), np.empty((length, n))
        run_tokens = np.cumsum(self.survival)  # expected tokens of a draft of 1..L
        for b in range(1, length + 1):
            drafted = np.where(active, np.minimum(b, left), 0)
            ev = price(drafted)
            tokens[b - 1] = np.where(active, run_tokens[np.maximum(drafted, 1) - 1], 0.0)
            delay[b - 1] = ev.delay + prefill_delay * tokens[b - 1]
            excess[b - 1] = np.where(active, (ev.energy + prefill_energy * tokens[b - 1]) / o.energy_budget_j - 1.0,
                                     0.0)
        backlog = self._backlog / o.energy_budget_j
        self._sent = np.where(active, env.prompt_due(), 0)  # the prompts this round's drafting sends
        if o.timing == "user":
            rate = tokens / (np.maximum(delay, 1e-12) * env.r0)
            best = drift_plus_penalty(backlog, self.tradeoff, rate, excess).argmin(axis=0) + 1
            return np.where(active, best, 0)
        rate = tokens.sum(axis=1) / (np.maximum(delay.max(axis=1), 1e-12) * n * env.r0)
        value = drift_plus_penalty(1.0, self.tradeoff, rate, (backlog * excess).mean(axis=1))
        return np.where(active, int(value.argmin()) + 1, 0)

    def _book(self, n: int, budget: float) -> None:
        """GELATO's own virtual energy queues, one a user, from the last round: what it spent, with a prompt's
        device prefill booked per token emitted (:class:`PrefillBooking`) instead of as a lump in the round it
        came. The long-run energy is the same as the env's queue counts; but a lump, about 40 rounds of
        budget, no longer throws the queue across every drafting budget's range at once. (The prompt's
        uplink energy, a millionth of its prefill's, stays in the round it is sent.)"""
        env = self.env
        if env.rounds == 0 or self._backlog is None:
            self._backlog = np.zeros(n)
            return
        last = env.last
        took = last.emitted > 0  # a round that drafted emits at least one token
        spent = last.energy + self.booking.energy(self._sent, last.emitted)
        self._backlog = np.where(took, np.maximum(self._backlog + spent - budget, 0.0), self._backlog)


def accepted_run_survival(env: Any, sessions: int = 256) -> np.ndarray:
    """(L,) S(k), k = 0..L-1: the chance that a draft's first k tokens are all accepted, over every position
    of ``sessions`` sessions of the env's token source (a fixed seed) where a draft of k + 1 tokens fits in
    what is left of its generation (S(k) counts only for drafts that long); S(0) = 1. Independent tokens
    of acceptance a would give ``a^k``."""
    u = env.unwrapped
    s = u.source.sample(np.random.default_rng(0), sessions, 4 * u.options.draft_length)
    count, width = s.accepted.shape
    valid = np.arange(width)[None, :] < s.length[:, None]
    # accepted tokens from t on, and tokens to the generation's end; a column of zeros past the last token
    run, left = np.zeros((count, width + 1), dtype=np.int64), np.zeros((count, width + 1), dtype=np.int64)
    for t in range(width - 1, -1, -1):
        same = ~s.answer_end[:, t]  # the next token is of the same generation
        run[:, t] = np.where(valid[:, t] & s.accepted[:, t], 1 + np.where(same, run[:, t + 1], 0), 0)
        left[:, t] = np.where(valid[:, t], 1 + np.where(same, left[:, t + 1], 0), 0)
    run, left = run[:, :width], left[:, :width]
    survival = np.ones(u.options.draft_length)
    for k in range(1, survival.size):
        at = left >= k + 1  # a draft of k + 1 tokens fits here
        survival[k] = (run[at] >= k).mean() if at.any() else 0.0
    return survival


class PrefillBooking:
    """A new generation's device prefill booked per emitted token, its long-run cost, instead of as a lump in the
    round the generation starts: ``share`` prompt tokens a generated token (the env's token source's mean prompt
    over its mean generation; 0 for the synthetic source, which has no prompts), each ``flops`` FLOPs and
    ``joules`` J of device prefill."""

    def __init__(self, env: Any) -> None:
        u = env.unwrapped
        o, cfg, source = u.options, u.cfg, u.source
        self.flops = cfg.flops_per_param_token * cfg.slm_params * o.prefill_cost  # one prompt token's prefill
        self.joules = o.joule_per_flop * self.flops
        if hasattr(source, "prompt_tokens"):
            self.prompt, self.generation = float(source.prompt_tokens.mean()), float(source.length.mean())
        else:
            self.prompt, self.generation = 0.0, float(source.mean_length)
        self.share = self.prompt / self.generation

    def time(self, sent: np.ndarray, emitted: np.ndarray, capacity: np.ndarray) -> np.ndarray:
        """(N,) seconds to add to a round's time on devices of ``capacity`` FLOP/s: its share of prefill less the
        lump of ``sent`` prompt tokens it paid."""
        return self.flops * (self.share * emitted - sent) / capacity

    def energy(self, sent: np.ndarray, emitted: np.ndarray) -> np.ndarray:
        """(N,) joules to add to a round's energy: its share of prefill less the lump of ``sent`` prompt tokens
        it paid."""
        return self.joules * (self.share * emitted - sent)


def budget_draft(env: Any) -> int:
    """The largest drafting budget whose drafting energy, with each generation's prompt prefill spread over its
    tokens, stays within the long-term budget (>= 1); the uplink's energy, about 1e-6 of it here (0.2 W for
    microseconds), is left out."""
    u = env.unwrapped
    per_token = u.options.joule_per_flop * u.cfg.flops_per_param_token * u.cfg.slm_params * \
        (1.0 + u.options.prefill_cost * PrefillBooking(env).share)
    return int(max(1, min(u.options.draft_length, math.floor(u.options.energy_budget_j / per_token))))


RULES = ("SLM only", "HLM", "U-HLM", "U-HLM risk 0", "U-HLM at budget", "U-HLM opportunistic", "GELATO",
         "GELATO no exit", "HLM b=K", "U-HLM b=K")


def rule_factory(name: str, risk: float = 0.1) -> Callable[[Any], SpecRuleAgent]:
    """``env -> agent`` for a strategy by name (:data:`RULES`; ``K`` a fixed drafting budget, e.g. ``"U-HLM b=1"``,
    U-HLM's own protocol of one token a round); U-HLM's risk is ``risk`` unless named ``"U-HLM risk 0"``.

    :raises ValueError: naming the unknown strategy and the known ones.
    """
    for suffix in (GREEDY_SUFFIX, QUOTA_SUFFIX):  # the same rule, each user on the ES of that association
        if name.endswith(suffix):
            base = rule_factory(name[:-len(suffix)], risk)
            return lambda env: base(env).associate(suffix.strip(" @"))
    if name.startswith(("U-HLM b=", "HLM b=")) and name.split("b=")[1].isdigit():
        strategy, b = name.split(" b=")[0], int(name.split("b=")[1])
        return lambda env: SpecRuleAgent(env, strategy, risk=risk, budget=b)
    if name == "U-HLM at budget":
        return lambda env: SpecRuleAgent(env, "U-HLM", risk=risk, budget=budget_draft(env))
    if name == "U-HLM risk 0":
        return lambda env: SpecRuleAgent(env, "U-HLM", risk=0.0)
    if name == "GELATO no exit":  # the top level never stops a draft
        return lambda env: SpecRuleAgent(env, "GELATO", risk=risk,
                                         exit_level=env.unwrapped.options.threshold_levels - 1)
    if name in SpecRuleAgent.STRATEGIES:
        return lambda env: SpecRuleAgent(env, name, risk=risk)
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(RULES)} (K a drafting budget 0..L)")


__all__ = ["SpecRuleAgent", "GREEDY_SUFFIX", "QUOTA_SUFFIX", "greedy_association", "quota_association", "es_order",
           "standing", "PrefillBooking", "accepted_run_survival", "budget_draft", "rule_factory", "RULES"]
