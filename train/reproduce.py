"""Reproduce the paper's Monte Carlo figures as CSV and PNG.

    python train/reproduce.py fig3 --runs 500          # Fig. 3a/3b: strategies vs N, tau = 0.6
    python train/reproduce.py fig4 --runs 500          # Fig. 4: GOA vs N for tau = 0.6 .. 1.0
    python train/reproduce.py gap --runs 20            # GOA's optimality gap, N = 6..10, M = 4
    python train/reproduce.py fig2                     # accuracy vs uncertainty, from the trace table
    python train/reproduce.py fig5 --runs 500          # GOA under margin / entropy / perplexity

Each command writes ``{out}/{name}.csv`` (mean and 95 % CI per point and strategy; delays in
ms, accuracy in %) and its plots, all atomically. Draw i uses seed 42 + i. A stopped sweep
(Ctrl-C, SIGTERM, SIGKILL) keeps its finished draws in ``{out}/.{name}.partial.jsonl``: rerun
the same command to resume. Bad arguments exit with status 2 before any draw is run.
"""

from __future__ import annotations

import argparse
import collections
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mec_env.errors import ConfigError
from mec_env.config import ScenarioConfig, load_scenario, parse_key_values
from baselines.optimum import MAX_EXACT_ASSIGNMENTS
from baselines.experiments import (BACKENDS, PAPER_N120, Point, add_address_argument, gap_configs, monte_carlo,
                                   optimality_gaps, summarize)
from agents.cli import MAX_RUNS, MAX_WORKERS, WHY_WORKERS, count, output_dir, run_main, script_parser
from mec_env.io import atomic_write, atomic_write_csv

FIG3_N = tuple(range(60, 121, 10))
FIG4_TAUS = (0.6, 0.7, 0.8, 0.9, 1.0)
PAPER_STRATEGIES = ("Local all", "Edge all", "Min delay", "GOA", "Random")
COLORS = {"Local all": "tab:gray", "Edge all": "tab:red", "Min delay": "tab:green", "GOA": "tab:blue",
          "Random": "tab:orange", "GOA+LS": "tab:purple"}


def write_csv(path: Path, rows: list[dict]) -> None:
    atomic_write_csv(path, rows, float_format=".6g")


def save_figure(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png"))


def plot_vs_n(summary: list[dict], key: str, series: str, path: Path, ylabel: str, title: str,
              paper: dict[str, float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    labels = list(dict.fromkeys(r[series] for r in summary))
    for k, label in enumerate(labels):
        rs = sorted((r for r in summary if r[series] == label), key=lambda r: r["n_users"])
        x = [r["n_users"] for r in rs]
        color = COLORS.get(label) if series == "strategy" else f"C{k}"
        name = f"tau = {label:g}" if series == "tau" else str(label)
        ax.errorbar(x, [r[f"{key}_mean"] for r in rs], yerr=[r[f"{key}_ci95"] for r in rs], marker="o",
                    ms=4, capsize=3, color=color, label=name)
        if paper and label in paper:
            ax.plot([x[-1] + 1.5], [paper[label]], marker="*", ms=11, color=color, mec="black", mew=0.6,
                    linestyle="none")
    if paper:
        ax.plot([], [], marker="*", ms=11, color="white", mec="black", linestyle="none", label="paper, N = 120")
    ax.set_xlabel("number of users N")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def plot_accuracy_and_delay(summary: list[dict], group: str, out: Path, figure: int, tag: str,
                            paper: dict[str, tuple[float, float]] | None = None) -> None:
    """Panels a (accuracy) and b (delay) versus N of Fig. ``figure``, one line per ``group`` value.

    ``paper``: the paper's (delay ms, accuracy %) at N = 120 per line, drawn as markers.
    """
    by = "" if group == "strategy" else f" by {group}"
    plot_vs_n(summary, "accuracy_pct", group, out / f"fig{figure}a_accuracy.png", "accuracy (%)",
              f"Fig. {figure}a: accuracy vs N{by} ({tag})", paper and {k: v[1] for k, v in paper.items()})
    plot_vs_n(summary, "delay_ms", group, out / f"fig{figure}b_delay.png", "mean delay per user (ms)",
              f"Fig. {figure}b: delay vs N{by} ({tag})", paper and {k: v[0] for k, v in paper.items()})


@dataclass
class Runner:
    """Where the draws run: ``workers`` processes here, or Ray tasks on every node of a cluster
    (``backend="ray"``); ``placement`` collects the node of every chunk of draws."""

    workers: int | None = None
    backend: str = "process"
    placement: list[dict] = field(default_factory=list)

    def kwargs(self) -> dict:
        return {"workers": self.workers, "backend": self.backend, "placement": self.placement}


def partial(out: Path, name: str) -> Path:
    """Where a sweep keeps its finished draws until its CSV is written (rerun to resume)."""
    return out / f".{name}.partial.jsonl"


def fig3(cfg: ScenarioConfig, runs: int, out: Path, runner: Runner, n_values: Sequence[int],
         strategies: Sequence[str]) -> list[dict]:
    points = [Point(n, cfg.tau) for n in n_values]
    rows = monte_carlo(cfg, points, strategies, runs=runs, **runner.kwargs(), desc="fig3", partial=partial(out, "fig3"))
    summary = summarize(rows)
    write_csv(out / "fig3.csv", summary)
    partial(out, "fig3").unlink(missing_ok=True)
    tag = f"tau = {cfg.tau:g}, {runs} draws, mean and 95 % CI"
    plot_accuracy_and_delay(summary, "strategy", out, 3, tag, paper=PAPER_N120)
    return summary


def fig4(cfg: ScenarioConfig, runs: int, out: Path, runner: Runner, n_values: Sequence[int],
         taus: Sequence[float]) -> list[dict]:
    points = [Point(n, t) for t in taus for n in n_values]
    rows = monte_carlo(cfg, points, ["GOA"], runs=runs, **runner.kwargs(), desc="fig4", partial=partial(out, "fig4"))
    summary = summarize(rows)
    write_csv(out / "fig4.csv", summary)
    partial(out, "fig4").unlink(missing_ok=True)
    tag = f"GOA, {runs} draws, mean and 95 % CI"
    plot_accuracy_and_delay(summary, "tau", out, 4, tag)
    return summary


def fig2(cfg: ScenarioConfig, out: Path, bins: int = 10) -> list[dict]:
    """Accuracy versus uncertainty bins and the uncertainty histogram, from the trace table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mec_env.traces import load_traces

    table = load_traces(cfg.queries.trace_path or None)
    alpha = table.uncertainty[cfg.queries.metric]
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(alpha, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        row = {"metric": cfg.queries.metric, "bin_low": float(edges[b]), "bin_high": float(edges[b + 1]), "count": n}
        for name, correct in (("slm", table.slm_correct), ("llm", table.llm_correct)):
            acc = float(correct[m].mean()) if n else float("nan")
            row[f"{name}_accuracy_pct"] = 100 * acc
            row[f"{name}_accuracy_ci95"] = 100 * 1.96 * float(np.sqrt(acc * (1 - acc) / n)) if n else float("nan")
        rows.append(row)
    write_csv(out / "fig2.csv", rows)
    centers = 0.5 * (edges[:-1] + edges[1:])
    has = np.array([r["count"] > 0 for r in rows])
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for name, label, color in (("slm", "SLM (decides, on device)", "tab:blue"), ("llm", "LLM (edge)", "tab:red")):
        ax.errorbar(centers[has], [r[f"{name}_accuracy_pct"] for r in rows if r["count"]],
                    yerr=[r[f"{name}_accuracy_ci95"] for r in rows if r["count"]], marker="o", capsize=3,
                    color=color, label=label)
    ax.set_xlabel(f"SLM {cfg.queries.metric} uncertainty alpha")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Fig. 2a: accuracy vs uncertainty ({len(table)} bAbI test questions)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out / "fig2a_accuracy_vs_uncertainty.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.hist(alpha, bins=edges, color="tab:blue", edgecolor="white")
    ax.set_xlabel(f"SLM {cfg.queries.metric} uncertainty alpha")
    ax.set_ylabel("questions")
    ax.set_title("Fig. 2b: uncertainty histogram", fontsize=10)
    ax.grid(alpha=0.3)
    save_figure(fig, out / "fig2b_histogram.png")
    plt.close(fig)
    return rows


def fig5(cfg: ScenarioConfig, runs: int, out: Path, runner: Runner, n_values: Sequence[int]) -> list[dict]:
    """GOA under the margin, entropy and perplexity uncertainty metrics."""
    summary = []
    for metric in ("margin", "entropy", "perplexity"):
        c = cfg.replace(**{"queries.metric": metric})
        rows = monte_carlo(c, [Point(n, cfg.tau) for n in n_values], ["GOA"], runs=runs, **runner.kwargs(),
                           desc=f"fig5 {metric}", partial=partial(out, f"fig5-{metric}"))
        summary.extend({"metric": metric, **r} for r in summarize(rows))
    write_csv(out / "fig5.csv", summary)
    for metric in ("margin", "entropy", "perplexity"):
        partial(out, f"fig5-{metric}").unlink(missing_ok=True)
    tag = f"GOA, tau = {cfg.tau:g}, {runs} draws, mean and 95 % CI"
    plot_accuracy_and_delay(summary, "metric", out, 5, tag)
    return summary


def gap(cfg: ScenarioConfig, runs: int, out: Path, n_values: Sequence[int], workers: int | None = 1) -> list[dict]:
    """GOA, GOA+LS and GOA+ILS against the exact optimum, at the paper's resources and at resources
    scaled by N / 120 (B and C_j), so a small N is as loaded as the N = 120 point."""
    draws = optimality_gaps(cfg, n_values, runs, workers=workers, partial=partial(out, "gap"))
    groups: dict[tuple, list[dict]] = {}
    for r in draws:  # in point order, each point's draws by seed
        groups.setdefault((r["resources"], r["n_users"]), []).append(r)
    out_rows = []
    for (load_name, n), rs in groups.items():
        gaps_a, ls_a = np.array([r["goa_gap_pct"] for r in rs]), np.array([r["goa_ls_gap_pct"] for r in rs])
        ils_a = np.array([r["goa_ils_gap_pct"] for r in rs])
        t_exact, t_goa = [r["exact_runtime_s"] for r in rs], [r["goa_runtime_s"] for r in rs]
        out_rows.append({
            "resources": load_name, "n_users": n, "runs": runs,
            "goa_gap_pct_mean": float(gaps_a.mean()), "goa_gap_pct_median": float(np.median(gaps_a)),
            "goa_gap_pct_max": float(gaps_a.max()), "goa_optimal_fraction": float(np.mean(gaps_a < 1e-9)),
            "goa_ls_gap_pct_mean": float(ls_a.mean()), "goa_ls_gap_pct_max": float(ls_a.max()),
            "goa_ils_gap_pct_mean": float(ils_a.mean()), "goa_ils_gap_pct_max": float(ils_a.max()),
            "exact_runtime_s_mean": float(np.mean(t_exact)), "goa_runtime_ms_mean": 1e3 * float(np.mean(t_goa)),
        })
    write_csv(out / "gap.csv", out_rows)
    partial(out, "gap").unlink(missing_ok=True)
    return out_rows


def check_points(cfg: ScenarioConfig, figure: str, n_values: Sequence[int], taus: Sequence[float]) -> None:
    """Validate every sweep point's scenario here, so a bad N or tau is a clear error before any
    worker starts (not one raised in every worker, mid-sweep)."""
    if figure == "fig4":
        for t in taus:
            for n in n_values:
                cfg.replace(n_users=n, tau=t)
    elif figure in ("fig3", "fig5"):
        for metric in ("margin", "entropy", "perplexity") if figure == "fig5" else (cfg.queries.metric,):
            for n in n_values:
                cfg.replace(n_users=n, **{"queries.metric": metric})
    elif figure == "gap":
        for n in n_values:  # N first: N = 0 would otherwise be reported as a bandwidth of 0
            cfg.replace(n_users=n)
            m = cfg.n_edge_servers
            if m**n > MAX_EXACT_ASSIGNMENTS:  # even with every user forced to offload, M^N assignments
                raise ConfigError("n_users", n, f"an N whose exhaustive search fits: M^N = {m}^{n} exceeds "
                                  f"{MAX_EXACT_ASSIGNMENTS:,} assignments (N <= 10 at M = 4)")
        for _, n, c in gap_configs(cfg, n_values):
            c.replace(n_users=n)


def _terminate(signum: int, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: the pool's workers are killed, the partial file closed


def print_table(summary: list[dict], n_users: int) -> None:
    rows = [r for r in summary if r["n_users"] == n_users]
    print(f"\nN = {n_users}: strategy        delay ms (95% CI)   paper   accuracy %   paper   offloaded")
    for r in rows:
        at_paper_point = n_users == 120 and abs(r["tau"] - 0.6) < 1e-9
        paper = PAPER_N120.get(r["strategy"], (np.nan, np.nan)) if at_paper_point else (np.nan, np.nan)
        print(f"  tau={r['tau']:.1f} {r['strategy']:10s} {r['delay_ms_mean']:7.2f} +- {r['delay_ms_ci95']:4.2f}"
              f"   {paper[0]:5.1f}   {r['accuracy_pct_mean']:6.2f}      {paper[1]:5.1f}   {r['offloaded_mean']:6.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = script_parser(__doc__)
    ap.add_argument("figure", choices=("fig2", "fig3", "fig4", "fig5", "gap"))
    ap.add_argument("--runs", type=count(2, MAX_RUNS), default=500,
                    help=f"Monte Carlo draws per point (paper: 500; >= 2 for a confidence interval; at most "
                         f"{MAX_RUNS:,}: every draw's row is kept in memory)")
    ap.add_argument("--scenario", default="paper", help="scenario name under configs/scenario or a YAML path")
    ap.add_argument("--out", type=output_dir, default="results", help="output folder (writable)")
    ap.add_argument("--workers", type=count(1, MAX_WORKERS), default=None,
                    help=f"worker processes (default: all cores; gap: 1, so its run times are measured alone; "
                         f"{WHY_WORKERS})")
    ap.add_argument("--backend", choices=BACKENDS, default="process",
                    help="process: a pool of --workers processes here; ray: Ray tasks on a local runtime or, with "
                         "--address, on every node of a running cluster (fig3, fig4, fig5; the same rows)")
    add_address_argument(ap, "with --backend ray, a local runtime")
    ap.add_argument("--n", type=int, nargs="+", default=None, help="values of N (default: 60..120 step 10; gap: 6..10)")
    ap.add_argument("--taus", type=float, nargs="+", default=list(FIG4_TAUS), help="fig4 thresholds")
    ap.add_argument("--strategies", nargs="+", default=list(PAPER_STRATEGIES), help="fig3 strategies")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="scenario overrides")
    args = ap.parse_args(argv)
    if args.backend == "ray" and args.figure not in ("fig3", "fig4", "fig5"):
        ap.error(f"--backend ray runs the Monte Carlo sweeps fig3, fig4 and fig5, not {args.figure}")
    if args.address and args.backend != "ray":
        ap.error("--address joins a Ray cluster: use it with --backend ray")
    from baselines import STRATEGIES

    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown:
        ap.error(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    in_main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        run(args)  # bad input, found before the sweep (or in a worker), is run_main's one line
    except KeyboardInterrupt:
        ap.exit(130, f"\n{ap.prog}: interrupted; rerun the same command to resume\n")
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> None:
    cfg = load_scenario(args.scenario, **parse_key_values(args.set))
    n_values = args.n or (list(range(6, 11)) if args.figure == "gap" else FIG3_N)
    check_points(cfg, args.figure, n_values, args.taus)
    t0 = time.perf_counter()
    runner = Runner(args.workers, args.backend)
    if args.backend == "ray":
        from baselines.experiments import ray_runtime

        ray_runtime(args.address, args.workers)
    if args.figure == "fig3":
        summary = fig3(cfg, args.runs, args.out, runner, n_values, args.strategies)
        print_table(summary, max(r["n_users"] for r in summary))
    elif args.figure == "fig2":
        for r in fig2(cfg, args.out):
            print(f"  alpha in [{r['bin_low']:.1f}, {r['bin_high']:.1f}): {r['count']:4d} questions, "
                  f"SLM {r['slm_accuracy_pct']:5.1f} %, LLM {r['llm_accuracy_pct']:5.1f} %")
    elif args.figure == "fig5":
        summary = fig5(cfg, args.runs, args.out, runner, n_values)
        for r in summary:
            if r["n_users"] == max(x["n_users"] for x in summary):
                print(f"  {r['metric']:10s} N={r['n_users']} delay {r['delay_ms_mean']:.2f} ms, "
                      f"accuracy {r['accuracy_pct_mean']:.2f} %, offloaded {r['offloaded_mean']:.1f}")
    elif args.figure == "fig4":
        summary = fig4(cfg, args.runs, args.out, runner, n_values, args.taus)
        print_table(summary, max(r["n_users"] for r in summary))
    else:
        for r in gap(cfg, args.runs, args.out, n_values, args.workers or 1):
            print(f"  {r['resources']:18s} N={r['n_users']:2d} GOA gap mean {r['goa_gap_pct_mean']:6.2f} % "
                  f"max {r['goa_gap_pct_max']:6.2f} % optimal {100 * r['goa_optimal_fraction']:5.1f} % | "
                  f"GOA+LS gap mean {r['goa_ls_gap_pct_mean']:5.2f} % | GOA+ILS {r['goa_ils_gap_pct_mean']:5.2f} % | "
                  f"exact {r['exact_runtime_s_mean']:.2f} s")
    if runner.placement:  # where Ray ran the draws: one row per node
        draws = collections.Counter()
        for p in runner.placement:
            draws[p["node_id"]] += p["draws"]
        nodes = [{"node_id": k, "draws": v} for k, v in sorted(draws.items())]
        write_csv(args.out / f"{args.figure}_ray_nodes.csv", nodes)
        print("draws per Ray node: " + ", ".join(f"{r['node_id'][:12]}.. {r['draws']}" for r in nodes))
    print(f"\nwrote {args.figure} results to {args.out}/ in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
