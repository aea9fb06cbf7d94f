"""The one place a Stable-Baselines3 PPO is built: :func:`build_ppo`.

    model = build_ppo(cfg, env, EquivariantPolicy, {"hidden": 64}, tensorboard_log="runs/ppo")

``train/ppo.py`` (query level), ``train/queue_ppo.py`` and ``train/spec_ppo.py`` choose their policy
(per-user, equivariant or SB3's MLP) and pass it here with their config; the config's PPO
hyperparameters (:data:`PPO_HYPERPARAMETERS`, fields of :class:`agents.training.PPOConfig`) and seed go
to SB3 unchanged, on the CPU (the policies are small: a GPU's transfers cost more than they save).
"""

from __future__ import annotations

from typing import Any, Mapping

PPO_HYPERPARAMETERS = ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range",
                       "ent_coef", "vf_coef", "max_grad_norm")


def build_ppo(cfg: Any, env: Any, policy: Any, policy_kwargs: Mapping[str, Any] | None = None,
              tensorboard_log: str | None = None, **hyperparameters: Any) -> Any:
    """A fresh SB3 PPO of ``policy`` (a policy class or SB3's name, e.g. ``"MlpPolicy"``) in ``env``.

    :param cfg: a config with :data:`PPO_HYPERPARAMETERS` and ``seed`` (a :class:`agents.training.PPOConfig`),
        or None for SB3's defaults and seed None.
    :param policy_kwargs: the policy's keyword arguments (its widths).
    :param hyperparameters: set instead of the config's (or SB3's) values, e.g. ``seed`` or ``learning_rate``.
    """
    from stable_baselines3 import PPO

    settings: dict[str, Any] = {} if cfg is None else {k: getattr(cfg, k) for k in PPO_HYPERPARAMETERS}
    settings["seed"] = None if cfg is None else cfg.seed
    settings.update(hyperparameters)
    return PPO(policy, env, policy_kwargs=dict(policy_kwargs or {}), tensorboard_log=tensorboard_log, device="cpu",
               verbose=0, **settings)


__all__ = ["PPO_HYPERPARAMETERS", "build_ppo"]
