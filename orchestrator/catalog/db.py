"""Pool creation and the plumbing every repository shares.

A repository is bound to an *executor*: either the pool (each call takes a
connection for one short transaction) or a connection inside a transaction that
the caller opened with `Catalog.transaction()` (calls join that transaction, so
a machine transition and its event commit together).
"""
from __future__ import annotations

import contextlib
import json
from typing import Any, AsyncIterator, Union

import asyncpg
import orjson

from .errors import wrap_errors

__all__ = ["connect", "Executor", "Repository"]

Executor = Union[asyncpg.Pool, asyncpg.Connection]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb/json columns come and go as Python objects, not strings (read with orjson:
    # a page of jobs decodes hundreds of machines' columns on the event loop).
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, schema="pg_catalog", encoder=_dumps,
                                  decoder=orjson.loads, format="text")


class PooledConnection(asyncpg.Connection):
    """A pool connection handed back without asyncpg's reset query (advisory unlock, CLOSE
    ALL, UNLISTEN, RESET ALL: one more round trip per query on the busy event loop).
    An open transaction is still rolled back on release. The catalog leaves no session
    state on pooled connections: no SET, no LISTEN (the hubs use their own connections),
    cursors only inside transactions, and the one session advisory lock (schema
    migration) is released in a `finally`."""

    def get_reset_query(self) -> str:
        return ""


@wrap_errors
async def connect(dsn: str, *, min_size: int = 1, max_size: int = 10,
                  command_timeout: float | None = 60.0, **kwargs: Any) -> asyncpg.Pool:
    """An asyncpg pool whose connections encode/decode json and jsonb."""
    kwargs.setdefault("connection_class", PooledConnection)
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                     command_timeout=command_timeout,
                                     init=_init_connection, **kwargs)


class Repository:
    """Base of the per-aggregate repositories."""

    def __init__(self, db: Executor):
        self._db = db

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction of its own on the pool, or a savepoint in the caller's."""
        if isinstance(self._db, asyncpg.Pool):
            async with self._db.acquire() as conn, conn.transaction():
                yield conn
        else:
            async with self._db.transaction():
                yield self._db
