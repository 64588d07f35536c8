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

`NotFound`, `Conflict` and `Invalid` are the shared meanings of
`imageio_ext.errors` (``except orchestrator.errors.NotFound`` catches them)
and `CatalogError`s (``except CatalogError`` does too).
"""
from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, TypeVar

import asyncpg

from imageio_ext import errors
from imageio_ext.errors import OvaultError

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


class CatalogError(OvaultError):
    """Base of every catalog error. `msg` is a template over the attributes.

    A bare `CatalogError` is a database failure without a meaning of its own;
    its text may quote SQL, so the API hides it (``expose``)."""

    msg = "Catalog error: {self.reason}"
    code, title, status, expose = "catalog_error", "Database error", 500, False


class NotFound(errors.NotFound, CatalogError):
    """A looked-up row is not there (the shared meaning, raised by the catalog)."""

    expose = True


class Conflict(errors.Conflict, CatalogError):
    msg = "Conflict: {self.reason}"
    expose = True


class Invalid(errors.Invalid, CatalogError):
    msg = "Invalid value: {self.reason}"
    expose = True


class Retryable(CatalogError):
    """The operation may succeed if the caller runs it again (whole transaction)."""

    msg = "Transient database failure, retry: {self.reason}"
    code, title, status, expose = "retry", "Try again", 503, True


class Unavailable(Retryable):
    msg = "Database unavailable: {self.reason}"
    code, title = "database_unavailable", "Database unavailable"


class MigrationError(CatalogError):
    msg = "Migration failed: {self.reason}"
    code = "migration_failed"


class EmbeddedPostgresError(CatalogError):
    msg = "Embedded PostgreSQL: {self.reason}"
    code, expose = "embedded_postgres", True


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
    code = "lease_lost"
