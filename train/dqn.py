"""Train DQN on MECOffloadSeq-v0 (one user per step) and compare it with GOA, GOA+LS and Min delay.

    python train/dqn.py                                  # configs/train/dqn.yaml: N = 120, about 3 min
    python train/dqn.py --set total_timesteps=100000 env_kwargs.n_users=40
    WANDB_MODE=offline python train/dqn.py --set wandb=true

An episode is one slot of N users; with gamma = 1 its return is the improvement of the
penalised objective over all-local. Logs and outputs as ``train/ppo.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env

from agents.checkpoint import open_run
from agents.cli import check_run_config, run_main, script_parser
from agents.training import DQNConfig, load_config, train_and_finish


def main(argv: list[str] | None = None) -> DQN:
    ap = script_parser(__doc__)
    ap.add_argument("--config", default="dqn", help="YAML under configs/train or a path")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)
    cfg = load_config(DQNConfig, args.config, args.set)
    check_run_config(cfg)  # run_dir writable, W&B credentials: before any long work
    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    # environments seeded `seed` + k; the run directory's checkpoint if it has one (resume), else a new model
    def make_env(seed: int):
        return make_vec_env(cfg.env_id, n_envs=cfg.n_envs, seed=seed, env_kwargs=cfg.env_kwargs)

    def new_model(env) -> DQN:
        return DQN("MlpPolicy", env, learning_rate=cfg.learning_rate, buffer_size=cfg.buffer_size,
                   learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, gamma=cfg.gamma,
                   train_freq=cfg.train_freq, gradient_steps=cfg.gradient_steps,
                   target_update_interval=cfg.target_update_interval, exploration_fraction=cfg.exploration_fraction,
                   exploration_final_eps=cfg.exploration_final_eps, policy_kwargs={"net_arch": list(cfg.net_arch)},
                   tensorboard_log=str(run_dir), seed=cfg.seed, device="cpu", verbose=0)

    model, state = open_run(DQN, cfg, make_env, new_model)  # replay buffer included when resuming

    train_and_finish(model, state, cfg, "DQN")
    return model


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
