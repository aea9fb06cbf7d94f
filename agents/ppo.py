"""The one place a Stable-Baselines3 PPO is built: :func:`build_ppo`; for ``train/ppo.py``'s config, its model
(:func:`ppo_model`) and training environments (:func:`training_envs`).

    model = build_ppo(cfg, env, EquivariantPolicy, {"hidden": 64}, tensorboard_log="runs/ppo")
    model = ppo_model(cfg, training_envs(cfg, seed=0))

``train/ppo.py`` (query level), ``train/queue_ppo.py`` and ``train/spec_ppo.py`` choose their policy
(per-user, equivariant or SB3's MLP) and pass it here with their config; the config's PPO
hyperparameters (:data:`PPO_HYPERPARAMETERS`, fields of :class:`agents.training.PPOConfig`) and seed go
to SB3 unchanged (``anneal_lr`` as SB3's linear schedule), on the CPU (the policies are small: a GPU's
transfers cost more than they save).
"""

from __future__ import annotations

from typing import Any, Mapping

PPO_HYPERPARAMETERS = ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range",
                       "ent_coef", "vf_coef", "max_grad_norm")


def build_ppo(cfg: Any, env: Any, policy: Any, policy_kwargs: Mapping[str, Any] | None = None,
              tensorboard_log: str | None = None, algorithm: type | None = None, **hyperparameters: Any) -> Any:
    """A fresh SB3 PPO of ``policy`` (a policy class or SB3's name, e.g. ``"MlpPolicy"``) in ``env``.

    :param cfg: a config with :data:`PPO_HYPERPARAMETERS` and ``seed`` (a :class:`agents.training.PPOConfig`),
        or None for SB3's defaults and seed None.
    :param policy_kwargs: the policy's keyword arguments (its widths).
    :param algorithm: SB3's PPO (None) or a subclass (:class:`agents.difference_ppo.DifferencePPO`).
    :param hyperparameters: set instead of the config's (or SB3's) values, e.g. ``seed`` or ``learning_rate``.
    """
    from stable_baselines3 import PPO

    settings: dict[str, Any] = {} if cfg is None else {k: getattr(cfg, k) for k in PPO_HYPERPARAMETERS}
    if getattr(cfg, "anneal_lr", False):  # SB3's progress runs from 1 to 0 over the run's total_timesteps
        from stable_baselines3.common.utils import LinearSchedule

        settings["learning_rate"] = LinearSchedule(cfg.learning_rate, 0.0, 1.0)
    settings["seed"] = None if cfg is None else cfg.seed
    settings.update(hyperparameters)
    return (algorithm or PPO)(policy, env, policy_kwargs=dict(policy_kwargs or {}), tensorboard_log=tensorboard_log,
                              device="cpu", verbose=0, **settings)


def training_envs(cfg: Any, seed: int) -> Any:
    """The run's ``n_envs`` training environments as one SB3 VecEnv, copy k seeded ``seed + k``: the batched twin
    in this process (``batched_env``, gymnasium's ``vector_entry_point``) or SB3's DummyVecEnv of single envs."""
    from stable_baselines3.common.env_util import make_vec_env

    from agents.vector import SB3VecEnv

    env_kwargs = cfg.training_env_kwargs()
    if cfg.batched_env:
        import gymnasium as gym

        env = SB3VecEnv(gym.make_vec(cfg.env_id, num_envs=cfg.n_envs, vectorization_mode="vector_entry_point",
                                     **env_kwargs))
        env.seed(seed)
        return env
    return make_vec_env(cfg.env_id, n_envs=cfg.n_envs, seed=seed, env_kwargs=env_kwargs)


def ppo_model(cfg: Any, env: Any, tensorboard_log: str | None = None,
              equivariant: Mapping[str, Any] | None = None) -> Any:
    """A fresh PPO of ``cfg`` (:func:`build_ppo`) for the query level: the permutation-equivariant
    per-user policy of width ``hidden`` (or of the ``equivariant`` keyword arguments, e.g. a warm start's
    ``hidden`` and ``rounds``), decentralised with ``policy=decentralised``, or SB3's MLP."""
    from agents.policies import EquivariantPolicy

    if equivariant is not None or cfg.policy in ("equivariant", "decentralised"):
        policy, policy_kwargs = EquivariantPolicy, dict(equivariant or {"hidden": cfg.hidden})
        policy_kwargs["decentralised"] = cfg.policy == "decentralised"  # a warm start takes the run's execution
    else:
        policy, policy_kwargs = "MultiInputPolicy" if not cfg.env_kwargs.get("flat_obs") else "MlpPolicy", {}
    return build_ppo(cfg, env, policy, policy_kwargs, tensorboard_log=tensorboard_log, algorithm=cfg.algorithm)


__all__ = ["PPO_HYPERPARAMETERS", "build_ppo", "ppo_model", "training_envs"]
