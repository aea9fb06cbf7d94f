"""Train PPO on MECOffload-v0 from scratch and compare it with GOA, GOA+LS and Min delay on the same slots.

    python train/ppo.py                                  # configs/train/ppo.yaml: N = 120, about 2 min
    python train/ppo.py --set total_timesteps=300000     # longer
    python train/ppo.py --set credit=team                # SB3's PPO on the slot's reward alone
    python train/ppo.py --set init_model=runs/imitate/final_model.zip learning_rate=1e-5   # fine-tune a clone
    WANDB_MODE=offline python train/ppo.py --set wandb=true

By default every user is credited with its own difference reward (``credit=difference``,
:mod:`agents.difference_ppo`); the training envs report it, the evaluation envs do not need to.

Logs (TensorBoard, in ``{run_dir}``): ``rollout/*`` slot metrics while training,
``eval/{ppo,goa,goa_ls,min_delay,local_all}/{j_vs_goa_pct,mean_delay_ms,accuracy,...}`` and
``eval/normalised_score`` at every evaluation. Saves ``best_model.zip`` and ``final_model.zip``;
prints the final comparison table and the policy's rank in it. Checkpoints (model, optimizer, step counter) go to
``{run_dir}/checkpoints`` every ``checkpoint_freq`` steps and on Ctrl-C; rerunning the same
command resumes there (``--set resume=false`` starts afresh).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3 import PPO

from agents.checkpoint import open_run
from agents.model_zip import load_model
from mec_env.errors import ConfigError
from agents.cli import check_run_config, run_main, script_parser
from agents.policies import EquivariantPolicy, policy_kwargs
from agents.ppo import ppo_model, training_envs
from agents.training import PPOConfig, load_config, train_and_finish


def main(argv: list[str] | None = None) -> PPO:
    ap = script_parser(__doc__)
    ap.add_argument("--config", default="ppo", help="YAML under configs/train or a path")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)
    cfg = load_config(PPOConfig, args.config, args.set)
    check_run_config(cfg)  # run_dir writable, init_model there, W&B credentials: before any long work
    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    # 1. environments: n_envs copies for rollouts, seeded `seed` + k (one batched env with batched_env;
    #    with credit=difference each reports every user's difference reward, info["difference_rewards"])
    def make_env(seed: int):
        return training_envs(cfg, seed)

    # 2. the model: the permutation-equivariant per-user policy, or SB3's MLP
    def new_model(env) -> PPO:
        start = None
        if cfg.init_model:  # a warm start (an imitation run's model): its architecture and weights
            start = load_model(cfg.init_model, algorithm="PPO", reference_env=make_env_for_spaces())
        warm = start is not None and isinstance(start.policy, EquivariantPolicy)  # keep its architecture
        model = ppo_model(cfg, env, tensorboard_log=str(run_dir),
                          equivariant=policy_kwargs(start.policy) if warm else None)
        if start is not None:
            try:
                model.policy.load_state_dict(start.policy.state_dict())
            except RuntimeError as err:  # another architecture: say which file and setting
                raise ConfigError("init_model", cfg.init_model, f"a model of this run's policy ({err})") from None
        return model

    def make_env_for_spaces():
        return gym.make(cfg.env_id, **cfg.env_kwargs)

    # the run directory's checkpoint if it has one (resume), else a new model
    model, state = open_run(cfg.algorithm, cfg, make_env, new_model)

    # 3. train, logging slot metrics and comparisons with the baselines; checkpoints every
    #    checkpoint_freq steps and on Ctrl-C / SIGTERM (rerun the same command to resume)
    train_and_finish(model, state, cfg, "PPO")
    return model


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
