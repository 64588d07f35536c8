"""The delivery outbox, read in order per (webhook, job).

`catalog.WebhookRepository.claim_due` takes any due row; a failed head
delivery backs off while a later event of the same job could go out first.
`claim_ordered` only takes a delivery when no earlier *pending* delivery of
the same webhook and the same job exists — pending includes one in flight
(claimed rows stay pending until their result is recorded) and one waiting
for its backoff. So each (webhook, job) has at most one delivery in flight and
receives its events in event order; different jobs and webhooks go in
parallel. Events without a job (backup.deleted, webhook.test) are unordered.

Results are recorded with the catalog's `mark_delivered` / `mark_failed`
(guarded by the attempt number).
"""
from __future__ import annotations

import uuid

from ..catalog import Delivery, DueDelivery, Event
from ..catalog.errors import wrap_errors

__all__ = ["Outbox"]


class Outbox:
    def __init__(self, pool):
        self._db = pool

    @wrap_errors
    async def claim_ordered(self, *, limit: int = 10, claim_seconds: float = 60.0) -> list[DueDelivery]:
        rows = await self._db.fetch(
            """
            WITH claimed AS (
                UPDATE webhook_deliveries d
                   SET attempt = d.attempt + 1,
                       next_attempt_at = now() + make_interval(secs => $2)
                  FROM (SELECT d2.id FROM webhook_deliveries d2
                          JOIN webhooks w ON w.id = d2.webhook_id
                          JOIN events e ON e.id = d2.event_id
                         WHERE d2.status = 'pending' AND d2.next_attempt_at <= now() AND w.enabled
                           AND NOT EXISTS (
                               SELECT 1 FROM webhook_deliveries p
                                 JOIN events pe ON pe.id = p.event_id
                                WHERE p.webhook_id = d2.webhook_id AND p.status = 'pending'
                                  AND p.event_id < d2.event_id AND pe.job_id = e.job_id)
                         ORDER BY d2.event_id
                         LIMIT $1
                           FOR UPDATE OF d2 SKIP LOCKED) c
                 WHERE d.id = c.id
                RETURNING d.*)
            SELECT claimed.*, w.url, w.secret,
                   e.type AS e_type, e.job_id AS e_job_id, e.payload AS e_payload,
                   e.created_at AS e_created_at
              FROM claimed
              JOIN webhooks w ON w.id = claimed.webhook_id
              JOIN events e ON e.id = claimed.event_id
             ORDER BY claimed.event_id
            """, limit, float(claim_seconds))
        return [DueDelivery(
            delivery=Delivery.from_record(r), url=r["url"], secret=r["secret"],
            event=Event(id=r["event_id"], type=r["e_type"],
                        job_id=None if r["e_job_id"] is None else uuid.UUID(str(r["e_job_id"])),
                        payload=r["e_payload"], created_at=r["e_created_at"]))
            for r in rows]

    @wrap_errors
    async def enqueue_test(self, webhook_id: uuid.UUID, payload: dict) -> tuple[int, int]:
        """A `webhook.test` event delivered to this webhook only: (event id, delivery id)."""
        async with self._db.acquire() as c, c.transaction():
            event_id = await c.fetchval(
                "INSERT INTO events (type, payload) VALUES ('webhook.test', $1) RETURNING id", payload)
            delivery_id = await c.fetchval(
                "INSERT INTO webhook_deliveries (webhook_id, event_id) VALUES ($1, $2) RETURNING id",
                webhook_id, event_id)
            await c.execute("SELECT pg_notify('ovault_events', $1)", str(event_id))
        return event_id, delivery_id

    @wrap_errors
    async def redeliver(self, webhook_id: uuid.UUID, delivery_id: int) -> Delivery | None:
        """Put a `failed` (given up) delivery back in the queue, from attempt 0."""
        row = await self._db.fetchrow(
            "UPDATE webhook_deliveries SET status = 'pending', attempt = 0, next_attempt_at = now() "
            "WHERE id = $1 AND webhook_id = $2 AND status = 'failed' RETURNING *",
            delivery_id, webhook_id)
        return None if row is None else Delivery.from_record(row)

    @wrap_errors
    async def list_deliveries(self, webhook_id: uuid.UUID, *, limit: int, before: int | None,
                              status: str | None) -> list[tuple[Delivery, str]]:
        """Newest first, with each delivery's event type; keyset on the delivery id."""
        rows = await self._db.fetch(
            "SELECT d.*, e.type AS e_type FROM webhook_deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.webhook_id = $1 AND ($2::bigint IS NULL OR d.id < $2) "
            "AND ($3::text IS NULL OR d.status = $3) ORDER BY d.id DESC LIMIT $4",
            webhook_id, before, status, limit)
        return [(Delivery.from_record(r), r["e_type"]) for r in rows]
