"""Distil a trained centralised policy into users that each decide from their own observation (CTDE), then score
the decentralised users on held-out seeds next to the scripted policies.

    python train/distill.py runs/queue_ppo/final_model.zip --config queue_ppo --out runs/queue_ctde
    python train/distill.py runs/ppo/final_model.zip --config ppo --out runs/ctde_distilled

The teacher is a model trained by ``train/queue_ppo.py`` or ``train/ppo.py`` (its users exchange messages);
``--config`` names that training's configuration, whose environment (id and arguments) the student learns and is
scored in. The student is the teacher's network with ``decentralised=True``, fit by DAgger (:mod:`agents.distill`):
the teacher acts in the first round, the student in the later ones, and every visited state is labelled with the
teacher's decisions. The student goes to ``{out}/final_model.zip`` (atomically), the table of the final
comparison next to it; a queueing student is compared as ``train/queue_ppo.py --evaluate`` compares, a query-level
one as ``train/evaluate.py`` scores agents (held-out seeds 20,000 + k, 95 % CIs).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import gymnasium as gym
import torch

from agents.checkpoint import save_model
from agents.cli import MAX_ENVS, check_output_dir, count, run_main, saved_model, script_parser
from agents.distill import DistillRound, decentralised_student, distil
from agents.evaluation import evaluate_agents, print_table, standing
from agents.model_zip import load_model
from agents.queue_evaluation import final_comparison
from agents.training import PPOConfig, QueuePPOConfig, baseline_agents, load_config
from mec_env.errors import ConfigError
from mec_env.seeds import held_out_seeds

NAME = "CTDE student"


def main(argv: list[str] | None = None) -> list:
    ap = script_parser(__doc__)
    ap.add_argument("teacher", type=saved_model, help="the trained centralised model (.zip)")
    ap.add_argument("--config", default="queue_ppo", help="the teacher's training configuration (YAML under "
                    "configs/train or a path): its environment is the student's (default: %(default)s)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of that configuration")
    ap.add_argument("--out", type=Path, required=True, help="folder of the student and its comparison")
    ap.add_argument("--rounds", type=count(1, 100), default=4, help="DAgger rounds (default: %(default)s)")
    ap.add_argument("--steps", type=count(1, 100_000), default=250, help="vector steps a round (default: %(default)s)")
    ap.add_argument("--envs", type=count(1, MAX_ENVS), default=16, help="environments stepped side by side "
                    "(default: %(default)s)")
    ap.add_argument("--epochs", type=count(1, 100), default=3, help="passes over the labels a round "
                    "(default: %(default)s)")
    ap.add_argument("--seeds", type=count(), default=None, help="held-out episodes of the comparison "
                    "(default: the configuration's final_eval_seeds, or 100 at the query level)")
    args = ap.parse_args(argv)
    queueing = args.config.startswith("queue") or args.config.endswith(("queue_ppo.yaml", "queue_ppo.yml"))
    cfg = load_config(QueuePPOConfig if queueing else PPOConfig, args.config, args.set)
    check_output_dir(args.out, "--out")
    torch.set_num_threads(cfg.threads)

    # 1. the teacher, and a student of its architecture and weights that decides user by user
    env = gym.make(cfg.env_id, **cfg.env_kwargs)
    teacher = load_model(args.teacher, algorithm="PPO", reference_env=env)
    if not hasattr(teacher.policy, "decentralised"):
        raise ConfigError("teacher", str(args.teacher), "a model with the per-user equivariant policy "
                          "(train/ppo.py or train/queue_ppo.py with policy=equivariant)")
    student = decentralised_student(teacher, env, seed=cfg.seed)

    # 2. DAgger in envs stepped side by side (training seeds: seed + k)
    venv = gym.make_vec(cfg.env_id, num_envs=args.envs, vectorization_mode="sync", **cfg.env_kwargs)
    t0 = time.perf_counter()

    def report(r: DistillRound) -> None:
        print(f"round {r.round + 1}/{args.rounds}: {r.decisions:,} labelled decisions, the student agrees with "
              f"the teacher on {100 * r.agreement_before:.1f} % of the round's before fitting, "
              f"{100 * r.agreement_after:.1f} % after ({time.perf_counter() - t0:.0f} s)", flush=True)

    distil(teacher, student, venv, rounds=args.rounds, steps=args.steps, epochs=args.epochs, seed=cfg.seed,
           report=report)
    venv.close()
    args.out.mkdir(parents=True, exist_ok=True)
    save_model(student, args.out / "final_model")
    print(f"saved {args.out / 'final_model.zip'}")

    # 3. the decentralised users on held-out episodes, next to the scripted policies (and the teacher)
    if queueing:
        if args.seeds is not None:
            cfg = dataclasses.replace(cfg, final_eval_seeds=args.seeds)
        return final_comparison(student, cfg, args.out, f"distilled from {args.teacher}", name=NAME)
    agents = baseline_agents()
    agents["teacher"] = lambda e: _agent(teacher, "teacher", e)
    agents[NAME] = lambda e: _agent(student, NAME, e)
    seeds = args.seeds or 100
    results = evaluate_agents(lambda: gym.make(cfg.env_id, **cfg.env_kwargs), agents, held_out_seeds(seeds),
                              progress=True)
    print_table(results, f"{cfg.env_id} {cfg.env_kwargs}, {seeds} held-out episodes")
    print(standing(results, NAME))
    return results


def _agent(model, name: str, env):
    from agents.agent import ModelAgent

    return ModelAgent(model, name, env=env)


if __name__ == "__main__":
    run_main(main)
