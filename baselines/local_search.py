"""GOA + local search, compiled: the same local optimum as the numpy reference, in milliseconds.

The reference (:func:`baselines.reference.goa_local_search_reference`) evaluates every neighbour of
the current assignment through the evaluator each round: every feasible single-user move and
every swap of two users' decisions, ``N (M + 1) + N (N - 1) / 2`` assignments (7,740 at N = 120,
M = 4), then takes the best (first in that order on ties) while it improves the objective by
more than a relative 1e-12. This module takes the same steps without evaluating most
neighbours:

* A neighbour changes one or two users, so only the ESs they leave or join, and the ESs whose
  interference they change, see a new cost. Per ES j the cost is
  ``(n_j / B) * sum_k alpha_k D_k phi_kj(I_j) + sum_k alpha_k W_k / min(c_max, C_j / n_j)``
  with ``phi_kj(I) = 1 / log2(1 + P g_kj / (I + N0))`` (eqs. 2-8; the rate floor is handled
  below).
* ``phi`` is increasing and concave in the interference ``I`` (its derivative
  ``s / (y (y + s) ln^2(1 + s / y))`` falls with ``y = I + N0`` because
  ``ln(1 + u) >= 2u / (2 + u)``), so on an interval between two tabulated interference levels
  it lies above its chord. Tabulating every ES's ``sum phi`` and every user's ``phi`` at a few
  levels around the current ``I_j`` gives, for any neighbour, an exact **lower bound** of its
  objective in O(M) without a logarithm.
* Each round bounds all neighbours, evaluates exactly (O(N) each) only those whose bound does
  not exceed the best exact value found (within 1e-9), and hands the near-ties to the numpy
  evaluator, which decides as the reference does. So the chosen neighbour, the order and the
  tie-breaks are the reference's; the tests and ``make bench`` compare the two assignment by
  assignment.

Where the rate floor ``min_rate_bps`` may bind (a user in a deep fade), that user's term is
bounded on its own as ``min(n' chord / B, 1 / r_min)`` (the floor caps the delay) and left out of
its ES's chord.
"""

from __future__ import annotations

import numpy as np

from baselines.greedy import goa
from mec_env import kernels
from mec_env.kernels import _jit
from mec_env.evaluator import kernel_args, objective
from mec_env.problem import Problem
from mec_env.radio.link import compute_share, interference_added, sinr, spectral_efficiency, uplink_rate

# interference levels of the bound tables, relative to the ES's current I_j: below it (x I_j)
# and above it (I_j + x max(I_j, N0)); a neighbour moves one or two users, so most I' lie close
LEVELS_BELOW = np.array([0.0, 0.1, 0.3, 0.5, 0.65, 0.8, 0.9, 0.95, 0.98, 0.995, 1.0])
LEVELS_ABOVE = np.array([0.005, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 3.0, 10.0])
REL_TOL = 1e-9  # neighbours within this of the best go to the numpy evaluator (incremental sums differ by ~1e-15)


@_jit
def _phi(gain_ie, tx_power_w, noise_power_w, interference):
    return 1.0 / spectral_efficiency(sinr(tx_power_w, gain_ie, interference, noise_power_w))


@_jit
def _es_cost(radio, gain, query_bits, workload_llm, alpha, es_capacity, assignment, users, targets, n_changed, es,
             interference):
    """Exact cost of ES ``es`` (0-based) when ``users[:n_changed]`` take ``targets`` and it sees ``interference``."""
    c_max, bandwidth_hz, tx_power_w, noise_power_w, min_rate_bps, mode = radio  # RadioScalars' order
    n = gain.shape[0]
    members = np.empty(n, dtype=np.int64)
    load = 0
    for i in range(n):
        placed = assignment[i]
        for c in range(n_changed):
            if users[c] == i:
                placed = targets[c]
        if placed - 1 == es:
            members[load] = i
            load += 1
    if load == 0:
        return 0.0
    share_bw = bandwidth_hz / load
    compute = compute_share(c_max, es_capacity[es], load)
    cost = 0.0
    for k in range(load):
        i = members[k]
        rate = uplink_rate(share_bw, sinr(tx_power_w, gain[i, es], interference, noise_power_w), min_rate_bps)
        cost += alpha[i] * (query_bits[i] / rate + workload_llm[i] / compute)
    return cost


@_jit
def local_search_round(radio, gain, query_bits, workload_llm, local_delay, es_capacity, alpha, forced, assignment,
                       levels, tables):
    """One round of best-improvement local search: the neighbours that may be the best one.

    Neighbours are numbered as the reference stacks them: move ``(i, t)`` is ``i (M + 1) + t``,
    then the swaps of pairs ``i < j`` in lexicographic order. Infeasible neighbours (constraint 11)
    and no-ops are skipped. ``table_*`` carry the bound tables from round to round (an ES whose
    interference did not change keeps its levels and user terms; start ``table_interference`` at NaN).

    :returns: ``(indices, best, current)``: the neighbours, ascending, whose objective is within
        ``rel_tol`` of the smallest (every other neighbour is provably worse; empty when no
        neighbour is feasible), the smallest objective and the current one (incremental sums).

    ``radio`` is a :class:`mec_env.kernels.RadioScalars` as a tuple, ``levels``
    ``(levels_below, levels_above, rel_tol)``, ``tables`` ``(table_interference, table_levels, table_terms)``.
    """
    c_max, bandwidth_hz, tx_power_w, noise_power_w, min_rate_bps, mode = radio  # RadioScalars' order
    levels_below, levels_above, rel_tol = levels
    table_interference, table_levels, table_terms = tables
    n, m = gain.shape
    n_moves = n * (m + 1)
    n_total = n_moves + n * (n - 1) // 2
    pair_first = np.empty(n_total - n_moves, dtype=np.int64)
    pair_second = np.empty(n_total - n_moves, dtype=np.int64)
    r = 0
    for i in range(n):
        for j in range(i + 1, n):
            pair_first[r], pair_second[r] = i, j
            r += 1
    # power user i adds at ES j when placed at p (0 local, 1..M): none at its own ES or when local
    contribution = np.zeros((n, m + 1, m))
    if mode != 2:
        for i in range(n):
            for p in range(1, m + 1):
                for j in range(m):
                    if j != p - 1:
                        contribution[i, p, j] = interference_added(mode, tx_power_w, gain[i, j], gain[i, p - 1])
    # --- the current state, per ES
    load = np.zeros(m, dtype=np.int64)
    interference = np.zeros(m)
    work = np.zeros(m)  # sum alpha_k W_k on the ES
    local_sum = 0.0
    for i in range(n):
        if assignment[i] == 0:
            local_sum += alpha[i] * local_delay[i]
            continue
        load[assignment[i] - 1] += 1
        work[assignment[i] - 1] += alpha[i] * workload_llm[i]
        for j in range(m):
            interference[j] += contribution[i, assignment[i], j]
    users = np.empty(2, dtype=np.int64)
    targets = np.empty(2, dtype=np.int64)
    cost = np.empty(m)
    for j in range(m):
        cost[j] = _es_cost(radio, gain, query_bits, workload_llm, alpha, es_capacity, assignment, users, targets, 0, j,
                           interference[j])
    current = local_sum + cost.sum()
    # --- where the rate floor may bind, a user's term is min(n' phi / B, 1 / r_min): the chord of the ES
    # sum holds only the others. A user may hit the floor on ES j if its rate there, with one more user and
    # the two largest interference increases a neighbour can bring, is not clearly above r_min.
    floored = np.zeros((m, n), dtype=np.bool_)
    for j in range(m):
        rise = 0.0
        for i in range(n):
            for p in range(m + 1):
                rise = max(rise, contribution[i, p, j])
        worst = interference[j] + 2.0 * rise
        share = bandwidth_hz / (load[j] + 1)
        for i in range(n):
            efficiency = spectral_efficiency(sinr(tx_power_w, gain[i, j], worst, noise_power_w))
            floored[j, i] = not share * efficiency > min_rate_bps * (1.0 + 1e-6)
    # --- bound tables: interference levels per ES and every user's term alpha_k D_k phi_kj there
    kb, ka = levels_below.shape[0], levels_above.shape[0]
    n_levels = kb + ka
    for j in range(m):
        if table_interference[j] == interference[j]:
            continue
        table_interference[j] = interference[j]
        base = max(interference[j], noise_power_w)
        for k in range(kb):
            table_levels[j, k] = levels_below[k] * interference[j]
        table_levels[j, kb - 1] = interference[j]  # exactly: an unchanged ES is bounded by its exact cost
        for k in range(ka):
            table_levels[j, kb + k] = interference[j] + levels_above[k] * base
        for i in range(n):
            weight = alpha[i] * query_bits[i]
            for k in range(n_levels):
                table_terms[j, i, k] = weight * _phi(gain[i, j], tx_power_w, noise_power_w, table_levels[j, k])
    es_terms = np.zeros((m, n_levels))  # over the ES's users the floor cannot reach
    n_floored = np.zeros(m, dtype=np.int64)
    floored_users = np.empty((m, n), dtype=np.int64)  # the others, listed per ES
    for i in range(n):
        j = assignment[i] - 1
        if j < 0:
            continue
        if floored[j, i]:
            floored_users[j, n_floored[j]] = i
            n_floored[j] += 1
        else:
            es_terms[j] += table_terms[j, i]
    top = n_levels - 1

    def es_bound(j, x, leaving, joining):
        # lower bound of ES j's cost change at interference x when ``leaving`` goes and ``joining`` comes
        # (-1: nobody): chords of the tabulated concave terms, their top value above the top level
        new_load = load[j] - (1 if leaving >= 0 else 0) + (1 if joining >= 0 else 0)
        if new_load == 0:
            return -cost[j]
        x = max(x, 0.0)
        k = top
        if x < table_levels[j, top]:
            lo, hi = 0, top
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if table_levels[j, mid] <= x:
                    lo = mid
                else:
                    hi = mid
            k = lo
        k1 = k if k == top else k + 1  # above the top level: the top value (k = k1, w = 0)
        w = 0.0
        if k != top:
            width = table_levels[j, k1] - table_levels[j, k]
            w = (x - table_levels[j, k]) / width if width > 0.0 else 0.0
        terms = es_terms[j, k] + w * (es_terms[j, k1] - es_terms[j, k])
        if leaving >= 0 and not floored[j, leaving]:
            terms -= table_terms[j, leaving, k] + w * (table_terms[j, leaving, k1] - table_terms[j, leaving, k])
        comm = (new_load / bandwidth_hz) * terms
        for c in range(n_floored[j] + (1 if joining >= 0 and floored[j, joining] else 0)):
            u = floored_users[j, c] if c < n_floored[j] else joining
            if u != leaving:
                chord = table_terms[j, u, k] + w * (table_terms[j, u, k1] - table_terms[j, u, k])
                comm += min((new_load / bandwidth_hz) * chord, alpha[u] * query_bits[u] / min_rate_bps)
        if joining >= 0 and not floored[j, joining]:
            comm += (new_load / bandwidth_hz) * (table_terms[j, joining, k]
                                                 + w * (table_terms[j, joining, k1] - table_terms[j, joining, k]))
        new_work = work[j]
        if leaving >= 0:
            new_work -= alpha[leaving] * workload_llm[leaving]
        if joining >= 0:
            new_work += alpha[joining] * workload_llm[joining]
        return comm + new_work / compute_share(c_max, es_capacity[j], new_load) - cost[j]

    # --- every neighbour's lower bound (neighbours numbered as the reference stacks them)
    bound = np.full(n_total, np.inf)
    for i in range(n):
        placed = assignment[i]
        for t in range(m + 1):
            if t == placed or (t == 0 and forced[i]):
                continue
            idx = i * (m + 1) + t
            value = current + (alpha[i] * local_delay[i] if t == 0 else 0.0) \
                - (alpha[i] * local_delay[i] if placed == 0 else 0.0)
            for j in range(m):
                delta = contribution[i, t, j] - contribution[i, placed, j]
                leaving = i if placed - 1 == j else -1
                joining = i if t - 1 == j else -1
                if delta != 0.0 or leaving >= 0 or joining >= 0:
                    value += es_bound(j, interference[j] + delta, leaving, joining)
            bound[idx] = value
    idx = n_moves - 1
    for u in range(n):
        pu = assignment[u]
        for v in range(u + 1, n):
            idx += 1
            pv = assignment[v]
            if pu == pv or (pv == 0 and forced[u]) or (pu == 0 and forced[v]):
                continue
            if mode != 1 and pu > 0 and pv > 0:
                # two offloaded users trade ESs: loads and every other ES's interference stay
                a, b = pu - 1, pv - 1
                bound[idx] = (current
                              + es_bound(a, interference[a] + contribution[u, pv, a] - contribution[v, pv, a], u, v)
                              + es_bound(b, interference[b] + contribution[v, pu, b] - contribution[u, pu, b], v, u))
                continue
            value = current + (alpha[u] * local_delay[u] if pv == 0 else 0.0) \
                + (alpha[v] * local_delay[v] if pu == 0 else 0.0) \
                - (alpha[u] * local_delay[u] if pu == 0 else 0.0) - (alpha[v] * local_delay[v] if pv == 0 else 0.0)
            for j in range(m):
                delta = (contribution[u, pv, j] - contribution[u, pu, j]
                         + contribution[v, pu, j] - contribution[v, pv, j])
                leaving = u if pu - 1 == j else (v if pv - 1 == j else -1)
                joining = u if pv - 1 == j else (v if pu - 1 == j else -1)
                if delta != 0.0 or leaving >= 0 or joining >= 0:
                    value += es_bound(j, interference[j] + delta, leaving, joining)
            bound[idx] = value
    # --- exact values where the bound does not rule a neighbour out, the smallest bound first
    exact = np.full(n_total, np.inf)
    best = np.inf
    first = int(np.argmin(bound))
    for pos in range(-1, n_total):
        idx = first if pos < 0 else pos
        if bound[idx] == np.inf or exact[idx] < np.inf or bound[idx] > best * (1.0 + rel_tol):
            continue
        if idx < n_moves:
            users[0], targets[0] = idx // (m + 1), idx % (m + 1)
            n_changed = 1
        else:
            u, v = pair_first[idx - n_moves], pair_second[idx - n_moves]
            users[0], targets[0], users[1], targets[1] = u, assignment[v], v, assignment[u]
            n_changed = 2
        value = local_sum
        for c in range(n_changed):
            u = users[c]
            if targets[c] == 0:
                value += alpha[u] * local_delay[u]
            if assignment[u] == 0:
                value -= alpha[u] * local_delay[u]
        for j in range(m):
            delta = 0.0
            touched = False
            for c in range(n_changed):
                u = users[c]
                delta += contribution[u, targets[c], j] - contribution[u, assignment[u], j]
                if assignment[u] - 1 == j or targets[c] - 1 == j:
                    touched = True
            if delta == 0.0 and not touched:
                value += cost[j]
            else:
                value += _es_cost(radio, gain, query_bits, workload_llm, alpha, es_capacity, assignment, users, targets,
                                  n_changed, j, max(interference[j] + delta, 0.0))
        exact[idx] = value
        best = min(best, value)
    if best == np.inf:  # no feasible neighbour that changes anything
        return np.empty(0, dtype=np.int64), best, current
    near = np.flatnonzero(exact <= best * (1.0 + rel_tol))
    return near, best, current


def neighbours(assignment: np.ndarray, indices: np.ndarray, n_edge_servers: int) -> np.ndarray:
    """The neighbours numbered ``indices`` (moves, then swaps; see :func:`local_search_candidates`), (K, N)."""
    n, m = assignment.shape[0], n_edge_servers
    out = np.repeat(assignment[None, :], len(indices), axis=0)
    n_moves = n * (m + 1)
    for row, idx in enumerate(indices):
        if idx < n_moves:
            i, t = divmod(int(idx), m + 1)
            out[row, i] = t
        else:
            r, i = int(idx) - n_moves, 0
            while r >= n - 1 - i:
                r -= n - 1 - i
                i += 1
            j = i + 1 + r
            out[row, i], out[row, j] = assignment[j], assignment[i]
    return out


def improve(problem: Problem, assignment: np.ndarray, max_rounds: int = 1000) -> np.ndarray:
    """Best-improvement local search from ``assignment`` (moves and swaps, constraint 11 kept).

    Takes exactly the reference's steps: each round's near-best neighbours (all others are
    provably worse) are compared through :func:`mec_env.evaluator.objective` on the whole batch, as
    the reference compares all of them.
    """
    a = np.array(assignment, dtype=np.int64)
    n, m = problem.n_users, problem.n_edge_servers
    alpha = np.ascontiguousarray(problem.alpha, dtype=np.float64)
    forced = problem.alpha > problem.tau
    args = kernel_args(problem)
    n_levels = LEVELS_BELOW.size + LEVELS_ABOVE.size
    tables = (np.full(m, np.nan), np.empty((m, n_levels)), np.empty((m, n, n_levels)))
    reference_value = float(objective(problem, a))  # the reference's "current": its start, then a batch row
    for _ in range(max_rounds):
        indices, best, current = local_search_round(*args, alpha, forced, a, (LEVELS_BELOW, LEVELS_ABOVE, REL_TOL),
                                                    tables)
        if indices.size == 0:
            break
        if indices.size == 1 and best < current * (1 - 1e-12 - 1e-8):
            # one clear winner, clearly improving: the reference takes it whatever its rounding
            a = neighbours(a, indices, m)[0]
            reference_value = None
            continue
        if reference_value is None:
            reference_value = float(objective(problem, a[None])[0])
        candidates = neighbours(a, indices, m)
        values = objective(problem, candidates)  # (K, N) rows through the numpy path, as the reference's batch
        k = int(np.argmin(values))
        if not values[k] < reference_value * (1 - 1e-12):
            break
        a, reference_value = candidates[k].copy(), float(values[k])
    return a


def iterated_local_search(problem: Problem, rng: np.random.Generator | int, kicks: int = 20,
                          kick_users: int | None = None) -> np.ndarray:
    """GOA+ILS: GOA+LS, then ``kicks`` times: reassign a few random users at random, search again, keep the best.

    A stronger scripted baseline (iterated local search, Lourenco et al. 2003): each kick moves
    ``kick_users`` users (default N / 20, at least 2) to a random feasible decision (ES for
    alpha > tau users, local or any ES for the others) and :func:`improve` descends from there; a
    result replaces the incumbent only if its objective is lower, so it is never worse than GOA+LS.

    :param rng: generator or seed of the kicks.
    """
    from baselines.greedy import goa

    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    n, m = problem.n_users, problem.n_edge_servers
    forced = problem.alpha > problem.tau
    best = improve(problem, goa(problem))
    best_value = float(objective(problem, best))
    size = min(n, kick_users if kick_users is not None else max(2, n // 20))
    for _ in range(kicks):
        a = best.copy()
        users = rng.choice(n, size=size, replace=False)
        a[users] = np.where(forced[users], rng.integers(1, m + 1, size=size), rng.integers(0, m + 1, size=size))
        a = improve(problem, a)
        value = float(objective(problem, a))
        if value < best_value:
            best, best_value = a, value
    return best


def available() -> bool:
    """True when the compiled search runs (numba present and enabled)."""
    return kernels.numba_enabled()


def goa_local_search(problem: Problem, max_rounds: int = 1000) -> np.ndarray:
    """GOA followed by best-improvement local search on the true objective.

    Neighbourhood: every feasible single-user move (local or any ES) and every swap of the
    decisions of two users. Constraint (11) is kept. Stops at a local optimum or after
    ``max_rounds`` improving steps. Runs compiled (:mod:`baselines.local_search`, a few ms at
    N = 120) when numba is enabled, else as :func:`baselines.reference.goa_local_search_reference`; both take the
    same steps.
    """
    if available():
        return improve(problem, goa(problem), max_rounds)
    from baselines.reference import goa_local_search_reference

    return goa_local_search_reference(problem, max_rounds)
