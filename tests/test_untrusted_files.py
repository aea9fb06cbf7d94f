"""Files from elsewhere run no code when loaded (issue 12, finding 3), and the model-loading errors of
finding 10 (zips without ``data``, garbage, a model trained at another M) are clear.

Every payload below writes a marker file when it is unpickled. Each test first shows the payload is
live (the loader SB3 or torch would use without the fix runs it), then that the project's loader
does not: the marker never appears.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import random
import resource
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the train extra
pytest.importorskip("stable_baselines3")

from stable_baselines3 import A2C, DQN, PPO  # noqa: E402
from stable_baselines3.common.save_util import json_to_data  # noqa: E402

import mec_env  # noqa: E402, F401
from agents.policies import EquivariantPolicy, transfer_policy  # noqa: E402
from helpers import train_script  # noqa: E402
from agents import model_zip  # noqa: E402
from agents.model_zip import ModelLoadError, detect_algorithm, load_model  # noqa: E402
from helpers import OpensMarker, payload_pickle  # noqa: E402
from mec_env.errors import MECOffloadError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"scenario": "small", "flat_obs": True}  # N = 8 users, M = 2 edge servers


def payload(marker: Path) -> str:
    return base64.b64encode(payload_pickle(marker)).decode()


def serialized_keys(path: Path) -> list[str]:
    data = json.loads(zipfile.ZipFile(path).read("data"))
    return [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]


def rewrite(src: Path, dst: Path, data_edit=None, replace: dict[str, bytes | None] | None = None) -> Path:
    """A copy of the zip ``src`` with its JSON ``data`` edited in place and entries replaced (None: dropped)."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            content = zin.read(item.filename)
            if item.filename in replace:
                if replace[item.filename] is None:
                    continue
                content = replace[item.filename]
            elif item.filename == "data" and data_edit is not None:
                data = json.loads(content)
                data_edit(data)
                content = json.dumps(data).encode()
            zout.writestr(item, content)
    return dst


def poison(keys, marker: Path, keep_description: bool = True):
    """An edit of ``data``: each key's pickle becomes the payload (its plain description kept or not)."""

    def edit(data: dict) -> None:
        for key in keys:
            entry = data.get(key) if keep_description and isinstance(data.get(key), dict) else {}
            data[key] = {**entry, ":type:": entry.get(":type:", "<class 'object'>"), ":serialized:": payload(marker)}

    return edit


def assert_payload_is_live(marker: Path) -> None:
    """SB3's own reader of ``data`` (``cloudpickle``) runs the payload: the test is not vacuous."""
    json_to_data(json.dumps({"x": {":type:": "<class 'object'>", ":serialized:": payload(marker)}}))
    assert marker.exists()
    marker.unlink()


def same_predictions(a, b, env, n: int = 5, masks: bool = False) -> bool:
    for seed in range(n):
        obs, _ = env.reset(seed=seed)
        extra = {"action_masks": env.unwrapped.action_masks()} if masks else {}
        if not np.array_equal(a.predict(obs, deterministic=True, **extra)[0],
                              b.predict(obs, deterministic=True, **extra)[0]):
            return False
    return True


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Small trained models (so every pickled entry SB3 writes is there), saved once."""
    folder = tmp_path_factory.mktemp("models")
    env = gym.make("MECOffload-v0", **SMALL)
    seq = gym.make("MECOffloadSeq-v0", scenario="small")
    from stable_baselines3.common.utils import LinearSchedule

    models = {
        # a schedule, a value clip range and a pickled policy_kwargs (a class in it)
        "ppo": PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu",
                   learning_rate=LinearSchedule(1e-3, 1e-4, 1.0), clip_range_vf=0.3,
                   policy_kwargs={"activation_fn": torch.nn.ReLU, "net_arch": [16]}).learn(32),
        "dqn": DQN("MlpPolicy", seq, learning_starts=10, buffer_size=100, seed=0, device="cpu").learn(40),
    }
    for name, model in models.items():
        model.save(folder / f"{name}.zip")
    return folder, models, {"ppo": env, "dqn": seq}


# --- SB3 zips: nothing in them is unpickled ------------------------------------------------------

@pytest.mark.parametrize("name", ["ppo", "dqn"])
def test_a_payload_in_any_pickled_entry_is_never_run_and_the_model_still_loads(saved, tmp_path, name):
    folder, models, envs = saved
    marker = tmp_path / "pwned"
    assert_payload_is_live(marker)
    keys = serialized_keys(folder / f"{name}.zip")
    assert {"policy_class", "observation_space", "action_space", "lr_schedule"} <= set(keys)
    # one poisoned entry at a time, then all of them at once plus an entry SB3 does not know
    for poisoned in [[k] for k in keys] + [keys + ["an_unknown_entry"]]:
        evil = rewrite(folder / f"{name}.zip", tmp_path / "evil.zip", poison(poisoned, marker))
        model = load_model(evil)  # the plain descriptions next to the pickles are enough
        assert not marker.exists(), poisoned
        assert type(model) is type(models[name])
        assert same_predictions(model, models[name], envs[name]), poisoned


@pytest.mark.parametrize("name", ["ppo", "dqn"])
def test_a_payload_without_a_description_is_refused_or_ignored_but_never_run(saved, tmp_path, name):
    folder, models, envs = saved
    marker = tmp_path / "pwned"
    for key in serialized_keys(folder / f"{name}.zip") + ["policy_kwargs"]:
        evil = rewrite(folder / f"{name}.zip", tmp_path / "evil.zip", poison([key], marker, keep_description=False))
        try:
            model = load_model(evil)
        except ValueError as err:  # what cannot be rebuilt from plain data is refused, naming the entry
            assert isinstance(err, ModelLoadError) and f"'{key}'" in str(err) and "allowlist" in str(err), str(err)
            assert key in ("policy_class", "observation_space", "action_space", "policy_kwargs")
        else:
            assert same_predictions(model, models[name], envs[name]), key
        assert not marker.exists(), key
    # with the environment, the spaces are the environment's
    for key in ("observation_space", "action_space"):
        evil = rewrite(folder / f"{name}.zip", tmp_path / "evil.zip", poison([key], marker, keep_description=False))
        assert same_predictions(load_model(evil, env=envs[name]), models[name], envs[name])
        assert not marker.exists()


def test_the_evaluate_cli_runs_no_code_from_a_crafted_zip(saved, tmp_path):
    folder, _, _ = saved
    marker = tmp_path / "pwned"
    evil = rewrite(folder / "ppo.zip", tmp_path / "evil.zip", poison(serialized_keys(folder / "ppo.zip"), marker))
    results = train_script("evaluate").main(["--set", "scenario=small", "n_users=8", "--seeds", "1",
                                       "--out", str(tmp_path / "eval"), "--agents", f"evil={evil}"])
    assert not marker.exists()
    assert "evil" in {r.name for r in results}
    bad = rewrite(folder / "ppo.zip", tmp_path / "bad.zip", poison(["policy_class"], marker, keep_description=False))
    with pytest.raises(ModelLoadError, match="'policy_class' entry .* not on the allowlist"):
        train_script("evaluate").main(["--set", "scenario=small", "n_users=8", "--seeds", "1",
                                 "--out", str(tmp_path / "eval"), "--agents", f"bad={bad}"])
    assert not marker.exists()


def test_policy_classes_and_policy_kwargs_classes_come_from_an_allowlist(saved, tmp_path):
    folder, _, _ = saved
    marker = tmp_path / "pwned"

    def foreign_policy(data):
        data["policy_class"]["__module__"] = "mypackage.policies"
        data["policy_class"]["__init__"] = "<function EvilPolicy.__init__ at 0x7f0000000000>"
        data["policy_class"][":serialized:"] = payload(marker)

    with pytest.raises(ModelLoadError, match="'policy_class' entry \\(mypackage.policies.*EvilPolicy.*\\) is not on"):
        load_model(rewrite(folder / "ppo.zip", tmp_path / "evil.zip", foreign_policy))

    def foreign_kwarg(data):
        data["policy_kwargs"]["activation_fn"] = "<class 'subprocess.Popen'>"
        data["policy_kwargs"][":serialized:"] = payload(marker)

    with pytest.raises(ModelLoadError, match="policy_kwargs.*activation_fn.*subprocess.Popen.*not on the allowlist"):
        load_model(rewrite(folder / "ppo.zip", tmp_path / "evil.zip", foreign_kwarg))
    # a DQN zip asked to load as PPO: its policy is not one PPO ships
    with pytest.raises(ModelLoadError, match="not on the allowlist of policies PPO loads"):
        load_model(folder / "dqn.zip", algorithm="PPO")
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["policy.pth", "policy.optimizer.pth", "pytorch_variables.pth"])
def test_weights_are_read_weights_only(saved, tmp_path, entry):
    folder, _, _ = saved
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"weight": OpensMarker(marker)}, buf)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)  # a full unpickling runs it
    assert marker.exists()
    marker.unlink()
    evil = rewrite(folder / "ppo.zip", tmp_path / "evil.zip", replace={entry: buf.getvalue()})
    with pytest.raises(ModelLoadError, match="evil.zip: cannot load it as a PPO model"):
        load_model(evil)
    assert not marker.exists()


# --- real models load and act as before ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["PPO", "A2C", "DQN", "MaskablePPO", "PPO-equivariant", "PPO-dict"])
def test_real_models_load_and_predict_exactly_as_sb3_loads_them(tmp_path, kind):
    from sb3_contrib import MaskablePPO

    env = gym.make("MECOffloadSeq-v0", scenario="small") if kind == "DQN" else \
        gym.make("MECOffload-v0", scenario="small", flat_obs=kind != "PPO-dict")
    algo, policy = {"PPO": (PPO, "MlpPolicy"), "A2C": (A2C, "MlpPolicy"), "DQN": (DQN, "MlpPolicy"),
                    "MaskablePPO": (MaskablePPO, "MlpPolicy"), "PPO-equivariant": (PPO, EquivariantPolicy),
                    "PPO-dict": (PPO, "MultiInputPolicy")}[kind]
    extra = {"learning_starts": 10, "buffer_size": 100} if algo is DQN else {"n_steps": 16}
    if algo is not DQN and algo is not A2C:
        extra["batch_size"] = 16
    model = algo(policy, env, seed=0, device="cpu", **extra).learn(32)
    model.save(tmp_path / "m.zip")
    masks = kind == "MaskablePPO"
    before = algo.load(tmp_path / "m.zip", device="cpu")  # SB3's own loader: what evaluation used to do
    for loaded in (load_model(tmp_path / "m.zip"), load_model(tmp_path / "m.zip", env=env),
                   load_model(tmp_path / "m", reference_env=env)):
        assert type(loaded) is algo and type(loaded.policy) is type(model.policy)
        assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
        state, expected = loaded.policy.state_dict(), model.policy.state_dict()
        assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
        assert same_predictions(loaded, model, env, masks=masks)
        assert same_predictions(loaded, before, env, masks=masks)


# --- clear errors ----------------------------------------------------------------------------------

def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, content in entries.items():
            z.writestr(name, content)
    return path


@pytest.mark.parametrize("case, message", [
    ("not a zip", "not a zip file"),
    ("no data", "it has no 'data' entry"),
    ("binary data", "its 'data' entry is not UTF-8 JSON"),
    ("json list", "its 'data' entry is a JSON list"),
    ("no policy class", "does not describe a policy class"),
    ("no weights", "it has no policy.pth"),
    ("garbage weights", "cannot load it as a PPO model"),
])
@pytest.mark.parametrize("algorithm", [None, "PPO"])
def test_zips_without_data_or_with_garbage_give_a_clear_error(saved, tmp_path, case, message, algorithm):
    folder, _, _ = saved
    real = folder / "ppo.zip"
    path = tmp_path / "m.zip"
    if case == "not a zip":
        path.write_bytes(b"PK\x03\x04 not really")
    elif case == "no data":
        rewrite(real, path, replace={"data": None})
    elif case == "binary data":
        rewrite(real, path, replace={"data": b"\x80\x04\x95garbage\xff"})
    elif case == "json list":
        rewrite(real, path, replace={"data": b"[1, 2]"})
    elif case == "no policy class":
        rewrite(real, path, replace={"data": b'{"verbose": 0}'})
    elif case == "no weights":
        rewrite(real, path, replace={"policy.pth": None})
    else:
        rewrite(real, path, replace={"policy.pth": b"\x00garbage"})
    with pytest.raises(ModelLoadError, match=message) as err:
        load_model(path, algorithm=algorithm)
    assert str(path) in str(err.value) and isinstance(err.value, ValueError)
    if case not in ("no weights", "garbage weights"):
        with pytest.raises(ModelLoadError, match="is not a Stable-Baselines3 model zip"):
            detect_algorithm(path)
    assert pickle.loads(pickle.dumps(err.value)).args == err.value.args  # crosses process boundaries


def test_only_the_equivariant_policy_moves_to_another_size(tmp_path):
    env = gym.make("MECOffload-v0", **SMALL)  # N = 8, M = 2
    equivariant = PPO(EquivariantPolicy, env, n_steps=16, batch_size=16, seed=0, device="cpu")
    moved = transfer_policy(equivariant, gym.make("MECOffload-v0", **SMALL, n_edge_servers=4))  # another M: fine
    assert moved.action_space.nvec.tolist() == [5] * 8
    moved = transfer_policy(equivariant, gym.make("MECOffload-v0", **SMALL, n_users=12))  # another N: fine
    assert moved.action_space.nvec.tolist() == [3] * 12
    with pytest.raises(MECOffloadError, match="only a model with the EquivariantPolicy"):
        transfer_policy(PPO("MlpPolicy", env, device="cpu"), gym.make("MECOffload-v0", **SMALL, n_users=12))

    equivariant.save(tmp_path / "eq.zip")
    PPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, device="cpu").save(tmp_path / "mlp.zip")
    evaluate = train_script("evaluate")
    base = ["--seeds", "1", "--out", str(tmp_path / "eval"), "--set", "scenario=small"]
    results = evaluate.main(base + ["n_users=8", "n_edge_servers=4", "--agents", f"eq={tmp_path / 'eq.zip'}"])
    assert "eq" in {r.name for r in results}  # the equivariant policy runs at another M
    with pytest.raises(ModelLoadError, match=r"N = 8 users, M = 2 edge servers.*N = 8 users, M = 4 edge servers"):
        evaluate.main(base + ["n_users=8", "n_edge_servers=4", "--agents", f"mlp={tmp_path / 'mlp.zip'}"])
    # N = 4, M = 6 has the observation size of N = 8, M = 2 (N M + 2 M + 4 N = 52): the action space tells them apart
    with pytest.raises(ModelLoadError, match=r"M = 2 edge servers.*N = 4 users, M = 6 edge servers"):
        evaluate.main(base + ["n_users=4", "n_edge_servers=6", "--agents", f"mlp={tmp_path / 'mlp.zip'}"])
    results = evaluate.main(base + ["n_users=12", "--agents", f"eq={tmp_path / 'eq.zip'}"])  # across N it runs
    assert "eq" in {r.name for r in results}


# --- the pickles SB3 writes beside a model: read by the restricted unpickler ---------------------

def test_replay_buffers_and_vecnormalize_statistics_load_restricted_and_a_payload_in_them_never_runs(saved, tmp_path):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.model_zip import load_replay_buffer, load_vecnormalize

    _, models, _ = saved
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(payload_pickle(marker))
    pickle.loads((tmp_path / "evil.pkl").read_bytes())  # the payload is live
    assert marker.exists()
    marker.unlink()

    models["dqn"].save_replay_buffer(tmp_path / "buffer.pkl")
    dqn = DQN("MlpPolicy", gym.make("MECOffloadSeq-v0", scenario="small"), buffer_size=100, device="cpu")
    load_replay_buffer(dqn, tmp_path / "buffer.pkl")
    saved_buffer = models["dqn"].replay_buffer
    assert dqn.replay_buffer.size() == saved_buffer.size() > 0
    assert np.array_equal(dqn.replay_buffer.observations, saved_buffer.observations)
    with pytest.raises(ModelLoadError, match="evil.pkl: refusing to load it as an SB3 replay buffer .*open, which is"):
        load_replay_buffer(dqn, tmp_path / "evil.pkl")

    venv = VecNormalize(make_vec_env("MECOffload-v0", n_envs=1, env_kwargs=SMALL), norm_reward=False)
    venv.reset()
    venv.step(np.zeros((1, 8), dtype=np.int64))
    venv.save(str(tmp_path / "stats.pkl"))
    stats = load_vecnormalize(tmp_path / "stats.pkl", lambda: gym.make("MECOffload-v0", **SMALL))
    assert np.array_equal(stats.obs_rms.mean, venv.obs_rms.mean) and not stats.training
    with pytest.raises(ModelLoadError, match="evil.pkl: refusing to load it as VecNormalize statistics"):
        load_vecnormalize(tmp_path / "evil.pkl", lambda: gym.make("MECOffload-v0", **SMALL))
    with pytest.raises(ModelLoadError, match="buffer.pkl: it holds a ReplayBuffer, not VecNormalize statistics"):
        load_vecnormalize(tmp_path / "buffer.pkl", lambda: gym.make("MECOffload-v0", **SMALL))
    assert not marker.exists()


# --- bAbI LM checkpoints: weights only ------------------------------------------------------------

def test_babi_lm_checkpoints_load_weights_only(tmp_path):
    lm = train_script("train_babi_lm")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt.pt"
    torch.save({"model": OpensMarker(marker), "config": {}}, evil)
    torch.load(evil, weights_only=False)  # what the script did before: the payload runs
    assert marker.exists()
    marker.unlink()
    with pytest.raises(SystemExit, match="evil.ckpt.pt is not a checkpoint of this script"):
        lm.load_checkpoint(evil)
    assert not marker.exists()

    # what the script writes reads back whole with weights_only=True
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    rng = random.Random(7)
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": 3,
             "batches_done": 2, "elapsed": 1.5, "epoch_rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
             "config": {"seed": 0, "out": "x", "bf16": False}}
    lm.save_checkpoint(tmp_path / "ok.ckpt.pt", state)
    back = lm.load_checkpoint(tmp_path / "ok.ckpt.pt")
    again = random.Random()
    again.setstate(back["epoch_rng"])
    assert again.random() == rng.random()
    assert torch.equal(back["torch_rng"], state["torch_rng"]) and back["config"] == state["config"]
    assert all(torch.equal(back["model"][k], v) for k, v in state["model"].items())
    with pytest.raises(SystemExit, match="missing or wrong: scheduler"):
        torch.save({k: v for k, v in state.items() if k != "scheduler"}, tmp_path / "part.ckpt.pt")
        lm.load_checkpoint(tmp_path / "part.ckpt.pt")


# --- bounded: a zip cannot ask for more than its weights fill -------------------------------------

def _net_arch(arch: list[int]):
    return lambda data: data.__setitem__("policy_kwargs", {"net_arch": arch})


def test_a_zip_asking_for_a_huge_policy_is_refused_before_anything_is_built(saved, tmp_path):
    folder, _, _ = saved
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: the peak resident memory so far
    wide = rewrite(folder / "ppo.zip", tmp_path / "wide.zip", _net_arch([20000, 20000]))  # 2 x 1.6 GB of weights
    deep = rewrite(folder / "ppo.zip", tmp_path / "deep.zip", _net_arch([1] * 100_000))  # 200,000 layers
    more = rewrite(folder / "ppo.zip", tmp_path / "more.zip", _net_arch([4000, 4000]))  # 130 MB, policy.pth 70 kB
    assert wide.stat().st_size < 2**17
    with pytest.raises(ModelLoadError, match=r"wide.zip: refusing to build the policy its 'policy_kwargs' entry "
                                             r"\(\{'net_arch': \[20000, 20000\]\}\) and spaces \(observation shape "
                                             r"\(52,\), action shape \(8,\)\) describe: over [\d,]+ parameters"):
        load_model(wide)
    with pytest.raises(ModelLoadError, match=r"deep.zip: refusing to build the policy its 'policy_kwargs' entry .* "
                                             r"1,001 tensors .* at most 100,000,000 parameters in 1,000 tensors"):
        load_model(deep)
    with pytest.raises(ModelLoadError, match=r"more.zip: cannot load it as a PPO model: its weights \(policy.pth, "
                                             r"[\d,]+ bytes\) cannot hold the policy its 'policy_kwargs' entry "
                                             r"\(\{'net_arch': \[4000, 4000\]\}\) .*: 32,[\d,]+ parameters"):
        load_model(more)
    with pytest.raises(ModelLoadError, match="'policy_kwargs' entry"):  # the evaluation script loads with load_model
        train_script("evaluate").main(["--set", "scenario=small", "--seeds", "1", "--out", str(tmp_path / "eval"),
                                       "--agents", f"wide={wide}"])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 2**10  # nothing of it was built
    assert same_predictions(load_model(folder / "ppo.zip"), saved[1]["ppo"], saved[2]["ppo"])  # real ones load


def test_a_policy_that_replaces_sb3_modules_loads_at_the_paper_size(tmp_path):
    # EquivariantPolicy builds SB3's MLP and replaces it: only what the policy keeps must fit the weights
    env = gym.make("MECOffload-v0", scenario="small", n_users=120, flat_obs=True)
    model = PPO(EquivariantPolicy, env, n_steps=16, batch_size=16, seed=0, device="cpu")
    model.save(tmp_path / "eq.zip")
    assert same_predictions(load_model(tmp_path / "eq.zip"), model, env, n=2)


def test_entries_that_inflate_past_the_largest_policy_are_refused(saved, monkeypatch):
    folder, _, _ = saved
    monkeypatch.setattr(model_zip, "MAX_POLICY_PARAMETERS", 1_000)  # 16 kB of entries: the real zip has more
    with pytest.raises(ModelLoadError, match=r"ppo.zip is not a Stable-Baselines3 model zip: its entries inflate to "
                                             r"[\d,]+ bytes, more than the 16,000"):
        load_model(folder / "ppo.zip")
