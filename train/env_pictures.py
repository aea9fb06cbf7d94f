"""Draw every environment's picture (its ``render_mode="rgb_array"`` frame) for the documentation's env pages.

    python train/env_pictures.py                      # writes docs/figures/env_*.png
    python train/env_pictures.py --out /tmp/pictures  # elsewhere

Each environment is reset with seed 0 and played for a few steps by a scripted strategy of its own (GOA in the
slot environments and the PettingZoo env, queue-aware GOA in the queueing env, U-HLM in the token-level env), so
the picture shows decisions a reader can relate to the text; then its frame is written as a PNG, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agents.cli import run_main, script_parser
from mec_env.io import atomic_write


@dataclass(frozen=True)
class Picture:
    """One environment's picture: where it goes, the env and what plays it before the frame is taken."""

    file: str
    env_id: str
    kwargs: dict[str, Any]
    steps: int
    act: Callable[[Any], Any]  # env -> action of the current step


def goa_action(env: Any) -> np.ndarray:
    from baselines import goa

    return goa(env.unwrapped.problem)


def seq_goa_action(env: Any) -> int:
    """The current user's decision in GOA's assignment of the slot (what ScriptedAgent plays)."""
    from agents.agent import ScriptedAgent

    if not hasattr(env, "_goa_agent"):
        env._goa_agent = ScriptedAgent(env, "GOA")
    return int(env._goa_agent.predict(None)[0])


def vector_goa_action(venv: Any) -> np.ndarray:
    from baselines import goa

    problem = venv.unwrapped.problem
    return np.stack([goa(problem.instance(b)) for b in range(venv.num_envs)])


def queue_goa_action(env: Any) -> np.ndarray:
    from baselines.queue_policies import queue_goa

    return queue_goa(env.unwrapped)


def uhlm_action(env: Any) -> np.ndarray:
    from baselines.token_policies import SpecRuleAgent

    if not hasattr(env, "_uhlm_agent"):
        env._uhlm_agent = SpecRuleAgent(env, "U-HLM")
    return env._uhlm_agent.predict(None)[0]


PICTURES = (
    Picture("env_mecoffload.png", "MECOffload-v0", {"n_users": 120}, 1, goa_action),
    Picture("env_mecoffload_seq.png", "MECOffloadSeq-v0", {"n_users": 40}, 25, seq_goa_action),
    Picture("env_mecoffload_vector.png", "vector:MECOffload-v0", {"n_users": 40, "num_envs": 2}, 1,
            vector_goa_action),
    Picture("env_mecoffload_queue.png", "MECOffloadQueue-v0", {}, 30, queue_goa_action),
    Picture("env_mecspecdecode.png", "MECSpecDecode-v0", {}, 6, uhlm_action),
    Picture("env_multiagent.png", "pettingzoo:MECOffload-v0", {"n_users": 40}, 1, goa_action),
)


def make_env(picture: Picture) -> Any:
    import gymnasium as gym

    import mec_env  # noqa: F401  (registers the ids)

    kind, _, env_id = picture.env_id.rpartition(":")
    if kind == "vector":
        kwargs = dict(picture.kwargs)
        return gym.make_vec(env_id, num_envs=kwargs.pop("num_envs"), vectorization_mode="vector_entry_point",
                            render_mode="rgb_array", **kwargs)
    if kind == "pettingzoo":
        from mec_env.multiagent import parallel_env

        return parallel_env(env_id, render_mode="rgb_array", **picture.kwargs)
    return gym.make(env_id, render_mode="rgb_array", **picture.kwargs)


def frame(picture: Picture) -> np.ndarray:
    """The environment's frame after ``picture.steps`` steps of its strategy from ``reset(seed=0)``."""
    env = make_env(picture)
    try:
        env.reset(seed=0)
        for _ in range(picture.steps):
            action = picture.act(env.inner if picture.env_id.startswith("pettingzoo:") else env)
            if picture.env_id.startswith("pettingzoo:"):
                action = dict(zip(env.agents, np.asarray(action).tolist()))
            env.step(action)
        image = env.render()
        return np.concatenate(image, axis=1) if isinstance(image, tuple) else image  # the batch side by side
    finally:
        env.close()


def main(argv: list[str] | None = None) -> list[Path]:
    ap = script_parser(__doc__)
    ap.add_argument("--out", type=Path, default=Path("docs/figures"), help="folder of the PNGs (default: %(default)s)")
    ap.add_argument("--only", nargs="+", default=None, metavar="FILE",
                    help="draw only these pictures (file names, e.g. env_mecoffload.png)")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import image as mpimg

    chosen = [p for p in PICTURES if args.only is None or p.file in args.only]
    unknown = sorted(set(args.only or ()) - {p.file for p in PICTURES})
    if unknown:
        ap.error(f"--only: unknown picture(s) {', '.join(unknown)}; one of {', '.join(p.file for p in PICTURES)}")
    written = []
    for picture in chosen:
        rgb = frame(picture)
        written.append(atomic_write(args.out / picture.file, lambda tmp, rgb=rgb: mpimg.imsave(tmp, rgb,
                                                                                               format="png")))
        print(f"{picture.env_id}: {written[-1]}")
    return written


if __name__ == "__main__":
    run_main(main)
