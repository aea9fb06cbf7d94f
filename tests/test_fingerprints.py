"""Behaviour fingerprints: fixed-seed trajectories of every env id, the vector twin and the
PettingZoo env, hashed bit for bit and compared with the hashes in ``tests/data/fingerprints.json``.

A refactor of the core (physics, kernels, layouts) must leave these unchanged. When a change is
*meant* to alter behaviour, re-record with ``python tests/test_fingerprints.py --record`` and say
why in the commit message.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import pytest

import mec_env
from mec_env.registration import ENV_IDS

STORE = Path(__file__).resolve().parent / "data" / "fingerprints.json"
STEPS = 40
SEED = 12345


class Hasher:
    """sha256 over the exact bytes of every value an episode produces."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def add(self, value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                if _is_wall_clock(str(key)):
                    continue
                self.h.update(str(key).encode())
                self.add(value[key])
        elif isinstance(value, (list, tuple)):
            for v in value:
                self.add(v)
        elif isinstance(value, (str, bytes)):
            self.h.update(value.encode() if isinstance(value, str) else value)
        elif value is None:
            self.h.update(b"None")
        else:
            a = np.asarray(value)
            if a.dtype == object:
                self.add(a.tolist())
                return
            self.h.update(str(a.dtype).encode() + str(a.shape).encode())
            self.h.update(np.ascontiguousarray(a).tobytes())

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _is_wall_clock(key: str) -> bool:
    # decision times measured on the host vary run to run; they are not behaviour
    return any(part in key for part in ("wall", "runtime", "decision_time", "elapsed"))


def single_env(env_id: str, kwargs: dict[str, Any]) -> str:
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(SEED)
    h = Hasher()
    obs, info = env.reset(seed=SEED)
    h.add(obs), h.add(info)
    for _ in range(STEPS):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        h.add(obs), h.add(float(reward)), h.add([terminated, truncated]), h.add(info)
        if terminated or truncated:
            obs, info = env.reset()
            h.add(obs), h.add(info)
    env.close()
    return h.hexdigest()


def vector_env(env_id: str, kwargs: dict[str, Any]) -> str:
    env = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point", **kwargs)
    env.action_space.seed(SEED)
    h = Hasher()
    obs, info = env.reset(seed=SEED)
    h.add(obs), h.add(info)
    for _ in range(STEPS):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        h.add(obs), h.add(reward), h.add(terminated), h.add(truncated), h.add(info)
    env.close()
    return h.hexdigest()


def pettingzoo_env(env_id: str, kwargs: dict[str, Any]) -> str:
    from mec_env.multiagent import parallel_env

    env = parallel_env(env_id, **kwargs)
    h = Hasher()
    obs, info = env.reset(seed=SEED)
    h.add(obs), h.add(info), h.add(env.state())
    rng = np.random.default_rng(SEED)
    for _ in range(STEPS):
        if not env.agents:
            obs, info = env.reset()
            h.add(obs), h.add(info)
        actions = {a: int(rng.integers(env.action_space(a).n)) for a in env.agents}
        obs, rewards, terms, truncs, info = env.step(actions)
        h.add(obs), h.add(rewards), h.add(terms), h.add(truncs), h.add(info), h.add(env.state())
    env.close()
    return h.hexdigest()


def cases() -> dict[str, tuple[Callable[[str, dict], str], str, dict[str, Any]]]:
    out: dict[str, tuple[Callable[[str, dict], str], str, dict[str, Any]]] = {}
    for env_id in ENV_IDS:
        out[env_id] = (single_env, env_id, {})
    # non-default paths of the core: mobility, flat observations, the numpy step, slot timing
    out["MECOffload-v0 mobility"] = (single_env, "MECOffload-v0", {"mobility_speed_mps": 1.5})
    out["MECOffload-v0 flat"] = (single_env, "MECOffload-v0", {"flat_obs": True})
    out["MECOffload-v0 umi"] = (single_env, "MECOffload-v0", {"path_loss": "3gpp_umi"})
    out["MECOffload-v0 paper interference"] = (single_env, "MECOffload-v0", {"interference": "paper"})
    out["MECOffloadSeq-v0 no interference"] = (single_env, "MECOffloadSeq-v0", {"interference": "none"})
    out["MECOffloadQueue-v0 umi"] = (single_env, "MECOffloadQueue-v0", {"path_loss": "3gpp_umi"})
    out["MECOffloadQueue-v0 flat"] = (single_env, "MECOffloadQueue-v0", {"flat_obs": True})
    out["MECSpecDecode-v0 slot"] = (single_env, "MECSpecDecode-v0", {"timing": "slot"})
    out["MECSpecDecode-v0 flat"] = (single_env, "MECSpecDecode-v0", {"flat_obs": True})
    out["vector MECOffload-v0"] = (vector_env, "MECOffload-v0", {})
    out["vector MECOffload-v0 mobility"] = (vector_env, "MECOffload-v0", {"mobility_speed_mps": 1.5})
    out["pettingzoo MECOffload-v0"] = (pettingzoo_env, "MECOffload-v0", {"n_users": 10})
    out["pettingzoo MECOffloadQueue-v0"] = (pettingzoo_env, "MECOffloadQueue-v0", {"n_users": 60})
    return out


# the compiled kernels (the default) and the numpy reference (MECOFFLOAD_NUMBA=0) round differently
PATHS = {"compiled": "1", "numpy": "0"}


def _params():
    stored = json.loads(STORE.read_text()) if STORE.exists() else {}
    return [pytest.param(path, name, stored.get(path, {}).get(name), id=f"{path}: {name}")
            for path in PATHS for name in cases()]


@pytest.mark.parametrize("path, name, expected", _params())
def test_trajectories_are_bit_identical_to_the_recorded_fingerprints(path, name, expected, monkeypatch):
    if name.startswith("pettingzoo"):
        pytest.importorskip("pettingzoo")
    monkeypatch.setenv("MECOFFLOAD_NUMBA", PATHS[path])
    fn, env_id, kwargs = cases()[name]
    assert expected is not None, f"no recorded fingerprint for {name!r}: run python {__file__} --record"
    assert fn(env_id, kwargs) == expected


def record_all() -> dict[str, dict[str, str]]:
    import os

    record = {}
    for path, flag in PATHS.items():
        os.environ["MECOFFLOAD_NUMBA"] = flag
        record[path] = {name: fn(env_id, kwargs) for name, (fn, env_id, kwargs) in cases().items()}
    return record


if __name__ == "__main__":
    if "--record" not in sys.argv:
        sys.exit(f"usage: python {sys.argv[0]} --record")
    record = record_all()
    STORE.parent.mkdir(parents=True, exist_ok=True)
    STORE.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(record)} fingerprints in {STORE} (mec_env {getattr(mec_env, '__version__', '?')})")


def test_fig3_rows_are_identical_to_the_recorded_ones_except_runtime(tmp_path):
    """``reproduce.py fig3 --runs 4``: every column but the measured runtime, as recorded."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, str(root / "train" / "reproduce.py"), "fig3", "--runs", "4", "--workers", "1",
                    "--out", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    rows = [",".join(line.split(",")[:14]) for line in (tmp_path / "fig3.csv").read_text().splitlines()]
    assert rows[0].split(",")[-1] == "violations_ci95"  # runtime_ms_* are the columns after these
    assert rows == (STORE.parent / "fig3_runs4.csv").read_text().splitlines()
