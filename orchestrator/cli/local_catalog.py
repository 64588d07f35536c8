"""The catalog for a local command (`token`, `import`, `verify`, `catalog`):
the configured external database, or the embedded cluster in the state
directory, started for the command when no `serve` runs it and stopped after
(a running `serve` owns it: it is used and left up)."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path


@contextlib.asynccontextmanager
async def catalog_dsn(cfg) -> AsyncIterator[tuple[str, Path | None]]:
    """(DSN, the embedded server's bindir or None) of the configured catalog."""
    from .. import catalog as cat
    from ..service import state_path
    if cfg.database.dsn:
        yield cfg.database.dsn, None
        return
    pg = cat.EmbeddedPostgres(state_path(cfg, "pg"))
    started = False
    if not await pg.is_running():
        await pg.start()
        started = True
    try:
        yield pg.dsn, pg.bindir
    finally:
        if started:
            await pg.stop()


@contextlib.asynccontextmanager
async def open_catalog(cfg):
    """A migrated `Catalog` on the configured database, closed after."""
    from .. import catalog as cat
    async with catalog_dsn(cfg) as (dsn, _):
        pool = await cat.connect(dsn)
        try:
            await cat.migrate(pool)
            yield cat.Catalog(pool)
        finally:
            await pool.close()
