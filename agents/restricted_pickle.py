"""The one restricted unpickler: pickles from files this project wrote, read without running code.

``pickle.loads`` calls whatever global a pickle names, so a crafted file runs any code it likes.
:func:`restricted_loads` resolves only the globals of an :class:`Allowlist` (exact ``(module, name)``
pairs, or module families whose every name must be a class of the family's kind) and refuses the
rest with the global it names. Three allowlists: :data:`PLAIN_DATA` (numpy arrays, numbers, strings,
containers: RLlib's state files), :data:`SB3_STATE` (that, plus the SB3 schedules, train frequency
and buffer classes a model zip keeps for resuming its training, :mod:`agents.model_zip`) and
:data:`SB3_PICKLE` (that, plus the normalisation statistics, spaces, numpy generators and torch
device of SB3's replay buffers and ``VecNormalize`` files, :mod:`agents.model_zip`).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from typing import Any, Callable

_NUMPY_ARRAYS = frozenset({("numpy", "dtype"), ("numpy", "ndarray")}
                          | {(f"numpy.{core}.multiarray", name) for core in ("core", "_core")
                             for name in ("_reconstruct", "scalar")}
                          | {(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")})


@dataclass(frozen=True)
class Allowlist:
    """The globals a pickle may name.

    :param what: what the list holds, for the error message ("an array or plain data").
    :param exact: ``(module, name)`` pairs resolved as they are.
    :param families: module prefix -> a check that the resolved object is of the kind that family may
        give (a class of that family); any plain (undotted) name of such a module is resolved, then checked.
    """

    what: str
    exact: frozenset[tuple[str, str]]
    families: tuple[tuple[str, Callable[[Any], bool]], ...] = ()

    def family(self, module: str) -> Callable[[Any], bool] | None:
        return next((check for prefix, check in self.families if module == prefix or module.startswith(prefix + ".")),
                    None)


def _numpy_dtype_class(obj: Any) -> bool:
    import numpy as np

    return isinstance(obj, type) and issubclass(obj, np.dtype)


def _sb3_buffer_class(obj: Any) -> bool:
    from stable_baselines3.common.buffers import BaseBuffer

    return isinstance(obj, type) and issubclass(obj, BaseBuffer)


PLAIN_DATA = Allowlist("an array or plain data", frozenset({("collections", "OrderedDict"), ("collections", "deque")})
                       | _NUMPY_ARRAYS)

SB3_STATE = Allowlist(
    "plain data, an SB3 schedule, train frequency or buffer class",
    PLAIN_DATA.exact | {("builtins", n) for n in ("slice", "range", "complex", "set", "frozenset", "tuple", "list",
                                                  "dict", "int", "float", "bool", "bytes", "bytearray", "str")}
    | {("copyreg", "__newobj__"), ("copyreg", "__newobj_ex__"), ("copyreg", "_reconstructor"),
       ("stable_baselines3.common.utils", "FloatSchedule"), ("stable_baselines3.common.utils", "LinearSchedule"),
       ("stable_baselines3.common.utils", "ConstantSchedule"),
       ("stable_baselines3.common.type_aliases", "TrainFreq"),
       ("stable_baselines3.common.type_aliases", "TrainFrequencyUnit")},
    (("numpy.dtypes", _numpy_dtype_class), ("stable_baselines3.common.buffers", _sb3_buffer_class),
     ("sb3_contrib.common.recurrent.buffers", _sb3_buffer_class),
     ("sb3_contrib.common.maskable.buffers", _sb3_buffer_class)),
)


def _gymnasium_space_class(obj: Any) -> bool:
    import gymnasium

    return isinstance(obj, type) and issubclass(obj, gymnasium.spaces.Space)


# the pickles SB3 writes beside a model (save_replay_buffer, VecNormalize.save): arrays, buffers and normalisation
# statistics, their spaces (with their numpy generators) and torch device
SB3_PICKLE = Allowlist(
    "plain data, an SB3 buffer or VecNormalize statistics, a gymnasium space, a numpy generator or a torch device",
    SB3_STATE.exact | {("torch", "device"), ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
                       ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
                       ("numpy.random._generator", "Generator"),
                       ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
                       ("numpy.random._pickle", "__randomstate_ctor"), ("numpy.random._pcg64", "PCG64"),
                       ("numpy.random.bit_generator", "SeedSequence"),
                       ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence")},
    SB3_STATE.families + (("gymnasium.spaces", _gymnasium_space_class),),
)


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose ``find_class`` resolves only the globals of ``allowlist``."""

    def __init__(self, file: Any, allowlist: Allowlist) -> None:
        super().__init__(file)
        self.allowlist = allowlist

    def find_class(self, module: str, name: str) -> Any:
        exact = (module, name) in self.allowlist.exact
        check = None if exact else self.allowlist.family(module)
        # protocol 4 resolves dotted names attribute by attribute: "x.os.system" would reach os.system
        if "." in name or not (exact or check):
            raise pickle.UnpicklingError(f"it needs {module}.{name}, which is not {self.allowlist.what} (not on the "
                                         "allowlist)")
        obj = super().find_class(module, name)
        if check is not None and not check(obj):
            raise pickle.UnpicklingError(f"{module}.{name} is not a class of the kind its module may give")
        return obj


def restricted_loads(data: bytes, allowlist: Allowlist = SB3_STATE) -> Any:
    """``pickle.loads`` that resolves only the globals of ``allowlist`` (``pickle.UnpicklingError`` otherwise)."""
    return RestrictedUnpickler(io.BytesIO(data), allowlist).load()


__all__ = ["Allowlist", "PLAIN_DATA", "SB3_PICKLE", "SB3_STATE", "RestrictedUnpickler", "restricted_loads"]
