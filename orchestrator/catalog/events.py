"""The event log: the outbox that webhooks and the websocket read.

`append` inserts the event, enqueues a delivery for every matching webhook and
sends `NOTIFY ovault_events, '<event id>'` — all in one transaction, so a
listener is woken only for events that committed, and no event is ever
committed without its deliveries. Notifications are a wake-up call, not the
data: a listener that reconnects catches up with `list_after(last_seen_id)`.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any, Iterable, Mapping

import asyncpg

from .db import Repository
from .errors import NotFound, Unavailable, translate, wrap_errors
from .models import Event
from .paging import check_limit

__all__ = ["CHANNEL", "EventRepository", "EventListener"]

CHANNEL = "ovault_events"


class EventRepository(Repository):

    @wrap_errors
    async def append(self, type: str, payload: Mapping[str, Any] | None = None, *,
                     job_id: uuid.UUID | None = None) -> Event:
        from .webhooks import WebhookRepository  # same transaction, other aggregate

        async with self._transaction() as c:
            row = await c.fetchrow(
                f"""
                WITH e AS (INSERT INTO events (type, job_id, payload) VALUES ($1, $2, $3)
                           RETURNING *)
                SELECT e.*, pg_notify('{CHANNEL}', e.id::text) FROM e
                """, type, job_id, dict(payload or {}))
            event = Event.from_record(row)
            await WebhookRepository(c).enqueue(event)
        return event

    @wrap_errors
    async def get(self, event_id: int) -> Event:
        row = await self._db.fetchrow("SELECT * FROM events WHERE id = $1", event_id)
        if row is None:
            raise NotFound("event", event_id)
        return Event.from_record(row)

    @wrap_errors
    async def list_after(self, after_id: int = 0, *, limit: int = 100,
                         types: Iterable[str] | None = None,
                         job_id: uuid.UUID | None = None) -> list[Event]:
        """Events with id > `after_id`, oldest first (catch-up after a reconnect)."""
        check_limit(limit)
        rows = await self._db.fetch(
            "SELECT * FROM events WHERE id > $1 AND ($2::text[] IS NULL OR type = ANY($2)) "
            "AND ($3::uuid IS NULL OR job_id = $3) ORDER BY id LIMIT $4",
            after_id, None if types is None else list(types), job_id, limit)
        return [Event.from_record(r) for r in rows]

    @wrap_errors
    async def last_id(self) -> int:
        """Where a new listener starts (0 on an empty log)."""
        return await self._db.fetchval("SELECT coalesce(max(id), 0) FROM events")


_LOST = object()


class EventListener:
    """LISTEN on a dedicated connection (never a pooled one) and hand out event ids.

        async with EventListener(dsn) as listener:
            async for event_id in listener: ...

    When the connection drops, iteration raises `Unavailable`: open a new
    listener and catch up with `EventRepository.list_after`.
    """

    def __init__(self, dsn: str, *, channel: str = CHANNEL):
        self._dsn = dsn
        self._channel = channel
        self._conn: asyncpg.Connection | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    async def start(self) -> None:
        try:
            self._conn = await asyncpg.connect(self._dsn)
            self._conn.add_termination_listener(lambda _c: self._queue.put_nowait(_LOST))
            await self._conn.add_listener(self._channel, self._on_notify)
        except Exception as exc:
            mapped = translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def _on_notify(self, _conn, _pid, _channel, payload: str) -> None:
        try:
            self._queue.put_nowait(int(payload))
        except ValueError:
            pass  # not one of ours

    async def get(self) -> int:
        item = await self._queue.get()
        if item is _LOST:
            self._queue.put_nowait(_LOST)  # keep failing for later callers
            raise Unavailable("the LISTEN connection was lost")
        return item

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None

    async def __aenter__(self) -> "EventListener":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __aiter__(self) -> "EventListener":
        return self

    async def __anext__(self) -> int:
        return await self.get()
