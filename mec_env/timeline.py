"""Time shared as it is spent: the uplink band and ES compute under processor sharing in continuous time.

Each user runs its rounds back to back on its own clock. A round has four phases, in order: local work
(drafting, ``local_s`` seconds on the device, shared with no one), an upload of ``upload_bits`` bits to its
ES, verification of ``verify_flops`` FLOPs on that ES, and a wait of ``wait_s`` seconds (the round trip).
A phase with nothing to do takes no time.

At every instant the users uploading to ES j share its band (eq. 2 with n_j the users uploading to j *now*)
and hear the users uploading to other ESs (the scenario's interference model, eq. 3); the users being
verified on ES j share its compute (eq. 6 with n_j the users being verified on j *now*). Rates are constant
between events (a phase starting or ending), so the simulation steps from event to event and is exact.

:func:`round_number_timeline` is the approximation the token env's ``timing="user"`` makes: the users in
their k-th round share the band and ES of round k, however far apart their clocks have drifted. Units SI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mec_env.evaluator import delay_terms, es_state, shared_uplink_rate
from mec_env.problem import Problem
from mec_env.radio.link import compute_share

PHASES = ("local", "upload", "verify", "wait")


@dataclass(frozen=True)
class RoundPhases:
    """What each user does in each of its rounds, every array (N, R): seconds, bits, FLOPs, seconds."""

    local_s: np.ndarray
    upload_bits: np.ndarray
    verify_flops: np.ndarray
    wait_s: np.ndarray

    def __post_init__(self) -> None:
        arrays = [np.asarray(getattr(self, name), dtype=np.float64) for name in
                  ("local_s", "upload_bits", "verify_flops", "wait_s")]
        shape = arrays[0].shape
        for name, value in zip(("local_s", "upload_bits", "verify_flops", "wait_s"), arrays):
            if value.ndim != 2 or value.shape != shape:
                raise ValueError(f"RoundPhases.{name} must be (N, R) like local_s {shape}; got {value.shape}")
            if not (np.isfinite(value) & (value >= 0)).all():
                raise ValueError(f"RoundPhases.{name} must be finite and >= 0")
            object.__setattr__(self, name, value)

    @property
    def amounts(self) -> np.ndarray:
        """(N, R, 4): each phase's work, in its own unit."""
        return np.stack([self.local_s, self.upload_bits, self.verify_flops, self.wait_s], axis=-1)


@dataclass(frozen=True)
class Timeline:
    """When each phase of each round ended, (N, R, 4) in seconds from 0; ``served`` is the work each phase got
    (seconds, bits, FLOPs, seconds: equal to what it asked for), ``events`` the number of rate changes."""

    phase_end: np.ndarray
    served: np.ndarray
    events: int

    @property
    def round_end(self) -> np.ndarray:
        """(N, R): when each round ended."""
        return self.phase_end[..., -1]

    @property
    def round_time(self) -> np.ndarray:
        """(N, R): each round's duration, from the end of the user's previous round."""
        end = self.round_end
        return np.diff(end, axis=1, prepend=0.0)

    def phase_time(self, phase: str) -> np.ndarray:
        """(N, R): how long the named phase ('local', 'upload', 'verify', 'wait') of each round lasted."""
        k = PHASES.index(phase)
        before = self.phase_end[..., k - 1] if k else np.concatenate(
            [np.zeros_like(self.round_end[:, :1]), self.round_end[:, :-1]], axis=1)
        return self.phase_end[..., k] - before


def _rates(problem: Problem, es: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """(N,) the rate each user's current phase runs at: 1 s/s for local work and waits, its uplink rate while
    it uploads, its compute share while it is verified (0 for a user that is done)."""
    rate = np.where((phase == 0) | (phase == 3), 1.0, 0.0)
    n = problem.n_users
    uploading, verifying = phase == 1, phase == 2
    if uploading.any():
        load, interference = es_state(problem, np.where(uploading, es + 1, 0))
        up = shared_uplink_rate(problem, problem.gain[np.arange(n), es], load[es], interference[es])
        rate = np.where(uploading, up, rate)
    if verifying.any():
        being_verified = np.bincount(es[verifying], minlength=problem.n_edge_servers)
        share = compute_share(problem.c_max, problem.es_capacity[es], np.maximum(1, being_verified[es]))
        rate = np.where(verifying, share, rate)
    return rate


def shared_timeline(problem: Problem, es: np.ndarray, phases: RoundPhases, max_events: int | None = None
                    ) -> Timeline:
    """Every user's rounds under processor sharing in continuous time (module docstring), all starting at 0.

    :param problem: the channel gains, capacities and radio settings (held for the whole horizon).
    :param es: (N,) the 0-based ES each user uploads to and is verified on.
    :param phases: each user's rounds.
    :param max_events: a guard against a loop that would not end (default: 8 N R + 8).
    """
    es = np.asarray(es, dtype=np.int64)
    amounts = phases.amounts
    n, rounds, _ = amounts.shape
    if es.shape != (n,) or (n and (es.min() < 0 or es.max() >= problem.n_edge_servers)):
        raise ValueError(f"es must be (N,) = ({n},) ES indices in 0..{problem.n_edge_servers - 1}")
    if problem.n_users != n:
        raise ValueError(f"the problem has {problem.n_users} users, the phases {n}")
    phase_end = np.zeros((n, rounds, 4))
    served = np.zeros((n, rounds, 4))
    if rounds == 0 or n == 0:
        return Timeline(phase_end, served, 0)
    step = np.zeros(n, dtype=np.int64)  # flat index round * 4 + phase of each user's current phase
    total = rounds * 4
    flat = amounts.reshape(n, total)
    remaining = flat[:, 0].copy()
    now, events = 0.0, 0
    limit = max_events if max_events is not None else 8 * n * rounds + 8
    users = np.arange(n)

    def settle(t: float) -> None:
        """Move every user whose current phase has no work left on to its next phase with work, at time t."""
        while True:
            finished = (step < total) & (remaining <= 0.0)
            if not finished.any():
                return
            i = users[finished]
            phase_end.reshape(n, total)[i, step[i]] = t
            step[i] += 1
            live = step[i] < total
            remaining[i[live]] = flat[i[live], step[i[live]]]
            remaining[i[~live]] = np.inf

    settle(now)
    while (step < total).any():
        events += 1
        if events > limit:
            raise RuntimeError(f"shared_timeline: more than {limit} events; a phase never finishes")
        active = step < total
        rate = np.zeros(n)
        rate[active] = _rates(problem, es, np.where(active, step % 4, -1))[active]
        with np.errstate(divide="ignore"):
            to_finish = np.where(active & (rate > 0), remaining / np.where(rate > 0, rate, 1.0), np.inf)
        dt = float(to_finish.min())
        if not np.isfinite(dt):
            raise RuntimeError("shared_timeline: no active phase makes progress (a rate of 0)")
        now += dt
        done_now = active & (to_finish <= dt * (1 + 1e-12))
        work = np.where(done_now, remaining, rate * dt)  # the finishing ones get exactly what was left
        flat_served = served.reshape(n, total)
        flat_served[users[active], step[active]] += work[active]
        remaining[active] -= work[active]
        remaining[done_now] = 0.0
        settle(now)
    return Timeline(phase_end, served, events)


def round_number_timeline(problem: Problem, es: np.ndarray, phases: RoundPhases) -> Timeline:
    """The same rounds with the band and ES shared among the users *in the same round number* (the token env's
    ``timing="user"``): round k of user i uploads at the rate it would get with every user uploading in round k
    on the air, and is verified with the compute share of the users uploading to its ES in round k (eqs. 2-7,
    as :func:`mec_env.spec.model.evaluate_round` charges a round). Each user's clock runs on by its own rounds."""
    es = np.asarray(es, dtype=np.int64)
    amounts = phases.amounts
    n, rounds, _ = amounts.shape
    durations = np.zeros((n, rounds, 4))
    durations[..., 0], durations[..., 3] = phases.local_s, phases.wait_s
    own = problem.gain[np.arange(n), es]
    for k in range(rounds):
        uploading = phases.upload_bits[:, k] > 0
        load, interference = es_state(problem, np.where(uploading, es + 1, 0))
        t_comm, t_verify = delay_terms(problem, own, phases.upload_bits[:, k], phases.verify_flops[:, k],
                                       problem.es_capacity[es], load[es], interference[es])
        durations[:, k, 1] = np.where(uploading, t_comm, 0.0)
        durations[:, k, 2] = np.where(uploading | (phases.verify_flops[:, k] > 0), t_verify, 0.0)
    phase_end = np.cumsum(durations.reshape(n, rounds * 4), axis=1).reshape(n, rounds, 4)
    return Timeline(phase_end, amounts.copy(), rounds)


__all__ = ["PHASES", "RoundPhases", "Timeline", "round_number_timeline", "shared_timeline"]
