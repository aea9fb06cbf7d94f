"""Queues that carry over between slots: the dynamic system core of ``MECOffloadQueue-v0``.

Every query is a *job*. A user's query arriving in a slot is decided at the slot's start: kept
local, it joins the user's device queue; offloaded to ES j, it is uploaded (t_comm of eqs. 2-5,
the slot's uploaders sharing the band and interfering as in :func:`mec_env.evaluator.user_delays`)
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
advance is one compiled kernel (numba, interpreted Python without it), in
:mod:`mec_env.queue_kernels` with the env's observation kernel; the channel's kernel stays here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mec_env.kernels import _jit, radio_scalars
from mec_env.radio.link import floored_distance, free_space_gain
from mec_env.queue_kernels import Backlog, JobArrays, SlotTallies, decide_kernel, observation_kernel, slot_queries, \
    queue_step_kernel, slot_kernel

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
        self._job_tuple = tuple(JobArrays(self.server, self.user, self.remaining, self.ready, self.age, self.alpha,
                                          self.started))  # the kernels' argument, rebuilt with the arrays

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
        self.backlog_tuple = tuple(Backlog(self.es_work, self.es_jobs, self.local_work, self.local_jobs, self.work_in))

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
        tallies = SlotTallies(served_es, served_local, areas, done_user, done_server, done_delay, done_alpha)
        size, n_done = slot_kernel(self.size, self._job_tuple, (users, servers, work, upload_s, alpha), es_capacity,
                                   local_capacity, float(c_max), float(dt), discipline == "fifo", tuple(tallies),
                                   self.backlog_tuple)
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
        # plain tuples (mec_env.kernels.kernel_tuple: numba types them in C); the kernels name the fields
        queries = slot_queries(p)
        radio = radio_scalars(p)  # RadioScalars
        energies = (energy_queue, float(e_bar), float(joule_per_flop), energy)  # EnergyQueues
        tallies = (served_es, served_local, areas, done_user, done_server, done_delay, done_alpha)  # SlotTallies
        size, n_done = queue_step_kernel(self.size, self._job_tuple, assignment, has_query, queries, radio,
                                         energies, float(dt), discipline == "fifo", tallies, self.backlog_tuple,
                                         (counts, sums))
        self.size = int(size)
        out = SlotOutcome(served_es, served_local, float(areas[0]), float(areas[1]), done_user[:n_done],
                          done_server[:n_done], done_delay[:n_done], done_alpha[:n_done])
        return out, energy, counts, sums



_JOB_ARRAYS = JobArrays._fields


@_jit
def channel_kernel(h, w, rho, xy, direction, step, side, es_xy, min_distance_m, carrier_hz, free_space, gain):
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
                d = floored_distance(out[i, 0] - es_xy[j, 0], out[i, 1] - es_xy[j, 1], min_distance_m)
                power *= free_space_gain(d, carrier_hz)
            gain[i, j] = power
    return out


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
