"""A thin Stable-Baselines3 ``VecEnv`` over a Gymnasium vector environment with same-step autoreset.

    import gymnasium as gym, mec_env
    from agents.vector import SB3VecEnv
    venv = SB3VecEnv(gym.make_vec("MECOffload-v0", num_envs=64, vectorization_mode="vector_entry_point"))
    build_ppo(None, venv, "MultiInputPolicy").learn(100_000)   # agents.ppo.build_ppo

SB3 expects what its ``DummyVecEnv`` gives: the reset observation on the step that ends an
episode, the last observation in ``infos[i]["terminal_observation"]`` and
``infos[i]["TimeLimit.truncated"]`` for truncations. Gymnasium's ``SAME_STEP`` autoreset mode
(the batched ``MECOffload-v0``) carries the same facts as ``info["final_obs"]`` and the
truncation flags; this adapter only re-packs them.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn


def _row(tree: Any, i: int) -> Any:
    return {k: _row(v, i) for k, v in tree.items()} if isinstance(tree, dict) else tree[i]


class SB3VecEnv(VecEnv):
    """Present a Gymnasium ``VectorEnv`` (``autoreset_mode = SAME_STEP``) as an SB3 ``VecEnv``.

    :param env: the vector environment; its per-step ``info`` arrays become per-copy dicts.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        mode = env.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(f"SB3VecEnv needs a vector env with autoreset_mode SAME_STEP (as SB3 resets); got {mode}")
        self.env = env
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0] if self._seeds else None  # one generator for the batch: the first seed fixes it
        obs, _ = self.env.reset(seed=seed, options=self._options[0] or None)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.env.step(self._actions)
        dones = terminated | truncated
        final = info.get("final_obs")
        per_step = {k: v for k, v in info.items() if k not in ("final_obs", "_final_obs") and not k.startswith("_")}
        infos: list[dict] = []
        for i in range(self.num_envs):
            d = {k: _row(v, i) for k, v in per_step.items()}
            if dones[i]:
                d["terminal_observation"] = _row(final, i)
                d["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            infos.append(d)
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call the batched env's method once; a result with a leading batch axis is split per copy.

        So ``env_method("action_masks")`` (what MaskablePPO calls) gives one (N x (M + 1),) mask per copy.
        """
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        if isinstance(result, np.ndarray) and result.ndim >= 1 and result.shape[0] == self.num_envs:
            return [result[i] for i in self._get_indices(indices)]
        return [result for _ in self._get_indices(indices)]

    def has_attr(self, attr_name: str) -> bool:
        return hasattr(self.env, attr_name)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.env.render() if self.env.render_mode == "rgb_array" else None
        return list(frames) if frames is not None else [None] * self.num_envs

