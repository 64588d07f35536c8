import asyncio
from datetime import timedelta

import pytest

from orchestrator.catalog import (Catalog, EventListener, Invalid, NewMachine, NotFound,
                                  backoff_delay)

pytestmark = pytest.mark.integration


async def test_append_notifies_a_listening_connection(catalog, dsn):
    job = await catalog.jobs.create("backup", [NewMachine("vm-1")])
    async with EventListener(dsn) as listener:
        event = await catalog.events.append("job.updated", {"state": "running"}, job_id=job.id)
        got = await asyncio.wait_for(listener.get(), 5)
        assert got == event.id
        stored = await catalog.events.get(got)
        assert (stored.type, stored.job_id, stored.payload) == \
            ("job.updated", job.id, {"state": "running"})

        # an event whose transaction rolls back is neither stored nor announced
        class Boom(Exception):
            pass
        with pytest.raises(Boom):
            async with catalog.transaction() as tx:
                await tx.events.append("job.failed", {"n": 1})
                raise Boom
        # events appended together in one transaction are announced at commit, in order
        async with catalog.transaction() as tx:
            e1 = await tx.events.append("job.updated", {"n": 2})
            e2 = await tx.events.append("job.succeeded", {"n": 3}, job_id=job.id)
        got = [await asyncio.wait_for(listener.get(), 5) for _ in range(2)]
        assert got == [e1.id, e2.id]
        assert listener._queue.empty()
    after = await catalog.events.list_after(event.id)
    assert [(e.type, e.payload) for e in after] == \
        [("job.updated", {"n": 2}), ("job.succeeded", {"n": 3})]
    assert [e.id for e in await catalog.events.list_after(0, job_id=job.id)] == [event.id, e2.id]
    assert [e.id for e in await catalog.events.list_after(0, types=["job.succeeded"])] == [e2.id]
    assert await catalog.events.last_id() == e2.id
    with pytest.raises(NotFound):
        await catalog.events.get(10**9)


async def test_transition_and_event_commit_together(catalog, pool):
    job = await catalog.jobs.create("backup", [NewMachine("vm-1")])
    m = job.machines[0]
    with pytest.raises(RuntimeError):
        async with catalog.transaction() as tx:
            assert await tx.jobs.transition(m.id, from_state="queued", to_state="snapshot",
                                            version=0)
            await tx.events.append("machine.updated", {"state": "snapshot"}, job_id=job.id)
            raise RuntimeError("crash before commit")
    assert (await catalog.jobs.get_machine(m.id)).state == "queued"
    async with pool.acquire() as c:
        assert await c.fetchval("SELECT count(*) FROM events") == 0


async def test_event_enqueues_deliveries_for_matching_webhooks(catalog, pool):
    exact = await catalog.webhooks.create("https://a.example/hook", "s1", ["job.failed"])
    family = await catalog.webhooks.create("https://b.example/hook", "s2", ["job.*"])
    anything = await catalog.webhooks.create("https://c.example/hook", "s3", ["*"])
    await catalog.webhooks.create("https://d.example/hook", "s4", ["backup.created"])
    await catalog.webhooks.create("https://e.example/hook", "s5", ["*"], enabled=False)
    assert "s1" not in repr(exact)  # secrets stay out of logs

    failed = await catalog.events.append("job.failed", {"error": "x"})
    created = await catalog.events.append("restore.succeeded", {})
    async with pool.acquire() as c:
        rows = await c.fetch("SELECT webhook_id, event_id, status, attempt FROM webhook_deliveries "
                             "ORDER BY event_id, webhook_id")
    got = {(r["webhook_id"], r["event_id"]) for r in rows}
    assert got == {(exact.id, failed.id), (family.id, failed.id), (anything.id, failed.id),
                   (anything.id, created.id)}
    assert {(r["status"], r["attempt"]) for r in rows} == {("pending", 0)}
    # enqueuing again is a no-op
    assert await catalog.webhooks.enqueue(failed) == 0
    with pytest.raises(Invalid):
        await catalog.webhooks.create("https://x", "s", [])


async def _make_due(pool, delivery_id):
    """Move time forward for one delivery (instead of sleeping through a backoff)."""
    async with pool.acquire() as c:
        await c.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE id = $1",
                        delivery_id)


async def test_delivery_backoff_then_give_up(catalog, pool):
    hook = await catalog.webhooks.create("https://a.example/hook", "sekrit", ["job.*"])
    event = await catalog.events.append("job.failed", {"error": "boom"})

    [due] = await catalog.webhooks.claim_due(limit=10, claim_seconds=120)
    assert (due.url, due.secret, due.event.id, due.event.type, due.event.payload) == \
        (hook.url, "sekrit", event.id, "job.failed", {"error": "boom"})
    assert (due.delivery.attempt, due.delivery.status) == (1, "pending")
    # claimed: not handed out again while the sender works on it
    assert await catalog.webhooks.claim_due(limit=10) == []

    async def db_now():
        async with pool.acquire() as c:
            return await c.fetchval("SELECT now()")

    d = due.delivery
    for attempt in (1, 2, 3):
        before = await db_now()
        failed = await catalog.webhooks.mark_failed(d.id, attempt=attempt, status_code=503,
                                                    error="Service Unavailable", max_attempts=4)
        assert (failed.status, failed.last_status_code, failed.last_error) == \
            ("pending", 503, "Service Unavailable")
        wait = failed.next_attempt_at - before
        expected = timedelta(seconds=10 * 2 ** (attempt - 1))
        assert expected <= wait < expected + timedelta(seconds=2)
        assert await catalog.webhooks.claim_due() == []  # not due yet
        await _make_due(pool, d.id)
        [again] = await catalog.webhooks.claim_due()
        assert again.delivery.attempt == attempt + 1
        d = again.delivery
    # a late answer to an old attempt changes nothing
    assert await catalog.webhooks.mark_delivered(d.id, attempt=2, status_code=200) is None
    last = await catalog.webhooks.mark_failed(d.id, attempt=4, error="timeout", max_attempts=4)
    assert last.status == "failed" and last.last_status_code is None
    await _make_due(pool, d.id)
    assert await catalog.webhooks.claim_due() == []
    [logged] = await catalog.webhooks.list_deliveries(hook.id)
    assert (logged.status, logged.attempt, logged.last_error) == ("failed", 4, "timeout")


async def test_delivery_succeeds_and_disabled_hooks_wait(catalog):
    hook = await catalog.webhooks.create("https://a.example/hook", "s", ["*"])
    await catalog.events.append("job.succeeded", {})
    await catalog.webhooks.update(hook.id, enabled=False)
    assert await catalog.webhooks.claim_due() == []
    await catalog.webhooks.update(hook.id, enabled=True)
    [due] = await catalog.webhooks.claim_due()
    ok = await catalog.webhooks.mark_delivered(due.delivery.id, attempt=1, status_code=204)
    assert (ok.status, ok.last_status_code) == ("delivered", 204) and ok.delivered_at
    assert await catalog.webhooks.mark_failed(due.delivery.id, attempt=1, error="late") is None
    await catalog.webhooks.delete(hook.id)
    with pytest.raises(NotFound):
        await catalog.webhooks.get(hook.id)


async def test_concurrent_senders_never_share_a_delivery(catalog, dsn):
    from orchestrator.catalog import connect
    await catalog.webhooks.create("https://a.example/hook", "s", ["*"])
    for i in range(30):
        await catalog.events.append("job.updated", {"i": i})
    pools = [await connect(dsn, min_size=1, max_size=1) for _ in range(3)]
    try:
        async def sender(p):
            got = []
            while batch := await Catalog(p).webhooks.claim_due(limit=4):
                got += [d.delivery.id for d in batch]
            return got
        results = await asyncio.gather(*(sender(p) for p in pools))
    finally:
        for p in pools:
            await p.close()
    flat = [i for r in results for i in r]
    assert len(flat) == len(set(flat)) == 30


def test_backoff_delay_formula():
    assert [backoff_delay(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert backoff_delay(30) == 3600
    assert backoff_delay(3, base=1, cap=3) == 3
