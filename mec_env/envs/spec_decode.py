"""``MECSpecDecode-v0``: token-level offloading (speculative decoding), one round a step."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from mec_env import kernels
from mec_env.config import INF, config_field
from mec_env.envs.common import RENDER_MODES, Picture, Scenario, build_env_config, check_render_mode
from mec_env.errors import AssignmentError, short_repr
from mec_env.layout import FlatLayout
from mec_env.slots import GAIN_OBS_CLIP, SlotProcess, normalised_es_capacity
from mec_env.spec.limits import check_round_bounds, check_session_memory
from mec_env.spec.model import RoundEvaluation, SpecConfig, evaluate_round
from mec_env.spec.tokens import UNCERTAINTIES, SyntheticTokenSource, TokenStreams, load_token_traces

ENV_ID = "MECSpecDecode-v0"
QUEUE_OBS_MAX = 100.0  # energy queues are observed in units of the budget, clipped here
OBS_KEYS = ("channel_gain_db", "energy_queue", "es_capacity", "last_uncertainty", "local_capacity",
            "remaining")  # gymnasium's Dict order (sorted)


@dataclass
class SpecEnvConfig(SpecConfig):
    """Arguments of ``MECSpecDecode-v0`` besides the scenario's (declared once: type, range, help): the
    round evaluator's :class:`~mec_env.spec.model.SpecConfig` (L, k, quantisation, V, energy per
    FLOP, block verification cost, round trip), then the env's own."""

    draft_length: int = config_field(8, "L: most tokens a user drafts in a round", range=(1, 64))
    threshold_levels: int = config_field(19, "K: levels of the upload and exit thresholds an action picks from "
                                         "(19: steps of 1/16, temperature perturbation's grain)", range=(4, 101))
    energy_budget_j: float = config_field(0.5, "long-term average device energy per round a user drafts (J)",
                                          range=(0.0, INF), open_low=True)
    energy_weight: float = config_field(1.0, "lambda: weight of the energy term of the reward", range=(0.0, INF))
    error_weight: float = config_field(4.0, "mu: an unverified token the LLM would have rejected costs 1 + mu "
                                       "tokens of the reward's count", range=(0.0, INF))
    max_rounds: int = config_field(64, "rounds before the episode is truncated", range=(1, 10**6))
    session_tokens: int = config_field(600, "each user's work: generations back to back until at least this many "
                                       "tokens (600 > 64 rounds x 8: users always have work, every episode lasts "
                                       "max_rounds)", range=(1, 1 << 16))
    tokens: str = config_field("generations", "token streams: 'generations' (the shipped traces of long "
                               "generations), 'babi' (the shipped one-word bAbI answers), 'synthetic' or a token "
                               "trace CSV (train/build_generation_traces.py, train/build_token_traces.py)")
    model_sizes: str = config_field("traces", "'traces': drafting and verification are charged the parameters of "
                                    "the drafter and verifier that made the traces (their manifest's; the "
                                    "scenario's where a table has none); 'scenario': the scenario's slm_params "
                                    "and llm_params (the paper's 1.24B and 8.03B: costs of a pair other than the "
                                    "one whose acceptance is replayed)", choices=("traces", "scenario"))
    uncertainty_metric: str = config_field("slm_temperature_uncertainty", "the SLM uncertainty the thresholds apply to",
                                           choices=UNCERTAINTIES)
    upload_rule: str = config_field("threshold", "'threshold': a drafted token is uploaded when its uncertainty "
                                    "exceeds the action's upload level; 'oracle': exactly the drafted tokens the LLM "
                                    "rejects (a bound no device can reach: it skips every token it would keep, and "
                                    "the action's upload level is ignored)", choices=("threshold", "oracle"))
    timing: str = config_field("user", "'user': each user runs its rounds back to back at its own pace (a device "
                               "does not wait for others); 'slot': a round is a slot that lasts until its slowest "
                               "user is done", choices=("user", "slot"))
    association: str = config_field("strongest", "'strongest': each user uploads to its strongest ES of the "
                                    "round; 'action': each user's action also names the ES that verifies its "
                                    "drafts (a fourth entry per user, 0..M-1)", choices=("strongest", "action"))
    flat_obs: bool = config_field(False, "one float32 Box instead of the Dict")


class MECSpecDecodeEnv(gym.Env):
    """
    ## Description

    Token-level offloading of U-HLM and GELATO on the project's channel and edge model. N users each generate
    text token by token: the device SLM drafts, the edge LLM verifies what is uploaded (speculative decoding).
    One step is one round: every unfinished user drafts up to ``draft_length`` tokens, uploads those whose SLM
    uncertainty reaches its threshold to its strongest ES (or the ES its action names), and keeps the result
    of :func:`mec_env.spec.model.evaluate_round` (the one evaluator: drafting FLOPs, top-k uploads on the
    shared, interfered uplink, verification on the shared ES, speculative acceptance, device energy). The
    channel is redrawn every round (a slot of the query-level model); the tokens come from real traces or the
    synthetic source (:mod:`mec_env.spec.tokens`).

    **Sessions.** A user's work is generations one after the other, each one prompt and the
    verifier's generation from it (the default traces: SmolLM2-135M-Instruct's answers and
    explanations of bAbI stories, 2 to 128 tokens and 72 on average, drafted by a distilled model a
    seventh of its size). A round drafts no further than the end of the user's current generation; the round
    that drafts a generation's first token also sends its prompt (token indices) and pays both
    models' prefill of it (``prefill_cost``), after which both keep its KV cache. By default
    drafting and verification cost the traces' own pair (``model_sizes="traces"``); with
    ``model_sizes="scenario"`` they cost the scenario's ``slm_params`` and ``llm_params`` (the
    paper's 1.24B and 8.03B) while acceptance stays the traced pair's.

    **Timing.** With ``timing="user"`` (default) each user runs its rounds back to back on its own
    clock, as a device does in speculative decoding: its round takes its own drafting, uplink,
    verification and round trip, and a user that finishes early starts its next round without
    waiting for the others; a user that drafts nothing sits out one token's drafting time (it
    saves the energy, not the time). Step k is every user's k-th round; the band and ES compute
    are shared among the users uploading in their k-th round (our approximation: rounds of
    different users overlap in time only roughly). With ``timing="slot"`` a round is a slot
    shared by all users: it lasts until its slowest user has drafted, uploaded, been verified and
    heard back, and the others wait it out.

    ## Action Space

    ``MultiDiscrete([L + 1, K, K] * N)``, three entries per user, in user order:

    * draft budget ``b`` in 0..L (0: idle this round);
    * upload level ``j``: a drafted token is uploaded when its uncertainty is
      greater than ``theta_j``: ``theta_0 = -inf`` (upload all: HLM), ``theta_j = (j - 1) / (K - 3)``
      for j = 1..K-2, ``theta_{K-1} = +inf`` (upload nothing); with ``upload_rule="oracle"`` the
      level is ignored and exactly the drafted tokens the LLM rejects are uploaded (the bound of any
      skipping rule: nothing is verified that would be kept, nothing kept that would be rejected);
    * exit level ``e``: drafting stops after the first token whose uncertainty exceeds
      ``theta_e`` (GELATO's inner loop); ``e = K - 1`` never stops early.
    * with ``association="action"``, a fourth entry: the ES ``j`` in 0..M-1 that verifies the user's
      drafts this round (``MultiDiscrete([L + 1, K, K, M] * N)``); by default each user uploads to its
      strongest ES of the round.

    Uncertainties are normalised to [0, 1] (entropy by ln V). U-HLM is a fixed upload level,
    GELATO a budget chosen against the energy queue with an exit level (``baselines.token_policies``).
    An action entry must be an integer of its range (an integer-valued float is accepted); anything
    else is an :class:`~mec_env.errors.AssignmentError`. ``action_masks()`` (sb3-contrib's
    MaskablePPO) allows a budget up to the tokens a user has left and every level.

    ## Observation Space

    | Key               | Shape  | Meaning                                                   | Min | Max |
    |-------------------|--------|-----------------------------------------------------------|-----|-----|
    | `channel_gain_db` | (N, M) | (10 log10 abs(h_ij)^2 + 90) / 40 this round, clipped      | -5  | 5   |
    | `energy_queue`    | (N,)   | virtual energy queue Z_i / budget (GELATO's backlog)      | 0   | 100 |
    | `es_capacity`     | (M,)   | C_j / ``es_capacity_flops``                               | 0   | hi  |
    | `last_uncertainty`| (N,)   | normalised uncertainty of the user's last drafted token   | 0   | 1   |
    | `local_capacity`  | (N,)   | C_L,i / ``local_capacity_flops``                          | 0   | hi  |
    | `remaining`       | (N,)   | tokens left of the user's session / ``draft_length``     | 0   | 64  |

    ``flat_obs=True`` concatenates them in this order into one float32 Box.

    ## Rewards

    ``reward = mean_i (tokens_i - (1 + mu) x errors_i) / (d_i x r0) - lambda x mean_i(e_i) / e_bar``:
    the round's accepted tokens per second per user, in units of ``r0`` (one SLM token per second
    at the nominal device: ``local_capacity_flops / (2 x slm_params)``), minus the energy spent
    relative to the budget. ``d_i`` is user i's round time (``timing="user"``; a user that drafts
    nothing adds 0) or the slot's, its slowest user's (``timing="slot"``: the rate is then all
    users' tokens over the slot). ``errors`` are skipped tokens the LLM would have rejected: not
    accepted, and each spoils its answer, so it takes ``1 + mu`` tokens off the count.
    ``info["throughput_tokens_per_s"]`` is the episode's throughput so far: the sum over users of
    each user's tokens over its own elapsed time (with ``timing="slot"``, every user's elapsed
    time is the slots', so it is all tokens over the slots); ``accepted_tokens_per_s`` counts
    without the errors. Each user's virtual queue
    ``Z_i <- max(Z_i + e_i - e_bar, 0)``, updated in the rounds the user drafts, is observed; ``info``
    has the users' mean queue (``mean_energy_queue``), their mean energy per round of drafting so far
    (``mean_energy_per_round_j``) and the users drafting this round (``drafting_users``): a policy meets
    the long-term budget when the queues stay bounded. The budget is per round of drafting, not per
    round of the clock: an idle round takes only a token's drafting time, so counting it would let a
    policy meet any budget by idling between expensive rounds. ``info`` also counts the
    answers completed and how many are right (``answers``, ``answers_correct``; the LLM's and
    the SLM's own answers to the same questions: ``answers_llm_correct``, ``answers_slm_correct``).

    ## Episode End

    Truncated after ``max_rounds`` rounds; terminated earlier only if every session is complete,
    which the default sessions (600 tokens) never are: every episode is ``max_rounds`` rounds of
    work, so a policy cannot raise its return by spinning the work out over more rounds.

    ## Arguments

    ``scenario`` (name, path or :class:`~mec_env.config.ScenarioConfig`: the channel, ES and model
    sizes), ``render_mode`` (None, ``"rgb_array"`` / ``"human"``: the area with each user coloured
    by the ES it uploaded to in the last round, or ``"ansi"``: a line of text), the fields of
    :class:`SpecEnvConfig` and any scenario field (``n_users=20``). A bad value is a
    :class:`~mec_env.errors.ConfigError` naming it, and so is a setting whose rounds would overflow
    float64 (:func:`mec_env.spec.limits.check_round_bounds`) or whose token arrays would exceed ``max_array_bytes``.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 1}

    def __init__(self, scenario: Scenario = "paper", render_mode: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("n_users", 20)
        self.cfg, self.options = build_env_config(SpecEnvConfig, f"{type(self).__name__}.__init__", scenario, kwargs)
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        o, n, m = self.options, self.cfg.n_users, self.cfg.n_edge_servers
        self.spec_config: SpecConfig = o  # the evaluator's settings are the env's first fields
        self.source = SyntheticTokenSource() if o.tokens == "synthetic" else \
            load_token_traces(o.tokens, o.uncertainty_metric)
        sizes = getattr(self.source, "model_parameters", None)
        if o.model_sizes == "traces" and sizes is not None:  # the pair whose acceptance the traces hold
            self.cfg = dataclasses.replace(self.cfg, slm_params=float(sizes[0]), llm_params=float(sizes[1]))
        check_round_bounds(self.cfg, o)
        check_session_memory(self.cfg, o, self.source.draw_size(n, o.session_tokens))
        # entropy (nats) is normalised by its maximum ln V; the synthetic source draws in [0, 1] already
        self.uncertainty_scale = math.log(o.vocab_size) if o.uncertainty_metric == "slm_entropy" and \
            o.tokens != "synthetic" else 1.0
        self.core = SlotProcess(self.cfg)
        levels = o.threshold_levels
        self.thresholds = np.concatenate([[-np.inf], np.linspace(0.0, 1.0, levels - 2), [np.inf]])
        self._per_user = 4 if o.association == "action" else 3  # action entries a user
        self.action_space = spaces.MultiDiscrete(np.tile([o.draft_length + 1, levels, levels, m][:self._per_user], n))
        self.dict_observation_space = spaces.Dict({
            "channel_gain_db": spaces.Box(-GAIN_OBS_CLIP, GAIN_OBS_CLIP, shape=(n, m), dtype=np.float32),
            "energy_queue": spaces.Box(0.0, QUEUE_OBS_MAX, shape=(n,), dtype=np.float32),
            "es_capacity": spaces.Box(0.0, self.cfg.es_capacity_high, shape=(m,), dtype=np.float32),
            "last_uncertainty": spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
            "local_capacity": spaces.Box(0.0, self.cfg.local_capacity_high, shape=(n,), dtype=np.float32),
            "remaining": spaces.Box(0.0, 64.0, shape=(n,), dtype=np.float32),
        })
        self.layout = FlatLayout.from_space(self.dict_observation_space)
        self.observation_space = self.layout.box(self.dict_observation_space) if o.flat_obs \
            else self.dict_observation_space
        self._nvec = self.action_space.nvec.astype(np.int64)
        self._offsets = np.arange(o.draft_length)[None, :]
        self._users = np.arange(n)
        self.r0 = self.cfg.local_capacity_flops / (self.cfg.flops_per_param_token * self.cfg.slm_params)
        self.streams: TokenStreams | None = None
        self.rounds, self._last, self._last_es, self._round_problem = 0, None, None, None
        # the fused compiled step (numba) or the numpy reference; tests hold the two equal
        self.compiled = kernels.numba_enabled()
        self._token_bits = o.token_bits()
        self._slm_flops = self.cfg.flops_per_param_token * self.cfg.slm_params
        self._llm_flops = self.cfg.flops_per_param_token * self.cfg.llm_params
        self._stats = np.zeros(12)
        self._per_user_time = o.timing == "user"
        self._oracle_uploads = o.upload_rule == "oracle"
        self._buffers = {name: np.zeros(n, dtype=np.int64) for name in ("drafted", "es", "emitted", "uploaded")}
        self._buffers.update({name: np.zeros(n) for name in ("draft_time", "comm_time", "verify_time", "energy",
                                                               "delay")})
        self._buffers["unverified"] = np.zeros((n, o.draft_length), dtype=bool)
        self._buffers.update({name: np.zeros(n) for name in ("bits", "es_flops")})
        self._buffers["es_users"] = np.zeros(m, dtype=np.int64)
        self._picture = Picture(self.render_mode, self.cfg.area_side_m, m, ENV_ID, self.metadata["render_fps"])

    # --- gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.core.discard_block()
        n = self.cfg.n_users
        self.core.start(self.np_random)
        self.streams = self.source.sample(self.np_random, n, self.options.session_tokens)
        self.uncertainty = np.clip(self.streams.uncertainty / self.uncertainty_scale, 0.0, 1.0)
        self.position = np.zeros(n, dtype=np.int64)
        self.queue = np.zeros(n)
        self.last_uncertainty = np.zeros(n)
        self.energy_sum, self.rounds, self._last, self._round_problem = np.zeros(n), 0, None, None
        self.user_rounds = 0  # rounds in which a user drafted, summed over the users: what the budget is per
        self.tainted = np.zeros(self.streams.hybrid_correct.shape, dtype=bool)  # an unverified reject in the answer
        self._width = self.streams.uncertainty.shape[1]
        self._row_start = (np.arange(n) * self._width)[:, None]
        self._uncertainty, self._accepted = self.uncertainty.ravel(), self.streams.accepted.ravel()
        self._answer, self._answer_end = self.streams.answer.ravel(), self.streams.answer_end.ravel()
        self._answer_counts = np.zeros(4, dtype=np.int64)  # answers, right, the LLM's right, the SLM's right
        self.user_time, self.user_errors = np.zeros(n), np.zeros(n, dtype=np.int64)  # each user's clock, its errors
        self._kernel_groups = None  # the compiled step's argument groups, over this episode's arrays
        return self._observation(), {"round": 0}

    def step(self, action: np.ndarray):
        if self.streams is None:
            raise ResetNeeded("call reset() before step()")
        o, n = self.options, self.cfg.n_users
        a = np.asarray(action)
        if a.shape != self._nvec.shape or a.dtype.kind not in "iuf":
            self._bad_action(a)
        if a.dtype.kind == "f" and not (np.isfinite(a) & (a == np.round(a))).all():
            self._bad_action(a, "a non-integer entry")  # 1.9 is no draft budget: refused, not truncated to 1
        a = a.astype(np.int64)
        if not ((a >= 0) & (a < self._nvec)).all():
            self._bad_action(a, "an entry out of range")
        a = a.reshape(n, self._per_user)
        problem = self.problem
        self._round_problem, self._last = problem, None
        (tokens, errors, energy, uploaded, drafted, round_time, queue_total, energy_total, token_rate, error_rate,
         throughput, accepted_throughput) = (self._step_compiled if self.compiled else self._step_numpy)(a, problem)
        self.rounds += 1
        drafting = int(np.count_nonzero(self._buffers["drafted"]))
        self.user_rounds += drafting
        # a wrong unverified token is not an accepted one, and it spoils its answer: 1 + mu tokens off
        if self._per_user_time:  # each user's tokens over its own round's time
            rate = (token_rate - (1.0 + o.error_weight) * error_rate) / (n * self.r0)
            round_rate = token_rate
        else:  # everyone's tokens over the slot
            rate = (tokens - (1.0 + o.error_weight) * errors) / (round_time * n * self.r0) if round_time > 0 else 0.0
            round_rate = tokens / round_time if round_time > 0 else 0.0
        reward = rate - o.energy_weight * energy / (n * o.energy_budget_j)
        terminated = bool((self.position >= self.streams.length).all())
        truncated = not terminated and self.rounds >= o.max_rounds
        c = self._answer_counts
        info = {"round": self.rounds, "tokens": tokens, "round_time_s": round_time, "tokens_per_s": round_rate,
                "throughput_tokens_per_s": throughput, "accepted_tokens_per_s": accepted_throughput,
                "uploaded": uploaded, "drafted": drafted, "unverified_rejects": errors, "energy_j": energy,
                "drafting_users": drafting, "mean_energy_per_round_j": energy_total / max(1, self.user_rounds),
                "mean_energy_queue": queue_total / n,
                "answers": int(c[0]), "answers_correct": int(c[1]), "answers_llm_correct": int(c[2]),
                "answers_slm_correct": int(c[3])}
        self.core.advance(self.np_random)
        return self._observation(), reward, terminated, truncated, info

    def _step_compiled(self, a: np.ndarray, problem: Any) -> tuple:
        """The round and the state updates in one compiled call (:func:`mec_env.kernels.spec_step_kernel`)."""
        o, s, b = self.options, self.streams, self._buffers
        if self._kernel_groups is None:  # built once per episode: the state arrays are rebound at reset
            radio = kernels.RadioScalars(*kernels.radio_scalars(problem))
            costs = kernels.TokenCosts(self._token_bits, self._slm_flops, self._llm_flops, o.verify_block_cost,
                                       o.joule_per_flop, o.round_trip_s, o.energy_budget_j, self._per_user_time,
                                       o.draft_length, self._oracle_uploads, o.prompt_token_bits(), o.prefill_cost)
            tokens = kernels.TokenTables(s.length, self._uncertainty, self._accepted, self._answer, self._answer_end,
                                         self._width, s.hybrid_correct, s.llm_correct, s.slm_correct, s.prompt_tokens)
            state = kernels.SpecState(self.position, self.queue, self.energy_sum, self.last_uncertainty, self.tainted,
                                      self._answer_counts, self.user_time, self.user_errors)
            out = kernels.RoundBuffers(b["drafted"], b["es"], b["emitted"], b["uploaded"], b["unverified"],
                                       b["draft_time"], b["comm_time"], b["verify_time"], b["energy"], b["delay"],
                                       b["es_users"], self._stats, b["bits"], b["es_flops"])
            self._kernel_groups = tuple(map(kernels.kernel_tuple, (radio, costs, tokens, state, out)))
        kernels.spec_step_kernel(a, self.thresholds, problem.gain, problem.es_capacity, problem.local_capacity,
                                 *self._kernel_groups)
        st = self._stats
        return (int(st[0]), int(st[1]), float(st[2]), int(st[3]), int(st[4]), *map(float, st[5:]))

    def _step_numpy(self, a: np.ndarray, problem: Any) -> tuple:
        """The reference path: the same step in numpy over :func:`~mec_env.spec.model.evaluate_round`."""
        o = self.options
        self._kernel_groups = None  # this path rebinds the state arrays
        budget, upload_at, exit_at = a[:, 0], self.thresholds[a[:, 1]], self.thresholds[a[:, 2]]
        remaining = self.streams.length - self.position
        idx = self._window()
        u = self._uncertainty.take(idx)
        drafted = np.minimum(budget, np.maximum(remaining, 0))
        # stop after the first drafted token above the exit threshold (GELATO's early exit) or at the end of the
        # generation (drafting never runs into the next one)
        stop = ((u > exit_at[:, None]) | self._answer_end.take(idx)) & (self._offsets < drafted[:, None])
        drafted = np.where(stop.any(axis=1), np.minimum(drafted, stop.argmax(axis=1) + 1), drafted)
        es = a[:, 3] if self._per_user > 3 else problem.gain.argmax(axis=1)  # its choice, or its strongest ES
        accepted = self._accepted.take(idx)
        upload = ~accepted if self._oracle_uploads else u > upload_at[:, None]
        prompt = np.where(drafted > 0, self.prompt_due(), 0)
        ev = evaluate_round(problem, self.spec_config, drafted, upload, accepted, es,
                            self.cfg.flops_per_param_token, self.cfg.slm_params, self.cfg.llm_params, check=False,
                            prompt_tokens=prompt)
        took = drafted > 0
        self.last_uncertainty = np.where(took, u[self._users, np.maximum(drafted - 1, 0)], self.last_uncertainty)
        self._score_answers(idx, ev)
        self.position += ev.emitted
        self.queue = np.where(took, np.maximum(self.queue + ev.energy - o.energy_budget_j, 0.0), self.queue)
        self._buffers["drafted"][:] = drafted
        self.energy_sum += ev.energy
        self._last, self._last_es = ev, es
        round_time = float(ev.delay.max()) if took.any() else 0.0  # the slot lasts until its slowest user is done
        errors = ev.unverified.sum(axis=1)
        self.user_errors += errors
        if self._per_user_time:  # an idle user with work left sits out one token's drafting time
            idle = ~took & (self.position < self.streams.length)
            self.user_time += np.where(idle, self._slm_flops / problem.local_capacity, ev.delay)
        else:
            self.user_time += round_time
        own = np.where(took, ev.delay, np.inf)  # a user that drafts nothing adds no rate
        elapsed = np.where(self.user_time > 0, self.user_time, np.inf)
        return (int(ev.emitted.sum()), int(errors.sum()), float(ev.energy.sum()), int(ev.uploaded.sum()),
                int(drafted.sum()), round_time, float(self.queue.sum()), float(self.energy_sum.sum()),
                float((ev.emitted / own).sum()), float((errors / own).sum()), float((self.position / elapsed).sum()),
                float(((self.position - self.user_errors) / elapsed).sum()))

    def _window(self) -> np.ndarray:
        """(N, L) flat indices of each session's next L tokens (clipped at its end: those are never drafted)."""
        return self._row_start + np.minimum(self.position[:, None] + self._offsets, self._width - 1)

    def generation_left(self) -> np.ndarray:
        """(N,) the most tokens each user can draft this round, up to ``draft_length``: the tokens left of its
        current generation (drafting never runs into the next one), 0 for a user whose session is done."""
        ends = self._answer_end.take(self._window())
        left = np.where(ends.any(axis=1), ends.argmax(axis=1) + 1, self.options.draft_length)
        return np.minimum(left, np.maximum(self.streams.length - self.position, 0))

    def prompt_due(self) -> np.ndarray:
        """(N,) prompt tokens each user sends if it drafts this round: its next generation's prompt where it is
        at a generation's start (0 elsewhere, and for a user whose session is done)."""
        s, position = self.streams, self.position
        starts = (position == 0) | self._answer_end.take(self._row_start[:, 0] + np.maximum(position - 1, 0))
        first = self._answer.take(self._row_start[:, 0] + np.minimum(position, self._width - 1))
        return np.where(starts & (position < s.length), s.prompt_tokens[self._users, first], 0)

    @property
    def last(self) -> RoundEvaluation | None:
        """What the last round did (:class:`~mec_env.spec.model.RoundEvaluation`); None before the first step."""
        if self._last is None and self.rounds > 0 and self.compiled:  # copied from the kernel's buffers when asked
            b = self._buffers
            wait = np.where(b["bits"] > 0, self.options.round_trip_s, 0.0)  # the round sent tokens or a prompt
            self._last = RoundEvaluation(**{k: b[k].copy() for k in (
                "emitted", "uploaded", "unverified", "draft_time", "comm_time", "verify_time", "delay", "energy",
                "es_users", "bits", "es_flops")}, wait_time=wait)
            self._last_es = b["es"].copy()
        return self._last

    def last_es_load(self) -> np.ndarray:
        """(M,) the share of the N users that uploaded to each ES in the last round (what an ES can broadcast);
        zeros before the first round."""
        last = self.last
        return last.es_users / self.cfg.n_users if last is not None else np.zeros(self.cfg.n_edge_servers)

    @property
    def last_round(self) -> tuple[Any, np.ndarray, np.ndarray] | None:
        """``(problem, ES of each user, tokens each uploaded)`` of the last round, for rendering."""
        last = self.last
        return None if last is None else (self._round_problem, self._last_es, last.uploaded)

    def action_masks(self) -> np.ndarray:
        """Allowed actions as sb3-contrib's MaskablePPO expects them for the ``MultiDiscrete`` space: per user,
        ``L + 1`` budget entries then ``K`` upload and ``K`` exit levels, flattened user by user. A budget
        is allowed up to the tokens the user has left (a larger one drafts no more; 0 always); every level is."""
        if self.streams is None:
            raise ResetNeeded("call reset() before action_masks()")
        o = self.options
        budgets = np.arange(o.draft_length + 1)[None, :] <= (self.streams.length - self.position)[:, None]
        levels = np.ones((self.cfg.n_users, 2 * o.threshold_levels + (self._per_user - 3) * self.cfg.n_edge_servers),
                         dtype=bool)  # every level (and every ES) is allowed
        return np.concatenate([budgets, levels], axis=1).reshape(-1)

    def _bad_action(self, a: np.ndarray, problem: str = "") -> None:
        levels = self.options.threshold_levels - 1
        what = f" with {problem}" if problem else ""
        es = f", ES 0..{self.cfg.n_edge_servers - 1}" if self._per_user > 3 else ""
        raise AssignmentError(f"{ENV_ID} action must be {self.action_space} (shape {self.action_space.shape}: "
                              f"integer draft budget 0..{self.options.draft_length}, upload and exit levels "
                              f"0..{levels}{es} per user); got {short_repr(a)}{what}")

    @property
    def problem(self):
        """This round's problem instance (channel, capacities)."""
        return self.core.problem

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() without a render_mode; make the env with render_mode='rgb_array', 'human' "
                            "or 'ansi'")
            return None
        if self.streams is None:
            raise ResetNeeded("call reset() before render()")
        done = int((self.position >= self.streams.length).sum())
        if self.last is None:
            caption = f"{ENV_ID} round 0, N = {self.cfg.n_users}: {done} answers complete"
        else:
            caption = (f"{ENV_ID} round {self.rounds}: {int(self.last.emitted.sum())} tokens, "
                       f"{int(self.last.uploaded.sum())} uploaded, energy {self.last.energy.sum():.3f} J, "
                       f"{done}/{self.cfg.n_users} answers complete")
        if self.render_mode == "ansi":
            return caption
        # the area with each user coloured by the ES it uploaded to last round (grey: nothing uploaded)
        problem, uploads = self.problem, None
        if self.last_round is not None:
            problem, es, uploaded = self.last_round
            uploads = np.where(uploaded > 0, es + 1, 0)
        return self._picture(problem, uploads, caption)

    def close(self) -> None:
        self._picture.close()
        super().close()

    # --- helpers -----------------------------------------------------------------------------

    def _score_answers(self, idx: np.ndarray, ev: RoundEvaluation) -> None:
        """Count the answers completed this round; one with a skipped token the LLM would have
        rejected is wrong (it left the trace's path), else it is as right as the trace's hybrid answer."""
        s = self.streams
        ends = self._answer_end.take(idx) & (self._offsets < ev.emitted[:, None])
        if ev.unverified.any():
            rows, cols = np.nonzero(ev.unverified)
            self.tainted[rows, self._answer[idx[rows, cols]]] = True
        if not ends.any():
            return
        u, cols = np.nonzero(ends)
        a = self._answer[idx[u, cols]]
        self._answer_counts += (u.size, (s.hybrid_correct[u, a] & ~self.tainted[u, a]).sum(),
                                s.llm_correct[u, a].sum(), s.slm_correct[u, a].sum())

    def _observation(self) -> dict[str, np.ndarray] | np.ndarray:
        obs = self.dict_observation()
        return self.layout.flatten(obs) if self.options.flat_obs else obs

    def dict_observation(self) -> dict[str, np.ndarray]:
        """The observation as the Dict space's entries, whatever ``flat_obs`` is."""
        p, o = self.problem, self.options
        return {
            "channel_gain_db": self.core.features["channel_gain_db"],
            "energy_queue": np.minimum(self.queue / o.energy_budget_j, QUEUE_OBS_MAX).astype(np.float32),  # Z >= 0
            "es_capacity": normalised_es_capacity(p.es_capacity, self.cfg),
            "last_uncertainty": self.last_uncertainty.astype(np.float32),
            "local_capacity": self.core.features["local_capacity"],
            "remaining": np.minimum((self.streams.length - self.position) / o.draft_length, 64.0).astype(np.float32),
        }


__all__ = ["MECSpecDecodeEnv", "SpecEnvConfig", "ENV_ID", "OBS_KEYS"]
