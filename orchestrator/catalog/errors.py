"""Domain errors of the catalog.

Repositories never let an asyncpg exception escape: `translate()` maps them at
the repository edge to one of the classes below and keeps the original as
`__cause__` (so logs still show the SQLSTATE and the constraint).

| asyncpg / PostgreSQL                         | domain error  |
|----------------------------------------------|---------------|
| 23505 unique_violation, 23P01 exclusion      | `Conflict`    |
| 23503 foreign_key_violation                  | `Conflict`    |
| 23514 check_violation, 22xxx data exceptions | `Invalid`     |
| 40001 serialization, 40P01 deadlock          | `Retryable`   |
| lost/refused connection, server shutting down| `Unavailable` (a `Retryable`) |
| a looked-up row that is not there            | `NotFound`    |
| anything else                                | `CatalogError`|
"""
from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, TypeVar

import asyncpg

__all__ = [
    "CatalogError",
    "Conflict",
    "Invalid",
    "NotFound",
    "Retryable",
    "Unavailable",
    "MigrationError",
    "LeaseLost",
    "EmbeddedPostgresError",
    "translate",
    "wrap_errors",
]


class CatalogError(Exception):
    """Base of every catalog error. `msg` is a template over the attributes."""

    msg = "Catalog error: {self.reason}"

    def __init__(self, reason: str = "", **attrs: Any):
        self.reason = reason
        for k, v in attrs.items():
            setattr(self, k, v)
        super().__init__(self.msg.format(self=self))


class NotFound(CatalogError):
    msg = "{self.entity} {self.key} not found"

    def __init__(self, entity: str, key: Any):
        super().__init__(entity=entity, key=key)


class Conflict(CatalogError):
    msg = "Conflict: {self.reason}"


class Invalid(CatalogError, ValueError):
    msg = "Invalid value: {self.reason}"


class Retryable(CatalogError):
    """The operation may succeed if the caller runs it again (whole transaction)."""

    msg = "Transient database failure, retry: {self.reason}"


class Unavailable(Retryable):
    msg = "Database unavailable: {self.reason}"


class MigrationError(CatalogError):
    msg = "Migration failed: {self.reason}"


class EmbeddedPostgresError(CatalogError):
    msg = "Embedded PostgreSQL: {self.reason}"


def _describe(exc: BaseException) -> str:
    parts = [str(exc) or type(exc).__name__]
    detail = getattr(exc, "detail", None)
    if detail:
        parts.append(detail)
    constraint = getattr(exc, "constraint_name", None)
    if constraint:
        parts.append(f"constraint {constraint}")
    return "; ".join(parts)


def translate(exc: BaseException) -> CatalogError | None:
    """The domain error for a database exception, or None if it is not one."""
    if isinstance(exc, CatalogError):
        return None
    why = _describe(exc)
    if isinstance(exc, (asyncpg.UniqueViolationError, asyncpg.ExclusionViolationError,
                        asyncpg.ForeignKeyViolationError)):
        return Conflict(why)
    if isinstance(exc, (asyncpg.CheckViolationError, asyncpg.NotNullViolationError,
                        asyncpg.DataError)):
        return Invalid(why)
    if isinstance(exc, (asyncpg.SerializationError, asyncpg.DeadlockDetectedError,
                        asyncpg.LockNotAvailableError)):
        return Retryable(why)
    if isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                        asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
                        asyncpg.ConnectionDoesNotExistError, ConnectionError)):
        return Unavailable(why)
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return Unavailable(why)
    if isinstance(exc, asyncpg.PostgresError):
        return CatalogError(why)
    if isinstance(exc, OSError):  # connect() to a socket that is gone
        return Unavailable(why)
    return None


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def wrap_errors(fn: _F) -> _F:
    """Decorate a repository coroutine so database errors become domain errors."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            mapped = translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    return wrapper  # type: ignore[return-value]


class LeaseLost(Conflict):
    """The caller no longer holds the job's lease: another replica owns it now."""

    msg = "Lease on job lost by {self.owner}"
