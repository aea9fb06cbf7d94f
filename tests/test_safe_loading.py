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

pytest.importorskip("torch")  # the train extra
pytest.importorskip("stable_baselines3")

from stable_baselines3 import A2C, DQN, PPO  # noqa: E402

import mec_env  # noqa: E402, F401
from agents.model_zip import load_model  # noqa: E402
from agents.restricted_pickle import PLAIN_DATA, restricted_loads  # noqa: E402


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


@pytest.fixture(scope="module")
def real_zip(tmp_path_factory) -> Path:
    """A real PPO zip (untrained: the entries SB3 pickles are there all the same), saved once."""
    path = tmp_path_factory.mktemp("model") / "real.zip"
    env = gym.make("MECOffload-v0", scenario="small", flat_obs=True)
    PPO("MlpPolicy", env, n_steps=16, batch_size=16, device="cpu").save(path)
    return path


@pytest.mark.parametrize("key", ["observation_space", "policy_class", "lr_schedule", "_last_obs"])
def test_a_crafted_zip_runs_no_code_when_loaded(real_zip, tmp_path, key):
    marker = tmp_path / "pwned"
    tamper(real_zip, tmp_path / "evil.zip", key, Payload(marker))
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
    # one rollout of 8 steps and one update: the zip then holds every entry SB3 writes after training
    small = {"learning_starts": 0, "buffer_size": 64} if algo is DQN else \
        {"n_steps": 8, **({"batch_size": 8, "n_epochs": 1} if algo is PPO else {})}
    model = algo(policy, env, device="cpu", seed=0, **small)
    model.learn(8)
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


def _global_call(module: str, name: str, arg: str | None = None) -> bytes:
    """A protocol-4 pickle of ``module.name`` (called with ``arg`` when given), as a crafted file would hold it."""
    def text(s: str) -> bytes:
        return b"\x8c" + bytes([len(s)]) + s.encode() + b"\x94"

    out = b"\x80\x04" + text(module) + text(name) + b"\x93\x94"
    return out + (text(arg) + b"\x85\x94R\x94" if arg is not None else b"") + b"."


def test_the_checkpoint_unpickler_refuses_dotted_names_and_non_classes(tmp_path):
    marker = tmp_path / "pwned"
    live = _global_call("posix", "system", f"touch {marker}")
    assert pickle.loads(live) == 0 and marker.exists()  # the payload is live
    marker.unlink()
    # protocol 4 resolves "a.b.c" names attribute by attribute: an allowed module family must not reach os.system
    dotted = _global_call("stable_baselines3.common.buffers", "th.serialization.os.system", f"touch {marker}")
    with pytest.raises(pickle.UnpicklingError, match="allowlist"):
        restricted_loads(dotted)
    # a plain name of an allowed family that is not a class of that family (a function) is refused too
    with pytest.raises(pickle.UnpicklingError, match="not a class"):
        restricted_loads(_global_call("numpy.dtypes", "_add_dtype_helper"))
    with pytest.raises(pickle.UnpicklingError, match="posix.system, which is not an array or plain data"):
        restricted_loads(live, PLAIN_DATA)  # RLlib's state files: arrays and containers only
    assert not marker.exists()
