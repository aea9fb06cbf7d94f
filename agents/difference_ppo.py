"""PPO with each user credited for its own part of the slot's reward: :class:`DifferencePPO`.

In ``MECOffload-v0`` one action assigns all N users and the reward is the slot's penalised objective,
a sum over users. Stable-Baselines3's PPO weights the log-probability of the whole assignment by that
one number: each user's gradient then carries the noise of the other N - 1 users' sampled choices. At
N = 120 with ``train/ppo.py``'s settings, 30,000 steps take SB3's PPO to -15.1 % against GOA and this one
to -16.6 % (two seeds each; GOA+LS -17.4 %); given 60,000 both reach -16.9 %. Here every user is an agent
of one shared policy (parameter sharing, as in MAPPO) with its own

* reward: its difference reward ``reward(a) - reward(a with user i local)`` (Wolpert and Tumer), which
  the environment computes with the one evaluator (``difference_rewards=True``, ``info["difference_rewards"]``).
  The subtracted term does not depend on user i's action, so the gradient of the slot's expected reward
  is unchanged; what goes is the other users' noise;
* value: the policy's per-user head (:meth:`agents.policies.EquivariantPolicy.evaluate_user_actions`);
* clipped ratio: ``pi(a_i | s) / pi_old(a_i | s)`` per user, instead of the product over 120 users.

A difference reward measures a decision's effect on its own slot only, so ``gamma`` must be 0 (slots of
the paper scenario are i.i.d.: an assignment does not shape later slots). Rollouts are SB3's; only the
update differs (the policy's forward keeps each user's log-probability and value of a step, so the update
does not run the policy over the rollout again). A model saved by it is an ordinary SB3 ``PPO`` zip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from mec_env.errors import ConfigError

CREDIT_KEY = "difference_rewards"  # the environments' info entry, (N,) per step


class DifferencePPO(PPO):
    """SB3's :class:`~stable_baselines3.PPO` whose update credits each user with its own difference reward.

    Needs a policy with ``evaluate_user_actions`` (:class:`agents.policies.EquivariantPolicy`) and training
    environments made with ``difference_rewards=True``. Takes PPO's arguments; ``gamma`` must be 0.
    """

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.gamma != 0.0:
            raise ConfigError("gamma", self.gamma, "0 with credit 'difference': a difference reward credits a "
                              "decision with its effect on its own slot only")
        if not hasattr(self.policy, "evaluate_user_actions"):
            raise ConfigError("policy", type(self.policy).__name__, "a per-user policy (the equivariant one) with "
                              "credit 'difference'")
        shape = (self.n_steps, self.n_envs, int(np.prod(self.action_space.shape)))
        # per user and rollout step: the difference reward, and the log-probability and value of the policy
        # that acted (its forward keeps them in rollout_user_stats)
        self.user_rewards, self.user_log_probs, self.user_values = (np.zeros(shape, dtype=np.float32)
                                                                   for _ in range(3))

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        # SB3's collect_rollouts calls this after each env step, just before the step enters the rollout buffer
        # at rollout_buffer.pos: the step's per-user figures go to the same row
        super()._update_info_buffer(infos, dones)
        row = self.rollout_buffer.pos
        log_prob, values = self.policy.rollout_user_stats
        self.user_log_probs[row], self.user_values[row] = log_prob.numpy(), values.numpy()
        for k, info in enumerate(infos):
            if CREDIT_KEY not in info:
                raise ConfigError("env_kwargs.difference_rewards", False, f"true for credit 'difference' (the "
                                  f"training environments report no info['{CREDIT_KEY}'])")
            self.user_rewards[row, k] = info[CREDIT_KEY]
            # gamma is 0: SB3 would bootstrap a truncated episode with gamma x V(final observation), one forward
            # pass per env at every episode end, for a term that is 0
            info.pop("terminal_observation", None)

    def train(self) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        buffer = self.rollout_buffer
        obs = th.as_tensor(buffer.observations.reshape(-1, *self.observation_space.shape), device=self.device)
        actions = th.as_tensor(buffer.actions.reshape(len(obs), -1), device=self.device).long()
        rewards, old_log_prob, old_values = (th.as_tensor(x.reshape(len(obs), -1), device=self.device)
                                             for x in (self.user_rewards, self.user_log_probs, self.user_values))
        advantages_all = rewards - old_values  # gamma = 0: a slot's return is its reward

        pg_losses, value_losses, entropy_losses, clip_fractions, approx_kls = [], [], [], [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            for idx in th.randperm(len(obs), device=self.device).split(self.batch_size):
                log_prob, entropy, values = self.policy.evaluate_user_actions(obs[idx], actions[idx])
                advantages = advantages_all[idx]
                if self.normalize_advantage and advantages.numel() > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                log_ratio = log_prob - old_log_prob[idx]
                ratio = th.exp(log_ratio)
                policy_loss = -th.min(advantages * ratio,
                                      advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)).mean()
                value_loss = F.mse_loss(values, rewards[idx])
                entropy_loss = -entropy.sum(dim=-1).mean()  # the joint policy's entropy, as SB3's PPO
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                with th.no_grad():  # the joint policy's KL (a sum over users), comparable with SB3's PPO's
                    approx_kl = ((ratio - 1) - log_ratio).sum(dim=-1).mean().item()
                pg_losses.append(policy_loss.item())
                value_losses.append(value_loss.item())
                entropy_losses.append(entropy_loss.item())
                clip_fractions.append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())
                approx_kls.append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    break
                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kls))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance",
                           explained_variance(old_values.flatten().numpy(), rewards.flatten().numpy()))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)


__all__ = ["CREDIT_KEY", "DifferencePPO"]
