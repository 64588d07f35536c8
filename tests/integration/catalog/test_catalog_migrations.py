import asyncio

import asyncpg
import pytest

from orchestrator.catalog import MigrationError, connect, migrate
from orchestrator.catalog.schema import Migration, load_migrations

pytestmark = pytest.mark.integration

TABLES = {"jobs", "machines", "backups", "backup_disks", "targets", "events", "webhooks",
          "webhook_deliveries", "webhook_attempts", "api_tokens", "schema_migrations",
          "policies", "policy_ticks", "maintenance_ticks", "vm_protection", "vm_locks"}


async def _tables(conn) -> set[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    return {r["table_name"] for r in rows}


async def test_migrate_empty_database_then_again(empty_dsn):
    shipped = load_migrations()
    pool = await connect(empty_dsn)
    try:
        async with pool.acquire() as c:
            assert await _tables(c) == set()
        applied = await migrate(pool)
        assert applied == [m.version for m in shipped]
        async with pool.acquire() as c:
            assert await _tables(c) == TABLES
            rows = await c.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
            assert [(r["version"], r["name"], r["checksum"]) for r in rows] == \
                [(m.version, m.name, m.checksum) for m in shipped]
        assert await migrate(pool) == []
        async with pool.acquire() as c:
            assert await c.fetchval("SELECT count(*) FROM schema_migrations") == len(shipped)
    finally:
        await pool.close()


async def test_two_processes_migrating_at_once_apply_each_migration_once(empty_dsn):
    pools = [await connect(empty_dsn, min_size=1, max_size=1) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrate(p) for p in pools))
        shipped = [m.version for m in load_migrations()]
        # one of them did the work, the other waited on the lock and found none
        assert sorted(results, key=len) == [[], shipped]
        async with pools[0].acquire() as c:
            assert await c.fetchval("SELECT count(*) FROM schema_migrations") == len(shipped)
            assert await _tables(c) == TABLES
    finally:
        for p in pools:
            await p.close()


async def test_failed_migration_rolls_back_and_stops(empty_dsn):
    good = Migration(1, "one", "CREATE TABLE a (x int);")
    bad = Migration(2, "two", "CREATE TABLE b (y int); SELECT * FROM no_such_table;")
    conn = await asyncpg.connect(empty_dsn)
    try:
        with pytest.raises(MigrationError, match="0002_two") as ei:
            await migrate(conn, [good, bad])
        assert isinstance(ei.value.__cause__, asyncpg.UndefinedTableError)
        assert await conn.fetchval("SELECT array_agg(version) FROM schema_migrations") == [1]
        assert await _tables(conn) == {"a", "schema_migrations"}  # no table b
        # the lock was released: another run can proceed
        assert await migrate(conn, [good]) == []
    finally:
        await conn.close()


async def test_changed_applied_migration_is_refused(empty_dsn):
    conn = await asyncpg.connect(empty_dsn)
    try:
        await migrate(conn, [Migration(1, "one", "CREATE TABLE a (x int);")])
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, [Migration(1, "one", "CREATE TABLE a (x bigint);")])
    finally:
        await conn.close()


async def test_schema_checks_state_names(pool):
    async with pool.acquire() as c:
        job = await c.fetchval("INSERT INTO jobs (kind) VALUES ('backup') RETURNING id")
        with pytest.raises(asyncpg.CheckViolationError):
            await c.execute("INSERT INTO machines (job_id, kind, vm_id, state) "
                            "VALUES ($1, 'backup', 'vm', 'prepare')", job)  # a restore state
        with pytest.raises(asyncpg.CheckViolationError):
            await c.execute("INSERT INTO machines (job_id, kind, vm_id, state) "
                            "VALUES ($1, 'restore', 'vm', 'snapshot')", job)
        await c.execute("INSERT INTO machines (job_id, kind, vm_id, state) "
                        "VALUES ($1, 'backup', 'vm', 'metadata')", job)
        merged = await c.fetchval(
            "SELECT ovault_merge_patch($1::jsonb, $2::jsonb)",
            {"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": None, "z": 3}, "c": [1]})
        assert merged == {"a": {"x": 1, "z": 3}, "b": 1, "c": [1]}
