"""A Ray Tune sweep of the SB3 PPO training, with ASHA stopping the trials that lag.

    python train/tune.py                                     # configs/train/tune.yaml on a local Ray runtime
    python train/tune.py --samples 16 --set timesteps=60000 seed=[0,1,2]
    python train/tune.py --address auto                      # on a running cluster (ray start --head ...)

Trials (``agents/tuning.py``) sample learning rate, entropy bonus, network width and seed from the
config's lists, train ``train/ppo.py``'s model and report J vs GOA (paired, on tuning seeds
10,000 + k) every ``report_every`` steps; each holds ``cpus_per_trial`` CPUs on any node.

Writes into ``--out``: ``trials.csv`` (one row per trial, best first: its values, best and last J vs
GOA, reports, stopped early or not, the Ray node id and host it ran on, wall time), ``tune.png`` (J vs
GOA over training steps, every trial), ``best.csv`` (the best trial's best checkpoint against GOA, Min
delay and Local all on held-out seeds 20,000 + k), ``best_model.zip`` (that checkpoint's SB3 model),
``summary.json`` (best configuration, scheduler, nodes, held-out scores) and ``tune/`` (Tune's own
files: each trial's ``progress.csv``, ``result.json``, TensorBoard events and best checkpoint;
``tensorboard --logdir {out}/tune``). One sweep at a time writes an ``--out`` folder (a second fails
at once, naming the first's process).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from agents.checkpoint import lock_run
from agents.evaluation import evaluate_agents, print_table
from agents.agent import ModelAgent
from agents.model_zip import load_model
from agents.training import baseline_agents, make_env
from agents.tuning import METRIC, MODE, TuneConfig, curves, load_tune_config, run_sweep, trial_config
from agents.tuning import scheduler, trial_rows
from baselines.experiments import add_address_argument, ray_runtime
from agents.cli import MAX_WORKERS, WHY_WORKERS, count, output_dir, run_main, script_parser
from mec_env.errors import ConfigError
from mec_env.io import atomic_write, atomic_write_csv, atomic_write_text
from mec_env.seeds import held_out_seeds


def plot(results, path: Path, title: str) -> None:
    """J vs GOA over training steps, a line per trial (colour: learning rate; dashes: entropy bonus)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    rates = sorted({c["learning_rate"] for c, _, _ in results})
    for config, steps, j in results:
        ax.plot(steps / 1e3, j, marker="o", ms=3, color=f"C{rates.index(config['learning_rate'])}",
                linestyle="--" if config["ent_coef"] > 0 else "-", alpha=0.85)
    ax.axhline(0.0, color="black", lw=0.8)
    for k, rate in enumerate(rates):
        ax.plot([], [], color=f"C{k}", label=f"lr {rate:g}")
    ax.plot([], [], color="gray", linestyle="--", label="entropy bonus > 0")
    ax.set_xlabel("training steps (thousands)")
    ax.set_ylabel("J vs GOA (%), tuning episodes; < 0 beats GOA")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png"))
    plt.close(fig)


def score_best(cfg: TuneConfig, best, out: Path) -> list[dict]:
    """The best trial's best checkpoint against the baselines on held-out episodes."""
    ppo_cfg = trial_config(cfg, best.config["values"])
    checkpoint = best.get_best_checkpoint(METRIC, MODE)
    with checkpoint.as_directory() as folder:
        model = load_model(Path(folder) / "model.zip", algorithm="PPO", reference_env=make_env(ppo_cfg))
        data = (Path(folder) / "model.zip").read_bytes()
    atomic_write(out / "best_model.zip", lambda tmp: Path(tmp).write_bytes(data))  # for evaluate.py --agents
    agents = baseline_agents()
    agents["PPO (best trial)"] = lambda env: ModelAgent(model, "PPO (best trial)", env=env)
    results = evaluate_agents(lambda: make_env(ppo_cfg), agents, held_out_seeds(cfg.final_eval_seeds))
    print_table(results, f"best trial {best.config['values']}, "
                           f"{cfg.final_eval_seeds} held-out episodes")
    rows = [r.row() for r in results]
    atomic_write_csv(out / "best.csv", rows, float_format=".6g")
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = script_parser(__doc__)
    ap.add_argument("--config", default="tune", help="YAML under configs/train or a path")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    add_address_argument(ap, "a local runtime of --num-cpus CPUs")
    ap.add_argument("--num-cpus", type=count(1, MAX_WORKERS), default=None,
                    help=f"CPUs of the local runtime (default: all cores; {WHY_WORKERS})")
    ap.add_argument("--samples", type=int, default=None, help="trials (same as --set num_samples=..., 1 to 10,000)")
    ap.add_argument("--out", type=output_dir, default="results/tune", help="output folder (writable)")
    ap.add_argument("--quiet", action="store_true", help="no Tune status tables")
    args = ap.parse_args(argv)
    samples = [] if args.samples is None else [f"num_samples={args.samples}"]
    cfg = load_tune_config(args.config, args.set + samples)
    try:  # a second sweep into this --out fails here, before Ray starts, instead of replacing the first's results
        lock_run(args.out)
    except ConfigError as err:
        raise ConfigError("--out", str(args.out), f"an output folder no other sweep is writing to ({err.allowed})"
                          ) from None
    ray_runtime(args.address, args.num_cpus)
    import ray

    t0 = time.perf_counter()
    results = run_sweep(cfg, args.out, progress=not args.quiet)
    wall = time.perf_counter() - t0
    rows = trial_rows(results, cfg)
    atomic_write_csv(args.out / "trials.csv", rows, float_format=".6g")
    plot(curves(results), args.out / "tune.png",
         f"{len(rows)} trials, ASHA (grace {cfg.grace_period}, reduction {cfg.reduction_factor}), {wall / 60:.1f} min")
    best = results.get_best_result(METRIC, MODE, scope="all")
    nodes = sorted({r["node_id"] for r in rows})
    print(f"\n{len(rows)} trials in {wall / 60:.1f} min on {len(nodes)} node(s); "
          f"{sum(r['stopped_early'] for r in rows)} stopped early by ASHA")
    for r in rows:
        print(f"  {r['trial_id']}  lr {r['learning_rate']:<7g} ent {r['ent_coef']:<5g} hidden {r['hidden']:<3d} "
              f"seed {r['seed']}  best J vs GOA {r['best_j_vs_goa_pct']:+7.2f} % at {r['best_at_timesteps']:>6d} "
              f"steps, {r['reports']} reports{' (stopped)' if r['stopped_early'] else ''}  node {r['node_id'][:12]}")
    final = score_best(cfg, best, args.out)
    asha = scheduler(cfg)
    summary = {"best_config": best.config["values"], "wall_minutes": wall / 60, "trials": len(rows),
               "scheduler": {"name": type(asha).__name__, "metric": METRIC, "mode": MODE,
                             "time_attr": "training_iteration (one report = report_every steps)",
                             "max_reports": math.ceil(cfg.timesteps / cfg.report_every),
                             "grace_period": cfg.grace_period, "reduction_factor": cfg.reduction_factor},
               "stopped_early": sum(r["stopped_early"] for r in rows), "nodes": nodes,
               "cluster_nodes": [n["NodeID"] for n in ray.nodes() if n.get("Alive")],
               "best_tuning_j_vs_goa_pct": rows[0]["best_j_vs_goa_pct"],
               "held_out": {r["agent"]: {"j_vs_goa_pct": r["j_vs_goa_pct"], "j_vs_goa_pct_ci95": r["j_vs_goa_pct_ci95"],
                                         "penalised_objective": r["penalised_objective"],
                                         "violations": r["violations"]} for r in final}}
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1))
    print(f"wrote {args.out}/trials.csv, tune.png, best.csv, best_model.zip, summary.json; Tune's files in "
          f"{args.out / 'tune'}")
    return rows


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
