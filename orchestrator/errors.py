"""The orchestrator's errors: the shared family (`imageio_ext.errors`) plus
the meanings only the orchestrator has (the engine, the movers).

Every error a user can see is an `OvaultError`: a message template over its
attributes, a stable ``code`` (its problem ``type`` is ``PROBLEM_BASE`` + the
code with hyphens) and an HTTP status. The API's problem middleware
(`api/problem.py`) is the one place that turns them into
`application/problem+json`, by class.
"""
from __future__ import annotations

from imageio_ext.errors import (BadRequest, ConfigError, Conflict, Forbidden, Invalid, NotFound,
                                OvaultError, TargetFull, TargetPermissionDenied, TargetUnavailable,
                                Unauthorized, Unavailable, from_dict)

__all__ = [
    "PROBLEM_BASE", "OvaultError", "Invalid", "BadRequest", "NotFound", "Conflict", "Unauthorized",
    "Forbidden", "Unavailable", "TargetUnavailable", "TargetFull", "TargetPermissionDenied",
    "ConfigError", "EngineError", "EngineUnavailable", "MoverError", "from_dict",
]

PROBLEM_BASE = "https://ovault.dev/problems/"


class EngineError(OvaultError):
    """The oVirt engine refused or failed a call; ``http_status`` is the
    engine's own answer when there was one (409 for a conflict, ...)."""
    http_status: int | None = None
    msg = "engine: {self.reason}"
    code, title, status = "engine_error", "oVirt engine error", 502


class EngineUnavailable(EngineError):
    code, title, status = "engine_unavailable", "oVirt engine unreachable", 503


class MoverError(OvaultError):
    """A mover cannot be reached or answered outside its contract (a copy that
    failed on purpose arrives as the copy's own error class instead)."""
    msg = "data mover: {self.reason}"
    code, title, status = "mover_error", "Data mover error", 502
