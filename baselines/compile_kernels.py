"""Compile every numba kernel ahead of use: ``python -m baselines.compile_kernels``.

numba compiles a kernel the first time it is called and caches the machine code beside its module, so on a fresh
checkout the first env step, GOA+LS call or queue step waits seconds for it (GOA+LS's search round alone takes
about 12 s on one core). This runs each kernel once on a small case, in two processes side by side, so that a later
process (a test worker, a sweep worker, a training) loads them from the cache. ``make test`` runs it first.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

# two groups of about the same compile time (the local search round about as long as the queue step and slots)
GROUPS = {
    "search": ("local search", "token env"),
    "envs": ("query envs", "queue env"),
}


def _local_search() -> None:
    from baselines.local_search import goa_local_search, iterated_local_search
    from baselines.reference import random_instances

    for problem in random_instances(2, seed=0, n_max=8, m_max=3):
        goa_local_search(problem)
        iterated_local_search(problem, 0, kicks=1)


def _env_steps(*env_ids: str) -> None:
    import gymnasium as gym

    import mec_env  # noqa: F401  (registers the ids)

    for env_id in env_ids:
        env = gym.make(env_id)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()


def _vector_env() -> None:
    import gymnasium as gym

    import mec_env  # noqa: F401

    # with the difference rewards: their leave-one-out kernel too (mec_env.credit)
    envs = gym.make_vec("MECOffload-v0", num_envs=2, vectorization_mode="vector_entry_point", difference_rewards=True)
    envs.reset(seed=0)
    envs.step(np.stack([envs.single_action_space.sample()] * 2))
    envs.close()


def _token_env() -> None:
    import gymnasium as gym

    import mec_env  # noqa: F401
    from baselines.token_policies import rule_factory

    env = gym.make("MECSpecDecode-v0")
    obs, _ = env.reset(seed=0)
    # the env's step, and the round evaluator GELATO prices its budgets with
    env.step(rule_factory("GELATO")(env).predict(obs)[0])
    env.close()


PARTS = {
    "local search": _local_search,
    "token env": _token_env,
    "query envs": lambda: (_env_steps("MECOffload-v0", "MECOffloadSeq-v0"), _vector_env()),
    "queue env": lambda: _env_steps("MECOffloadQueue-v0"),
}


def compile_group(name: str) -> None:
    """Run the parts of one group (:data:`GROUPS`) in this process."""
    for part in GROUPS[name]:
        PARTS[part]()


def main(argv: list[str] | None = None) -> int:
    """Both groups in two processes side by side (``--group NAME``: one group in this process)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--group"] and len(argv) == 2 and argv[1] in GROUPS:
        compile_group(argv[1])
        return 0
    if argv:
        sys.exit(f"usage: python -m baselines.compile_kernels [--group {{{','.join(GROUPS)}}}]")
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "baselines.compile_kernels", "--group", group])
             for group in GROUPS]
    failed = [group for group, proc in zip(GROUPS, procs) if proc.wait() != 0]
    if failed:
        print(f"compile_kernels: the {', '.join(failed)} group failed", file=sys.stderr)
        return 1
    print(f"compile_kernels: every kernel compiled and cached in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
