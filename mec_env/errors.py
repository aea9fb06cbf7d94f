"""The package's typed errors, in one place."""

from __future__ import annotations

from typing import Any


class MECOffloadError(ValueError):
    """Base class of every error this package raises on bad input."""


class ConfigError(MECOffloadError):
    """A scenario or training setting is unknown, of the wrong type or out of range."""

    def __init__(self, field: str, value: Any, allowed: str, kind: str = "invalid value") -> None:
        self.field, self.value, self.allowed, self.kind = field, value, allowed, kind
        super().__init__(f"{kind} for '{field}': {value!r}; expected {allowed}")


class AssignmentError(MECOffloadError):
    """An assignment vector has the wrong shape, dtype or an ES index out of range."""
