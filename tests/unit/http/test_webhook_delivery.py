"""The webhook delivery worker's HTTP side (orchestrator/webhooks/worker.py)
against scripted receivers (aioresponses): what is sent, how each answer is
recorded, and that a retry sends the same event again. The outbox itself is
the real catalog in tests/integration/catalog/test_catalog_events.py, and a
real receiver is used by tests/e2e/test_api_webhooks.py."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import aiohttp
import pytest
from tests.unit.http.mock_http import aioresponses
from yarl import URL

from orchestrator.catalog import Delivery, DueDelivery, Event
from orchestrator.config import Webhooks
from orchestrator.webhooks import DeliveryWorker, signing

URL_ = "https://hooks.test/ovault"
SECRET = "s3cret-s3cret-s3cret"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


class Outbox:
    """The catalog calls the worker makes: deliveries come due; results are recorded."""

    def __init__(self, max_attempts: int):
        self.due: list[DueDelivery] = []
        self.results: list[tuple] = []
        self.changed = asyncio.Event()
        self.max_attempts = max_attempts
        self.webhooks = self

    def offer(self, delivery_id: int, attempt: int, event: Event):
        d = Delivery(id=delivery_id, webhook_id=uuid.UUID(int=7), event_id=event.id, attempt=attempt,
                     status="pending", next_attempt_at=NOW, last_status_code=None, last_error=None,
                     created_at=NOW, delivered_at=None)
        self.due.append(DueDelivery(delivery=d, url=URL_, event=event, secret=SECRET))

    async def claim_due(self, *, limit, claim_seconds):
        out, self.due = self.due[:limit], self.due[limit:]
        return out

    async def mark_delivered(self, delivery_id, *, attempt, status_code):
        self.results.append(("delivered", delivery_id, attempt, status_code, None))
        self.changed.set()

    async def mark_failed(self, delivery_id, *, attempt, error, status_code=None, max_attempts=8,
                          base_delay=10.0, max_delay=3600.0):
        give_up = attempt >= max_attempts
        self.results.append(("gave_up" if give_up else "retry", delivery_id, attempt, status_code, error))
        self.changed.set()
        return Delivery(id=delivery_id, webhook_id=uuid.UUID(int=7), event_id=0, attempt=attempt,
                        status="failed" if give_up else "pending", next_attempt_at=NOW,
                        last_status_code=status_code, last_error=error, created_at=NOW, delivered_at=None)

    async def wait_results(self, n: int):
        async with asyncio.timeout(5):
            while len(self.results) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.results


class Counter:
    def __init__(self):
        self.outcomes = []

    def webhook_attempt(self, outcome):
        self.outcomes.append(outcome)


@pytest.fixture
async def worker():
    outbox, metrics = Outbox(max_attempts=3), Counter()
    w = DeliveryWorker(outbox, Webhooks(timeout=2, max_attempts=3, poll_interval=60, concurrency=2),
                       metrics=metrics)
    await w.start()
    yield w, outbox, metrics
    await w.stop()


def _event(i=41):
    return Event(id=i, type="job.succeeded", job_id=uuid.UUID(int=5), payload={"vm_ids": ["v1"]}, created_at=NOW)


def _posts(m):
    return m.requests.get(("POST", URL(URL_)), [])


async def test_a_delivery_is_signed_and_recorded(worker):
    w, outbox, metrics = worker
    with aioresponses() as m:
        m.post(URL_, status=204)
        outbox.offer(9, 1, _event())
        w.poke()
        assert await outbox.wait_results(1) == [("delivered", 9, 1, 204, None)]
        (call,) = _posts(m)
    h, body = call.kwargs["headers"], call.kwargs["data"]
    assert json.loads(body) == {"id": 41, "type": "job.succeeded", "time": NOW.isoformat(),
                                "job_id": str(uuid.UUID(int=5)), "data": {"vm_ids": ["v1"]}}
    assert signing.verify(SECRET, h[signing.HEADER], body)
    assert (h["X-Ovault-Event"], h["X-Ovault-Event-Id"], h["X-Ovault-Delivery"], h["X-Ovault-Attempt"]) == \
        ("job.succeeded", "41", "9", "1")
    assert call.kwargs["allow_redirects"] is False
    assert metrics.outcomes == ["delivered"]


async def test_failures_are_retried_with_the_same_event_then_given_up(worker):
    w, outbox, metrics = worker
    with aioresponses() as m:
        m.post(URL_, status=500, body="boom")
        m.post(URL_, exception=aiohttp.ClientConnectionError("connection reset"))
        m.post(URL_, status=302, headers={"Location": "https://elsewhere.test/"})
        for attempt in (1, 2, 3):  # the catalog makes it due again after its backoff
            outbox.offer(12, attempt, _event())
            w.poke()
            await outbox.wait_results(attempt)
        calls = _posts(m)
    assert [r[0] for r in outbox.results] == ["retry", "retry", "gave_up"]
    assert outbox.results[0][3:] == (500, "HTTP 500")
    assert outbox.results[1][3] is None and "ClientConnectionError: connection reset" in outbox.results[1][4]
    assert outbox.results[2][3:] == (302, "HTTP 302")  # a redirect is not followed, and not success
    assert [c.kwargs["data"] for c in calls] == [calls[0].kwargs["data"]] * 3  # same event, byte for byte
    assert [c.kwargs["headers"]["X-Ovault-Attempt"] for c in calls] == ["1", "2", "3"]
    assert {c.kwargs["headers"]["X-Ovault-Event-Id"] for c in calls} == {"41"}
    assert metrics.outcomes == ["retry", "retry", "gave_up"]


async def test_a_receiver_that_times_out_is_a_failed_attempt(worker):
    w, outbox, _ = worker
    with aioresponses() as m:
        m.post(URL_, exception=asyncio.TimeoutError())
        outbox.offer(3, 1, _event())
        w.poke()
        (result,) = await outbox.wait_results(1)
    assert result[:4] == ("retry", 3, 1, None) and result[4].startswith("TimeoutError")
