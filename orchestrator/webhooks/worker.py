"""The delivery worker: sends due outbox rows, records each attempt's result.

At-least-once: an attempt's result is recorded after the receiver answered.
A receiver that got the request but whose answer was lost (timeout, our crash
between its 2xx and `mark_delivered`) gets the same event again, with the
same `id` and `X-Ovault-Event-Id`; nothing else is ever sent twice. Nothing
is lost on restart: rows stay `pending` until delivered, and a row claimed by
a replica that died comes due again after the claim timeout.

Backoff after failed attempt n: `base_delay * 2^(n-1)`, capped at `max_delay`;
after `max_attempts` the delivery is `failed` (listable, and can be put back
with `POST /api/v1/webhooks/{id}/deliveries/{delivery_id}/retry`).
"""
from __future__ import annotations

import asyncio

import aiohttp
import structlog

from .. import catalog as cat
from . import guard, payload, signing

log = structlog.get_logger("ovault.webhooks")
USER_AGENT = "ovault-webhooks/1"
MAX_ERROR = 300  # characters of an attempt's error kept in the delivery log
MAX_RESPONSE = 64 * 1024  # bytes of a receiver's answer read (and discarded)


class DeliveryWorker:
    def __init__(self, catalog: cat.Catalog, cfg, *, metrics=None, resolver=None):
        self.catalog = catalog
        self.cfg = cfg  # config.Webhooks
        self.metrics = metrics
        self.wakeup = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        self._sem = asyncio.Semaphore(max(1, cfg.concurrency))
        self._resolver = resolver  # an aiohttp resolver; None: aiohttp's default
        self.allow = guard.parse_networks(getattr(cfg, "allow_networks", []))

    def poke(self) -> None:
        """New events may have new deliveries: look now instead of at the next poll."""
        self.wakeup.set()

    async def start(self) -> None:
        # Destinations are checked after resolution, on the addresses connected
        # to (guard.GuardedConnector); no proxy from the environment (trust_env).
        self._session = aiohttp.ClientSession(
            connector=guard.GuardedConnector(self.allow, resolver=self._resolver),
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
            headers={"User-Agent": USER_AGENT}, trust_env=False)
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._session:
            await self._session.close()

    async def _run(self) -> None:
        inflight: set[asyncio.Task] = set()
        claim_seconds = self.cfg.timeout * 3 + 5  # never reclaimed while still in flight
        try:
            while True:
                free = self.cfg.concurrency - len(inflight)
                due = []
                if free > 0:
                    try:
                        due = await self.catalog.webhooks.claim_due(limit=free, claim_seconds=claim_seconds)
                    except cat.CatalogError as e:
                        log.warning("claiming webhook deliveries failed", error=str(e))
                for d in due:
                    t = asyncio.create_task(self._send(d))
                    inflight.add(t)
                    t.add_done_callback(inflight.discard)
                if due and len(due) == free:
                    await asyncio.sleep(0)  # more may be due: go again at once
                    continue
                self.wakeup.clear()
                waiters = [asyncio.ensure_future(self.wakeup.wait())]
                try:
                    await asyncio.wait([*waiters, *inflight], timeout=self.cfg.poll_interval,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiters[0].cancel()
        finally:
            for t in inflight:
                t.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)

    async def _send(self, due: cat.DueDelivery) -> None:
        d, ev = due.delivery, due.event
        body = payload.body(ev)
        headers = {"Content-Type": "application/json",
                   signing.HEADER: signing.sign(due.secret, body),
                   "X-Ovault-Event": ev.type, "X-Ovault-Event-Id": str(ev.id),
                   "X-Ovault-Delivery": str(d.id), "X-Ovault-Attempt": str(d.attempt)}
        bound = log.bind(webhook_id=str(d.webhook_id), delivery_id=d.id, event_id=ev.id,
                         event=ev.type, attempt=d.attempt,
                         job_id=str(ev.job_id) if ev.job_id else None)
        status, error = None, None
        try:
            async with self._sem:
                async with self._session.post(due.url, data=body, headers=headers,
                                              allow_redirects=False) as r:
                    status = r.status
                    await r.content.read(MAX_RESPONSE)  # never more than this of an answer
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            blocked = getattr(e, "os_error", None)
            if isinstance(blocked, guard.BlockedDestination):
                error = f"refused: {blocked}"[:MAX_ERROR]
            else:
                error = f"{type(e).__name__}: {e}"[:MAX_ERROR] or type(e).__name__
        try:
            if error is None:
                await self.catalog.webhooks.mark_delivered(d.id, attempt=d.attempt, status_code=status)
                bound.info("webhook delivered", status=status)
                outcome = "delivered"
            else:
                row = await self.catalog.webhooks.mark_failed(
                    d.id, attempt=d.attempt, error=error, status_code=status,
                    max_attempts=self.cfg.max_attempts, base_delay=self.cfg.base_delay,
                    max_delay=self.cfg.max_delay)
                outcome = "gave_up" if row is not None and row.status == "failed" else "retry"
                (bound.error if outcome == "gave_up" else bound.warning)(
                    "webhook delivery failed", error=error, status=status, outcome=outcome,
                    next_attempt_at=row.next_attempt_at.isoformat() if row is not None else None)
        except cat.CatalogError as e:
            # The claim expires and the delivery is tried again: at least once.
            bound.warning("recording a webhook attempt failed", error=str(e))
            outcome = "unrecorded"
        if self.metrics is not None:
            self.metrics.webhook_attempt(outcome)
