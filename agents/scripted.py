"""One ``predict`` interface over scripted strategies and trained SB3 models.

Every agent answers ``predict(obs, state=None, episode_start=None, deterministic=True)`` with
``(action, state)``, as SB3 models do, so evaluation code treats them alike. Scripted agents
read the slot's problem instance from the environment (``env.unwrapped.problem``); they see
the same slot the observation describes.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from baselines import STRATEGIES
from mec_env.errors import ConfigError, MECOffloadError


class Agent(Protocol):
    """What evaluation needs from an agent (SB3 models satisfy it)."""

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]: ...


class ScriptedAgent:
    """A baseline strategy (GOA, Min delay, Edge all, Local all, Random, GOA+LS) as an agent.

    Works on ``MECOffload-v0`` (returns the whole assignment) and ``MECOffloadSeq-v0``
    (solves the slot once when its first user comes up, then returns each user's decision).

    :param env: the (single, unvectorised) environment the agent acts in.
    :param strategy: a name in :data:`baselines.STRATEGIES`.
    :param seed: seed of the Random strategy's own stream.
    """

    def __init__(self, env: Any, strategy: str, seed: int = 0) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError("strategy", strategy, "one of " + ", ".join(repr(s) for s in STRATEGIES))
        self.env = env.unwrapped
        self.strategy = strategy
        self.name = strategy
        self.rng = np.random.default_rng(seed)
        self._problem: Any = None  # held, not its id(): a freed slot's id can come back for the next slot
        self._assignment: np.ndarray | None = None

    def assignment(self) -> np.ndarray:
        """The strategy's assignment of the environment's current slot (cached per slot)."""
        problem = self.env.problem
        if problem is None:
            raise RuntimeError("reset the environment before asking a scripted agent to act")
        if problem is not self._problem:
            self._assignment = np.asarray(STRATEGIES[self.strategy](problem, self.rng), dtype=np.int64)
            self._problem = problem
        return self._assignment

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        a = self.assignment()
        user = getattr(self.env, "current_user", None)
        if user is not None:  # sequential env: this user's decision
            return np.int64(a[user]), state
        return a.copy(), state


class ModelAgent:
    """A trained SB3 / sb3-contrib model as an agent.

    Maskable models (MaskablePPO) get the environment's ``action_masks()`` at every decision;
    with ``normalize`` (a loaded ``VecNormalize``) observations are normalised with its
    statistics first, as during training.

    :param model: the model.
    :param name: the name reports use.
    :param env: the (single) environment the agent acts in; needed for masks.
    :param normalize: a ``VecNormalize`` whose ``normalize_obs`` applies the training statistics.
    """

    def __init__(self, model: Any, name: str = "model", env: Any = None, normalize: Any = None) -> None:
        self.model, self.name, self.normalize = model, name, normalize
        self.env = None if env is None else env.unwrapped
        self.masked = "action_masks" in inspect.signature(model.predict).parameters
        if self.masked and self.env is None:
            raise ValueError(f"{name}: a maskable model needs the environment (for its action_masks())")

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        if self.normalize is not None:
            observation = self.normalize.normalize_obs(observation)
        extra = {"action_masks": self.env.action_masks()} if self.masked else {}
        return self.model.predict(observation, state=state, episode_start=episode_start,
                                  deterministic=deterministic, **extra)


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


# --- reading a model zip without unpickling anything ----------------------------------------
#
# SB3 stores a model's settings as JSON in the zip's ``data`` entry; whatever JSON cannot hold
# (spaces, the policy class, schedules, buffer classes, ...) is a cloudpickle under the key
# ``":serialized:"``, next to a plain description of the object. Unpickling runs code chosen by
# whoever wrote the file, so :func:`load_model` unpickles none of it: every such entry is
# replaced through SB3's ``custom_objects`` by an object rebuilt from the description (or from
# the environment), and SB3 reads the weights (``*.pth``) with ``torch.load(weights_only=True)``.

MAX_DATA_BYTES = 64 * 2**20  # a model's JSON settings are kilobytes; refuse to inflate a zip bomb
_SERIALIZED = ":serialized:"
# pickled entries that prediction does not use: SB3 rebuilds them (buffer classes: the defaults) or lives without
_DROPPED = {"rollout_buffer_class": None, "replay_buffer_class": None, "action_noise": None, "_last_obs": None,
            "_last_episode_starts": None, "_last_original_obs": None, "ep_info_buffer": None,
            "ep_success_buffer": None, "weights": None, "env": None}
# schedules: rebuilt from their description when SB3 wrote one, else this constant (evaluation does not use them)
_SCHEDULE_FALLBACKS = {"learning_rate": 0.0, "lr_schedule": 0.0, "clip_range": 0.2, "clip_range_vf": None,
                       "exploration_schedule": 0.0, "delta_std_schedule": 0.05}
_MAX_FILLED_ELEMENTS = 10**7  # a Box whose bounds are one repeated number is filled only up to this size
_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)"


class ModelLoadError(MECOffloadError):
    """A model file that cannot be loaded (not SB3's, or not loadable without running code); a ValueError."""


def _not_a_model(path: Any, why: str) -> ModelLoadError:
    return ModelLoadError(f"{path} is not a Stable-Baselines3 model zip: {why}")


def _read_data(archive: zipfile.ZipFile, path: Any) -> dict[str, Any]:
    """The zip's ``data`` entry as a dict (JSON only: nothing is unpickled)."""
    try:
        with archive.open("data") as entry:
            raw = entry.read(MAX_DATA_BYTES + 1)
    except KeyError:
        raise _not_a_model(path, "it has no 'data' entry (the settings SB3 writes with model.save)") from None
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as err:
        raise _not_a_model(path, f"its 'data' entry cannot be read ({type(err).__name__}: {err})") from None
    if len(raw) > MAX_DATA_BYTES:
        raise _not_a_model(path, f"its 'data' entry is larger than {MAX_DATA_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise _not_a_model(path, f"its 'data' entry is not UTF-8 JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise _not_a_model(path, f"its 'data' entry is a JSON {type(data).__name__}, not an object")
    if not isinstance(data.get("policy_class"), dict):
        raise _not_a_model(path, "its 'data' entry does not describe a policy class (no policy_class object)")
    return data


def _open_zip(source: Any, path: Any) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise _not_a_model(path, f"not a zip file ({type(err).__name__}: {err})") from None


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
        raise _not_a_model(path, f"its {key} is not a described space")
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


def safe_custom_objects(data: dict[str, Any], cls: type, name: str, reference_env: Any = None,
                        path: Any = "model") -> dict[str, Any]:
    """SB3 ``custom_objects`` for every pickled entry of ``data`` (and the policy class and spaces).

    With these, SB3's ``json_to_data`` unpickles nothing: it only unpickles entries that carry
    ``":serialized:"`` and are not in ``custom_objects``.
    """
    custom: dict[str, Any] = {"policy_class": _policy_class(data["policy_class"], cls, name, path)}
    for key in ("observation_space", "action_space"):
        if key not in data:
            raise _not_a_model(path, f"its 'data' has no {key}")
        reference = None if reference_env is None else getattr(reference_env, key, None)
        custom[key] = _space(key, data[key], reference, path)
    for key, value in data.items():
        if key in custom or not _serialized(value):
            continue
        if key == "policy_kwargs":
            custom[key] = _policy_kwargs(value, path)
        elif key in _SCHEDULE_FALLBACKS:
            fallback = _SCHEDULE_FALLBACKS[key]
            if key == "lr_schedule" and isinstance(data.get("learning_rate"), (int, float)):
                fallback = float(data["learning_rate"])
            custom[key] = _schedule(value, fallback)
        elif key == "train_freq":
            custom[key] = (1, "step")  # rebuilt into a TrainFreq by SB3; prediction does not use it
        else:  # _DROPPED and anything unknown: prediction needs none of it
            custom[key] = _DROPPED.get(key)
    unsafe = [k for k, v in data.items() if _serialized(v) and k not in custom]
    if unsafe:  # cannot happen (every pickled entry is replaced above); the guarantee is checked, not assumed
        raise ModelLoadError(f"{path}: pickled entries left for SB3 to unpickle: {', '.join(unsafe)}")
    return custom


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


def load_model(path: str | Path, env: Any = None, algorithm: str | None = None, *,
               reference_env: Any = None) -> Any:
    """Load a saved SB3 or sb3-contrib model (``.zip``) without running code from the file.

    Nothing in the zip is unpickled: the pickled entries of its JSON ``data`` are rebuilt
    (:func:`safe_custom_objects`: the policy class from an allowlist of SB3 / sb3-contrib
    policies and :class:`agents.policies.EquivariantPolicy`, the spaces from the environment or
    their description, schedules as constants or from their description, buffer classes as SB3's
    defaults) and SB3 reads the weights with ``torch.load(weights_only=True)``. The model is for
    prediction: schedules it cannot rebuild, ``train_freq``, noise and buffers are not the trained ones.
    What the zip asks to be built is bounded first (:func:`check_policy_size`): a policy may not have
    more parameters than its weights file holds, nor more than :data:`MAX_POLICY_PARAMETERS`.

    :param env: environment to attach (SB3's ``load(env=...)``); its spaces stand in for the saved ones.
    :param algorithm: a name in :data:`ALGORITHMS`, e.g. ``"MaskablePPO"``; default: :func:`detect_algorithm`.
    :param reference_env: an environment whose spaces stand in for the saved ones where they are the
        same (exact bounds), without attaching it; needed only when the file's description of a space
        cannot be read back (an action space printed cut short, a Tuple space, a tampered entry).
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
            raise _not_a_model(path, "it has no policy.pth (the policy's weights)")
        sizes = {item.filename: item.file_size for item in archive.infolist()}
    most = 16 * MAX_POLICY_PARAMETERS  # weights, optimizer state (Adam: twice the weights) and slack of the largest
    if sum(sizes.values()) > most:  # SB3 reads every entry whole: kilobytes of zeros can inflate to gigabytes
        raise _not_a_model(path, f"its entries inflate to {sum(sizes.values()):,} bytes, more than the {most:,} "
                                 f"of a policy of {MAX_POLICY_PARAMETERS:,} parameters")
    name = algorithm or _algorithm_from_data(data)
    cls = algorithm_class(name)
    custom = safe_custom_objects(data, cls, name, env if env is not None else reference_env, path)
    check_policy_size(data, custom, sizes["policy.pth"], name, path)
    try:
        with _bounded_policy() as count:  # the bounds hold too where the meta build could not tell
            return cls.load(io.BytesIO(raw), env=env, device="cpu", custom_objects=custom)
    except _OverBudget:
        raise _too_large(data, custom, count, sizes["policy.pth"], name, path) from None
    except (pickle.UnpicklingError, AssertionError, KeyError, RuntimeError, TypeError, ValueError, EOFError,
            zipfile.BadZipFile, AttributeError, IndexError, NotImplementedError, MemoryError) as err:
        raise ModelLoadError(f"{path}: cannot load it as a {name} model ({type(err).__name__}: {err})") from err


def load_vecnormalize(path: str | Path, make_env: Any) -> Any:
    """Observation statistics saved by ``VecNormalize.save``, frozen for evaluation (no updates).

    The file is a pickle (SB3's format): load only statistics you trust, e.g. from your own runs.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    if not Path(path).is_file():
        raise FileNotFoundError(f"no VecNormalize statistics at {path} (expected a .pkl from VecNormalize.save)")
    stats = VecNormalize.load(str(path), DummyVecEnv([make_env]))
    stats.training, stats.norm_reward = False, False
    return stats
