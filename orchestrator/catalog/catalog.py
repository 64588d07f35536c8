"""`Catalog`: every repository over one executor, and transactions across them."""
from __future__ import annotations

import contextlib
from typing import AsyncIterator

import asyncpg

from .backups import BackupRepository
from .db import Executor
from .errors import translate
from .events import EventRepository
from .jobs import JobRepository
from .policies import PolicyRepository
from .targets import TargetRepository
from .tokens import TokenRepository
from .webhooks import WebhookRepository

__all__ = ["Catalog"]


class Catalog:
    """The catalog's repositories, bound to a pool (or a connection).

        catalog = Catalog(pool)
        job = await catalog.jobs.get(job_id)
        async with catalog.transaction() as tx:      # one short transaction
            m = await tx.jobs.transition(...)
            await tx.events.append("job.updated", {...}, job_id=job_id)
    """

    def __init__(self, db: Executor):
        self.db = db
        self.jobs = JobRepository(db)
        self.backups = BackupRepository(db)
        self.events = EventRepository(db)
        self.webhooks = WebhookRepository(db)
        self.tokens = TokenRepository(db)
        self.targets = TargetRepository(db)
        self.policies = PolicyRepository(db)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator["Catalog"]:
        """A Catalog whose calls share one transaction (commit at the end).
        Errors raised at commit (serialization, deadlock) come out as domain errors."""
        try:
            if isinstance(self.db, asyncpg.Pool):
                async with self.db.acquire() as conn, conn.transaction():
                    yield Catalog(conn)
            else:
                async with self.db.transaction():
                    yield Catalog(self.db)
        except Exception as exc:
            mapped = translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
