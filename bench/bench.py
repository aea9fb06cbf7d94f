"""Speed benchmarks, every ratio measured side by side in this one run (``make bench``).

    python bench/bench.py                  # everything (about 2 minutes on 2 cores)
    python bench/bench.py --quick          # fewer repeats, no N = 480 reference
    python bench/bench.py --against 9fc28a1   # also the reference PPO training on that commit's code

1. GOA solve time at N = 60, 120, 240, 480 (M = 4, paper scenario): the compiled incremental
   GOA (:func:`baselines.goa`) against the literal Algorithm 1 of ``tests/helpers.py`` (every
   Delta_ij recomputed through the evaluator), median over instances, their ratio, and the
   exponent of a log-log fit of time against N (the paper bounds GOA by O(N^3 M^2)); then the
   two on 1,000 random instances, whose assignments must be identical.
2. GOA+LS at N = 120 (M = 4): the compiled search (:mod:`baselines.local_search`) against the
   brute-force reference (every neighbour through the evaluator, every round), median over
   instances and their ratio; then the two on 1,000 random instances (N 1..48, M 1..6), whose
   local optima must be identical.
3. ``MECOffload-v0`` at N = 120: steps/s of one environment (``gymnasium.make``, random
   actions, no rendering), of the batched twin at B = 64 and of ``SyncVectorEnv`` over 64
   single environments; the batched/sync ratio.
4. ``MECSpecDecode-v0`` (token-level offloading) at N = 20 on the shipped token traces: steps/s
   of one environment (``gymnasium.make``, random actions), with the fused compiled step and with
   the numpy reference step (``MECOFFLOAD_NUMBA=0``'s path), side by side.
5. PPO training at N = 120, env steps/s end to end (rollouts and updates, one torch thread, a fresh
   process each): ``python train/ppo.py``'s settings and the reference settings (the lean policy's
   predecessor was timed with them: 4 single envs, 64 steps, minibatch 256, 4 epochs, the slot
   reward) on this code, and with ``--against COMMIT`` the reference settings on that commit's code,
   next to the env's random-action rate.
6. The full Fig. 3 sweep (N = 60..120 step 10, 500 draws, 5 strategies) wall time.
7. Peak resident memory of this process and of the sweep's workers.

Results are printed and written to ``bench/results.json`` with the machine they ran on.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np

import gymnasium as gym

import mec_env  # noqa: F401  (registers the environments)
from baselines import PAPER_STRATEGIES, edge_all, goa, goa_local_search
from baselines.reference import goa_local_search_reference
from baselines.reference import random_instances, reference_goa
from mec_env import kernels, load_scenario, sample_problem
from baselines.experiments import Point, monte_carlo
from mec_env.host import usable_cpus
from mec_env.io import atomic_write_text
from agents.cli import output_file, run_main, script_parser

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def bench_goa(sizes: list[int], instances: int, ref_instances: dict[int, int]) -> list[dict]:
    cfg = load_scenario("paper")
    rows = []
    for n in sizes:
        problems = [sample_problem(cfg, 1000 + k, n_users=n) for k in range(instances)]
        goa(problems[0])  # compile / warm caches outside the timing
        fast_s = [min(timed(goa, p) for _ in range(3)) for p in problems]
        edge_s = [min(timed(edge_all, p) for _ in range(3)) for p in problems]
        k_ref = ref_instances.get(n, 0)
        ref_s = [timed(reference_goa, p) for p in problems[:k_ref]]
        same = all(np.array_equal(goa(p), reference_goa(p)) for p in problems[:min(k_ref, 2)])
        row = {"n_users": n, "goa_ms": 1e3 * statistics.median(fast_s), "edge_all_ms": 1e3 * statistics.median(edge_s),
               "reference_ms": 1e3 * statistics.median(ref_s) if ref_s else None,
               "reference_instances": k_ref, "identical": same if k_ref else None}
        row["speedup"] = row["reference_ms"] / row["goa_ms"] if ref_s else None
        rows.append(row)
        ref = f"{row['reference_ms']:10.1f} ms" if ref_s else "         -   "
        ratio = f"{row['speedup']:8.0f}x" if ref_s else "        -"
        print(f"  N = {n:4d}: GOA {row['goa_ms']:7.3f} ms   reference {ref}   ratio {ratio}   "
              f"(Edge all, every user a greedy step: {row['edge_all_ms']:7.3f} ms)", flush=True)
    return rows


def bench_identical(count: int) -> dict:
    """Fast GOA against the literal Algorithm 1 on ``count`` random instances (N 1..40, M 1..6,
    tau, interference model and query source drawn at random): assignments must be equal."""
    t0, same = time.perf_counter(), 0
    for p in random_instances(count, seed=77, n_max=40, m_max=6):
        same += bool(np.array_equal(goa(p), reference_goa(p)))
    print(f"  identical assignments: {same} of {count} random instances ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    return {"instances": count, "identical": same}


def bench_local_search(n_users: int, instances: int, ref_instances: int, identical: int) -> dict:
    """GOA+LS compiled against the brute-force reference: median solve times, ratio, identical optima."""
    cfg = load_scenario("paper")
    problems = [sample_problem(cfg, 1000 + k, n_users=n_users) for k in range(instances)]
    goa_local_search(problems[0])  # compile outside the timing
    fast_s = [timed(goa_local_search, p) for p in problems]
    ref_s = [timed(goa_local_search_reference, p) for p in problems[:ref_instances]]
    same_n = sum(np.array_equal(goa_local_search(p), goa_local_search_reference(p)) for p in problems[:ref_instances])
    row = {"n_users": n_users, "fast_ms": 1e3 * statistics.median(fast_s), "fast_max_ms": 1e3 * max(fast_s),
           "reference_ms": 1e3 * statistics.median(ref_s), "instances": instances, "reference_instances": ref_instances}
    row["speedup"] = row["reference_ms"] / row["fast_ms"]
    print(f"  N = {n_users}: GOA+LS {row['fast_ms']:6.2f} ms (max {row['fast_max_ms']:.2f} ms, {instances} instances)"
          f"   reference {row['reference_ms']:8.0f} ms   ratio {row['speedup']:6.0f}x   identical at N = {n_users}: "
          f"{same_n} of {ref_instances}", flush=True)
    t0, same = time.perf_counter(), 0
    for p in random_instances(identical, seed=78, n_max=48, m_max=6):
        same += bool(np.array_equal(goa_local_search(p), goa_local_search_reference(p)))
    print(f"  identical local optima: {same} of {identical} random instances ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    row.update(identical=same, identical_instances=identical, identical_at_n=same_n)
    return row


def fit_exponent(rows: list[dict], key: str) -> float:
    pts = [(r["n_users"], r[key]) for r in rows if r[key]]
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def steps_per_second(step, actions: list, seconds: float) -> tuple[float, int]:
    k, t0 = 0, time.perf_counter()
    while True:
        for a in actions:
            step(a)
        k += len(actions)
        if time.perf_counter() - t0 >= seconds:
            return k / (time.perf_counter() - t0), k


def bench_envs(n_users: int, batch: int, seconds: float) -> dict:
    single = gym.make("MECOffload-v0", n_users=n_users)
    single.reset(seed=0)
    acts = [single.action_space.sample() for _ in range(256)]

    def single_step(action) -> None:  # resets at truncation, as the vector envs do
        if single.step(action)[3]:
            single.reset()

    steps_per_second(single_step, acts[:32], 0.2)  # warm up
    single_sps, _ = steps_per_second(single_step, acts, seconds)

    vec = gym.make_vec("MECOffload-v0", num_envs=batch, vectorization_mode="vector_entry_point", n_users=n_users)
    vec.reset(seed=0)
    vacts = [vec.action_space.sample() for _ in range(16)]
    steps_per_second(vec.step, vacts[:2], 0.2)
    vec_calls, _ = steps_per_second(vec.step, vacts, seconds)

    sync = gym.make_vec("MECOffload-v0", num_envs=batch, vectorization_mode="sync", n_users=n_users)
    sync.reset(seed=0)
    steps_per_second(sync.step, vacts[:2], 0.2)
    sync_calls, _ = steps_per_second(sync.step, vacts, seconds)
    out = {"n_users": n_users, "batch": batch, "single_steps_per_s": single_sps,
           "batched_env_steps_per_s": batch * vec_calls, "sync_env_steps_per_s": batch * sync_calls}
    out["batched_over_sync"] = out["batched_env_steps_per_s"] / out["sync_env_steps_per_s"]
    print(f"  single env:              {single_sps:10,.0f} steps/s", flush=True)
    print(f"  batched B = {batch}:          {out['batched_env_steps_per_s']:10,.0f} env-steps/s "
          f"({1e6 / vec_calls:.0f} us per batched step)")
    print(f"  SyncVectorEnv B = {batch}:    {out['sync_env_steps_per_s']:10,.0f} env-steps/s")
    print(f"  batched / sync:          {out['batched_over_sync']:10.1f}x", flush=True)
    return out


def bench_spec_env(n_users: int, seconds: float) -> dict:
    """One MECSpecDecode-v0 through gym.make: steps/s with the fused compiled step and the numpy step."""
    env = gym.make("MECSpecDecode-v0", n_users=n_users, max_rounds=10**6, session_tokens=400)
    env.reset(seed=0)
    acts = [env.action_space.sample() for _ in range(256)]

    def step(action) -> None:
        if any(env.step(action)[2:4]):
            env.reset()

    out = {"n_users": n_users}
    for name, compiled in (("compiled", True), ("numpy", False)):
        env.unwrapped.compiled = compiled
        steps_per_second(step, acts[:32], 0.2)  # warm up (and compile)
        out[f"{name}_steps_per_s"], _ = steps_per_second(step, acts, seconds)
    out["compiled_over_numpy"] = out["compiled_steps_per_s"] / out["numpy_steps_per_s"]
    # the query-level env at the same N, measured alike right after: the token env's cost in its units
    out["query_env_steps_per_s"] = random_steps_per_second("MECOffload-v0", n_users, seconds)
    out["over_query_env"] = out["compiled_steps_per_s"] / out["query_env_steps_per_s"]
    print(f"  single env, compiled step: {out['compiled_steps_per_s']:10,.0f} steps/s (target 10,000)")
    print(f"  MECOffload-v0 at N = {n_users}:   {out['query_env_steps_per_s']:10,.0f} steps/s; token env / it "
          f"{out['over_query_env']:.2f}x (target >= 0.5)")
    print(f"  single env, numpy step:    {out['numpy_steps_per_s']:10,.0f} steps/s")
    print(f"  compiled / numpy:          {out['compiled_over_numpy']:10.2f}x", flush=True)
    return out


def random_steps_per_second(env_id: str, n_users: int, seconds: float) -> float:
    """Steps/s of one ``env_id`` through gym.make on random actions, reset at an episode's end, after a warm-up."""
    env = gym.make(env_id, n_users=n_users)
    env.reset(seed=0)
    acts = [env.action_space.sample() for _ in range(256)]

    def step(action) -> None:
        if any(env.step(action)[2:4]):
            env.reset()

    steps_per_second(step, acts[:64], 0.3)  # warm up (and compile)
    return steps_per_second(step, acts, seconds)[0]


def bench_queue_env(n_users: int, seconds: float) -> dict:
    """MECOffloadQueue-v0 and MECOffload-v0 through gym.make, random actions, side by side: steps/s and ratio.

    Random actions overload some ESs, so the queues (and the work per step) grow over each 200-slot episode.
    """
    out: dict = {"n_users": n_users}
    for name, env_id in (("queue", "MECOffloadQueue-v0"), ("static", "MECOffload-v0")):
        out[f"{name}_steps_per_s"] = random_steps_per_second(env_id, n_users, seconds)
    out["queue_over_static"] = out["queue_steps_per_s"] / out["static_steps_per_s"]
    print(f"  MECOffloadQueue-v0: {out['queue_steps_per_s']:10,.0f} steps/s (target 10,000)")
    print(f"  MECOffload-v0:      {out['static_steps_per_s']:10,.0f} steps/s")
    print(f"  queue / static:     {out['queue_over_static']:10.2f}x", flush=True)
    return out


# One PPO training timed in a fresh process with one torch thread, with `overrides` on configs/train/ppo.yaml: the
# code of whichever checkout runs it (cwd), so that an older commit's training is timed by the same lines. It uses
# only what agents.training has had since the batched twin (load_config, PPOConfig; ppo_model, now in agents.ppo).
TRAINING_SNIPPET = """
import json, sys, time
import torch
torch.set_num_threads(1)
import gymnasium as gym
import agents.ppo
import agents.training as training
cfg = training.load_config(training.PPOConfig, "ppo", sys.argv[2:] + ["threads=1"])
if hasattr(agents.ppo, "training_envs"):
    env = agents.ppo.training_envs(cfg, 0)
else:  # before training_envs: train/ppo.py's own construction
    from stable_baselines3.common.env_util import make_vec_env
    from agents.vector import SB3VecEnv
    if cfg.batched_env:
        env = SB3VecEnv(gym.make_vec(cfg.env_id, num_envs=cfg.n_envs, vectorization_mode="vector_entry_point",
                                     **cfg.env_kwargs))
        env.seed(0)
    else:
        env = make_vec_env(cfg.env_id, n_envs=cfg.n_envs, seed=0, env_kwargs=cfg.env_kwargs)
model = (getattr(agents.ppo, "ppo_model", None) or training.ppo_model)(cfg, env)
rollout = cfg.n_envs * cfg.n_steps
model.learn(rollout)  # warm-up: the first rollout and update (kernels loaded, buffers allocated)
steps = max(int(sys.argv[1]) // rollout, 1) * rollout
t0 = time.perf_counter()
model.learn(steps, reset_num_timesteps=False)
print(json.dumps({"steps": steps, "seconds": time.perf_counter() - t0}))
"""

# The reference training: N = 120 with the settings of the equivariant policy before the lean one (n_envs 4,
# n_steps 64, minibatch 256, 4 epochs, one thread, SB3's PPO on the slot reward, DummyVecEnv of single envs).
REFERENCE_TRAINING = ("env_kwargs.n_users=120", "n_envs=4", "n_steps=64", "batch_size=256", "n_epochs=4",
                      "batched_env=false")


def _timed_training(checkout: Path, steps: int, overrides: tuple[str, ...]) -> float:
    """Env steps/s, end to end (rollouts and updates), of PPO trained by ``checkout``'s code in a fresh process."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", TRAINING_SNIPPET, str(steps), *overrides], cwd=checkout, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the training in {checkout} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["steps"] / result["seconds"]


def bench_training(against: str | None, quick: bool) -> dict:
    """PPO training throughput at N = 120, end to end: ``python train/ppo.py``'s settings and the reference
    settings on this code, the reference settings on commit ``against`` (a git worktree), the env's random rate."""
    import subprocess
    import tempfile

    out = {"env_random_steps_per_s": random_steps_per_second("MECOffload-v0", 120, 1.0 if quick else 3.0)}
    print(f"  MECOffload-v0 alone, random actions: {out['env_random_steps_per_s']:8,.0f} steps/s")
    out["default_steps_per_s"] = _timed_training(ROOT, 2048 if quick else 8192, ())
    print(f"  train/ppo.py's settings (configs/train/ppo.yaml): {out['default_steps_per_s']:8,.0f} steps/s "
          "end to end (rollouts and updates)", flush=True)
    # SB3's PPO on the slot reward, as the reference commit trains (credit is this code's setting)
    out["reference_steps_per_s"] = _timed_training(ROOT, 512 if quick else 2048, REFERENCE_TRAINING + ("credit=team",))
    print(f"  the reference settings ({' '.join(REFERENCE_TRAINING)}): {out['reference_steps_per_s']:8,.0f} steps/s",
          flush=True)
    if against:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), against], check=True,
                           capture_output=True)
            try:
                out["against"] = against
                out["against_reference_steps_per_s"] = _timed_training(tree, 512 if quick else 2048,
                                                                       REFERENCE_TRAINING)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False,
                               capture_output=True)
        ratio = out["default_steps_per_s"] / out["against_reference_steps_per_s"]
        print(f"  commit {against}, the reference settings: {out['against_reference_steps_per_s']:8,.0f} steps/s; "
              f"train/ppo.py's settings here are {ratio:.1f}x that", flush=True)
        out["default_vs_against"] = ratio
    return out


def bench_fig3(runs: int, workers: int) -> dict:
    cfg = load_scenario("paper")
    points = [Point(n, cfg.tau) for n in range(60, 121, 10)]
    t0 = time.perf_counter()
    rows = monte_carlo(cfg, points, PAPER_STRATEGIES, runs=runs, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    # where the time goes: the strategies' own solve time against the rest (drawing the instances,
    # the evaluator, pool start-up, kernel loading, moving rows between processes)
    solve = sum(r["runtime_ms"] for r in rows) / 1e3
    draws = len(points) * runs
    print(f"  Fig. 3 sweep: {len(points)} points x {runs} draws x {len(PAPER_STRATEGIES)} strategies "
          f"= {len(rows):,} evaluations in {wall:.1f} s on {workers} worker(s); the strategies' solves "
          f"{solve:.1f} s of {wall * workers:.1f} worker-seconds, {1e3 * wall * workers / draws:.2f} ms a draw",
          flush=True)
    return {"points": len(points), "runs": runs, "strategies": len(PAPER_STRATEGIES), "workers": workers,
            "wall_s": wall, "solve_s": solve, "worker_ms_per_draw": 1e3 * wall * workers / draws}


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numba

    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cpus": usable_cpus(), "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__ if kernels.numba_enabled() else "disabled", "gymnasium": gym.__version__,
            "date": time.strftime("%Y-%m-%d")}


def main(argv: list[str] | None = None) -> int:
    ap = script_parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats; no reference above N = 240")
    ap.add_argument("--out", type=output_file, default=str(ROOT / "bench" / "results.json"),
                    help="the JSON of results (checked writable before the run)")
    ap.add_argument("--against", metavar="COMMIT", default=None,
                    help="also time the reference PPO training on this commit's code (a git worktree), side by side")
    args = ap.parse_args(argv)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores; python {info['python']}, numpy {info['numpy']}, "
          f"numba {info['numba']}")
    print("GOA solve time (paper scenario, M = 4; median over instances):")
    sizes = [60, 120, 240, 480]
    ref = {60: 5, 120: 5, 240: 2, 480: 1} if not args.quick else {60: 3, 120: 3, 240: 1}
    goa_rows = bench_goa(sizes, instances=20 if not args.quick else 5, ref_instances=ref)
    identical = bench_identical(1000 if not args.quick else 100)
    exp_fast, exp_ref = fit_exponent(goa_rows, "goa_ms"), fit_exponent(goa_rows, "reference_ms")
    exp_edge = fit_exponent(goa_rows, "edge_all_ms")
    print(f"  fitted exponent of time ~ N^k: GOA k = {exp_fast:.2f}, reference k = {exp_ref:.2f}, "
          f"Edge all k = {exp_edge:.2f} (paper's bound for GOA: O(N^3 M^2); ours: O(K^2 M), K users offloaded)")
    print("GOA+LS (GOA, then best-improvement moves and swaps), paper scenario, M = 4:")
    local_search = bench_local_search(120, instances=30 if not args.quick else 10, ref_instances=5 if not args.quick
                                      else 2, identical=1000 if not args.quick else 100)
    print("MECOffload-v0, N = 120, random actions:")
    envs = bench_envs(120, 64, seconds=3.0 if not args.quick else 1.0)
    print("MECSpecDecode-v0, N = 20, shipped token traces, random actions:")
    spec = bench_spec_env(20, seconds=3.0 if not args.quick else 1.0)
    print("MECOffloadQueue-v0, N = 120, random actions:")
    queue = bench_queue_env(120, seconds=3.0 if not args.quick else 1.0)
    print("PPO training at N = 120 (one torch thread, a fresh process each):")
    ppo = bench_training(args.against, args.quick)
    fig3 = bench_fig3(runs=500 if not args.quick else 100, workers=usable_cpus())
    memory = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "peak_rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    print(f"peak memory: this process {memory['peak_rss_mb']:.0f} MB, largest sweep worker "
          f"{memory['peak_rss_children_mb']:.0f} MB")
    result = {"machine": info, "goa": goa_rows, "goa_vs_reference": identical, "goa_exponent": exp_fast,
              "reference_exponent": exp_ref,
              "edge_all_exponent": exp_edge, "goa_local_search": local_search,
              "envs": envs, "spec_env": spec, "queue_env": queue, "ppo": ppo, "fig3": fig3, "memory": memory}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
