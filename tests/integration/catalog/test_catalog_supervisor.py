"""The embedded PostgreSQL is started again when its postmaster is SIGKILLed,
and the pool that was open before goes on working."""
import asyncio
import os
import signal
import time

import pytest

from orchestrator.catalog import Catalog, EmbeddedPostgres, Unavailable, connect, migrate
from orchestrator.catalog.supervisor import PostgresSupervisor
from orchestrator.metrics import Metrics

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def _until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = await pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_sigkilled_postmaster_is_restarted_and_the_pool_reconnects(state_dir_factory):
    pg = EmbeddedPostgres(state_dir_factory() / "state", durable=False)
    await pg.start()
    metrics = Metrics()
    sup = PostgresSupervisor(pg, interval=0.2, backoff_min=0.2, on_restart=metrics.catalog_restarts.inc)
    watch = asyncio.create_task(sup.run())
    pool = await connect(pg.dsn, min_size=2, max_size=4, command_timeout=10)
    try:
        await migrate(pool)
        catalog = Catalog(pool)
        t = await catalog.targets.create("t1", "nfs://h/e", {})
        assert sup.alive() and sup.restarts == 0

        for round_ in (1, 2):  # twice: the restarted server is watched too
            pid = pg.pid
            os.kill(pid, signal.SIGKILL)
            await _until(lambda: asyncio.sleep(0, not _alive(pid)), 10, "postmaster gone")
            assert not sup.alive()
            await _until(lambda: asyncio.sleep(0, sup.restarts == round_), 60, "restart")
            assert pg.pid != pid and _alive(pg.pid) and sup.alive()

            # The same pool: connections to the dead server are dropped and new
            # ones opened. At most the calls that raced the restart fail, and
            # they fail as Unavailable (retryable), never as something else.
            async def works():
                try:
                    return await catalog.targets.get(t.id)
                except Unavailable:
                    return None
            got = await _until(works, 20, "a query on the old pool")
            assert (got.name, got.url) == ("t1", "nfs://h/e" if round_ == 1 else "nfs://h/e1")
            # writes commit again
            await catalog.targets.update(t.id, url=f"nfs://h/e{round_}")
            assert (await catalog.targets.get(t.id)).url == f"nfs://h/e{round_}"

        text = metrics.render().decode()
        assert "ovault_catalog_restarts_total 2.0" in text
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await pool.close()
        await pg.stop()
    assert not (pg.data_dir / "postmaster.pid").exists()


async def test_supervisor_refuses_nonsense_settings(state_dir_factory):
    pg = EmbeddedPostgres(state_dir_factory() / "state")
    with pytest.raises(ValueError):
        PostgresSupervisor(pg, interval=0)
    with pytest.raises(ValueError):
        PostgresSupervisor(pg, backoff_min=5, backoff_max=1)
