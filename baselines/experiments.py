"""Monte Carlo experiments: draws of problem instances, strategies, evaluator, summaries.

The experiments of the paper's figures compare the strategies of this package on the model of
:mod:`mec_env`, so they live above both (``mec_env`` never imports strategies).

Each draw ``i`` samples one problem with seed ``seed0 + i`` (the paper's 42 + i); every
strategy and every sweep point with the same N sees that same instance (common random
numbers). Draws run in worker processes; results are sorted, so the output does not depend
on the number of workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from baselines import STRATEGIES
from mec_env.config import ScenarioConfig
from mec_env.model import evaluate
from mec_env.problem import sample_problem

# Paper, Fig. 3 at N = 120, tau = 0.6 (DESIGN.md section 6): mean delay (ms), accuracy (%).
PAPER_N120 = {
    "Local all": (35.9, 45.2),
    "GOA": (31.2, 54.6),
    "Random": (33.3, 53.7),
    "Edge all": (44.2, 56.2),
    "Min delay": (25.4, 51.4),
}
METRICS = ("delay_ms", "accuracy_pct", "offloaded", "objective", "violations", "runtime_ms")


@dataclass(frozen=True)
class Point:
    """One sweep point: N users at threshold tau."""

    n_users: int
    tau: float


def run_draw(cfg: ScenarioConfig, point: Point, seed: int, strategies: Sequence[str]) -> list[dict]:
    """Sample the instance of ``seed`` at ``point`` and evaluate every strategy on it."""
    problem = sample_problem(cfg.replace(tau=point.tau), seed, n_users=point.n_users)
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


def _run_chunk(args: tuple) -> list[dict]:
    cfg, jobs, strategies = args
    out: list[dict] = []
    for point, seed in jobs:
        out.extend(run_draw(cfg, point, seed, strategies))
    return out


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
) -> list[dict]:
    """Per-draw results for every point x draw x strategy, sorted by (N, tau, strategy, seed).

    :param partial: a JSON-lines file that keeps every finished draw; a rerun with the same
        arguments skips those draws (an interrupted sweep resumes), a rerun with other
        arguments starts the file afresh. The caller deletes it once its outputs are written.
    """
    jobs = [(p, seed0 + i) for p in points for i in range(runs)]
    rows: list[dict] = []
    log = None
    if partial is not None:
        fingerprint = _fingerprint(cfg, strategies, seed0)
        wanted = {(p.n_users, p.tau, s) for p, s in jobs}
        kept, done = _read_partial(Path(partial), fingerprint)
        rows = [r for r in kept if (r["n_users"], r["tau"], r["seed"]) in wanted]  # not draws of another sweep size
        jobs = [(p, s) for p, s in jobs if (p.n_users, p.tau, s) not in done]
        log = _open_partial(Path(partial), fingerprint)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    chunk = max(1, min(25, math.ceil(len(jobs) / (4 * workers))))
    chunks = [(cfg, jobs[k:k + chunk], tuple(strategies)) for k in range(0, len(jobs), chunk)]
    bar = tqdm(total=len(jobs), desc=desc, unit="draw", disable=not progress)

    def keep(c: tuple, res: list[dict]) -> None:
        rows.extend(res)
        if log is not None:
            log.write("".join(json.dumps({"rows": [r for r in res if r["seed"] == s and r["n_users"] == p.n_users
                                                   and r["tau"] == p.tau]}) + "\n" for p, s in c[1]))
            log.flush()
            os.fsync(log.fileno())
        bar.update(len(c[1]))

    try:
        if workers == 1:
            for c in chunks:
                keep(c, _run_chunk(c))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for c, res in zip(chunks, pool.map(_run_chunk, chunks)):
                    keep(c, res)
    finally:
        bar.close()
        if log is not None:
            log.close()
    order = {s: k for k, s in enumerate(strategies)}
    rows.sort(key=lambda r: (r["n_users"], r["tau"], order[r["strategy"]], r["seed"]))
    return rows


def _fingerprint(cfg: ScenarioConfig, strategies: Sequence[str], seed0: int) -> str:
    blob = json.dumps({"cfg": dataclasses.asdict(cfg), "strategies": list(strategies), "seed0": seed0}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_partial(path: Path, fingerprint: str) -> tuple[list[dict], set[tuple]]:
    """Rows and (N, tau, seed) keys of the draws ``path`` holds for this sweep; nothing if it is another's."""
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
        done.add((draw[0]["n_users"], draw[0]["tau"], draw[0]["seed"]))
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
