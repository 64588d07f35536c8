"""Webhook subscriptions and their durable delivery outbox.

A delivery row is created in the same transaction as its event
(`EventRepository.append`). Senders take due rows with `claim_due`, which
does not hold row locks across the HTTP call: it bumps `attempt` and pushes
`next_attempt_at` out by a claim timeout, so a sender that dies mid-request
lets the row come due again. The result is then recorded with `mark_delivered`
or `mark_failed` (exponential backoff, then `failed` for good), both guarded by
the attempt number so a late answer to an old attempt changes nothing.

Subscriptions match an event type exactly, by family (`job.*`) or all (`*`).
"""
from __future__ import annotations

import uuid
from typing import Iterable

from .db import Repository
from .errors import Invalid, NotFound, wrap_errors
from .models import Delivery, DueDelivery, Event, Webhook
from .paging import check_limit

__all__ = ["WebhookRepository", "backoff_delay"]

_MAX_ERROR = 2000


def backoff_delay(attempt: int, *, base: float = 10.0, cap: float = 3600.0) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base·2^(n-1), capped."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    return min(cap, base * 2 ** min(attempt - 1, 62))


def _webhook(row) -> Webhook:
    return Webhook.from_record(row, events=tuple(row["events"]))


def _check_events(events: Iterable[str]) -> list[str]:
    events = list(events)
    if not events or any(not isinstance(e, str) or not e for e in events):
        raise Invalid("a webhook needs at least one event type ('job.failed', 'job.*', '*')")
    return events


class WebhookRepository(Repository):

    # -- subscriptions ---------------------------------------------------------

    @wrap_errors
    async def create(self, url: str, secret: str, events: Iterable[str], *,
                     enabled: bool = True) -> Webhook:
        row = await self._db.fetchrow(
            "INSERT INTO webhooks (url, secret, events, enabled) VALUES ($1, $2, $3, $4) "
            "RETURNING *", url, secret, _check_events(events), enabled)
        return _webhook(row)

    @wrap_errors
    async def get(self, webhook_id: uuid.UUID) -> Webhook:
        row = await self._db.fetchrow("SELECT * FROM webhooks WHERE id = $1", webhook_id)
        if row is None:
            raise NotFound("webhook", webhook_id)
        return _webhook(row)

    @wrap_errors
    async def list(self) -> list[Webhook]:
        return [_webhook(r) for r in
                await self._db.fetch("SELECT * FROM webhooks ORDER BY created_at, id")]

    @wrap_errors
    async def update(self, webhook_id: uuid.UUID, *, url: str | None = None,
                     secret: str | None = None, events: Iterable[str] | None = None,
                     enabled: bool | None = None) -> Webhook:
        row = await self._db.fetchrow(
            "UPDATE webhooks SET url = coalesce($2, url), secret = coalesce($3, secret), "
            "events = coalesce($4, events), enabled = coalesce($5, enabled) "
            "WHERE id = $1 RETURNING *",
            webhook_id, url, secret, None if events is None else _check_events(events), enabled)
        if row is None:
            raise NotFound("webhook", webhook_id)
        return _webhook(row)

    @wrap_errors
    async def delete(self, webhook_id: uuid.UUID) -> None:
        """Its pending deliveries go with it."""
        if await self._db.execute("DELETE FROM webhooks WHERE id = $1", webhook_id) != "DELETE 1":
            raise NotFound("webhook", webhook_id)

    # -- outbox ----------------------------------------------------------------

    @wrap_errors
    async def enqueue(self, event: Event) -> int:
        """A pending delivery of `event` per enabled matching webhook (idempotent).
        Call it in the event's transaction; `EventRepository.append` does."""
        status = await self._db.execute(
            """
            INSERT INTO webhook_deliveries (webhook_id, event_id)
            SELECT w.id, $1 FROM webhooks w
             WHERE w.enabled
               AND ($2 = ANY(w.events) OR '*' = ANY(w.events)
                    OR split_part($2, '.', 1) || '.*' = ANY(w.events))
            ON CONFLICT (webhook_id, event_id) DO NOTHING
            """, event.id, event.type)
        return int(status.rsplit(" ", 1)[1])

    @wrap_errors
    async def claim_due(self, *, limit: int = 10, claim_seconds: float = 60.0) -> list[DueDelivery]:
        """Take up to `limit` due deliveries, in event order per (webhook, job).

        A delivery is taken only when no earlier *pending* delivery of the same
        webhook and job exists — pending includes one in flight (claimed rows
        stay pending until their result is recorded) and one waiting for its
        backoff — so each (webhook, job) has at most one delivery in flight and
        receives its events in order; different jobs and webhooks go in
        parallel, and job-less events (backup.deleted, webhook.test) are
        unordered. Claiming bumps `attempt` and pushes `next_attempt_at` out by
        `claim_seconds`: a sender that dies lets the delivery come due again.
        """
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
    async def mark_delivered(self, delivery_id: int, *, attempt: int,
                             status_code: int) -> Delivery | None:
        """None if the row is not at this attempt any more (a stale answer)."""
        row = await self._db.fetchrow(
            "WITH u AS (UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), "
            "           last_status_code = $3, last_error = NULL "
            "           WHERE id = $1 AND attempt = $2 AND status = 'pending' RETURNING *), "
            "     a AS (INSERT INTO webhook_attempts (delivery_id, attempt, status_code, outcome) "
            "           SELECT id, attempt, $3, 'delivered' FROM u "
            "           ON CONFLICT (delivery_id, attempt) DO NOTHING) "
            "SELECT * FROM u",
            delivery_id, attempt, status_code)
        return None if row is None else Delivery.from_record(row)

    @wrap_errors
    async def mark_failed(self, delivery_id: int, *, attempt: int, error: str,
                          status_code: int | None = None, max_attempts: int = 8,
                          base_delay: float = 10.0, max_delay: float = 3600.0
                          ) -> Delivery | None:
        """Schedule the next attempt after `backoff_delay(attempt)`, or give up
        (`failed`) after `max_attempts`. None if the answer is stale."""
        give_up = attempt >= max_attempts
        delay = 0.0 if give_up else backoff_delay(attempt, base=base_delay, cap=max_delay)
        row = await self._db.fetchrow(
            "WITH u AS (UPDATE webhook_deliveries "
            "              SET status = CASE WHEN $5 THEN 'failed' ELSE 'pending' END, "
            "                  next_attempt_at = CASE WHEN $5 THEN next_attempt_at "
            "                                         ELSE now() + make_interval(secs => $6) END, "
            "                  last_status_code = $3, last_error = $4 "
            "            WHERE id = $1 AND attempt = $2 AND status = 'pending' RETURNING *), "
            "     a AS (INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, outcome) "
            "           SELECT id, attempt, $3, $4, CASE WHEN $5 THEN 'gave_up' ELSE 'retry' END FROM u "
            "           ON CONFLICT (delivery_id, attempt) DO NOTHING) "
            "SELECT * FROM u",
            delivery_id, attempt, status_code, error[:_MAX_ERROR], give_up, delay)
        return None if row is None else Delivery.from_record(row)

    @wrap_errors
    async def list_attempts(self, delivery_id: int) -> list[dict]:
        """Every recorded attempt of one delivery, oldest first."""
        rows = await self._db.fetch(
            "SELECT attempt, attempted_at, status_code, error, outcome FROM webhook_attempts "
            "WHERE delivery_id = $1 ORDER BY attempt", delivery_id)
        return [dict(r) for r in rows]

    @wrap_errors
    async def get_delivery(self, delivery_id: int) -> Delivery:
        row = await self._db.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", delivery_id)
        if row is None:
            raise NotFound("webhook delivery", delivery_id)
        return Delivery.from_record(row)

    @wrap_errors
    async def list_deliveries(self, webhook_id: uuid.UUID, *, limit: int = 50,
                              status: str | None = None) -> list[Delivery]:
        """The delivery log of one webhook, newest first."""
        check_limit(limit)
        rows = await self._db.fetch(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = $1 "
            "AND ($2::text IS NULL OR status = $2) ORDER BY id DESC LIMIT $3",
            webhook_id, status, limit)
        return [Delivery.from_record(r) for r in rows]

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
    async def list_deliveries_page(self, webhook_id: uuid.UUID, *, limit: int, before: int | None,
                                   status: str | None) -> list[tuple[Delivery, str]]:
        """Newest first, with each delivery's event type; keyset on the delivery id."""
        rows = await self._db.fetch(
            "SELECT d.*, e.type AS e_type FROM webhook_deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.webhook_id = $1 AND ($2::bigint IS NULL OR d.id < $2) "
            "AND ($3::text IS NULL OR d.status = $3) ORDER BY d.id DESC LIMIT $4",
            webhook_id, before, status, limit)
        return [(Delivery.from_record(r), r["e_type"]) for r in rows]
