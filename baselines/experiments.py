"""Monte Carlo experiments: draws of problem instances, strategies, evaluator, summaries.

The experiments of the paper's figures compare the strategies of this package on the model of
:mod:`mec_env`, so they live above both (``mec_env`` never imports strategies).

Each draw ``i`` samples one problem with seed ``seed0 + i`` (the paper's 42 + i); every
strategy and every sweep point with the same N sees that same instance (common random
numbers). Draws run in worker processes; results are sorted, so the output does not depend
on the number of workers. Workers die with the process that started them (a killed sweep
leaves no orphans), and a sweep given a ``partial`` file resumes where it was stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from baselines import STRATEGIES, goa, goa_local_search, iterated_local_search, optimum
from baselines.ray_cluster import add_address_argument, ray_map, ray_runtime  # noqa: F401  (the scripts' import)
from mec_env.config import ScenarioConfig
from mec_env.host import usable_cpus
from mec_env.evaluator import evaluate, objective
from mec_env.problem import sample_problem

# Paper, Fig. 3 at N = 120, tau = 0.6: mean delay (ms), accuracy (%).
PAPER_N120 = {
    "Local all": (35.9, 45.2),
    "GOA": (31.2, 54.6),
    "Random": (33.3, 53.7),
    "Edge all": (44.2, 56.2),
    "Min delay": (25.4, 51.4),
}
METRICS = ("delay_ms", "accuracy_pct", "offloaded", "objective", "violations", "runtime_ms")
# the optimality-gap sweep's two loads: the paper's resources, and B and C_j scaled by N / 120 (None)
GAP_RESOURCES: dict[str, float | None] = {"paper resources": 1.0, "resources x N/120": None}


@dataclass(frozen=True)
class Point:
    """One sweep point: N users at threshold tau."""

    n_users: int
    tau: float


def run_draw(cfg: ScenarioConfig, point: Point, seed: int, strategies: Sequence[str]) -> list[dict]:
    """Sample the instance of ``seed`` at ``point`` and evaluate every strategy on it."""
    problem = sample_problem(_at_tau(cfg, point.tau), seed, n_users=point.n_users)
    rows = []
    for name in strategies:
        rng = np.random.default_rng([seed, 1])  # the Random strategy's own stream
        t0 = time.perf_counter()
        a = STRATEGIES[name](problem, rng)
        runtime = time.perf_counter() - t0
        ev = evaluate(problem, a)
        rows.append({
            "n_users": point.n_users, "tau": point.tau, "strategy": name, "seed": seed,
            "delay_ms": 1e3 * ev.mean_delay, "accuracy_pct": 100.0 * ev.accuracy,
            "offloaded": ev.n_offloaded, "objective": ev.objective, "violations": ev.n_violations,
            "runtime_ms": 1e3 * runtime,
        })
    return rows


@functools.lru_cache(maxsize=64)
def _at_tau(cfg: ScenarioConfig, tau: float) -> ScenarioConfig:
    # a validated copy costs about as much as the draw's GOA: once per point, not once per draw
    return cfg.replace(tau=tau)


def _run_chunk(args: tuple) -> list[list[dict]]:
    """The rows of every draw of a chunk, one list per draw."""
    fn, jobs = args
    return [fn(*job) for job in jobs]


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int, start_method: str) -> None:
    """Pool initializer: the worker ends with the process that started the pool.

    Without it a SIGKILL of a sweep leaves its workers running (parent 1) for minutes, holding the
    caller's stdout open. On Linux the kernel sends the worker SIGKILL when its parent dies. A
    forkserver's workers are the server's children, and hold it open: there (and without prctl) a
    thread watches the pool's process instead. Ctrl-C reaches the whole process group: only the
    parent acts on it (and ends the pool).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker inherits the parent's handler
    if start_method == "forkserver" or not _set_pdeathsig():
        threading.Thread(target=_exit_when_gone, args=(parent_pid,), name="die-with-parent", daemon=True).start()
    elif os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _set_pdeathsig() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through libc; False where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                 ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0


def _exit_when_gone(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)  # Linux >= 5.3: readable once the process has ended (a zombie too)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:  # alive, under another user
                pass
            time.sleep(0.5)
    os._exit(1)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool now: queued chunks cancelled, running ones killed (a resume redoes their draws)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle before 3.14
    for p in processes:
        p.kill()
    pool.shutdown(wait=True, cancel_futures=True)
    for p in processes:
        p.join(timeout=5)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers die with this process, and are killed at once (not left to
    finish the queue) when the caller raises: an error, Ctrl-C, or SIGTERM turned into SystemExit."""
    ctx = multiprocessing.get_context()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_die_with_parent,
                               initargs=(os.getpid(), ctx.get_start_method()))
    try:
        yield pool
    except BaseException:
        _kill_workers(pool)
        raise
    pool.shutdown()


def run_draws(
    fn: Callable[..., list[dict]],
    jobs: Sequence[tuple[tuple, tuple]],
    key: Callable[[dict], tuple],
    fingerprint: str = "",
    workers: int | None = None,
    chunk: int | None = None,
    progress: bool = True,
    desc: str = "draws",
    partial: str | Path | None = None,
    backend: str = "process",
    placement: list[dict] | None = None,
) -> list[dict]:
    """The rows of ``fn(*args)`` for every job ``(job_key, args)``, computed in worker processes, unsorted.

    :param key: the job key of a row (each row of a draw gives its job's key).
    :param fingerprint: what the rows depend on besides the job key; a partial file of another is not reused.
    :param chunk: draws per task (default: up to 25, and at least 4 tasks per worker).
    :param partial: a JSON-lines file that keeps every finished draw; a rerun with the same
        fingerprint skips those draws (an interrupted sweep resumes), a rerun with another
        starts the file afresh. The caller deletes it once its outputs are written.
    :param backend: ``"process"``, a pool of ``workers`` processes here, or ``"ray"``, a Ray task per chunk
        on the runtime :func:`ray_runtime` started (every node of a cluster); the rows are the same.
    :param placement: with ``"ray"``, gets a ``{"node_id", "draws"}`` entry per chunk: where it ran.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    total = len(jobs)
    rows: list[dict] = []
    log = None
    if partial is not None:
        wanted = {k for k, _ in jobs}
        kept, done = _read_partial(Path(partial), fingerprint, key)
        rows = [r for r in kept if key(r) in wanted]  # not draws of another sweep size
        jobs = [(k, a) for k, a in jobs if k not in done]
        log = _open_partial(Path(partial), fingerprint)
    if backend == "ray":
        import ray

        ray_runtime(None, workers)
        workers = int(ray.cluster_resources().get("CPU", 1))  # the chunks spread over the whole cluster
    workers = max(1, min(workers or usable_cpus(), len(jobs) or 1))
    chunk = chunk or max(1, min(25, math.ceil(len(jobs) / (4 * workers))))
    chunks = [(fn, [a for _, a in jobs[k:k + chunk]]) for k in range(0, len(jobs), chunk)]
    bar = tqdm(total=total, initial=total - len(jobs), desc=desc, unit="draw", disable=not progress)

    def keep(c: tuple, res: list[list[dict]]) -> None:
        for draw in res:
            rows.extend(draw)
        if log is not None:
            log.write("".join(json.dumps({"rows": draw}) + "\n" for draw in res))
            log.flush()
            os.fsync(log.fileno())
        bar.update(len(c[1]))

    try:
        if backend == "ray":
            for c, (res, node) in ray_map(_run_chunk, chunks):
                keep(c, res)
                if placement is not None:
                    placement.append({"node_id": node, "draws": len(c[1])})
        elif workers == 1:
            for c in chunks:
                keep(c, _run_chunk(c))
        else:
            # the first chunk runs here, before the fork: the compiled kernels its draws load are then
            # inherited by every worker instead of loaded again in each
            keep(chunks[0], _run_chunk(chunks[0]))
            with worker_pool(workers) as pool:
                for c, res in zip(chunks[1:], pool.map(_run_chunk, chunks[1:])):
                    keep(c, res)
    finally:
        bar.close()
        if log is not None:
            log.close()
    return rows


BACKENDS = ("process", "ray")


def _draw_key(row: dict) -> tuple:
    return row["n_users"], row["tau"], row["seed"]


def monte_carlo(
    cfg: ScenarioConfig,
    points: Iterable[Point],
    strategies: Sequence[str],
    runs: int = 500,
    seed0: int = 42,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "draws",
    partial: str | Path | None = None,
    backend: str = "process",
    placement: list[dict] | None = None,
) -> list[dict]:
    """Per-draw results for every point x draw x strategy, sorted by (N, tau, strategy, seed).

    :param partial: a JSON-lines file that keeps every finished draw; a rerun with the same
        arguments skips those draws (an interrupted sweep resumes), a rerun with other
        arguments starts the file afresh. The caller deletes it once its outputs are written.
    """
    strategies = tuple(strategies)
    jobs = [((p.n_users, p.tau, seed0 + i), (cfg, p, seed0 + i, strategies)) for p in points for i in range(runs)]
    rows = run_draws(run_draw, jobs, _draw_key, _fingerprint(cfg, strategies, seed0), workers=workers,
                     progress=progress, desc=desc, partial=partial, backend=backend, placement=placement)
    order = {s: k for k, s in enumerate(strategies)}
    rows.sort(key=lambda r: (r["n_users"], r["tau"], order[r["strategy"]], r["seed"]))
    return rows


def gap_configs(cfg: ScenarioConfig, n_values: Iterable[int]) -> list[tuple[str, int, ScenarioConfig]]:
    """``(resources, N, scenario)`` of every point of the optimality-gap sweep (see :data:`GAP_RESOURCES`)."""
    out = []
    for name, scale in GAP_RESOURCES.items():
        for n in dict.fromkeys(n_values):
            s = n / 120 if scale is None else scale
            c = cfg.replace(bandwidth_hz=cfg.bandwidth_hz * s, es_capacity_flops=cfg.es_capacity_flops * s)
            out.append((name, n, c))
    return out


def gap_draw(cfg: ScenarioConfig, resources: str, n_users: int, seed: int) -> list[dict]:
    """GOA's, GOA+LS's and GOA+ILS's gap to the exact optimum (%) on the instance of ``seed``, and the run times."""
    p = sample_problem(cfg, seed, n_users=n_users)
    t0 = time.perf_counter()
    _, best = optimum(p)
    t1 = time.perf_counter()
    g = float(objective(p, goa(p)))
    t2 = time.perf_counter()
    ls = float(objective(p, goa_local_search(p)))
    ils = float(objective(p, iterated_local_search(p, seed)))
    return [{"resources": resources, "n_users": n_users, "seed": seed, "goa_gap_pct": 100 * (g - best) / best,
             "goa_ls_gap_pct": 100 * (ls - best) / best, "goa_ils_gap_pct": 100 * (ils - best) / best,
             "exact_runtime_s": t1 - t0, "goa_runtime_s": t2 - t1}]


def _gap_key(row: dict) -> tuple:
    return row["resources"], row["n_users"], row["seed"]


def optimality_gaps(
    cfg: ScenarioConfig,
    n_values: Sequence[int],
    runs: int,
    seed0: int = 42,
    workers: int | None = 1,
    progress: bool = True,
    partial: str | Path | None = None,
) -> list[dict]:
    """Per-draw rows of :func:`gap_draw` at every point of :func:`gap_configs`, in that order, then by seed.

    :param workers: default one, so the run times are measured without contention.
    :param partial: as in :func:`monte_carlo`.
    """
    points = gap_configs(cfg, n_values)
    jobs = [((name, n, seed0 + i), (c, name, n, seed0 + i)) for name, n, c in points for i in range(runs)]
    fingerprint = _fingerprint(cfg, ("exact", "GOA", "GOA+LS", "GOA+ILS"), seed0, sweep="gap",
                               resources=GAP_RESOURCES)
    rows = run_draws(gap_draw, jobs, _gap_key, fingerprint, workers=workers, chunk=1, progress=progress,
                     desc="gap", partial=partial)  # a draw takes up to seconds: one a task
    order = {(name, n): k for k, (name, n, _) in enumerate(points)}
    rows.sort(key=lambda r: (order[r["resources"], r["n_users"]], r["seed"]))
    return rows


def _fingerprint(cfg: ScenarioConfig, strategies: Sequence[str], seed0: int, **extra: Any) -> str:
    blob = json.dumps({"cfg": dataclasses.asdict(cfg), "strategies": list(strategies), "seed0": seed0, **extra},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_partial(path: Path, fingerprint: str, key: Callable[[dict], tuple] = _draw_key
                  ) -> tuple[list[dict], set[tuple]]:
    """Rows and job keys (``key`` of a row) of the draws ``path`` holds for this sweep; nothing if it is another's."""
    if not path.is_file():
        return [], set()
    lines = path.read_text(encoding="utf-8").split("\n")
    if not lines or lines[0] != json.dumps({"fingerprint": fingerprint}):
        path.unlink()  # another sweep's draws: start afresh
        return [], set()
    rows: list[dict] = []
    done: set[tuple] = set()
    for line in lines[1:-1]:  # the last piece is "" after a whole line, or a line torn by a kill: redo it
        draw = json.loads(line)["rows"]
        rows.extend(draw)
        if draw:
            done.add(key(draw[0]))
    return rows, done


def _open_partial(path: Path, fingerprint: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():  # cut a torn last line so appends start on a line of their own
        data = path.read_bytes()
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
        return open(path, "a", encoding="utf-8")
    fh = open(path, "w", encoding="utf-8")
    fh.write(json.dumps({"fingerprint": fingerprint}) + "\n")
    return fh


def mean_ci95(x: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % confidence half-width (normal, 1.96 s / sqrt(n)); NaN half-width for n < 2."""
    x = np.asarray(x, dtype=np.float64)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size) if x.size > 1 else float("nan")
    return float(x.mean()), float(half)


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and 95 % confidence half-width (normal, 1.96 s / sqrt(n)) per (N, tau, strategy)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["n_users"], r["tau"], r["strategy"]), []).append(r)
    out = []
    for (n, tau, strategy), rs in groups.items():
        row: dict = {"n_users": n, "tau": tau, "strategy": strategy, "runs": len(rs)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_ci95"] = mean_ci95(np.array([r[metric] for r in rs]))
        out.append(row)
    return out
