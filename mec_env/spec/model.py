"""The one evaluator of token-level offloading: one round of drafting, uploads and verification.

In a round each user i drafts ``drafted[i]`` tokens with its SLM (``2 x slm_params`` FLOPs a token,
at its local capacity C_L,i), uploads the ones ``upload[i]`` marks to ES ``es[i]`` (each carries the
SLM's top-k distribution: ``k (ceil(log2 V) + prob_bits)`` bits), and the ES's LLM verifies the
uploaded block (``2 x llm_params`` FLOPs a token). Uplink and ES compute are the query-level model's
(:func:`mec_env.evaluator.delay_terms`, eqs. 2-7): users uploading to the same ES share its band and
compute, users uploading to other ESs interfere. Users that send nothing take no part in the
sharing.

A session is one prompt and its generation: a user that starts a generation sends its prompt (token
indices, ``ceil(log2 V)`` bits each) in that round, and the ES's LLM and the device's SLM prefill it
(``prefill_cost x 2 x params`` FLOPs a prompt token); both then keep the prompt's KV cache for the
generation.

Acceptance follows speculative decoding: an uploaded token the LLM rejects is replaced by the LLM's
resample and ends the round's output there (later drafts are discarded); a skipped token is kept
unverified. So a user emits ``first rejected uploaded position + 1`` tokens, or all it drafted. A
skipped token the LLM would have rejected is counted (``unverified_rejects``): the accuracy risk
U-HLM trades for throughput.

Device energy: ``joule_per_flop x`` the drafting FLOPs, plus ``P x t_comm`` for the upload.
Units SI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mec_env import kernels
from mec_env.config import INF, config_field
from mec_env.evaluator import delay_terms, es_state
from mec_env.problem import Problem


@dataclass
class SpecConfig:
    """Token-level settings on top of a scenario (its channel, ES and model sizes)."""

    draft_length: int = config_field(8, "L: most tokens a user drafts in a round", range=(1, 256))
    top_k: int = config_field(8, "k: SLM probabilities an uploaded token carries", range=(1, 2**24))
    prob_bits: int = config_field(16, "bits per uploaded probability (its quantisation)", range=(1, 64))
    vocab_size: int = config_field(49_152, "V: vocabulary size (SmolLM2's); a token index costs ceil(log2 V) bits",
                                   range=(2, INF))
    joule_per_flop: float = config_field(5e-11, "device energy per FLOP (20 GFLOP/s per W, a mobile SoC: our "
                                         "assumption)", range=(0.0, INF))
    verify_block_cost: float = config_field(0.2, "ES cost of each further token of a verified block, relative to "
                                            "the first (one forward pass verifies the block)", range=(0.0, 1.0))
    round_trip_s: float = config_field(0.008, "latency of a round that uploads, besides transmission (3GPP TR "
                                       "38.913 eMBB: 4 ms up + 4 ms down)", range=(0.0, INF))
    prefill_cost: float = config_field(1.0, "cost of each prompt token of a new generation's prefill, relative to "
                                       "one token's forward pass, on the ES (verifier) and the device (drafter); 1: "
                                       "FLOPs proportional to the prompt's tokens", range=(0.0, 1e3))

    def token_bits(self) -> float:
        """Uplink bits of one uploaded token: k (index, quantised probability) pairs."""
        return float(self.top_k * (math.ceil(math.log2(self.vocab_size)) + self.prob_bits))

    def prompt_token_bits(self) -> float:
        """Uplink bits of one prompt token: its index in the vocabulary."""
        return float(math.ceil(math.log2(self.vocab_size)))

    def verified_tokens(self, n_sent: np.ndarray) -> np.ndarray:
        """Token-equivalents of the verification pass over ``n_sent`` uploaded tokens (0 for none): the first
        token's forward pass and ``verify_block_cost`` of it for each further one."""
        return np.where(n_sent > 0, 1.0 + self.verify_block_cost * (n_sent - 1), 0.0)


@dataclass(frozen=True)
class RoundEvaluation:
    """What one round did, per user (N,). Times in s, energy in J."""

    emitted: np.ndarray  # tokens added to the answer
    uploaded: np.ndarray  # tokens sent for verification
    unverified: np.ndarray  # (N, L) bool, emitted tokens that were skipped and the LLM would have rejected
    bits: np.ndarray  # uplink bits: the uploaded tokens' top-k and a new generation's prompt
    es_flops: np.ndarray  # ES work: the verified block and a new generation's prefill
    draft_time: np.ndarray
    comm_time: np.ndarray
    verify_time: np.ndarray
    wait_time: np.ndarray  # the round trip of a round that uploads
    delay: np.ndarray  # draft + uplink + verification + round trip
    energy: np.ndarray
    es_users: np.ndarray  # (M,) users uploading to each ES

    @property
    def unverified_rejects(self) -> np.ndarray:
        """(N,) skipped tokens the LLM would have rejected, among those emitted."""
        return self.unverified.sum(axis=1)

    @property
    def throughput(self) -> float:
        """Tokens per second of the round: all users' tokens over the slowest user's delay."""
        slowest = float(self.delay.max()) if self.delay.size else 0.0
        return float(self.emitted.sum()) / slowest if slowest > 0 else 0.0


def evaluate_round(problem: Problem, spec: SpecConfig, drafted: np.ndarray, upload: np.ndarray,
                   accepted: np.ndarray, es: np.ndarray, flops_per_param_token: float, slm_params: float,
                   llm_params: float, check: bool = True, compiled: bool | None = None,
                   prompt_tokens: np.ndarray | None = None) -> RoundEvaluation:
    """Evaluate one round of N users (one problem instance: gains, capacities, the channel model).

    A user that starts a generation this round (``prompt_tokens[i] > 0``) first sends its prompt, token
    indices of ``ceil(log2 V)`` bits, with its uploads, and both models prefill it: ``prefill_cost x
    prompt`` token-equivalents on the ES (with the verified block) and on the device (with the drafting).
    It takes part in the band and ES sharing even if it uploads no drafted token.

    :param drafted: (N,) tokens drafted, 0..L.
    :param upload: (N, L) bool, which drafted tokens are sent (positions >= drafted are ignored).
    :param accepted: (N, L) bool, the LLM's verdict on each drafted token (from the traces).
    :param es: (N,) ES index 0..M-1 a user uploads to.
    :param prompt_tokens: (N,) prompt tokens of the generation a user starts this round, 0 for none
        (default: none).
    :param check: validate the shapes and ranges (the env, whose inputs are valid by construction, skips it).
    :param compiled: use the numba kernel (:func:`mec_env.kernels.spec_round_kernel`; default: when
        available); the numpy code below is the reference, and the tests hold the two equal.
    """
    n, m = problem.n_users, problem.n_edge_servers
    drafted = np.asarray(drafted, dtype=np.int64)
    upload, accepted = np.asarray(upload, dtype=bool), np.asarray(accepted, dtype=bool)
    es = np.asarray(es, dtype=np.int64)
    prompt = np.zeros(n) if prompt_tokens is None else np.asarray(prompt_tokens, dtype=np.float64)
    length = upload.shape[1] if upload.ndim == 2 else 0
    if check:
        if drafted.shape != (n,) or upload.ndim != 2 or upload.shape[0] != n or accepted.shape != upload.shape \
                or es.shape != (n,):
            raise ValueError(f"a round of N = {n} users takes drafted (N,), upload and accepted (N, L), es (N,); "
                             f"got {drafted.shape}, {upload.shape}, {accepted.shape}, {es.shape}")
        if drafted.min(initial=0) < 0 or drafted.max(initial=0) > length or es.min(initial=0) < 0 or \
                es.max(initial=0) >= m:
            raise ValueError(f"drafted must be in 0..L = {length} and es in 0..M-1 = {m - 1}")
        if prompt.shape != (n,) or not (np.isfinite(prompt) & (prompt >= 0)).all():
            raise ValueError(f"prompt_tokens must be (N,) = ({n},) finite counts >= 0; got shape {prompt.shape}")
    if kernels.numba_enabled() if compiled is None else compiled:
        radio = kernels.RadioScalars(*kernels.radio_scalars(problem))
        costs = kernels.TokenCosts(spec.token_bits(), flops_per_param_token * slm_params,
                                   flops_per_param_token * llm_params, spec.verify_block_cost, spec.joule_per_flop,
                                   spec.round_trip_s, 0.0, False, length, False, spec.prompt_token_bits(),
                                   spec.prefill_cost)
        emitted, n_sent, unverified, draft_time, t_comm, t_verify, energy, load, bits, es_flops = \
            kernels.spec_round_kernel(problem.gain, problem.es_capacity, problem.local_capacity,
                                      kernels.kernel_tuple(radio), kernels.kernel_tuple(costs), drafted, upload,
                                      accepted, es, prompt)
        wait = np.where((n_sent > 0) | (prompt > 0), spec.round_trip_s, 0.0)
        return RoundEvaluation(emitted=emitted, uploaded=n_sent, unverified=unverified, bits=bits, es_flops=es_flops,
                               draft_time=draft_time, comm_time=t_comm, verify_time=t_verify, wait_time=wait,
                               delay=draft_time + t_comm + t_verify + wait, energy=energy, es_users=load)
    position = np.arange(length)[None, :]
    valid = position < drafted[:, None]
    sent = upload & valid
    n_sent = sent.sum(axis=1)
    rejected = sent & ~accepted
    first = np.where(rejected.any(axis=1), rejected.argmax(axis=1) + 1, drafted)
    emitted = np.minimum(first, drafted)
    unverified = ~sent & ~accepted & (position < emitted[:, None])

    draft_flops = flops_per_param_token * slm_params * (drafted + spec.prefill_cost * prompt)
    draft_time = draft_flops / problem.local_capacity
    uploading = (n_sent > 0) | (prompt > 0)
    assignment = np.where(uploading, es + 1, 0)
    load, interference = es_state(problem, assignment)
    bits = spec.token_bits() * n_sent + spec.prompt_token_bits() * prompt
    es_flops = flops_per_param_token * llm_params * (spec.verified_tokens(n_sent) + spec.prefill_cost * prompt)
    t_comm, t_verify = delay_terms(problem, problem.gain[np.arange(n), es], bits, es_flops, problem.es_capacity[es],
                                   load[es], interference[es])
    t_comm, t_verify = np.where(uploading, t_comm, 0.0), np.where(uploading, t_verify, 0.0)
    wait = np.where(uploading, spec.round_trip_s, 0.0)
    return RoundEvaluation(
        emitted=emitted, uploaded=n_sent, unverified=unverified, bits=bits, es_flops=es_flops, draft_time=draft_time,
        comm_time=t_comm,
        verify_time=t_verify, wait_time=wait, delay=draft_time + t_comm + t_verify + wait,
        energy=spec.joule_per_flop * draft_flops + problem.tx_power_w * t_comm, es_users=load)


__all__ = ["SpecConfig", "RoundEvaluation", "evaluate_round"]
