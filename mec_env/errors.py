"""The package's typed errors, in one place.

Every error pickles with its fields, so it crosses process boundaries (``SubprocVecEnv``
workers, process pools) as itself instead of breaking the pipe.
"""

from __future__ import annotations

import reprlib
from typing import Any, Sequence

# a bad value is shown cut short: a huge value (an expanded YAML alias, a long list) must not make a huge message
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 200, 200, 3


def short_repr(value: Any, limit: int = 300) -> str:
    """``repr(value)`` with long strings, containers and deep nesting elided (reprlib), at most ``limit`` characters."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class MECOffloadError(ValueError):
    """Base class of every error this package raises on bad input."""


class ConfigError(MECOffloadError):
    """A scenario, environment or training setting is unknown, of the wrong type or out of range."""

    def __init__(self, field: str, value: Any, allowed: str, kind: str = "invalid value") -> None:
        self.field, self.value, self.allowed, self.kind = field, value, allowed, kind
        super().__init__(f"{kind} for '{field}': {short_repr(value)}; expected {allowed}")

    def __reduce__(self):
        return type(self), (self.field, self.value, self.allowed, self.kind)


class UnknownArgumentError(ConfigError, TypeError):
    """A keyword an environment does not take: a :class:`ConfigError` and a ``TypeError``.

    Toolkits probe optional keywords (SB3's ``render_mode``, TorchRL's ``frameskip``) and
    retry without them on a ``TypeError`` whose message reads like Python's own; users get
    the list of valid arguments. ``gymnasium.make`` re-raises it as ``type(e)(message)``, so
    it is built from its message alone too.
    """

    def __init__(self, message: str, field: str = "", value: Any = None, allowed: str = "") -> None:
        self.field, self.value, self.allowed, self.kind = field, value, allowed, "unknown argument"
        Exception.__init__(self, message)

    @classmethod
    def for_keyword(cls, owner: str, field: str, value: Any, arguments: Sequence[str],
                    scenario_fields: Sequence[str]) -> "UnknownArgumentError":
        allowed = (f"an argument of the environment ({', '.join(arguments)}) or a scenario field "
                   f"({', '.join(scenario_fields)})")
        return cls(f"{owner}() got an unexpected keyword argument {field!r} (= {value!r}); expected {allowed}",
                   field, value, allowed)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self):
        return type(self), (str(self), self.field, self.value, self.allowed)


class AssignmentError(MECOffloadError):
    """An assignment vector has the wrong shape, dtype or an ES index out of range."""
