"""Keeps ovault's embedded PostgreSQL running.

`ovault serve` without a DSN owns its PostgreSQL server. If that server dies
(its postmaster killed, the OOM killer, a crash), nothing else would start it
again: every query would fail until an operator stepped in. The supervisor
watches the postmaster's pid (a `/proc` look-up, no subprocess, every
`interval` seconds) and, once it is gone, starts the cluster again with
`EmbeddedPostgres.start()` (which copes with the stale `postmaster.pid` and the
shared memory that the dead server's backends may hold for a moment). A start
that fails is retried with exponential backoff up to `backoff_max` seconds,
forever, each failure logged with the server log's tail.

The rest of the orchestrator needs no help to resume: asyncpg's pool drops
the connections the dead server held and opens new ones on the next acquire;
the live hub's LISTEN connection reconnects and catches up; a job whose
catalog writes failed is claimed again once its lease expires and resumes from
its persisted state (the database is crash-safe: what was committed is there).
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

import structlog

from imageio_ext.retry import retrying

from .embedded import EmbeddedPostgres

__all__ = ["PostgresSupervisor"]

log = structlog.get_logger("ovault.catalog.supervisor")


class PostgresSupervisor:
    """`await sup.run()` in a task; cancel the task before stopping the server."""

    def __init__(self, pg: EmbeddedPostgres, *, interval: float = 1.0, backoff_min: float = 0.5,
                 backoff_max: float = 30.0, on_restart: Callable[[], None] | None = None):
        if interval <= 0 or backoff_min <= 0 or backoff_max < backoff_min:
            raise ValueError("interval and backoff must be positive, backoff_max >= backoff_min")
        self.pg = pg
        self.interval = interval
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.on_restart = on_restart
        self.restarts = 0  # successful restarts since this supervisor began
        self.down_since: float | None = None  # monotonic time the server was found dead

    def alive(self) -> bool:
        """The postmaster recorded in postmaster.pid is a live postgres process."""
        return self.pg.postmaster_alive()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.alive():
                await self.restart()

    async def restart(self) -> None:
        """Start the server again, retrying with backoff until it runs."""
        dead_pid = self.pg.pid
        self.down_since = time.monotonic()
        log.error("embedded PostgreSQL is not running; restarting it", pid=dead_pid,
                  data_dir=str(self.pg.data_dir))
        tries = 0
        async for attempt in retrying(what="embedded PostgreSQL restart", attempts=None,
                                      first=self.backoff_min, cap=self.backoff_max, jitter=False,
                                      logger=log, level="error", data_dir=str(self.pg.data_dir)):
            with attempt:
                tries += 1
                await self.pg.start()
                if not self.alive():
                    raise RuntimeError("the server exited right after starting")
        down = time.monotonic() - self.down_since
        self.down_since = None
        self.restarts += 1
        log.warning("embedded PostgreSQL restarted", old_pid=dead_pid, pid=self.pg.pid,
                    attempts=tries, down_seconds=round(down, 1), restarts=self.restarts)
        if self.on_restart is not None:
            try:
                self.on_restart()
            except Exception:  # a metrics hook must never stop the supervision
                log.exception("restart hook failed")
