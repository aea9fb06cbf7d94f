"""The scripted policies of MECOffloadQueue-v0 side by side, scored by the one evaluation loop (queue level).

    python train/queue_compare.py                      # stability table at loads 0.5, 0.9, 1.1 and the V sweep
    python train/queue_compare.py --only stability --episodes 5 --slots 1500
    python train/queue_compare.py --only sweep-v --set n_users=30 n_edge_servers=2 slot_seconds=0.01

``stability``: every policy of :data:`baselines.queue_policies.QUEUE_POLICIES` at each offered load (of the
ESs' mean capacity) on the same held-out episodes (seeds 20_000 + k) of ``--slots`` slots: the
long-run objective (alpha-weighted time in the system per query), accuracy, device power against
the budget, queries in the system and the backlog's growth; a policy's backlog is *bounded* when
its mean over the last quarter of the episode is below 1.5 x its mean over the second quarter
(plus 5 queries), else it *grows*. Writes ``queue_stability.csv`` and ``queue_stability.png``
(queries in the system over time, per load).

``sweep-v``: the drift-plus-penalty policy over V at one load: its time-average penalty (the
alpha-weighted own delay it minimises, within O(1/V) of the best) against its ES backlog (O(V)).
Writes ``queue_dpp_v.csv`` and ``queue_dpp_v.png``. Outputs go to ``--out`` (atomically).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

import mec_env  # noqa: F401
from agents.evaluation import evaluate_agents, play
from agents.queue_evaluation import QUEUE
from baselines.experiments import mean_ci95
from baselines.queue_policies import QUEUE_POLICIES, DriftPlusPenalty, QueuePolicyAgent, queue_agent
from mec_env.config import parse_key_values
from agents.cli import MAX_EPISODES, MAX_SLOTS, WHY_EPISODES, count, number, output_dir, run_main
from agents.cli import save_png, script_parser
from mec_env.io import atomic_write_csv
from mec_env.seeds import held_out_seeds


def bounded(trace: np.ndarray) -> bool:
    """The backlog criterion of the module docstring on one episode's queries-in-system trace."""
    k = trace.size // 4
    return bool(trace[3 * k:].mean() < 1.5 * trace[k:2 * k].mean() + 5.0)


def stability(env_kwargs: dict, loads: list[float], episodes: int, slots: int, out: Path) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = held_out_seeds(episodes)
    rows = []
    fig, axes = plt.subplots(1, len(loads), figsize=(5 * len(loads), 4), sharey=True)
    for ax, load in zip(np.atleast_1d(axes), loads):
        kwargs = {**env_kwargs, "offered_load": load, "episode_length": slots}
        agents = {name: queue_agent(policy, name) for name, policy in QUEUE_POLICIES.items()}
        for r in evaluate_agents(lambda: gym.make("MECOffloadQueue-v0", **kwargs), agents, seeds, level=QUEUE,
                                 progress=True):
            traces = np.array([e["in_system_trace"] for e in r.records])
            verdicts = [bounded(t) for t in traces]
            rows.append(r.row(offered_load=load, bounded=f"{sum(verdicts)}/{len(verdicts)}"))
            ax.plot(np.arange(slots), traces.mean(axis=0) + 1.0, label=r.name)
        ax.set(yscale="log", xlabel="slot", title=f"offered load {load} of the ESs' capacity")
    np.atleast_1d(axes)[0].set_ylabel("queries in the system + 1 (mean over episodes)")
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    atomic_write_csv(out / "queue_stability.csv", rows)
    save_png(fig, out / "queue_stability.png")
    print(f"\n{'load':>5s} {'policy':>12s} {'objective ms':>15s} {'accuracy':>9s} {'power/budget':>13s} "
          f"{'in system':>10s} {'growth/1k slots':>16s} {'bounded':>8s}")
    for r in rows:
        print(f"{r['offered_load']:5.1f} {r['policy']:>12s} {r['objective_ms']:8.2f} ± {r['objective_ms_ci95']:4.2f} "
              f"{r['accuracy']:9.3f} {r['energy_vs_budget']:13.2f} {r['in_system']:10.1f} "
              f"{r['growth']:9.1f} ± {r['growth_ci95']:4.1f} {r['bounded']:>8s}")
    return rows


def sweep_v(env_kwargs: dict, load: float, values: list[float], episodes: int, slots: int, out: Path) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = held_out_seeds(episodes)
    kwargs = {**env_kwargs, "offered_load": load, "episode_length": slots}
    env = gym.make("MECOffloadQueue-v0", **kwargs)
    rows = []
    for v in values:
        penalty, backlog, objective = [], [], []
        for seed in seeds:
            policy = DriftPlusPenalty(v)  # a fresh one per episode: its penalty sums are that episode's
            (ep,) = play(env, QueuePolicyAgent(env, policy, f"V = {v:g}"), seed, QUEUE)
            penalty.append(1e3 * policy.penalty_s / max(1, policy.decisions))
            backlog.append(ep["es_backlog_s"])
            objective.append(ep["objective_ms"])
        row = {"V": v, "offered_load": load, "episodes": len(seeds)}
        for name, x in (("penalty_ms", penalty), ("es_backlog_s", backlog), ("objective_ms", objective)):
            row[name], row[f"{name}_ci95"] = mean_ci95(x)
        rows.append(row)
        print(f"  V = {v:8.3g}: penalty {row['penalty_ms']:6.2f} ms, ES backlog {row['es_backlog_s']:.4f} s, "
              f"objective {row['objective_ms']:7.2f} ms", flush=True)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    x = [r["V"] for r in rows]
    ax.errorbar(x, [r["penalty_ms"] for r in rows], yerr=[r["penalty_ms_ci95"] for r in rows], fmt="o-", capsize=2)
    ax.set(xscale="log", xlabel="V", ylabel="time-average penalty (ms per query)",
           title="penalty: alpha-weighted own delay, O(1/V) from its best")
    bx.errorbar(x, [r["es_backlog_s"] for r in rows], yerr=[r["es_backlog_s_ci95"] for r in rows], fmt="o-",
                color="C3", capsize=2)
    bx.set(xscale="log", yscale="log", xlabel="V", ylabel="mean ES backlog (s of nominal ES compute)",
           title=f"backlog, O(V) (offered load {load}, {len(seeds)} episodes, 95 % CI)")
    atomic_write_csv(out / "queue_dpp_v.csv", rows)
    save_png(fig, out / "queue_dpp_v.png")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--only", choices=("stability", "sweep-v"), nargs="*", default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="environment arguments")
    ap.add_argument("--loads", type=number(0.0, open_low=True), nargs="*", default=[0.5, 0.9, 1.1],
                    help="offered loads of the table (> 0)")
    ap.add_argument("--episodes", type=count(1, MAX_EPISODES), default=5,
                    help=f"held-out episodes per point (>= 1; {WHY_EPISODES})")
    ap.add_argument("--slots", type=count(1, MAX_SLOTS), default=1500,
                    help=f"slots per episode (>= 1; at most {MAX_SLOTS:,}: every slot's queue length is kept)")
    ap.add_argument("--v-load", type=number(0.0, open_low=True), default=1.1, help="offered load of the V sweep (> 0)")
    ap.add_argument("--v", type=number(0.0), nargs="*", default=[0.001, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0],
                    help="drift-plus-penalty weights V of the sweep (>= 0)")
    ap.add_argument("--out", type=output_dir, default="results/queue",
                    help="folder of the CSVs and PNGs (writable)")
    args = ap.parse_args(argv)
    env_kwargs = parse_key_values(args.set)
    only = set(args.only or ("stability", "sweep-v"))
    if "stability" in only:
        stability(env_kwargs, args.loads, args.episodes, args.slots, args.out)
    if "sweep-v" in only:
        sweep_v(env_kwargs, args.v_load, args.v, args.episodes, args.slots, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
