"""A model zip's pickled settings, rebuilt from the plain descriptions SB3 writes next to them.

SB3 stores a model's settings as JSON in the zip's ``data`` entry; whatever JSON cannot hold
(spaces, the policy class, schedules, buffer classes, ...) is a cloudpickle under the key
``":serialized:"``, next to a plain description of the object. Unpickling runs code chosen by
whoever wrote the file, so none of it is unpickled: :func:`safe_custom_objects` gives SB3, as its
``custom_objects``, an object for every such entry, rebuilt from the description (or taken from the
environment): the policy class and the classes in ``policy_kwargs`` from allowlists, the spaces
from their printed bounds, the schedules from their printed parameters. To resume training, the
few entries prediction does not need (train frequency, episode statistics, buffer classes) are read
by the restricted unpickler of :mod:`agents.restricted_pickle` instead of being dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import pickle
import re
from typing import Any

import numpy as np

from agents.restricted_pickle import SB3_STATE, restricted_loads
from mec_env.errors import MECOffloadError

_SERIALIZED = ":serialized:"
# pickled entries that prediction does not use: SB3 rebuilds them (buffer classes: the defaults) or lives without
_DROPPED = {"rollout_buffer_class": None, "replay_buffer_class": None, "action_noise": None, "_last_obs": None,
            "_last_episode_starts": None, "_last_original_obs": None, "ep_info_buffer": None,
            "ep_success_buffer": None, "weights": None, "env": None}
# schedules: rebuilt from their description when SB3 wrote one, else this constant (evaluation does not use them)
_SCHEDULE_FALLBACKS = {"learning_rate": 0.0, "lr_schedule": 0.0, "clip_range": 0.2, "clip_range_vf": None,
                       "exploration_schedule": 0.0, "delta_std_schedule": 0.05}
# what resuming training needs and prediction does not: read (restricted) with training_state, else dropped
_TRAINING_STATE = ("train_freq", "ep_info_buffer", "ep_success_buffer", "rollout_buffer_class", "replay_buffer_class",
                   "action_noise")
_UNREAD = object()  # a schedule its description does not give
_MAX_FILLED_ELEMENTS = 10**7  # a Box whose bounds are one repeated number is filled only up to this size
_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)"


class ModelLoadError(MECOffloadError):
    """A model file that cannot be loaded (not SB3's, or not loadable without running code); a ValueError."""


def not_a_model_zip(path: Any, why: str) -> ModelLoadError:
    return ModelLoadError(f"{path} is not a Stable-Baselines3 model zip: {why}")


def _serialized(value: Any) -> bool:
    """Whether SB3's ``json_to_data`` would unpickle this entry (its exact test)."""
    return isinstance(value, dict) and _SERIALIZED in value


def _policy_class(description: dict[str, Any], cls: type, name: str, path: Any) -> type:
    """The policy class the zip names, if it is one ``cls`` ships (or one of the project's per-user policies)."""
    allowed = set(cls.policy_aliases.values())
    base = cls.policy_aliases.get("MlpPolicy")
    try:
        from agents.policies import EquivariantPolicy
        from agents.queue_policy import QueueEquivariantPolicy
        from agents.spec_policy import SpecUserPolicy

        for ours in (EquivariantPolicy, QueueEquivariantPolicy, SpecUserPolicy):
            if base is not None and issubclass(ours, base):
                allowed.add(ours)
    except ImportError:  # pragma: no cover - torch is there whenever SB3 is
        pass
    module = description.get("__module__")
    # the class's own methods are described as "<function ActorCriticPolicy.__init__ at 0x...>"
    owners = {match.group(1) for value in description.values() if isinstance(value, str)
              for match in [re.search(r"<function ([\w.]+)\.\w+ at 0x", value)] if match}
    named = [c for c in allowed if c.__module__ == module]
    if len(named) > 1:  # several policies in one module: the one whose methods the zip describes
        named = [c for c in named if c.__qualname__ in owners or not owners]
    if len(named) == 1:
        return named[0]
    what = f"{module}.{'/'.join(sorted(owners)) or '?'}"
    known = ", ".join(sorted(f"{c.__module__}.{c.__qualname__}" for c in allowed))
    raise ModelLoadError(f"{path}: its 'policy_class' entry ({what}) is not on the allowlist of policies {name} "
                     f"loads without unpickling ({known}); a custom policy class would have to be unpickled, i.e. "
                     "run")


def _class_allowlist() -> dict[str, type]:
    """Classes a pickled ``policy_kwargs`` may name (activations, optimizers, SB3 feature extractors)."""
    from stable_baselines3.common import torch_layers
    from torch import nn, optim

    classes = [getattr(nn, n) for n in ("ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Softplus",
                                        "Identity", "Mish", "SELU", "CELU", "Hardtanh", "Softsign", "Tanhshrink")]
    classes += [getattr(optim, n) for n in ("Adam", "AdamW", "RMSprop", "SGD", "Adagrad", "Adadelta", "Adamax",
                                            "NAdam", "RAdam")]
    classes += [torch_layers.FlattenExtractor, torch_layers.NatureCNN, torch_layers.CombinedExtractor]
    return {f"{c.__module__}.{c.__qualname__}": c for c in classes}


def _policy_kwargs(description: dict[str, Any], path: Any) -> dict[str, Any]:
    """A pickled ``policy_kwargs`` dict rebuilt from its description; classes only from :func:`_class_allowlist`."""
    if description.get(":type:") != "<class 'dict'>":
        raise ModelLoadError(f"{path}: its 'policy_kwargs' entry ({description.get(':type:')}) is not on the "
                             "allowlist of what load_model rebuilds without unpickling (a dict it describes)")
    allowlist = _class_allowlist()
    out = {}
    for key, value in description.items():
        if key.startswith(":"):
            continue
        if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
            match = re.fullmatch(r"<class '([\w.]+)'>", value)
            if match is None or match.group(1) not in allowlist:
                raise ModelLoadError(f"{path}: its 'policy_kwargs' entry [{key!r}] = {value[:100]} is not on the "
                                 "allowlist of classes load_model rebuilds without unpickling (torch activations "
                                 "and optimizers, SB3's feature extractors)")
            value = allowlist[match.group(1)]
        elif isinstance(value, str) and (" at 0x" in value or "<class '" in value):
            raise ModelLoadError(f"{path}: its policy_kwargs[{key!r}] holds objects ({value[:100]}) that cannot be "
                             "rebuilt without unpickling them")
        out[key] = value
    return out


def _schedule(description: dict[str, Any], fallback: Any) -> Any:
    """SB3's ConstantSchedule / LinearSchedule / FloatSchedule rebuilt from their description, else ``fallback``."""
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

    def number(value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        try:
            return float(value)
        except ValueError:
            return None

    kind = str(description.get(":type:", ""))
    if kind.endswith(".LinearSchedule'>"):
        args = [number(description.get(k)) for k in ("start", "end", "end_fraction")]
        if None not in args:
            return LinearSchedule(*args)
    elif kind.endswith(".ConstantSchedule'>") and number(description.get("val")) is not None:
        return ConstantSchedule(number(description["val"]))
    elif kind.endswith(".FloatSchedule'>") and isinstance(description.get("value_schedule"), str):
        text = description["value_schedule"]
        if match := re.fullmatch(rf"ConstantSchedule\(val=({_NUMBER})\)", text):
            return FloatSchedule(float(match.group(1)))
        if match := re.fullmatch(rf"LinearSchedule\(start=({_NUMBER}), end=({_NUMBER}), "
                                 rf"end_fraction=({_NUMBER})\)", text):
            return FloatSchedule(LinearSchedule(*(float(g) for g in match.groups())))
    return fallback


def _describe(obj: Any) -> dict[str, Any]:
    """What SB3's ``data_to_json`` writes next to a pickled object (JSON-able attributes, else their ``str``)."""
    out = {}
    for key, value in vars(obj).items():
        try:
            json.dumps(value)
        except (TypeError, ValueError, OverflowError):
            value = str(value)
        out[key] = value
    return json.loads(json.dumps(out))


def _matches(description: dict[str, Any], space: Any) -> bool:
    """Whether ``space`` is the space ``description`` describes (its type and every described attribute)."""
    kind = str(description.get(":type:", ""))
    if kind.replace("'gym.", "'gymnasium.") != str(type(space)):
        return False
    ours = _describe(space)
    skip = {":type:", _SERIALIZED, "_np_random", "low_repr", "high_repr"}
    keys = [k for k in description if k not in skip]
    return bool(keys) and all(k in ours and ours[k] == description[k] for k in keys)


def _array(text: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """An array printed by numpy (``str``), or one number repeated; None when cut short (``...``) or unreadable."""
    if not isinstance(text, str) or "..." in text:
        return None
    tokens = text.replace("[", " ").replace("]", " ").split()
    size = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if dtype.kind == "b":
        if not all(t in ("True", "False") for t in tokens):
            return None
        values = np.array([t == "True" for t in tokens])
    elif dtype.kind == "f":
        if not all(re.fullmatch(_NUMBER, t) for t in tokens):
            return None
        values = np.array([float(t) for t in tokens])
    else:
        if not all(re.fullmatch(r"[-+]?\d+", t) for t in tokens):
            return None
        values = np.array([int(t) for t in tokens])
    if values.size == 1 and size != 1 and size <= _MAX_FILLED_ELEMENTS:
        values = np.full(size, values[0])
    if values.size != size:
        return None
    return values.reshape(shape).astype(dtype)


_ARRAY = r"(?:\[[\[\]\s0-9.eE+\-infa]*\]|" + _NUMBER + ")"  # a printed array or one number
_LEAF_REPRS = {  # the repr of each leaf space inside a Dict's description
    "Box": re.compile(rf"Box\(({_ARRAY}), ({_ARRAY}), \(([\d, ]*)\), (\w+)\)"),
    "Discrete": re.compile(r"Discrete\((\d+)(?:, start=(-?\d+))?\)"),
    "MultiDiscrete": re.compile(r"MultiDiscrete\((\[[\[\]\s\d]*\])(?:, start=(\[[\[\]\s\d-]*\]))?\)"),
    "MultiBinary": re.compile(r"MultiBinary\((\d+|\([\d, ]*\))\)"),
}
_KEY_REPR = re.compile(r"'((?:[^'\\]|\\.)*)': ")


def _parse_leaf(kind: str, groups: tuple) -> Any:
    from gymnasium import spaces

    if kind == "Box":
        shape = tuple(int(d) for d in groups[2].replace(",", " ").split())
        dtype = np.dtype(groups[3])
        if dtype.kind not in "biuf":
            return None
        low, high = _array(groups[0], shape, dtype), _array(groups[1], shape, dtype)
        return None if low is None or high is None else spaces.Box(low, high, shape=shape, dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(int(groups[0]), start=int(groups[1] or 0))
    if kind == "MultiDiscrete":
        if "[[[" in groups[0]:
            return None
        nvec = np.array([int(t) for t in groups[0].replace("[", " ").replace("]", " ").split()])
        nested = groups[0].count("[")
        if nested > 1:  # a 2-D nvec: its rows are the inner brackets
            nvec = nvec.reshape(nested - 1, -1)
        start = None if groups[1] is None else _array(groups[1], nvec.shape, nvec.dtype)
        return spaces.MultiDiscrete(nvec, start=start)
    n = groups[0]
    return spaces.MultiBinary(int(n) if n.isdigit() else [int(d) for d in n.strip("()").replace(",", " ").split()])


def _parse_dict_spaces(text: Any) -> Any:
    """A Dict of Box / Discrete / MultiDiscrete / MultiBinary rebuilt from its description's ``spaces`` text."""
    from gymnasium import spaces

    if not isinstance(text, str) or not text.startswith("{") or not text.endswith("}") or "..." in text:
        return None
    children, pos = {}, 1
    while pos < len(text) - 1:
        key = _KEY_REPR.match(text, pos)
        if key is None or "\\" in key.group(1):
            return None
        pos = key.end()
        for kind, pattern in _LEAF_REPRS.items():
            leaf = pattern.match(text, pos)
            if leaf is not None:
                break
        else:
            return None
        space = _parse_leaf(kind, leaf.groups())
        if space is None:
            return None
        children[key.group(1)] = space
        pos = leaf.end()
        if text.startswith(", ", pos):
            pos += 2
        elif pos != len(text) - 1:
            return None
    return spaces.Dict(children) if children else None


def _parse_space(description: dict[str, Any], lenient: bool = False) -> Any:
    """A Box / Discrete / MultiDiscrete / MultiBinary (or a Dict of them) rebuilt from its description, else None."""
    from gymnasium import spaces

    kind = str(description.get(":type:", ""))
    match = re.fullmatch(r"<class 'gym(?:nasium)?\.spaces\.\w+\.(\w+)'>", kind)
    if match is None:
        return None
    shape_value = description.get("_shape")
    if not isinstance(shape_value, list) or not all(isinstance(d, int) and d >= 0 for d in shape_value) \
            or math.prod(shape_value) > _MAX_FILLED_ELEMENTS:  # bounds of that many numbers are not rebuilt
        shape_value = None
    shape = tuple(shape_value) if shape_value is not None else None
    try:
        dtype = np.dtype(str(description.get("dtype"))) if description.get("dtype") is not None else None
    except TypeError:
        return None
    if dtype is not None and dtype.kind not in "biuf":
        return None
    try:
        if match.group(1) == "Box" and shape is not None and dtype is not None:
            low, high = (_array(description.get(k), shape, dtype) for k in ("low", "high"))
            if low is None or high is None:
                # bounds printed cut short (over 1000 numbers): float observations are not scaled by their
                # bounds, so unbounded stands in; other Boxes (actions, images) need their bounds
                return spaces.Box(-np.inf, np.inf, shape=shape, dtype=dtype) if lenient and dtype.kind == "f" \
                    else None
            return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
        if match.group(1) == "Discrete":
            return spaces.Discrete(int(str(description["n"])), start=int(str(description.get("start", 0))))
        if match.group(1) == "MultiDiscrete" and shape is not None and dtype is not None:
            nvec, start = (_array(description.get(k), shape, dtype) for k in ("nvec", "start"))
            if nvec is None or start is None:
                return None
            return spaces.MultiDiscrete(nvec, dtype=dtype, start=start)
        if match.group(1) == "Dict":
            return _parse_dict_spaces(description.get("spaces"))
        if match.group(1) == "MultiBinary":
            n = description.get("n")
            if isinstance(n, int) or (isinstance(n, list) and all(isinstance(d, int) for d in n)):
                return spaces.MultiBinary(n)
    except (KeyError, ValueError, TypeError, OverflowError, AssertionError):
        return None
    return None


def _space(key: str, description: Any, reference: Any, path: Any) -> Any:
    """The saved observation / action space, rebuilt without unpickling it.

    ``reference`` (the environment's space) stands in when it is the one described (exact bounds),
    or when the description cannot be read back (the weights then show whether it fits); otherwise
    the space is rebuilt from the description (a model to transfer, or a mismatch SB3 reports).
    """
    from gymnasium import spaces

    if not isinstance(description, dict):
        raise not_a_model_zip(path, f"its {key} is not a described space")
    if reference is not None and _matches(description, reference):
        return reference
    parsed = _parse_space(description, lenient=key == "observation_space")
    if parsed is None and reference is not None:
        return reference  # nothing to compare with: the weights show whether it fits
    if parsed is not None:
        if reference is not None and type(reference) is type(parsed):
            try:
                if reference == parsed or (isinstance(parsed, spaces.Box) and np.isinf(parsed.low).all()
                                           and (reference.shape, reference.dtype) == (parsed.shape, parsed.dtype)):
                    return reference
            except (ValueError, TypeError):
                pass
        return parsed
    what = description.get(":type:", "?")
    raise ModelLoadError(f"{path}: its '{key}' entry ({what}) is not on the allowlist of what load_model rebuilds "
                         f"without unpickling (a Box, Discrete, MultiDiscrete or MultiBinary it describes, a Dict "
                         f"of those, or the environment's space); pass the environment it was trained on "
                         f"(load_model(path, env=...) or reference_env=...)")


def _unpickled(key: str, value: dict[str, Any], path: Any) -> Any:
    """An entry SB3 keeps for training, read by the restricted unpickler (:data:`SB3_STATE`: plain data only)."""
    try:
        return restricted_loads(base64.b64decode(str(value[_SERIALIZED]).encode(), validate=True), SB3_STATE)
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError, ImportError, IndexError,
            KeyError, MemoryError, RecursionError, binascii.Error) as err:
        raise ModelLoadError(f"{path}: its '{key}' entry is refused ({err}); only plain data on the allowlist "
                             f"({SB3_STATE.what}) is read to resume training") from None


def safe_custom_objects(data: dict[str, Any], cls: type, name: str, reference_env: Any = None,
                        path: Any = "model", *, training_state: bool = False) -> dict[str, Any]:
    """SB3 ``custom_objects`` for every pickled entry of ``data`` (and the policy class and spaces).

    With these, SB3's ``json_to_data`` unpickles nothing: it only unpickles entries that carry
    ``":serialized:"`` and are not in ``custom_objects``.

    :param training_state: read what resuming training needs and prediction does not (:data:`_TRAINING_STATE`:
        train frequency, episode statistics, buffer classes) with the restricted unpickler instead of
        dropping it, and refuse a schedule that cannot be rebuilt instead of putting a constant in its place.
    """
    custom: dict[str, Any] = {"policy_class": _policy_class(data["policy_class"], cls, name, path)}
    for key in ("observation_space", "action_space"):
        if key not in data:
            raise not_a_model_zip(path, f"its 'data' has no {key}")
        reference = None if reference_env is None else getattr(reference_env, key, None)
        custom[key] = _space(key, data[key], reference, path)
    for key, value in data.items():
        if key in custom or not _serialized(value):
            continue
        if key == "policy_kwargs":
            custom[key] = _policy_kwargs(value, path)
        elif key in _SCHEDULE_FALLBACKS:
            fallback = _UNREAD if training_state else _SCHEDULE_FALLBACKS[key]
            if key == "lr_schedule" and isinstance(data.get("learning_rate"), (int, float)) and not training_state:
                fallback = float(data["learning_rate"])
            custom[key] = _schedule(value, fallback)
            if custom[key] is _UNREAD:  # training with another schedule than the saved one would go unnoticed
                custom[key] = _unpickled(key, value, path)
        elif training_state and key in _TRAINING_STATE:
            custom[key] = _unpickled(key, value, path)
        elif key == "train_freq":
            custom[key] = (1, "step")  # rebuilt into a TrainFreq by SB3; prediction does not use it
        else:  # _DROPPED and anything unknown: prediction needs none of it
            custom[key] = _DROPPED.get(key)
    unsafe = [k for k, v in data.items() if _serialized(v) and k not in custom]
    if unsafe:  # cannot happen (every pickled entry is replaced above); the guarantee is checked, not assumed
        raise ModelLoadError(f"{path}: pickled entries left for SB3 to unpickle: {', '.join(unsafe)}")
    return custom


__all__ = ["ModelLoadError", "not_a_model_zip", "safe_custom_objects"]
