"""RLlib PPO with parameter sharing on the PettingZoo env (every user an agent), then the project's evaluator.

    python train/rllib_ppo.py                                   # configs/train/rllib_ppo.yaml, local Ray (2 CPUs)
    python train/rllib_ppo.py --set iterations=60 team_reward=true run_dir=runs/rllib_team
    python train/rllib_ppo.py --address auto                    # join a running cluster (ray start --head ...)
    python train/rllib_ppo.py --evaluate runs/rllib_ppo/checkpoint --agents GOA ppo=runs/ppo/final_model.zip
    python train/rllib_ppo.py --config rllib_queue              # the queueing env, its queue-aware baselines

One module (``"shared"``) decides for every user from its own observation (its channel gains, its
query's uncertainty, its device, the broadcast ES entries); RLlib's env runners sample on the Ray
cluster (``num_env_runners`` actors, placed on any node), the learner runs in this process.

Writes into ``run_dir``: ``checkpoint/`` (the algorithm, every ``checkpoint_every`` iterations and
at the end; rerunning the same command resumes there), ``tb/`` (TensorBoard: ``rollout/*``,
``train/*``, ``time/*`` per iteration), ``comparison.csv`` (the module, the scripted baselines and
any SB3 models given with ``--agents``, on ``final_eval_seeds`` held-out episodes of every env of
``eval_envs``: the evaluator's metrics with 95 % CIs) and ``summary.json`` (wall time, steps, the
nodes the runners ran on). One run at a time trains in a ``run_dir`` (a second fails at once, naming
the first's process). A checkpoint is resumed only if its files are those the run recorded (sha256)
and its state files hold only arrays; ``--evaluate`` reads only the module's weights, as arrays.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import gymnasium as gym

import mec_env  # noqa: F401
from agents.checkpoint import lock_run
from agents.evaluation import evaluate_agents, print_table
from agents.queue_evaluation import QUEUE
from agents.rllib import POLICY, RLlibAgent, RLlibPPOConfig, load_module, load_rllib_config, train
from agents.saved_agents import model_factory
from agents.agent import ScriptedAgent
from baselines import STRATEGIES
from baselines.queue_policies import QUEUE_POLICIES, queue_agent
from baselines.experiments import add_address_argument, ray_runtime
from agents.cli import check_run_config, existing_path, run_main, script_parser
from mec_env.io import atomic_write_csv, atomic_write_text
from mec_env.seeds import held_out_seeds

DEFAULT_AGENTS = ("GOA", "Min delay", "Local all")


def compare(cfg: RLlibPPOConfig, module: object, agent_specs: list[str], name: str = "RLlib PPO") -> list[dict]:
    """The module, the scripted baselines and SB3 models on the same held-out episodes of every eval env:
    per slot by :func:`agents.evaluation.evaluate_agents` in ``MECOffload-v0``, per episode (long-run
    objective, energy, backlog) at the queue level (:data:`agents.queue_evaluation.QUEUE`) in the
    queueing env, whose scripted policies are the queue-aware ones of :mod:`baselines.queue_policies`."""
    queueing = cfg.env_id == "MECOffloadQueue-v0"
    strategies = QUEUE_POLICIES if queueing else STRATEGIES
    rows = []
    for extra in cfg.eval_envs:
        kwargs = {**cfg.env_kwargs, **extra}
        make = lambda kwargs=kwargs: gym.make(cfg.env_id, **kwargs)  # noqa: E731
        agents = {}
        for spec in agent_specs:
            label, sep, path = spec.partition("=")
            if spec in strategies:  # before NAME=PATH: "DPP (V=0.1)" is a strategy
                agents[spec] = queue_agent(QUEUE_POLICIES[spec], spec) if queueing else \
                    (lambda env, s=spec: ScriptedAgent(env, s))
            elif sep:
                agents[label] = model_factory(label, path)
            else:
                raise SystemExit(f"rllib_ppo.py: error: --agents {spec!r} is neither a strategy of {cfg.env_id} "
                                 f"({', '.join(strategies)}) nor NAME=PATH of a saved SB3 model")
        agents[name] = lambda env: RLlibAgent(module, env, name)
        env = make()
        n = env.unwrapped.cfg.n_users
        title = f"{cfg.env_id} {kwargs}, {cfg.final_eval_seeds} held-out episodes"
        results = evaluate_agents(make, agents, held_out_seeds(cfg.final_eval_seeds), level=QUEUE if queueing else None)
        print_table(results, title)
        env.close()
        rows += [{"env": json.dumps(extra, sort_keys=True), "n_users": n, **r.row()} for r in results]
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = script_parser(__doc__)
    ap.add_argument("--config", default="rllib_ppo", help="YAML under configs/train or a path")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    add_address_argument(ap, "a local runtime of num_cpus CPUs")
    ap.add_argument("--evaluate", type=existing_path, default=None, metavar="CHECKPOINT",
                    help="skip training: score the module of this checkpoint (run_dir/checkpoint)")
    ap.add_argument("--agents", nargs="*", default=list(DEFAULT_AGENTS),
                    help="what the module is compared with: strategies and NAME=PATH of saved SB3 models")
    args = ap.parse_args(argv)
    cfg = load_rllib_config(args.config, args.set)
    check_run_config(cfg)  # run_dir writable, W&B credentials: before Ray starts
    run_dir = Path(cfg.run_dir)
    summary: dict = {"config": args.config, "overrides": args.set}
    if args.evaluate:
        module = load_module(args.evaluate, cfg, "--evaluate")  # runs no code from the checkpoint's pickles
    else:
        lock_run(run_dir)  # a second run of this run_dir fails here, before Ray starts
        ray_runtime(args.address, cfg.num_cpus)
        import ray

        algo, state = train(cfg)
        module = algo.get_module(POLICY)
        summary.update(iterations=state["iteration"], env_steps=state["env_steps"],
                       agent_steps=state["env_steps"] * gym.make(cfg.env_id, **cfg.env_kwargs).unwrapped.cfg.n_users,
                       train_minutes=state["train_seconds"] / 60, env_runner_nodes=state["env_runner_nodes"],
                       driver_node=ray.get_runtime_context().get_node_id(),
                       cluster_nodes=[n["NodeID"] for n in ray.nodes() if n.get("Alive")])
        algo.stop()
        print(f"trained {state['iteration']} iterations ({state['env_steps']:,} slots) in "
              f"{state['train_seconds'] / 60:.1f} min; env runners on nodes {state['env_runner_nodes']}")
    t0 = time.perf_counter()
    rows = compare(cfg, module, args.agents)
    summary["evaluation_minutes"] = (time.perf_counter() - t0) / 60
    out = run_dir if not args.evaluate else Path(args.evaluate).resolve().parent
    atomic_write_csv(out / "comparison.csv", rows, float_format=".6g")
    atomic_write_text(out / ("summary.json" if not args.evaluate else "evaluation.json"),
                      json.dumps(summary, indent=1, default=str))
    print(f"wrote {out / 'comparison.csv'}; TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return rows


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
