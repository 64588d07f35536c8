"""One embedded PostgreSQL for the whole session; a fresh database per test
(shared by the catalog and API tests of this tier).

A database migrated once serves as the template for the per-test databases
(CREATE DATABASE … TEMPLATE is a file copy, much faster than migrating each
time); tests of the migrations themselves get an empty database instead.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from pathlib import Path

import asyncpg
import pytest

from orchestrator.catalog import Catalog, EmbeddedPostgres, connect, migrate

TEMPLATE = "ovault_test_template"
_counter = itertools.count()


def _tmp_state_dir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    # As root the server runs as `postgres`, which must be able to walk in.
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope="session")
def embedded_pg():
    import shutil
    d = _tmp_state_dir("ovault-catalog-test-")
    pg = EmbeddedPostgres(d / "state", durable=False)

    async def setup():
        await pg.start()
        admin = await asyncpg.connect(pg.dsn_for("postgres"))
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            await admin.execute(f"CREATE DATABASE {TEMPLATE} TEMPLATE template0")
        finally:
            await admin.close()
        pool = await connect(pg.dsn_for(TEMPLATE), min_size=1, max_size=1)
        try:
            await migrate(pool)
        finally:
            await pool.close()

    asyncio.run(setup())
    yield pg
    asyncio.run(pg.stop())
    shutil.rmtree(d, ignore_errors=True)


async def _new_database(pg: EmbeddedPostgres, template: str) -> str:
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(pg.dsn_for("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
    finally:
        await admin.close()
    return name


async def _drop_database(pg: EmbeddedPostgres, name: str) -> None:
    admin = await asyncpg.connect(pg.dsn_for("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def empty_dsn(embedded_pg):
    """DSN of a new database with no schema at all."""
    name = await _new_database(embedded_pg, "template0")
    yield embedded_pg.dsn_for(name)
    await _drop_database(embedded_pg, name)


@pytest.fixture
async def dsn(embedded_pg):
    """DSN of a new, fully migrated database."""
    name = await _new_database(embedded_pg, TEMPLATE)
    yield embedded_pg.dsn_for(name)
    await _drop_database(embedded_pg, name)


@pytest.fixture
async def pool(dsn):
    p = await connect(dsn, min_size=1, max_size=8)
    yield p
    await p.close()


@pytest.fixture
def catalog(pool):
    return Catalog(pool)


@pytest.fixture
def state_dir_factory():
    """Fresh state directories for tests that run a cluster of their own."""
    import shutil
    made: list[Path] = []

    def make(prefix: str = "ovault-pg-") -> Path:
        d = _tmp_state_dir(prefix)
        made.append(d)
        return d

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)
