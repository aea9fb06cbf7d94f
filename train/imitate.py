"""Clone GOA+LS into the equivariant policy at N = 120: a learned policy that beats GOA with zero violations.

    python train/imitate.py                                    # configs/train/imitate.yaml
    python train/imitate.py --set epochs=3 train_episodes=40 run_dir=runs/imitate_small
    python train/evaluate.py --set n_users=120 --seeds 100 --agents GOA GOA+LS "Min delay" \
        policy=runs/imitate/final_model.zip

The expert's slots are drawn in worker processes (``workers``) and kept in ``{run_dir}/train.npz``;
every epoch is a checkpoint in ``{run_dir}/checkpoints`` (rerunning the command resumes; ``--set
resume=false`` starts afresh). Writes ``final_model.zip`` (a PPO zip with
:class:`agents.policies.EquivariantPolicy`, which masks local for alpha > tau users), the
learning curve (``learning_curve.csv``, ``learning_curve.png``) and TensorBoard scalars under
``{run_dir}/imitation``.
"""

from __future__ import annotations

from agents.imitation import ImitationConfig, run_imitation
from mec_env.config import build_config, parse_key_values, read_config_file
from agents.cli import check_run_config, run_main, script_parser
from mec_env.errors import ConfigError


def load_imitation_config(path: str | None, overrides: list[str]) -> ImitationConfig:
    """The YAML (a path or a name under the shipped ``configs/train``) with ``key=value`` overrides applied."""
    import gymnasium as gym

    data: dict = {}
    if path is not None:
        data, where = read_config_file(path, "train")
        if not isinstance(data, dict):
            raise ConfigError(where, type(data).__name__, "a YAML mapping")
    for key, value in parse_key_values(overrides).items():
        if key.startswith("env_kwargs."):
            data["env_kwargs"] = {**data.get("env_kwargs", ImitationConfig().env_kwargs), key.split(".", 1)[1]: value}
        else:
            data[key] = value
    cfg = build_config(ImitationConfig, data)
    gym.make(cfg.env_id, **{**cfg.env_kwargs, "flat_obs": True}).close()  # the env checks its own arguments
    return cfg


def main(argv: list[str] | None = None):
    ap = script_parser(__doc__)
    ap.add_argument("--config", default="imitate", help="YAML under configs/train or a path")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)
    cfg = load_imitation_config(args.config, args.set)
    check_run_config(cfg)  # run_dir writable: before the expert's slots are drawn
    return run_imitation(cfg)


if __name__ == "__main__":
    run_main(main)  # bad input: one line on stderr, exit status 2
