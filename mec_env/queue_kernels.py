"""The compiled (numba) slot of ``MECOffloadQueue-v0``: the new jobs, their service for one slot
(:mod:`mec_env.queues` describes the disciplines), the fused decide-and-serve step and the flat
observation. Arguments come in the named groups below, each passed as a plain tuple
(:func:`mec_env.kernels.kernel_tuple`: numba types a plain tuple in C, a namedtuple in Python field by
field); each kernel rebuilds its namedtuples, so fields keep their names inside.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mec_env.kernels import RadioScalars, _delays_into, _jit


class JobArrays(NamedTuple):
    """The pool's jobs in arrival order (:class:`mec_env.queues.JobPool`'s arrays; room for the new ones)."""

    server: np.ndarray  # -1 device, j >= 0 ES j
    user: np.ndarray
    remaining: np.ndarray  # work left, FLOP
    ready: np.ndarray  # upload still under way, s from the slot's start
    age: np.ndarray  # time in the system at the slot's start, s
    alpha: np.ndarray
    started: np.ndarray  # FIFO: holds an LLM instance


class NewJobs(NamedTuple):
    """The slot's new jobs, in user order."""

    user: np.ndarray
    server: np.ndarray  # -1 device
    work: np.ndarray  # FLOP
    ready: np.ndarray  # upload time, s
    alpha: np.ndarray


class SlotTallies(NamedTuple):
    """What a slot's service did (written): work served, job-seconds and the finished jobs."""

    served_es: np.ndarray  # (M,)
    served_local: np.ndarray  # (N,)
    areas: np.ndarray  # (2,) job-seconds, alpha-weighted job-seconds
    done_user: np.ndarray
    done_server: np.ndarray
    done_delay: np.ndarray
    done_alpha: np.ndarray


class Backlog(NamedTuple):
    """The backlog left after a slot (overwritten) and the work admitted so far (accumulated)."""

    es_work: np.ndarray  # (M,) FLOP
    es_jobs: np.ndarray  # (M,)
    local_work: np.ndarray  # (N,) FLOP
    local_jobs: np.ndarray  # (N,)
    work_in: np.ndarray  # (M + 1,) per ES, then devices


def slot_queries(p) -> tuple:
    """A slot's problem as the plain :class:`SlotQueries` tuple the queue kernels take (``kernels.kernel_tuple``)."""
    return (p.gain, p.query_bits, p.workload_llm, p.workload_slm, p.local_capacity, p.es_capacity, p.alpha,
            float(p.tau), p.llm_correct, p.slm_correct)


class SlotQueries(NamedTuple):
    """The slot's problem instance as the queue kernels read it (:class:`mec_env.problem.Problem`'s fields)."""

    gain: np.ndarray
    query_bits: np.ndarray
    workload_llm: np.ndarray
    workload_slm: np.ndarray
    local_capacity: np.ndarray
    es_capacity: np.ndarray
    alpha: np.ndarray
    tau: float
    llm_correct: np.ndarray
    slm_correct: np.ndarray


class EnergyQueues(NamedTuple):
    """The devices' virtual energy queues Z_i (stepped in place), their budget and the slot's energy."""

    queue: np.ndarray  # (N,) J
    e_bar: float  # J per slot
    joule_per_flop: float
    energy: np.ndarray  # (N,) written: each device's energy this slot, J


class ObservationScales(NamedTuple):
    """The constants the flat observation is normalised and clipped by (set once per env)."""

    e_bar: float
    es_scale: float  # ES work observed in units of C_j x dt at nominal capacity
    es_nominal: float
    es_high: float
    local_nominal: float
    local_high: float
    dt: float
    backlog_max: float
    jobs_max: float
    gain_offset: float
    gain_scale: float
    gain_clip: float
    kbit_max: float


@_jit
def _serve(k, start, rate, dt, remaining, finish):
    """Serve job ``k`` from ``start`` at ``rate`` until it is done or the slot ends: ``(work served,
    when the server is free again)``; a finished job's time goes to ``finish[k]``, an unfinished one's
    work left to ``remaining[k]``."""
    t_end = start + remaining[k] / rate
    if t_end <= dt:
        finish[k] = t_end
        return remaining[k], t_end
    work = rate * (dt - start)
    remaining[k] -= work
    return work, dt


@_jit
def slot_kernel(size, jobs, new, es_capacity, local_capacity, c_max, dt, fifo, tallies, backlog):
    """One slot: append the ``new`` jobs (:class:`NewJobs`) to the first ``size`` of ``jobs``
    (:class:`JobArrays`, with room), then serve them all; ``tallies`` is a :class:`SlotTallies`,
    ``backlog`` a :class:`Backlog`.

    Service is the module docstring's. Finished jobs are written to ``done_*`` (in arrival order)
    and compacted out of the pool; the others lose the work served and age by ``dt``. ``areas``
    receives (job-seconds, alpha-weighted job-seconds) spent in the system during the slot;
    ``es_*``/``local_*`` are overwritten with the backlog left, ``work_in`` accumulates the work
    admitted. Returns ``(new size, jobs finished)``.
    """
    jb, nj, ta, bl = JobArrays(*jobs), NewJobs(*new), SlotTallies(*tallies), Backlog(*backlog)
    server, user, remaining, ready, age, alpha, started = \
        jb.server, jb.user, jb.remaining, jb.ready, jb.age, jb.alpha, jb.started
    new_user, new_server, new_work, new_ready, new_alpha = nj.user, nj.server, nj.work, nj.ready, nj.alpha
    served_es, served_local, areas, done_user, done_server, done_delay, done_alpha = \
        ta.served_es, ta.served_local, ta.areas, ta.done_user, ta.done_server, ta.done_delay, ta.done_alpha
    es_work, es_jobs, local_work, local_jobs, work_in = bl.es_work, bl.es_jobs, bl.local_work, bl.local_jobs, bl.work_in
    m = es_capacity.shape[0]
    n = local_capacity.shape[0]
    for r in range(new_user.shape[0]):
        k = size + r
        server[k] = new_server[r]
        user[k] = new_user[r]
        remaining[k] = new_work[r]
        ready[k] = new_ready[r]
        age[k] = 0.0
        alpha[k] = new_alpha[r]
        started[k] = False
        work_in[new_server[r] if new_server[r] >= 0 else m] += new_work[r]
    size += new_user.shape[0]
    finish = np.full(size, np.inf)  # finish time within the slot, inf = still there at its end
    # devices: one job at a time, in arrival order
    busy = np.zeros(n)
    for k in range(size):
        if server[k] >= 0:
            continue
        i = user[k]
        start = busy[i] if busy[i] > ready[k] else ready[k]
        if start >= dt:
            continue
        work, busy[i] = _serve(k, start, local_capacity[i], dt, remaining, finish)
        served_local[i] += work
    if fifo:
        # K_j instances per ES: jobs that hold one keep it (first), then the others in the order they
        # reached the ES: those already there in arrival order, then this slot's uploads by the time they
        # end (stable). Start times only grow along that order, so the first job that cannot start
        # before the slot's end closes the ES for the slot.
        uploading = np.empty(size, dtype=np.int64)
        n_up = 0
        for k in range(size):
            if server[k] >= 0 and ready[k] > 0.0:
                uploading[n_up] = k
                n_up += 1
        uploading = uploading[:n_up][np.argsort(ready[uploading[:n_up]], kind="mergesort")]
        at_es = np.zeros(m, dtype=np.int64)
        for k in range(size):
            if server[k] >= 0:
                at_es[server[k]] += 1
        for j in range(m):
            # ceil(C_j / C_max) instances: all at C_max but the last, which gets the rest (they sum to C_j).
            # A job takes the first instance of least free time, so the J_j jobs here use only the first
            # J_j instances: with fewer jobs than instances, J_j instances all at C_max serve them alike,
            # in memory bounded by the jobs (C_max = 1e4 FLOP/s would ask for 1e9 instances).
            ratio = es_capacity[j] / c_max
            if at_es[j] < ratio:
                n_inst = max(1, at_es[j])
                rates = np.full(n_inst, c_max)
            else:
                n_inst = max(1, int(np.ceil(ratio)))
                rates = np.full(n_inst, c_max)
                rates[n_inst - 1] = es_capacity[j] - (n_inst - 1) * c_max
                if n_inst > 1 and rates[n_inst - 1] <= 0.0:  # C_j / C_max rounded up past an integer
                    n_inst -= 1
            free = np.zeros(n_inst)
            closed = False
            for sweep in range(3):
                count = n_up if sweep == 2 else size
                for r in range(count):
                    if closed:
                        break
                    k = uploading[r] if sweep == 2 else r
                    if server[k] != j:
                        continue
                    if sweep == 0 and not started[k]:
                        continue
                    if sweep == 1 and (started[k] or ready[k] > 0.0):
                        continue
                    s = 0
                    for q in range(1, n_inst):
                        if free[q] < free[s]:
                            s = q
                    start = free[s] if free[s] > ready[k] else ready[k]
                    if start >= dt:
                        closed = True
                        break
                    started[k] = True
                    work, free[s] = _serve(k, start, rates[s], dt, remaining, finish)
                    served_es[j] += work
    else:
        # processor sharing over the n_j jobs present at the slot's start, as eq. (6)
        present = np.zeros(m, dtype=np.int64)
        for k in range(size):
            if server[k] >= 0:
                present[server[k]] += 1
        for k in range(size):
            j = server[k]
            if j < 0:
                continue
            share = max(1, present[j])
            rate = min(c_max, es_capacity[j] / share)
            if ready[k] >= dt:
                continue
            served_es[j] += _serve(k, ready[k], rate, dt, remaining, finish)[0]
    # account, record the finished jobs and compact the others (arrival order kept)
    n_done = 0
    kept = 0
    es_work[:] = 0.0
    es_jobs[:] = 0
    local_work[:] = 0.0
    local_jobs[:] = 0
    for k in range(size):
        if finish[k] < np.inf:
            areas[0] += finish[k]
            areas[1] += alpha[k] * finish[k]
            done_user[n_done] = user[k]
            done_server[n_done] = server[k]
            done_delay[n_done] = age[k] + finish[k]
            done_alpha[n_done] = alpha[k]
            n_done += 1
        else:
            areas[0] += dt
            areas[1] += alpha[k] * dt
            server[kept] = server[k]
            user[kept] = user[k]
            remaining[kept] = remaining[k]
            ready[kept] = ready[k] - dt if ready[k] > dt else 0.0
            age[kept] = age[k] + dt
            alpha[kept] = alpha[k]
            started[kept] = started[k]
            if server[k] >= 0:
                es_work[server[k]] += remaining[k]
                es_jobs[server[k]] += 1
            else:
                local_work[user[k]] += remaining[k]
                local_jobs[user[k]] += 1
            kept += 1
    return kept, n_done


@_jit
def decide_kernel(assignment, has_query, t_comm, queries, tx_power_w, energies, new, counts):
    """The slot's decisions as new jobs, device energy and the energy queues' step (``queries`` a
    :class:`SlotQueries`, ``energies`` an :class:`EnergyQueues`, ``new`` the :class:`NewJobs` written).

    For every user with a query (in user order) writes its job to ``new_*`` (server ``a - 1``, -1 =
    device; work W_LLM or W_SLM; upload time; alpha), its energy (``P t_comm`` offloaded,
    ``joule_per_flop x W_SLM`` local; 0 without a query) to ``energy`` and steps its virtual queue
    ``Z <- max(Z + E - e_bar, 0)`` in place. ``counts`` gets (queries, offloaded, correct, breaking
    constraint 11). Returns the number of new jobs.
    """
    q, eq, nj = SlotQueries(*queries), EnergyQueues(*energies), NewJobs(*new)
    workload_llm, workload_slm, alpha, tau, llm_correct, slm_correct = \
        q.workload_llm, q.workload_slm, q.alpha, q.tau, q.llm_correct, q.slm_correct
    energy_queue, e_bar, joule_per_flop, energy = eq.queue, eq.e_bar, eq.joule_per_flop, eq.energy
    new_user, new_server, new_work, new_ready, new_alpha = nj.user, nj.server, nj.work, nj.ready, nj.alpha
    k = 0
    counts[:] = 0
    for i in range(has_query.shape[0]):
        e = 0.0
        if has_query[i]:
            j = assignment[i] - 1
            new_user[k] = i
            new_server[k] = j
            new_alpha[k] = alpha[i]
            if j >= 0:
                new_work[k] = workload_llm[i]
                new_ready[k] = t_comm[i]
                e = tx_power_w * t_comm[i]
                counts[1] += 1
                counts[2] += 1 if llm_correct[i] else 0
            else:
                new_work[k] = workload_slm[i]
                new_ready[k] = 0.0
                e = joule_per_flop * workload_slm[i]
                counts[2] += 1 if slm_correct[i] else 0
                counts[3] += 1 if alpha[i] > tau else 0
            k += 1
        energy[i] = e
        z = energy_queue[i] + e - e_bar
        energy_queue[i] = z if z > 0.0 else 0.0
    counts[0] = k
    return k


@_jit
def queue_step_kernel(size, jobs, assignment, has_query, queries, radio, energies, dt, fifo, tallies, backlog, totals):
    """:meth:`JobPool.decide_and_step` compiled: uplink, decisions, energy, then :func:`slot_kernel`.
    ``radio`` is a :class:`mec_env.kernels.RadioScalars`, ``totals`` the ``(counts, sums)`` written."""
    q, rs, eq = SlotQueries(*queries), RadioScalars(*radio), EnergyQueues(*energies)
    gain, query_bits, workload_llm, local_capacity, es_capacity = \
        q.gain, q.query_bits, q.workload_llm, q.local_capacity, q.es_capacity
    c_max, tx_power_w = rs.c_max, rs.tx_power_w
    energy_queue, energy = eq.queue, eq.energy
    counts, sums = totals
    ta = SlotTallies(*tallies)
    served_local, done_delay = ta.served_local, ta.done_delay
    n = has_query.shape[0]
    a = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if has_query[i]:
            a[i] = assignment[i]
    # the evaluator's uplink (eqs. 2-5): the slot's uploaders share the band and interfere
    t_comm = np.zeros(n)
    t_compute = np.empty(n)
    load = np.zeros(es_capacity.shape[0], dtype=np.int64)
    _delays_into(radio, gain, query_bits, workload_llm, np.zeros(n), es_capacity, a, t_comm, t_compute, load)
    new_user = np.empty(n, dtype=np.int64)
    new_server = np.empty(n, dtype=np.int64)
    new_work, new_ready, new_alpha = np.empty(n), np.empty(n), np.empty(n)
    k = decide_kernel(a, has_query, t_comm, queries, tx_power_w, energies,
                      (new_user, new_server, new_work, new_ready, new_alpha), counts)
    size, n_done = slot_kernel(size, jobs, (new_user[:k], new_server[:k], new_work[:k], new_ready[:k], new_alpha[:k]),
                               es_capacity, local_capacity, c_max, dt, fifo, tallies, backlog)
    sums[:] = 0.0
    for i in range(n):
        sums[0] += energy[i]
        sums[2] += served_local[i]
        sums[3] += energy_queue[i]
    for r in range(n_done):
        sums[1] += done_delay[r]
    return size, n_done


@_jit
def observation_kernel(out, has_query, queries, energy_queue, backlog, scales):
    """The flat float32 observation of ``MECOffloadQueue-v0``, its keys in sorted order (see the env), from
    the slot's :class:`SlotQueries`, the :class:`Backlog` and the :class:`ObservationScales`."""
    q, bl, sc = SlotQueries(*queries), Backlog(*backlog), ObservationScales(*scales)
    alpha, tau, gain, es_capacity, local_capacity, query_bits = \
        q.alpha, q.tau, q.gain, q.es_capacity, q.local_capacity, q.query_bits
    es_work, es_jobs, local_work = bl.es_work, bl.es_jobs, bl.local_work
    e_bar, es_scale, es_nominal, es_high, local_nominal, local_high, dt = \
        sc.e_bar, sc.es_scale, sc.es_nominal, sc.es_high, sc.local_nominal, sc.local_high, sc.dt
    backlog_max, jobs_max, gain_offset, gain_scale, gain_clip, kbit_max = \
        sc.backlog_max, sc.jobs_max, sc.gain_offset, sc.gain_scale, sc.gain_clip, sc.kbit_max
    n, m = gain.shape
    o = 0
    for i in range(n):  # above_tau
        out[o + i] = 1.0 if has_query[i] and alpha[i] > tau else 0.0
    o += n
    for i in range(n):  # channel_gain_db
        for j in range(m):
            x = (10.0 * np.log10(max(gain[i, j], 1e-30)) + gain_offset) / gain_scale
            out[o + i * m + j] = min(max(x, -gain_clip), gain_clip)
    o += n * m
    for i in range(n):  # energy_queue
        out[o + i] = min(energy_queue[i] / e_bar, backlog_max)
    o += n
    for j in range(m):  # es_backlog
        out[o + j] = min(es_work[j] / es_scale, backlog_max)
    o += m
    for j in range(m):  # es_capacity
        out[o + j] = min(max(es_capacity[j] / es_nominal, 0.0), es_high)
    o += m
    for j in range(m):  # es_jobs
        out[o + j] = min(es_jobs[j] / n, jobs_max)
    o += m
    for i in range(n):  # has_query
        out[o + i] = 1.0 if has_query[i] else 0.0
    o += n
    for i in range(n):  # local_backlog
        out[o + i] = min(local_work[i] / (local_capacity[i] * dt), backlog_max)
    o += n
    for i in range(n):  # local_capacity
        out[o + i] = min(max(local_capacity[i] / local_nominal, 0.0), local_high)
    o += n
    for i in range(n):  # query_size
        out[o + i] = min(max(query_bits[i] / 1e3, 0.0), kbit_max) if has_query[i] else 0.0
    o += n
    for i in range(n):  # uncertainty
        out[o + i] = min(max(alpha[i], 0.0), 1.0) if has_query[i] else 0.0


__all__ = ["JobArrays", "NewJobs", "SlotTallies", "Backlog", "SlotQueries", "EnergyQueues", "ObservationScales",
           "slot_kernel", "decide_kernel", "queue_step_kernel", "observation_kernel"]
