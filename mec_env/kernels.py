"""Compiled twins (numba) of the two hot loops: the greedy delay-gap family and the delays of
one assignment. The numpy code in :mod:`mec_env.evaluator` and :mod:`baselines.greedy` stays the
reference and the fallback; tests compare the two paths for exact equality.

Both kernels evaluate eqs. (2)-(8) in the same operation order as
:func:`mec_env.evaluator.edge_delay`. The greedy kernel keeps the same incremental sums as the
numpy loop, so both return identical assignments; the delays kernel adds interference user by
user where numpy may sum pairwise, so delays agree to rounding (about 1e-16 relative).

numba is a declared dependency; without it (or with ``MECOFFLOAD_NUMBA=0`` in the
environment) every caller takes the numpy path.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

try:  # pragma: no cover - exercised by whichever path is installed
    import numba
except ImportError:  # pragma: no cover
    numba = None

from mec_env.radio.link import (INTERFERENCE_MODELS, compute_share, floored_distance, free_space_gain,
                                interference_added, sinr, uplink_rate)



def numba_enabled() -> bool:
    """True when the compiled kernels are used (numba importable, not disabled by env var)."""
    return numba is not None and os.environ.get("MECOFFLOAD_NUMBA", "1") != "0"


def _jit(fn):
    # numpy error model: IEEE results (inf, nan) instead of a ZeroDivisionError check on every division
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn) if numba is not None else fn


@_jit
def greedy_kernel(radio, gain, query_bits, workload_llm, local_delay, es_capacity, weights, candidates,
                  stop_when_nonnegative, state, backlog):
    """Offload ``candidates`` (sorted user indices) one pair at a time by smallest delay gap.

    Updates ``assignment``, ``load`` (users per ES) and ``interference`` in place and returns
    the number of users offloaded. Ties: the first (user, ES) pair in (user, ES) index order wins,
    as numpy's ``argmin`` over the (candidate, ES) table does. ``es_queued`` (M,) jobs already at
    each ES share its compute (not its band) and ``es_wait`` (M,) seconds are added to its edge
    delay: both zero for the paper's one-slot problem, the backlog in the queueing env.
    ``radio`` is a :class:`RadioScalars` as a tuple, ``state`` ``(assignment, load, interference)``,
    ``backlog`` ``(es_queued, es_wait)``.
    """
    c_max, bandwidth_hz, tx_power_w, noise_power_w, min_rate_bps, mode = radio  # RadioScalars' order
    assignment, load, interference = state
    es_queued, es_wait = backlog
    k_total = candidates.shape[0]
    m = gain.shape[1]
    n_done = 0
    alive = np.ones(k_total, dtype=np.bool_)
    bw = np.empty(m)
    compute = np.empty(m)
    for _ in range(k_total):
        # per-ES quantities of a user joining now: O(M), then O(K M) gaps
        for j in range(m):
            share = max(1, load[j] + 1)
            bw[j] = bandwidth_hz / share
            compute[j] = compute_share(c_max, es_capacity[j], share + es_queued[j])
        best = np.inf
        best_k = -1
        best_j = -1
        for k in range(k_total):
            if not alive[k]:
                continue
            i = candidates[k]
            for j in range(m):
                rate = uplink_rate(bw[j], sinr(tx_power_w, gain[i, j], interference[j], noise_power_w), min_rate_bps)
                edge = query_bits[i] / rate + workload_llm[i] / compute[j] + es_wait[j]
                gap = weights[i] * (edge - local_delay[i])
                if gap < best:
                    best = gap
                    best_k = k
                    best_j = j
        if best_k < 0:  # no finite gap: numpy's argmin takes the first pair
            if stop_when_nonnegative:
                break
            for k in range(k_total):
                if alive[k]:
                    best_k = k
                    best_j = 0
                    break
        elif stop_when_nonnegative and not best < 0.0:
            break
        i = candidates[best_k]
        alive[best_k] = False
        assignment[i] = best_j + 1
        _join(mode, tx_power_w, gain, i, best_j, 1, load, interference)
        n_done += 1
    return n_done


@_jit
def delays_kernel(radio, gain, query_bits, workload_llm, local_delay, es_capacity, assignment):
    """``(t_comm, t_compute, load)`` of one assignment (N,), as :func:`mec_env.evaluator.user_delays`."""
    n, m = gain.shape
    t_comm = np.zeros(n)
    t_compute = np.empty(n)
    load = np.zeros(m, dtype=np.int64)
    _delays_into(radio, gain, query_bits, workload_llm, local_delay, es_capacity, assignment, t_comm, t_compute, load)
    return t_comm, t_compute, load


@_jit
def delays_batch_kernel(radio, gain, query_bits, workload_llm, local_delay, es_capacity, assignment):
    """:func:`delays_kernel` for instance b of a batched problem and row b of a (B, N) assignment."""
    b_total, n, m = gain.shape
    t_comm = np.zeros((b_total, n))
    t_compute = np.empty((b_total, n))
    load = np.zeros((b_total, m), dtype=np.int64)
    for b in range(b_total):
        _delays_into(radio, gain[b], query_bits[b], workload_llm[b], local_delay[b], es_capacity[b], assignment[b],
                     t_comm[b], t_compute[b], load[b])
    return t_comm, t_compute, load


@_jit
def free_space_gain_kernel(user_xy, es_xy, fading, min_distance_m, carrier_hz):
    """``path_gain(distance, 'free_space') * fading`` of :mod:`mec_env.problem`, for (B, N, 2) positions,
    through the same functions of :mod:`mec_env.radio.link` (same operations, same order)."""
    b_total, n, m = fading.shape
    out = np.empty((b_total, n, m))
    for b in range(b_total):
        for i in range(n):
            for j in range(m):
                dx = user_xy[b, i, 0] - es_xy[j, 0]
                dy = user_xy[b, i, 1] - es_xy[j, 1]
                d = floored_distance(dx, dy, min_distance_m)
                out[b, i, j] = free_space_gain(d, carrier_hz) * fading[b, i, j]
    return out


@_jit
def _join(mode, tx_power_w, gain, i, e, sign, load, interference):
    """User i joining ES e (``sign`` 1) or leaving it (-1): its share of n_e and its interference at the other ESs."""
    load[e] += sign
    for j in range(gain.shape[1]):
        if j != e:
            interference[j] += sign * interference_added(mode, tx_power_w, gain[i, j], gain[i, e])


@_jit
def _es_state_into(radio, gain, assignment, load, interference):
    """n_j and the interference at each ES of one assignment, added into ``load`` and ``interference``."""
    for i in range(gain.shape[0]):
        if assignment[i] > 0:
            _join(radio[5], radio[2], gain, i, assignment[i] - 1, 1, load, interference)


@_jit
def _user_delays_into(radio, gain, query_bits, workload_llm, local_delay, es_capacity, assignment, load, interference,
                      t_comm, t_compute):
    """Eqs. 2-7 of each user given the ES state (``load``, ``interference``) of the assignment: into ``t_comm``
    (left as it is for local users) and ``t_compute``."""
    c_max, bandwidth_hz, tx_power_w, noise_power_w, min_rate_bps, mode = radio  # RadioScalars' order
    for i in range(gain.shape[0]):
        e = assignment[i] - 1
        if e < 0:
            t_compute[i] = local_delay[i]
            continue
        share = max(1, load[e])
        rate = uplink_rate(bandwidth_hz / share, sinr(tx_power_w, gain[i, e], interference[e], noise_power_w),
                           min_rate_bps)
        t_comm[i] = query_bits[i] / rate
        t_compute[i] = workload_llm[i] / compute_share(c_max, es_capacity[e], share)


@_jit
def _delays_into(radio, gain, query_bits, workload_llm, local_delay, es_capacity, assignment, t_comm, t_compute, load):
    """Eqs. 2-7 of one assignment into ``t_comm``, ``t_compute`` and ``load``; ``radio`` a :class:`RadioScalars`
    as a tuple."""
    interference = np.zeros(gain.shape[1])
    _es_state_into(radio, gain, assignment, load, interference)
    _user_delays_into(radio, gain, query_bits, workload_llm, local_delay, es_capacity, assignment, load, interference,
                      t_comm, t_compute)


class RadioScalars(NamedTuple):
    """The uplink and ES-compute scalars of eqs. (2)-(7), as the token-level kernels take them."""

    c_max: float  # FLOP/s, one user's share cap at an ES
    bandwidth_hz: float
    tx_power_w: float
    noise_power_w: float
    min_rate_bps: float
    mode: int  # mec_env.radio.link.INTERFERENCE_MODELS


def radio_scalars(problem) -> tuple:
    """A problem's :class:`RadioScalars` as the plain tuple the kernels take (:func:`kernel_tuple`)."""
    return (float(problem.c_max), float(problem.bandwidth_hz), float(problem.tx_power_w),
            float(problem.noise_power_w), float(problem.min_rate_bps), INTERFERENCE_MODELS[problem.interference])


class TokenCosts(NamedTuple):
    """A token's costs and the round's settings (:class:`mec_env.spec.model.SpecConfig` and the env's)."""

    token_bits: float  # uplink bits of one uploaded token
    slm_flops_per_token: float
    llm_flops_per_token: float
    verify_block_cost: float
    joule_per_flop: float
    round_trip_s: float
    energy_budget: float  # J per round a user drafts (the env's; unused by spec_round_kernel)
    per_user_time: bool  # timing="user" (the env's)
    draft_length: int  # L
    oracle_uploads: bool = False  # upload_rule="oracle" (the env's): exactly the drafted tokens the LLM rejects
    prompt_token_bits: float = 0.0  # uplink bits of one prompt token (its index)
    prefill_cost: float = 1.0  # a prompt token's prefill, relative to one token's forward pass (ES and device)


class TokenTables(NamedTuple):
    """The sessions' token streams, flat (N x width) as the env keeps them, and each answer's verdicts."""

    length: np.ndarray  # (N,) tokens in each session
    uncertainty: np.ndarray
    accepted: np.ndarray
    answer: np.ndarray  # answer index of each token
    answer_end: np.ndarray
    width: int
    hybrid_correct: np.ndarray  # (N, answers)
    llm_correct: np.ndarray
    slm_correct: np.ndarray
    prompt_tokens: np.ndarray  # (N, answers) the prompt a generation starts with


class SpecState(NamedTuple):
    """The per-user state ``spec_step_kernel`` updates in place."""

    position: np.ndarray
    queue: np.ndarray  # virtual energy queues Z_i
    energy_sum: np.ndarray
    last_uncertainty: np.ndarray
    tainted: np.ndarray  # (N, answers)
    answer_counts: np.ndarray  # (4,) answers, right, the LLM's right, the SLM's right
    user_time: np.ndarray
    user_errors: np.ndarray


class RoundBuffers(NamedTuple):
    """Where ``spec_step_kernel`` writes the round (per user unless noted) and its 12 ``stats``."""

    drafted: np.ndarray
    es: np.ndarray
    emitted: np.ndarray
    n_sent: np.ndarray
    unverified: np.ndarray  # (N, L)
    draft_time: np.ndarray
    comm_time: np.ndarray
    verify_time: np.ndarray
    energy: np.ndarray
    delay: np.ndarray
    load: np.ndarray  # (M,)
    stats: np.ndarray  # (12,)
    bits: np.ndarray  # uplink bits: the uploaded tokens and a new generation's prompt
    es_flops: np.ndarray  # the ES's work: the verified block and a new generation's prefill


def kernel_tuple(group: tuple) -> tuple:
    """``group`` (one of the kernels' argument namedtuples) as the plain tuple a kernel is called with.

    Why: numba types a plain tuple in C from its elements, a namedtuple in Python element by element
    (about 0.1 us a field per call, +4 us on a spec step). The kernel rebuilds the namedtuple
    (``SpecState(*state)``) at no run-time cost, so fields keep their names inside.
    """
    return tuple(group)


@_jit
def _verification_into(gain, es_capacity, radio, costs, n_sent, prompt, es, comm_time, verify_time, load, bits,
                       es_flops):
    """Uplink and verification time of each user's uploaded block and, for a user starting a generation,
    its ``prompt`` tokens' upload and prefill (eqs. 2-7 among the users that send anything): writes
    ``comm_time``, ``verify_time`` (0 for a user that sends nothing), ``load`` (users per ES), ``bits``
    and ``es_flops``. ``radio`` and ``costs`` are :class:`RadioScalars` and :class:`TokenCosts` (as tuples)."""
    c = TokenCosts(*costs)
    token_bits, llm_flops_per_token, verify_block_cost = c.token_bits, c.llm_flops_per_token, c.verify_block_cost
    n = gain.shape[0]
    assignment = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if n_sent[i] > 0 or prompt[i] > 0:
            assignment[i] = es[i] + 1
        bits[i] = token_bits * n_sent[i] + c.prompt_token_bits * prompt[i]
        block = 1.0 + verify_block_cost * (n_sent[i] - 1) if n_sent[i] > 0 else 0.0
        es_flops[i] = llm_flops_per_token * (block + c.prefill_cost * prompt[i])
        comm_time[i] = 0.0
    load[:] = 0
    _delays_into(radio, gain, bits, es_flops, np.zeros(n), es_capacity, assignment, comm_time, verify_time, load)


@_jit
def spec_round_kernel(gain, es_capacity, local_capacity, radio, costs, drafted, upload, accepted, es, prompt):
    """One round of token-level offloading, as the numpy path of :func:`mec_env.spec.model.evaluate_round`:
    ``(emitted, uploaded, unverified, draft_time, comm_time, verify_time, energy, es_users, bits, es_flops)``.
    ``radio`` and ``costs`` are :class:`RadioScalars` and :class:`TokenCosts` (as tuples)."""
    tx_power_w = RadioScalars(*radio).tx_power_w
    c = TokenCosts(*costs)
    slm_flops_per_token, joule_per_flop = c.slm_flops_per_token, c.joule_per_flop
    n, length = upload.shape
    m = gain.shape[1]
    emitted = np.empty(n, dtype=np.int64)
    n_sent = np.zeros(n, dtype=np.int64)
    unverified = np.zeros((n, length), dtype=np.bool_)
    for i in range(n):
        d = drafted[i]
        first = d
        for t in range(d):
            if upload[i, t]:
                n_sent[i] += 1
                if not accepted[i, t] and first == d:
                    first = t + 1  # the LLM's resample ends the round's output here
        emitted[i] = min(first, d)
        for t in range(emitted[i]):
            if not upload[i, t] and not accepted[i, t]:
                unverified[i, t] = True
    comm_time = np.empty(n)
    verify_time = np.empty(n)
    load = np.empty(m, dtype=np.int64)
    bits = np.empty(n)
    es_flops = np.empty(n)
    _verification_into(gain, es_capacity, radio, costs, n_sent, prompt, es, comm_time, verify_time, load, bits,
                       es_flops)
    draft_time = np.empty(n)
    energy = np.empty(n)
    for i in range(n):
        draft_flops = slm_flops_per_token * (drafted[i] + c.prefill_cost * prompt[i])
        draft_time[i] = draft_flops / local_capacity[i]
        energy[i] = joule_per_flop * draft_flops + tx_power_w * comm_time[i]
    return emitted, n_sent, unverified, draft_time, comm_time, verify_time, energy, load, bits, es_flops


@_jit
def spec_step_kernel(action, thresholds, gain, es_capacity, local_capacity, radio, costs, tokens, state, out):
    """One step of ``MECSpecDecode-v0`` fused, as the env's numpy path (``compiled=False``) computes it.
    The groups are :class:`RadioScalars`, :class:`TokenCosts`, :class:`TokenTables`, :class:`SpecState`
    (updated in place) and :class:`RoundBuffers` (written), each as a plain tuple (:func:`kernel_tuple`).

    From the (N, 3) actions (draft budget, upload and exit levels; (N, 4) with the ES index 0..M-1 last) and the
    flat (N x width) token streams: the drafted tokens with the early exit, cut at the end of the user's
    generation, the prompt of a generation a user starts, each user's ES (its choice, or its strongest), the
    round as
    :func:`spec_round_kernel` computes it (acceptance inline, uplink and verification through the
    same helper), the answers scored, and the state updated in place (``position``, energy
    ``queue`` and ``energy_sum``, ``last_uncertainty``, ``tainted``, ``answer_counts``: answers,
    right, LLM right, SLM right; each user's elapsed ``user_time``, its own delay with
    ``per_user_time`` (an idle, unfinished user's one token's drafting time), else the slot's, and
    ``user_errors``). The round's per-user arrays go to the output buffers; ``stats`` gets
    ``(tokens, errors, energy J, uploaded, drafted, round time s, sum of queues, sum of energy_sum,
    sum_i tokens_i / delay_i, sum_i errors_i / delay_i, sum_i position_i / user_time_i,
    sum_i (position_i - user_errors_i) / user_time_i)``.
    """
    tx_power_w = RadioScalars(*radio).tx_power_w
    c = TokenCosts(*costs)
    slm_flops_per_token, joule_per_flop, round_trip_s, energy_budget, per_user_time, draft_length = \
        c.slm_flops_per_token, c.joule_per_flop, c.round_trip_s, c.energy_budget, c.per_user_time, c.draft_length
    oracle = c.oracle_uploads
    tab = TokenTables(*tokens)
    length, uncertainty, accepted, answer, answer_end, width = \
        tab.length, tab.uncertainty, tab.accepted, tab.answer, tab.answer_end, tab.width
    hybrid_correct, llm_correct, slm_correct = tab.hybrid_correct, tab.llm_correct, tab.slm_correct
    prompt_tokens = tab.prompt_tokens
    st = SpecState(*state)
    position, queue, energy_sum, last_uncertainty, tainted, answer_counts, user_time, user_errors = \
        st.position, st.queue, st.energy_sum, st.last_uncertainty, st.tainted, st.answer_counts, st.user_time, \
        st.user_errors
    b = RoundBuffers(*out)
    drafted, es, emitted, n_sent, unverified, draft_time, comm_time, verify_time, energy, delay, load, stats = \
        b.drafted, b.es, b.emitted, b.n_sent, b.unverified, b.draft_time, b.comm_time, b.verify_time, b.energy, \
        b.delay, b.load, b.stats
    n, m = gain.shape
    prompt = np.zeros(n)
    total_drafted = 0
    for i in range(n):
        row = i * width
        d = min(action[i, 0], max(length[i] - position[i], 0))
        exit_at = thresholds[action[i, 2]]
        for t in range(d):
            k = row + min(position[i] + t, width - 1)
            if uncertainty[k] > exit_at or answer_end[k]:
                d = t + 1  # GELATO's early exit after the first token above the threshold; a generation's end
                break
        drafted[i] = d
        # a user drafting the first token of a generation sends its prompt first (and both models prefill it)
        if d > 0 and (position[i] == 0 or answer_end[row + position[i] - 1]):
            prompt[i] = prompt_tokens[i, answer[row + position[i]]]
        total_drafted += d
        if action.shape[1] > 3:  # association="action": the ES the user chose
            es[i] = action[i, 3]
        else:  # its strongest ES this round
            best = 0
            for j in range(1, m):
                if gain[i, j] > gain[i, best]:
                    best = j
            es[i] = best
    # the round: speculative acceptance, then eqs. 2-7 among the users that upload
    for i in range(n):
        row = i * width
        d = drafted[i]
        upload_at = thresholds[action[i, 1]]
        first = d
        n_sent[i] = 0
        for t in range(d):
            k = row + min(position[i] + t, width - 1)
            if (not accepted[k]) if oracle else uncertainty[k] > upload_at:
                n_sent[i] += 1
                if not accepted[k] and first == d:
                    first = t + 1  # the LLM's resample ends the round's output here
        emitted[i] = first
        for t in range(draft_length):
            unverified[i, t] = False
        for t in range(first):
            k = row + min(position[i] + t, width - 1)
            sent = (not accepted[k]) if oracle else uncertainty[k] > upload_at
            if not sent and not accepted[k]:
                unverified[i, t] = True
    _verification_into(gain, es_capacity, radio, costs, n_sent, prompt, es, comm_time, verify_time, load, b.bits,
                       b.es_flops)
    n_tokens = 0
    errors = 0
    uploaded = 0
    energy_total = 0.0
    round_time = 0.0
    queue_total = 0.0
    energy_sum_total = 0.0
    token_rate = 0.0
    error_rate = 0.0
    for i in range(n):
        draft_flops = slm_flops_per_token * (drafted[i] + c.prefill_cost * prompt[i])
        draft_time[i] = draft_flops / local_capacity[i]
        energy[i] = joule_per_flop * draft_flops + tx_power_w * comm_time[i]
        wait = round_trip_s if n_sent[i] > 0 or prompt[i] > 0 else 0.0
        delay[i] = draft_time[i] + comm_time[i] + verify_time[i] + wait
        if drafted[i] > 0:
            round_time = max(round_time, delay[i])  # the slot lasts until its slowest user is done
            k = i * width + min(position[i] + drafted[i] - 1, width - 1)
            last_uncertainty[i] = uncertainty[k]
        # answers: a skipped token the LLM would have rejected taints its answer, then score those ended
        row = i * width
        own_errors = 0
        for t in range(emitted[i]):
            if unverified[i, t]:
                tainted[i, answer[row + min(position[i] + t, width - 1)]] = True
                own_errors += 1
        errors += own_errors
        user_errors[i] += own_errors
        if delay[i] > 0:
            token_rate += emitted[i] / delay[i]
            error_rate += own_errors / delay[i]
        for t in range(emitted[i]):
            k = row + min(position[i] + t, width - 1)
            if answer_end[k]:
                a = answer[k]
                answer_counts[0] += 1
                if hybrid_correct[i, a] and not tainted[i, a]:
                    answer_counts[1] += 1
                if llm_correct[i, a]:
                    answer_counts[2] += 1
                if slm_correct[i, a]:
                    answer_counts[3] += 1
        position[i] += emitted[i]
        if drafted[i] > 0:  # the budget is per round of drafting: an idle round neither spends nor earns
            queue[i] = max(queue[i] + energy[i] - energy_budget, 0.0)
        energy_sum[i] += energy[i]
        n_tokens += emitted[i]
        uploaded += n_sent[i]
        energy_total += energy[i]
        queue_total += queue[i]
        energy_sum_total += energy_sum[i]
    throughput = 0.0
    accepted_throughput = 0.0
    for i in range(n):
        if not per_user_time:
            user_time[i] += round_time
        elif drafted[i] > 0:
            user_time[i] += delay[i]
        elif position[i] < length[i]:  # an idle user sits out one token's drafting time
            user_time[i] += slm_flops_per_token / local_capacity[i]
        if user_time[i] > 0:
            throughput += position[i] / user_time[i]
            accepted_throughput += (position[i] - user_errors[i]) / user_time[i]
    stats[:] = np.array([float(n_tokens), float(errors), energy_total, float(uploaded), float(total_drafted),
                         round_time, queue_total, energy_sum_total, token_rate, error_rate, throughput,
                         accepted_throughput])


__all__ = ["numba_enabled", "greedy_kernel", "delays_kernel", "delays_batch_kernel", "free_space_gain_kernel",
           "spec_round_kernel", "spec_step_kernel", "RadioScalars", "TokenCosts", "TokenTables",
           "SpecState", "RoundBuffers", "kernel_tuple"]
