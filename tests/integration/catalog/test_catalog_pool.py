"""The catalog's pool hands connections back without asyncpg's reset query, and
still never hands out a connection inside someone else's transaction."""
from __future__ import annotations

import pytest

from orchestrator.catalog.db import PooledConnection, connect

pytestmark = pytest.mark.integration


async def test_a_connection_released_inside_a_transaction_comes_back_clean(dsn):
    pool = await connect(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as c:
            assert isinstance(c, PooledConnection)
            await c.execute("CREATE TABLE pool_probe (x int)")
            await c.execute("BEGIN")
            await c.execute("INSERT INTO pool_probe VALUES (1)")
            pid = await c.fetchval("SELECT pg_backend_pid()")
        async with pool.acquire() as c:
            assert await c.fetchval("SELECT pg_backend_pid()") == pid   # the same connection
            assert not c.is_in_transaction()
            assert await c.fetchval("SELECT count(*) FROM pool_probe") == 0   # rolled back
            # jsonb still comes back as Python objects on a pooled connection
            assert await c.fetchval("""SELECT '{"a": [1, 2]}'::jsonb""") == {"a": [1, 2]}
    finally:
        await pool.close()
