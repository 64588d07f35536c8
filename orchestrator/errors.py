"""The orchestrator's error family.

Every error a user can see is an `OvaultError`: a message template over its
attributes, a stable problem `type` slug and an HTTP status. The API's
problem middleware (`api/problem.py`) is the one place that turns them (and
the catalog's and the store's errors) into `application/problem+json`.
"""
from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://ovault.dev/problems/"


class OvaultError(Exception):
    msg = "{self.reason}"
    type = "error"
    title = "Error"
    status = 500

    def __init__(self, reason: str = "", **attrs: Any):
        self.reason = reason
        for k, v in attrs.items():
            setattr(self, k, v)
        super().__init__(self.msg.format(self=self))


class Invalid(OvaultError):
    type, title, status = "invalid-request", "Invalid request", 422


class BadRequest(OvaultError):
    type, title, status = "bad-request", "Bad request", 400


class NotFound(OvaultError):
    msg = "{self.entity} {self.key} not found"
    type, title, status = "not-found", "Not found", 404

    def __init__(self, entity: str, key: Any):
        super().__init__(entity=entity, key=key)


class Conflict(OvaultError):
    type, title, status = "conflict", "Conflict", 409


class Unauthorized(OvaultError):
    type, title, status = "unauthorized", "Authentication required", 401


class Forbidden(OvaultError):
    type, title, status = "forbidden", "Forbidden", 403


class EngineError(OvaultError):
    """The oVirt engine refused or failed a call."""
    msg = "engine: {self.reason}"
    type, title, status = "engine-error", "oVirt engine error", 502


class EngineUnavailable(EngineError):
    type, title, status = "engine-unavailable", "oVirt engine unreachable", 503


class MoverError(OvaultError):
    msg = "data mover: {self.reason}"
    type, title, status = "mover-error", "Data mover error", 502


class ConfigError(OvaultError):
    msg = "configuration: {self.reason}"
    type, title, status = "config-error", "Configuration error", 500
