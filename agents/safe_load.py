"""Load Stable-Baselines3 zips without running code from them.

An SB3 zip keeps its weights in ``.pth`` files (SB3 reads them with ``torch.load(...,
weights_only=True)``) and its settings in a JSON ``data`` file, where everything that is not
plain JSON (spaces, the policy class, schedules, buffer classes) is a base64 cloudpickle. SB3
unpickles those with ``cloudpickle.loads``: a crafted zip runs any code it likes. Here every
pickled entry is unpickled first by a restricted unpickler that only resolves an allowlist of
globals (gymnasium spaces, numpy arrays and generators, SB3 / sb3-contrib policies, schedules and
buffers, torch activation and optimizer classes, this project's policy) and handed to SB3 as
``custom_objects``, so SB3 never unpickles anything itself. A schedule that is not on the list
(an old closure) is replaced by a constant: evaluation does not train. Anything else off the list
is refused with the global it names.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

# (module, name) pairs, or (module prefix, None) for every name of a module family
_ALLOWED_EXACT = {
    ("builtins", n) for n in ("slice", "range", "complex", "set", "frozenset", "tuple", "list", "dict", "int",
                              "float", "bool", "bytes", "bytearray", "str")
} | {
    ("copyreg", "__newobj__"), ("copyreg", "__newobj_ex__"), ("copyreg", "_reconstructor"),
    ("collections", "OrderedDict"), ("collections", "deque"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"), ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._generator", "Generator"), ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("stable_baselines3.common.utils", "FloatSchedule"), ("stable_baselines3.common.utils", "LinearSchedule"),
    ("stable_baselines3.common.utils", "ConstantSchedule"),
    ("stable_baselines3.common.type_aliases", "TrainFreq"),
    ("stable_baselines3.common.type_aliases", "TrainFrequencyUnit"),
    ("agents.policies", "EquivariantPolicy"),
    ("agents.queue_policy", "QueueEquivariantPolicy"),
    ("agents.spec_policy", "SpecUserPolicy"),
}
_ALLOWED_MODULES = ("gymnasium.spaces", "numpy.dtypes", "torch.nn.modules.activation", "torch.optim")
_POLICY_MODULES = ("stable_baselines3.", "sb3_contrib.")
SCHEDULE_KEYS = ("lr_schedule", "learning_rate", "clip_range", "clip_range_vf", "exploration_schedule",
                 "delta_std_schedule")


def allowed(module: str, name: str) -> bool:
    """Whether ``module.name`` may be resolved: an exact pair, or a plain (undotted) name in an allowed family."""
    if "." in name:  # protocol 4 resolves dotted names attribute by attribute: "x.os.system" would reach os.system
        return False
    if (module, name) in _ALLOWED_EXACT or module.startswith(_ALLOWED_MODULES):
        return True
    # SB3 / sb3-contrib policies and buffers, by their class name
    return module.startswith(_POLICY_MODULES) and name.endswith(("Policy", "Buffer"))


def _family_ok(module: str, name: str, obj: Any) -> bool:
    """A name allowed by its module family must resolve to a class of the kind that family holds."""
    if (module, name) in _ALLOWED_EXACT:
        return True
    if not isinstance(obj, type):
        return False
    if module.startswith("gymnasium.spaces"):
        import gymnasium

        return issubclass(obj, gymnasium.spaces.Space)
    if module.startswith("numpy.dtypes"):
        import numpy as np

        return issubclass(obj, np.dtype)
    if module.startswith(("torch.nn.modules.activation", "torch.optim")):
        import torch

        return issubclass(obj, (torch.nn.Module, torch.optim.Optimizer))
    return True  # SB3 / sb3-contrib policy and buffer classes (named *Policy / *Buffer)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if not allowed(module, name):
            raise pickle.UnpicklingError(f"{module}.{name} is not on the allowlist of safe globals")
        obj = super().find_class(module, name)
        if not _family_ok(module, name, obj):
            raise pickle.UnpicklingError(f"{module}.{name} is not a class of the kind its module may give")
        return obj


def restricted_loads(data: bytes) -> Any:
    """``pickle.loads`` that resolves only allowlisted globals (raises ``pickle.UnpicklingError`` otherwise)."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def read_data(path: str | Path) -> dict[str, Any]:
    """The JSON ``data`` of an SB3 zip, as JSON (nothing unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{path} is not a Stable-Baselines3 model zip ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a Stable-Baselines3 model zip (its data is not a JSON object)")
    return data


def safe_custom_objects(path: str | Path, env: Any = None) -> dict[str, Any]:
    """``custom_objects`` for ``Algorithm.load`` covering every pickled entry of the zip's ``data``.

    :param env: if given, its spaces replace the pickled ones.
    :raises ValueError: naming the entry and the global when an entry needs a global off the allowlist.
    """
    from stable_baselines3.common.utils import ConstantSchedule

    out: dict[str, Any] = {}
    for key, value in read_data(path).items():
        if not (isinstance(value, dict) and ":serialized:" in value):
            continue
        if env is not None and key in ("observation_space", "action_space"):
            out[key] = getattr(env, key)
            continue
        try:
            out[key] = restricted_loads(base64.b64decode(value[":serialized:"].encode()))
        except (pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError, ImportError) as err:
            if key in SCHEDULE_KEYS:
                out[key] = ConstantSchedule(0.0)  # an old closure; evaluation does not train
                continue
            raise ValueError(f"{path}: refusing to unpickle its '{key}' entry ({err}); only plain data and known "
                             "classes are loaded from model zips") from None
    return out


__all__ = ["safe_custom_objects", "restricted_loads", "read_data", "allowed"]
