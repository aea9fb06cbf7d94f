"""Model zips are loaded without running code from them (issue 12, finding 3), and a model that
cannot act in an environment says why instead of a raw traceback (finding 10)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import A2C, DQN, PPO

import mec_env  # noqa: F401
from agents.safe_load import restricted_loads
from agents.scripted import load_model


class Payload:
    """Unpickling this runs ``os.system``: what a crafted zip would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tamper(src: Path, dst: Path, key: str, payload: object) -> None:
    """A copy of a real model zip whose ``data[key]`` is replaced by a pickled payload."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            content = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(content)
                data[key] = {":type:": "<class 'object'>",
                             ":serialized:": base64.b64encode(pickle.dumps(payload)).decode()}
                content = json.dumps(data).encode()
            zout.writestr(item, content)


@pytest.mark.parametrize("key", ["observation_space", "policy_class", "lr_schedule", "_last_obs"])
def test_a_crafted_zip_runs_no_code_when_loaded(tmp_path, key):
    env = gym.make("MECOffload-v0", scenario="small", flat_obs=True)
    PPO("MlpPolicy", env, n_steps=16, batch_size=16, device="cpu").save(tmp_path / "real.zip")
    marker = tmp_path / "pwned"
    tamper(tmp_path / "real.zip", tmp_path / "evil.zip", key, Payload(marker))
    try:
        load_model(tmp_path / "evil.zip")  # may load (a schedule is replaced by a constant) or refuse
    except ValueError as err:
        assert "not on the allowlist" in str(err) and key in str(err)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        restricted_loads(pickle.dumps(Payload(marker)))


@pytest.mark.parametrize("algo, env_id, kwargs", [(PPO, "MECOffload-v0", {"flat_obs": True}),
                                                  (A2C, "MECOffload-v0", {}),
                                                  (DQN, "MECOffloadSeq-v0", {})])
def test_real_models_load_and_act_as_before(tmp_path, algo, env_id, kwargs):
    env = gym.make(env_id, scenario="small", **kwargs)
    policy = "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"
    small = {"learning_starts": 0} if algo is DQN else {"n_steps": 16, **({"batch_size": 16} if algo is PPO else {})}
    model = algo(policy, env, device="cpu", seed=0, **small)
    model.learn(32)
    model.save(tmp_path / "m.zip")
    loaded = load_model(tmp_path / "m.zip")
    obs, _ = env.reset(seed=3)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert type(loaded) is algo


def test_a_zip_without_data_is_a_clear_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as z:
        z.writestr("policy.pth", b"")
    with pytest.raises(ValueError, match="not a Stable-Baselines3 model zip"):
        load_model(tmp_path / "empty.zip")


def test_the_checkpoint_unpickler_refuses_dotted_names_and_non_classes(tmp_path):
    marker = tmp_path / "pwned"
    # protocol 4 resolves "a.b.c" names attribute by attribute: an allowed module family must not reach os.system
    dotted = (b"\x80\x04\x8c\x15torch.optim.optimizer\x94\x8c\x1dtorch.serialization.os.system\x94\x93\x94"
              + b"\x8c" + bytes([len(f"touch {marker}")]) + f"touch {marker}".encode() + b"\x94\x85\x94R\x94.")
    with pytest.raises(pickle.UnpicklingError, match="allowlist"):
        restricted_loads(dotted)
    # a plain name of an allowed family that is not a class of that family (a function) is refused too
    func = b"\x80\x04\x8c\x10gymnasium.spaces\x94\x8c\x07flatten\x94\x93\x94."
    with pytest.raises(pickle.UnpicklingError, match="not a class"):
        restricted_loads(func)
    assert not marker.exists()
