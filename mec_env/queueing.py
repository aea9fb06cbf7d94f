"""Queues that carry over between slots: the dynamic system core of ``MECOffloadQueue-v0``.

Every query is a *job*. A user's query arriving in a slot is decided at the slot's start: kept
local, it joins the user's device queue; offloaded to ES j, it is uploaded (t_comm of eqs. 2-5,
the slot's uploaders sharing the band and interfering as in :func:`mec_env.model.user_delays`)
and joins ES j's queue. Jobs stay until their work (FLOPs) is served, across as many slots as
that takes; a job's delay is its sojourn time, uplink + waiting + service.

Service within a slot of length ``dt`` (rates are constant over a slot):

- **device**: one SLM inference at a time, first come first served, at C_L,i;
- **ES, ``discipline="fifo"``** (default): ``K_j = ceil(C_j / C_max)`` LLM instances, all at
  C_max but the last, which gets the rest, so they sum to C_j (eq. 6's per-user cap is one
  instance); jobs take the earliest free instance in the order they reached the ES, when their
  upload has ended, and jobs in service keep being served first in the next slot. Work-conserving:
  an ES with at least K_j jobs serves at its full C_j, so its backlog is stable exactly when the
  work offloaded to it is below its mean capacity;
- **ES, ``discipline="ps"``**: processor sharing in the paper's form: the ``n_j`` jobs at ES j at
  the slot's start (carried over and just offloaded, uploading or not) each get
  ``min(C_max, C_j / n_j)`` from the end of their upload, as eq. (6) shares an ES among its
  ``n_j`` users. Shares are recomputed each slot, so the share of a job that finishes mid-slot
  idles until the next slot: with short slots and few jobs, the ES delivers less than C_j.

With ``discipline="ps"``, every user issuing a query every slot and a slot long enough that all
of them finish (nothing carries over), a slot's delays are exactly the evaluator's (eqs. 2-8),
bit for bit: the static special case of ``MECOffload-v0``.

The pool of jobs is kept in arrival order (new jobs appended in user order, finished ones
compacted away), which is what both FIFO disciplines read. All arrays are numpy; the slot
advance is one compiled kernel (numba, interpreted Python without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mec_env.kernels import INTERFERENCE_CODES, _delays_into, _jit

DISCIPLINES = ("fifo", "ps")


@dataclass
class SlotOutcome:
    """What the jobs did during one slot. Times in s, work in FLOP."""

    served_es: np.ndarray  # (M,) work served by each ES
    served_local: np.ndarray  # (N,) work served by each device
    area: float  # integral of the number of jobs in the system over the slot (job-seconds)
    weighted_area: float  # the same weighted by each job's alpha
    done_user: np.ndarray  # (K,) user of each job finished in the slot, in arrival order
    done_server: np.ndarray  # (K,) its server: -1 device, j >= 0 ES j
    done_delay: np.ndarray  # (K,) its sojourn time (uplink + waiting + service)
    done_alpha: np.ndarray  # (K,) its alpha


@dataclass
class JobPool:
    """The jobs in the system, in arrival order (the first ``size`` entries of each array), and
    the backlog they make (updated by every :meth:`step`)."""

    n_users: int
    n_edge_servers: int
    capacity: int = 256
    size: int = 0
    server: np.ndarray = field(init=False)  # -1 device, j >= 0 ES j
    user: np.ndarray = field(init=False)
    remaining: np.ndarray = field(init=False)  # work left, FLOP
    ready: np.ndarray = field(init=False)  # upload still under way, s from the slot's start (0: at its server)
    age: np.ndarray = field(init=False)  # time in the system at the slot's start, s
    alpha: np.ndarray = field(init=False)
    started: np.ndarray = field(init=False)  # FIFO: holds an LLM instance
    es_work: np.ndarray = field(init=False)  # (M,) work queued at each ES, FLOP
    es_jobs: np.ndarray = field(init=False)  # (M,) jobs at each ES
    local_work: np.ndarray = field(init=False)  # (N,) work queued on each device, FLOP
    local_jobs: np.ndarray = field(init=False)  # (N,)
    work_in: np.ndarray = field(init=False)  # (M + 1,) cumulative work admitted to each ES, then to devices

    def __post_init__(self) -> None:
        self._allocate(self.capacity)
        self.clear()

    def _allocate(self, capacity: int) -> None:
        self.capacity = capacity
        self.server = np.zeros(capacity, dtype=np.int64)
        self.user = np.zeros(capacity, dtype=np.int64)
        self.remaining = np.zeros(capacity)
        self.ready = np.zeros(capacity)
        self.age = np.zeros(capacity)
        self.alpha = np.zeros(capacity)
        self.started = np.zeros(capacity, dtype=np.bool_)

    def _reserve(self, k: int) -> None:
        """Room for ``k`` more jobs (the arrays double, the jobs kept)."""
        if self.size + k > self.capacity:
            old = {name: getattr(self, name)[:self.size].copy() for name in _JOB_ARRAYS}
            self._allocate(max(2 * self.capacity, self.size + k))
            for name, values in old.items():
                getattr(self, name)[:self.size] = values

    def clear(self) -> None:
        """No jobs, no backlog, nothing admitted yet.""",
        self.size = 0
        m, n = self.n_edge_servers, self.n_users
        self.es_work, self.es_jobs = np.zeros(m), np.zeros(m, dtype=np.int64)
        self.local_work, self.local_jobs = np.zeros(n), np.zeros(n, dtype=np.int64)
        self.work_in = np.zeros(m + 1)

    def step(self, users: np.ndarray, servers: np.ndarray, work: np.ndarray, upload_s: np.ndarray,
             alpha: np.ndarray, es_capacity: np.ndarray, local_capacity: np.ndarray, c_max: float, dt: float,
             discipline: str) -> SlotOutcome:
        """Admit the slot's new jobs (user order; server -1 = device) and serve every job for one slot."""
        k = users.shape[0]
        self._reserve(k)
        m, n = self.n_edge_servers, self.n_users
        served_es, served_local = np.zeros(m), np.zeros(n)
        total = self.size + k
        done_user, done_server = np.empty((2, total), dtype=np.int64)
        done_delay, done_alpha = np.empty((2, total))
        areas = np.zeros(2)
        size, n_done = slot_kernel(
            self.size, self.server, self.user, self.remaining, self.ready, self.age, self.alpha, self.started,
            users, servers, work, upload_s, alpha, es_capacity, local_capacity, float(c_max), float(dt),
            discipline == "fifo", served_es, served_local, areas, done_user, done_server, done_delay, done_alpha,
            self.es_work, self.es_jobs, self.local_work, self.local_jobs, self.work_in)
        self.size = int(size)
        return SlotOutcome(served_es, served_local, float(areas[0]), float(areas[1]), done_user[:n_done],
                           done_server[:n_done], done_delay[:n_done], done_alpha[:n_done])


    def decide_and_step(self, problem, assignment: np.ndarray, has_query: np.ndarray, energy_queue: np.ndarray,
                        e_bar: float, joule_per_flop: float, dt: float, discipline: str
                        ) -> tuple[SlotOutcome, np.ndarray, np.ndarray, np.ndarray]:
        """A slot of the queueing env in one compiled call: the new queries' uplink (the evaluator's
        eqs. 2-5 over the users with a query), their jobs, device energy and the energy queues'
        step (``energy_queue`` in place), then :meth:`step`'s service.

        Returns ``(outcome, energy (N,), counts, sums)``: ``counts`` = (queries, offloaded, answered
        right, breaking constraint 11), ``sums`` = (energy, sojourn of the finished jobs, work served
        by devices, sum of the energy queues).
        """
        n, m = self.n_users, self.n_edge_servers
        self._reserve(n)
        total = self.size + n
        served_es, served_local = np.zeros(m), np.zeros(n)
        done_user, done_server = np.empty((2, total), dtype=np.int64)
        done_delay, done_alpha = np.empty((2, total))
        energy, areas, sums = np.empty(n), np.zeros(2), np.zeros(4)
        counts = np.zeros(4, dtype=np.int64)
        p = problem
        size, n_done = queue_step_kernel(
            self.size, self.server, self.user, self.remaining, self.ready, self.age, self.alpha, self.started,
            assignment, has_query, p.gain, p.query_bits, p.workload_llm, p.workload_slm, p.local_capacity,
            p.es_capacity, p.alpha, float(p.tau), p.llm_correct, p.slm_correct, float(p.c_max),
            float(p.bandwidth_hz), float(p.tx_power_w), float(p.noise_power_w), float(p.min_rate_bps),
            INTERFERENCE_CODES[p.interference], float(joule_per_flop), energy_queue, float(e_bar), float(dt),
            discipline == "fifo", energy, counts, served_es, served_local, areas, done_user, done_server, done_delay,
            done_alpha, self.es_work, self.es_jobs, self.local_work, self.local_jobs, self.work_in, sums)
        self.size = int(size)
        out = SlotOutcome(served_es, served_local, float(areas[0]), float(areas[1]), done_user[:n_done],
                          done_server[:n_done], done_delay[:n_done], done_alpha[:n_done])
        return out, energy, counts, sums


_JOB_ARRAYS = ("server", "user", "remaining", "ready", "age", "alpha", "started")


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
def slot_kernel(size, server, user, remaining, ready, age, alpha, started, new_user, new_server, new_work, new_ready,
                new_alpha, es_capacity, local_capacity, c_max, dt, fifo, served_es, served_local, areas, done_user,
                done_server, done_delay, done_alpha, es_work, es_jobs, local_work, local_jobs, work_in):
    """One slot: append the new jobs to the first ``size`` (the pool has room), then serve them all.

    Service is the module docstring's. Finished jobs are written to ``done_*`` (in arrival order)
    and compacted out of the pool; the others lose the work served and age by ``dt``. ``areas``
    receives (job-seconds, alpha-weighted job-seconds) spent in the system during the slot;
    ``es_*``/``local_*`` are overwritten with the backlog left, ``work_in`` accumulates the work
    admitted. Returns ``(new size, jobs finished)``.
    """
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
def decide_kernel(assignment, has_query, t_comm, workload_llm, workload_slm, alpha, tau, llm_correct, slm_correct,
                  tx_power_w, joule_per_flop, energy_queue, e_bar, new_user, new_server, new_work, new_ready,
                  new_alpha, energy, counts):
    """The slot's decisions as new jobs, device energy and the energy queues' step.

    For every user with a query (in user order) writes its job to ``new_*`` (server ``a - 1``, -1 =
    device; work W_LLM or W_SLM; upload time; alpha), its energy (``P t_comm`` offloaded,
    ``joule_per_flop x W_SLM`` local; 0 without a query) to ``energy`` and steps its virtual queue
    ``Z <- max(Z + E - e_bar, 0)`` in place. ``counts`` gets (queries, offloaded, correct, breaking
    constraint 11). Returns the number of new jobs.
    """
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
def queue_step_kernel(size, server, user, remaining, ready, age, pool_alpha, started, assignment, has_query, gain,
                      query_bits, workload_llm, workload_slm, local_capacity, es_capacity, alpha, tau, llm_correct,
                      slm_correct, c_max, bandwidth_hz, tx_power_w, noise_power_w, min_rate_bps, mode, joule_per_flop,
                      energy_queue, e_bar, dt, fifo, energy, counts, served_es, served_local, areas, done_user,
                      done_server, done_delay, done_alpha, es_work, es_jobs, local_work, local_jobs, work_in, sums):
    """:meth:`JobPool.decide_and_step` compiled: uplink, decisions, energy, then :func:`slot_kernel`."""
    n = has_query.shape[0]
    a = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if has_query[i]:
            a[i] = assignment[i]
    # the evaluator's uplink (eqs. 2-5): the slot's uploaders share the band and interfere
    t_comm = np.zeros(n)
    t_compute = np.empty(n)
    load = np.zeros(es_capacity.shape[0], dtype=np.int64)
    _delays_into(gain, query_bits, workload_llm, np.zeros(n), es_capacity, c_max, bandwidth_hz, tx_power_w,
                 noise_power_w, min_rate_bps, mode, a, t_comm, t_compute, load)
    new_user = np.empty(n, dtype=np.int64)
    new_server = np.empty(n, dtype=np.int64)
    new_work, new_ready, new_alpha = np.empty(n), np.empty(n), np.empty(n)
    k = decide_kernel(a, has_query, t_comm, workload_llm, workload_slm, alpha, tau, llm_correct, slm_correct,
                      tx_power_w, joule_per_flop, energy_queue, e_bar, new_user, new_server, new_work, new_ready,
                      new_alpha, energy, counts)
    size, n_done = slot_kernel(size, server, user, remaining, ready, age, pool_alpha, started, new_user[:k],
                               new_server[:k], new_work[:k], new_ready[:k], new_alpha[:k], es_capacity,
                               local_capacity, c_max, dt, fifo, served_es, served_local, areas, done_user,
                               done_server, done_delay, done_alpha, es_work, es_jobs, local_work, local_jobs, work_in)
    sums[:] = 0.0
    for i in range(n):
        sums[0] += energy[i]
        sums[2] += served_local[i]
        sums[3] += energy_queue[i]
    for r in range(n_done):
        sums[1] += done_delay[r]
    return size, n_done


@_jit
def channel_kernel(h, w, rho, xy, direction, step, side, es_xy, min_distance_m, four_pi_f, speed_of_light,
                   free_space, gain):
    """One slot of the channel: the Gauss-Markov step ``h <- rho h + sqrt(1 - rho^2) w`` in place
    (real and imaginary parts on the first axis, (2, N, M)), every user moved ``step`` metres along
    its unit ``direction`` (N, 2) and reflected at the border of the ``side`` x ``side`` area; returns
    the new positions. ``gain`` (N, M) gets ``abs(h)^2``, times the free-space path gain at the new
    positions (as :func:`mec_env.problem.path_gain`, distance floored at ``min_distance_m``) when
    ``free_space``; else the caller multiplies by its path gain."""
    s = np.sqrt(max(0.0, 1.0 - rho * rho))  # |rho| <= 1, but its square may round past 1
    n, m = h.shape[1], h.shape[2]
    out = np.empty_like(xy)
    for i in range(n):
        for c in range(2):
            x = xy[i, c] + step * direction[i, c]
            x = np.fmod(x, 2.0 * side)
            if x < 0.0:
                x += 2.0 * side
            out[i, c] = 2.0 * side - x if x > side else x
        for j in range(m):
            re = rho * h[0, i, j] + s * w[0, i, j]
            im = rho * h[1, i, j] + s * w[1, i, j]
            h[0, i, j] = re
            h[1, i, j] = im
            power = re * re + im * im
            if free_space:
                dx = out[i, 0] - es_xy[j, 0]
                dy = out[i, 1] - es_xy[j, 1]
                d = max(np.sqrt(dx * dx + dy * dy), min_distance_m)
                r = speed_of_light / (four_pi_f * d)
                power *= r * r
            gain[i, j] = power
    return out


@_jit
def observation_kernel(out, has_query, alpha, tau, gain, energy_queue, e_bar, es_work, es_scale, es_capacity,
                       es_nominal, es_high, es_jobs, local_work, local_capacity, dt, local_nominal, local_high,
                       query_bits, backlog_max, jobs_max, gain_offset, gain_scale, gain_clip, kbit_max):
    """The flat float32 observation of ``MECOffloadQueue-v0``, its keys in sorted order (see the env)."""
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


def jakes_correlation(speed_mps: float, carrier_hz: float, slot_s: float) -> float:
    """Clarke/Jakes slot-to-slot fading correlation ``J0(2 pi f_D dt)``, ``f_D = v f_c / c``.

    J0 by its integral ``(1/pi) int_0^pi cos(x sin t) dt`` (Simpson on 2,001 points: < 1e-12 for
    the arguments of mobile users), so no SciPy. Past ``x = 1000``, where 2,001 points no longer resolve
    the integrand, Hankel's expansion ``sqrt(2 / (pi x)) (P cos chi - Q sin chi)``, ``chi = x - pi/4``
    (error below 1e-12 there), tending to 0: a channel that decorrelates within a slot.
    """
    with np.errstate(over="ignore"):  # an astronomic Doppler shift x dt overflows to inf: J0 -> 0
        x = 2.0 * np.pi * (speed_mps * slot_s) * (carrier_hz / 299_792_458.0)
    if x > 1000.0:
        if not np.isfinite(x):
            return 0.0
        chi = x - 0.25 * np.pi
        p = 1.0 - 9.0 / (128.0 * x * x)
        q = -1.0 / (8.0 * x) + 75.0 / (1024.0 * x * x * x)
        return float(np.sqrt(2.0 / (np.pi * x)) * (p * np.cos(chi) - q * np.sin(chi)))
    t = np.linspace(0.0, np.pi, 2001)
    y = np.cos(x * np.sin(t))
    h = t[1] - t[0]
    j0 = float(h / 3.0 * (y[0] + y[-1] + 4.0 * y[1:-1:2].sum() + 2.0 * y[2:-1:2].sum()) / np.pi)
    return min(1.0, max(-1.0, j0))  # the rounded sum can pass 1 by an ulp (a short slot), and sqrt(1 - rho^2) be NaN


__all__ = ["JobPool", "SlotOutcome", "slot_kernel", "decide_kernel", "queue_step_kernel", "channel_kernel",
           "observation_kernel", "jakes_correlation", "DISCIPLINES"]
