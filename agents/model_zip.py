"""Model zips: find, identify and load a saved SB3 / sb3-contrib model without running code from it.

:func:`load_model` is the one loader of model zips, for evaluation and for resuming training
(``training_state=True``, :mod:`agents.checkpoint`): the zip's JSON ``data`` is read within a size
bound (:func:`read_zip_member`), every pickled entry of it is rebuilt from plain data
(:func:`agents.model_zip_entries.safe_custom_objects`), the policy it asks for is sized before
anything is built (:func:`check_policy_size`), and SB3 reads the weights (``*.pth``) with
``torch.load(weights_only=True)``. Also here: the algorithms a zip may hold (:data:`ALGORITHMS`),
:func:`detect_algorithm`, :func:`model_zip_path`, and the loaders of the pickles SB3 writes beside a
model (:func:`load_replay_buffer`, :func:`load_vecnormalize`), read by the restricted unpickler of
:mod:`agents.restricted_pickle`.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from agents.model_zip_entries import ModelLoadError, not_a_model_zip, safe_custom_objects
from agents.restricted_pickle import SB3_PICKLE, restricted_loads
from mec_env.errors import ConfigError

# algorithm name -> "module:class"; imported only when a model of that kind is loaded
ALGORITHMS = {
    "PPO": "stable_baselines3:PPO", "A2C": "stable_baselines3:A2C", "DQN": "stable_baselines3:DQN",
    "SAC": "stable_baselines3:SAC", "TD3": "stable_baselines3:TD3", "DDPG": "stable_baselines3:DDPG",
    "MaskablePPO": "sb3_contrib:MaskablePPO", "RecurrentPPO": "sb3_contrib:RecurrentPPO",
    "TRPO": "sb3_contrib:TRPO", "QRDQN": "sb3_contrib:QRDQN", "ARS": "sb3_contrib:ARS",
    "CrossQ": "sb3_contrib:CrossQ", "TQC": "sb3_contrib:TQC",
}
# policy module (as SB3 writes it into the zip) -> algorithm, for the algorithms with their own policies
_POLICY_MODULES = (
    ("sb3_contrib.common.maskable", "MaskablePPO"), ("sb3_contrib.common.recurrent", "RecurrentPPO"),
    ("sb3_contrib.qrdqn", "QRDQN"), ("sb3_contrib.ars", "ARS"), ("sb3_contrib.tqc", "TQC"),
    ("sb3_contrib.crossq", "CrossQ"), ("stable_baselines3.dqn", "DQN"), ("stable_baselines3.sac", "SAC"),
)


def algorithm_class(name: str) -> type:
    """The SB3 / sb3-contrib algorithm class called ``name`` (a ConfigError lists the known ones)."""
    if name not in ALGORITHMS:
        raise ConfigError("algorithm", name, "one of " + ", ".join(ALGORITHMS))
    module, cls = ALGORITHMS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as err:
        raise ImportError(f"{name} needs the package {module}: pip install {module.replace('_', '-')}") from err


MAX_DATA_BYTES = 64 * 2**20  # a model's JSON settings are kilobytes; refuse to inflate a zip bomb


def read_zip_member(archive: zipfile.ZipFile, name: str, max_bytes: int, path: Any, what: str = "") -> bytes:
    """The entry ``name`` of ``archive``, inflated to at most ``max_bytes`` bytes (a zip bomb stops there).

    :param path: the zip's path, for messages; ``what`` says what the entry should hold.
    :raises ModelLoadError: naming ``path`` when the entry is missing, unreadable or larger than ``max_bytes``.
    """
    try:
        with archive.open(name) as entry:
            raw = entry.read(max_bytes + 1)
    except KeyError:
        raise not_a_model_zip(path, f"it has no {name!r} entry{what}") from None
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as err:
        raise not_a_model_zip(path, f"its {name!r} entry cannot be read ({type(err).__name__}: {err})") from None
    if len(raw) > max_bytes:
        raise not_a_model_zip(path, f"its {name!r} entry is larger than {max_bytes} bytes")
    return raw


def _read_data(archive: zipfile.ZipFile, path: Any) -> dict[str, Any]:
    """The zip's ``data`` entry as a dict (JSON only: nothing is unpickled)."""
    raw = read_zip_member(archive, "data", MAX_DATA_BYTES, path, " (the settings SB3 writes with model.save)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise not_a_model_zip(path, f"its 'data' entry is not UTF-8 JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise not_a_model_zip(path, f"its 'data' entry is a JSON {type(data).__name__}, not an object")
    if not isinstance(data.get("policy_class"), dict):
        raise not_a_model_zip(path, "its 'data' entry does not describe a policy class (no policy_class object)")
    return data


def _open_zip(source: Any, path: Any) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise not_a_model_zip(path, f"not a zip file ({type(err).__name__}: {err})") from None


def _algorithm_from_data(data: dict[str, Any]) -> str:
    module = str(data["policy_class"].get("__module__", ""))
    for prefix, algo in _POLICY_MODULES:
        if module.startswith(prefix):
            return algo
    if module.startswith("stable_baselines3.td3"):
        return "TD3"
    if "cg_max_steps" in data:
        return "TRPO"
    return "PPO" if "clip_range" in data else "A2C"


def detect_algorithm(path: str | Path) -> str:
    """The algorithm that saved ``path``, read from the zip's JSON ``data`` (nothing is unpickled).

    The policy's module names the algorithms with policies of their own (DQN, MaskablePPO,
    RecurrentPPO, ...); actor-critic models are told apart by their settings: TRPO has
    ``cg_max_steps``, PPO ``clip_range``, A2C neither. TD3 and DDPG share everything: pass
    ``DDPG:path`` for DDPG.

    :raises ModelLoadError: (a ValueError) naming the path when it is not a zip, has no ``data`` or its
        ``data`` is not SB3's JSON.
    """
    with _open_zip(path, path) as archive:
        return _algorithm_from_data(_read_data(archive, path))



# --- what a model zip may ask to be built ----------------------------------------------------
#
# SB3 builds the policy from the zip's JSON (the spaces, ``policy_kwargs`` such as ``net_arch``)
# before it reads a single weight: a few bytes of JSON can ask for gigabytes. The policy is first
# built on torch's "meta" device (shapes, no memory) while global registration hooks count its
# parameters and modules; a policy above the bounds is refused before anything is allocated.

MAX_POLICY_PARAMETERS = 10**8  # 400 MB of float32 weights, far above any policy of this project
MAX_POLICY_MODULES = 1_000  # modules, and apart tensors: SB3 policies have tens (each takes ~1 ms on meta)


class _OverBudget(Exception):
    """Raised from the registration hooks when the policy being built exceeds its bounds."""


@contextlib.contextmanager
def _bounded_policy() -> Any:
    """Count the parameters, buffers and modules registered in the block; above the bounds raise _OverBudget.

    A policy may register a module and replace it (SB3's default MLP by the project's): registrations
    count both, so this bound is a generous one; the built policy's ``state_dict`` is the exact count.
    """
    from torch.nn.modules import module as torch_module

    count = {"parameters": 0, "bytes": 0, "tensors": 0, "modules": 0}

    def on_tensor(module: Any, name: str, tensor: Any) -> None:
        if tensor is not None:
            count["parameters"] += tensor.numel()
            count["bytes"] += tensor.numel() * tensor.element_size()
            count["tensors"] += 1
            if count["parameters"] > MAX_POLICY_PARAMETERS or count["tensors"] > MAX_POLICY_MODULES:
                raise _OverBudget

    def on_module(module: Any, name: str, submodule: Any) -> None:
        count["modules"] += 1
        if count["modules"] > MAX_POLICY_MODULES:
            raise _OverBudget

    handles = [torch_module.register_module_parameter_registration_hook(on_tensor),
               torch_module.register_module_buffer_registration_hook(on_tensor),
               torch_module.register_module_module_registration_hook(on_module)]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()


def _too_large(data: dict[str, Any], custom: dict[str, Any], count: dict[str, int], weights_bytes: int, name: str,
               path: Any) -> ModelLoadError:
    kwargs = str(custom.get("policy_kwargs", data.get("policy_kwargs")))
    kwargs = kwargs if len(kwargs) <= 200 else kwargs[:200] + " ..."
    shapes = [getattr(custom.get(k), "shape", None) for k in ("observation_space", "action_space")]
    within = count["parameters"] <= MAX_POLICY_PARAMETERS \
        and max(count["tensors"], count["modules"]) <= MAX_POLICY_MODULES
    asked = (f"the policy its 'policy_kwargs' entry ({kwargs}) and spaces (observation shape {shapes[0]}, action "
             f"shape {shapes[1]}) describe: {'' if within else 'over '}{count['parameters']:,} parameters "
             f"({count['bytes']:,} bytes) in {count['tensors']:,} tensors and {count['modules']:,} modules")
    if within:  # the build was not cut short: the counts are the policy's
        return ModelLoadError(f"{path}: cannot load it as a {name} model: its weights (policy.pth, "
                              f"{weights_bytes:,} bytes) cannot hold {asked}")
    return ModelLoadError(f"{path}: refusing to build {asked}; load_model builds at most {MAX_POLICY_PARAMETERS:,} "
                          f"parameters in {MAX_POLICY_MODULES:,} tensors and as many modules")


def _stay_on_meta() -> Any:
    """A torch function mode under which ``tensor.to(device)`` leaves a meta tensor on the meta device
    (SB3 moves parts of a policy to its device while building it; a meta tensor cannot be copied out)."""
    import torch
    from torch.overrides import TorchFunctionMode

    class StayOnMeta(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
            if func is torch.Tensor.to and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
                return args[0]
            return func(*args, **(kwargs or {}))

    return StayOnMeta()


def check_policy_size(data: dict[str, Any], custom: dict[str, Any], weights_bytes: int, name: str = "PPO",
                      path: Any = "model") -> None:
    """Refuse a zip whose policy exceeds the bounds, building it first on the meta device (no memory).

    The policy may have at most :data:`MAX_POLICY_PARAMETERS` parameters, :data:`MAX_POLICY_MODULES`
    tensors and as many modules, and no more bytes of weights than the zip's weights file holds
    (``weights_bytes``, uncompressed): SB3 overwrites every parameter it builds from that file.

    :param custom: what :func:`safe_custom_objects` gives (the policy class, spaces, ``policy_kwargs``).
    :raises ModelLoadError: naming the ``policy_kwargs`` entry and the spaces, with the counts.
    """
    import torch
    from stable_baselines3.common.utils import ConstantSchedule

    policy_class, kwargs = custom["policy_class"], custom.get("policy_kwargs", data.get("policy_kwargs")) or {}
    try:
        accepted = inspect.signature(policy_class).parameters
        args = [custom["observation_space"], custom["action_space"]]
        args += [ConstantSchedule(0.0)] if "lr_schedule" in accepted else []  # ARS policies take none
        if "use_sde" in accepted and isinstance(kwargs, dict) and "use_sde" not in kwargs:
            kwargs = {**kwargs, "use_sde": bool(data.get("use_sde", False))}  # as on-policy algorithms pass it
        with _bounded_policy() as count, torch.device("meta"), _stay_on_meta():
            policy = policy_class(*args, **kwargs)
    except _OverBudget:
        raise _too_large(data, custom, count, weights_bytes, name, path) from None
    except Exception:  # noqa: BLE001 - not buildable on meta: SB3's own build (under the same caps) reports it
        return
    # what the weights file must hold; a shared module (SB3's pi_features_extractor) is saved once
    state = list({id(t): t for t in policy.state_dict(keep_vars=True).values()}.values())
    count.update(parameters=sum(t.numel() for t in state), bytes=sum(t.numel() * t.element_size() for t in state),
                 tensors=len(state))
    if count["bytes"] > weights_bytes:
        raise _too_large(data, custom, count, weights_bytes, name, path)


def model_zip_path(path: str | Path) -> Path:
    """Where a saved model given as ``path`` lies: ``path`` itself, or ``path.zip`` when only that exists
    (SB3 saves ``NAME`` as ``NAME.zip``)."""
    path = Path(path)
    return path.with_suffix(".zip") if not path.exists() and path.with_suffix(".zip").exists() else path


def load_model(path: str | Path, env: Any = None, algorithm: str | type | None = None, *,
               reference_env: Any = None, training_state: bool = False, **load_kwargs: Any) -> Any:
    """Load a saved SB3 or sb3-contrib model (``.zip``) without running code from the file.

    Nothing in the zip is unpickled: the pickled entries of its JSON ``data`` are rebuilt
    (:func:`safe_custom_objects`: the policy class from an allowlist of SB3 / sb3-contrib
    policies and :class:`agents.policies.EquivariantPolicy`, the spaces from the environment or
    their description, schedules as constants or from their description, buffer classes as SB3's
    defaults) and SB3 reads the weights with ``torch.load(weights_only=True)``. Without ``training_state``
    the model is for prediction: schedules it cannot rebuild, ``train_freq``, noise and buffers are not the
    trained ones.
    What the zip asks to be built is bounded first (:func:`check_policy_size`): a policy may not have
    more parameters than its weights file holds, nor more than :data:`MAX_POLICY_PARAMETERS`.

    :param env: environment to attach (SB3's ``load(env=...)``); its spaces stand in for the saved ones.
    :param algorithm: a name in :data:`ALGORITHMS`, e.g. ``"MaskablePPO"``, or the algorithm class itself;
        default: :func:`detect_algorithm`.
    :param reference_env: an environment whose spaces stand in for the saved ones where they are the
        same (exact bounds), without attaching it; needed only when the file's description of a space
        cannot be read back (an action space printed cut short, a Tuple space, a tampered entry).
    :param training_state: to resume training: the entries prediction does not need (train frequency,
        episode statistics, buffer classes) are read by the restricted unpickler, not dropped
        (:func:`agents.model_zip_entries.safe_custom_objects`).
    :param load_kwargs: passed on to SB3's ``load`` (``tensorboard_log``, ``seed``, ...).
    :raises FileNotFoundError: with the path when it does not exist.
    :raises ModelLoadError: (a ValueError) naming the path when the file is not an SB3 model zip, holds
        a pickled entry that cannot be rebuilt from plain data (a policy class outside the allowlist),
        does not fit ``env``, or asks for a policy above the bounds (naming its ``policy_kwargs`` entry).
    """
    path = model_zip_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path} (expected an SB3 .zip, e.g. from train/ppo.py)")
    raw = path.read_bytes()  # one read: SB3 loads these very bytes, not a file that may change meanwhile
    with _open_zip(io.BytesIO(raw), path) as archive:
        data = _read_data(archive, path)
        if "policy.pth" not in archive.namelist():
            raise not_a_model_zip(path, "it has no policy.pth (the policy's weights)")
        sizes = {item.filename: item.file_size for item in archive.infolist()}
    most = 16 * MAX_POLICY_PARAMETERS  # weights, optimizer state (Adam: twice the weights) and slack of the largest
    if sum(sizes.values()) > most:  # SB3 reads every entry whole: kilobytes of zeros can inflate to gigabytes
        raise not_a_model_zip(path, f"its entries inflate to {sum(sizes.values()):,} bytes, more than the {most:,} "
                                     f"of a policy of {MAX_POLICY_PARAMETERS:,} parameters")
    if isinstance(algorithm, type):
        cls, name = algorithm, algorithm.__name__
    else:
        name = algorithm or _algorithm_from_data(data)
        cls = algorithm_class(name)
    custom = safe_custom_objects(data, cls, name, env if env is not None else reference_env, path,
                                 training_state=training_state)
    check_policy_size(data, custom, sizes["policy.pth"], name, path)
    try:
        with _bounded_policy() as count:  # the bounds hold too where the meta build could not tell
            return cls.load(io.BytesIO(raw), env=env, device="cpu", custom_objects=custom, **load_kwargs)
    except _OverBudget:
        raise _too_large(data, custom, count, sizes["policy.pth"], name, path) from None
    except (pickle.UnpicklingError, AssertionError, KeyError, RuntimeError, TypeError, ValueError, EOFError,
            zipfile.BadZipFile, AttributeError, IndexError, NotImplementedError, MemoryError) as err:
        raise ModelLoadError(f"{path}: cannot load it as a {name} model ({type(err).__name__}: {err})") from err


def _read_sb3_pickle(path: str | Path, kind: type, what: str) -> Any:
    """A pickle SB3 wrote beside a model, read by the restricted unpickler (:data:`SB3_PICKLE`): no code runs."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        obj = restricted_loads(Path(path).read_bytes(), SB3_PICKLE)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, MemoryError, RecursionError) as err:
        raise ModelLoadError(f"{path}: refusing to load it as {what} ({err})") from None
    if not isinstance(obj, kind):
        raise ModelLoadError(f"{path}: it holds a {type(obj).__name__}, not {what}")
    return obj


def load_replay_buffer(model: Any, path: str | Path) -> None:
    """SB3's ``model.load_replay_buffer(path)``, with the file read by the restricted unpickler."""
    from stable_baselines3.common.buffers import ReplayBuffer

    model.replay_buffer = _read_sb3_pickle(path, ReplayBuffer, "an SB3 replay buffer (save_replay_buffer)")
    model.replay_buffer.device = model.device  # as SB3 does: the buffer's tensors go where the model is


def load_vecnormalize(path: str | Path, make_env: Any) -> Any:
    """Observation statistics saved by ``VecNormalize.save``, frozen for evaluation (no updates).

    The file is a pickle (SB3's format), read by the restricted unpickler: it runs no code.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    stats = _read_sb3_pickle(path, VecNormalize, "VecNormalize statistics (a .pkl from VecNormalize.save)")
    stats.set_venv(DummyVecEnv([make_env]))  # what VecNormalize.load does after unpickling
    stats.training, stats.norm_reward = False, False
    return stats


__all__ = ["ALGORITHMS", "MAX_DATA_BYTES", "MAX_POLICY_MODULES", "MAX_POLICY_PARAMETERS", "ModelLoadError",
           "algorithm_class", "check_policy_size", "detect_algorithm", "load_model", "load_replay_buffer",
           "load_vecnormalize",
           "model_zip_path", "read_zip_member", "safe_custom_objects"]
