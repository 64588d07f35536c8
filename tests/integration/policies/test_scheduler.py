"""The scheduler on real PostgreSQL with an injectable clock: exactly one run per
tick across two replicas, none lost when one dies, catch-up after downtime,
skipped-because-running, missed window."""
import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from orchestrator.catalog import Catalog, connect
from orchestrator.policies.scheduler import Scheduler
from orchestrator.policies.service import PolicyService

UTC = timezone.utc
T0 = datetime(2030, 3, 4, 10, 0, 30, tzinfo=UTC)


class Engine:
    def __init__(self, *names):
        self.vms = [SimpleNamespace(id=str(uuid.uuid4()), name=n, cluster=SimpleNamespace(id="c"),
                                    tags=[SimpleNamespace(name="gold")]) for n in names]

    async def list_vms_with_tags(self, search=None):
        await asyncio.sleep(0)
        return self.vms


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def replica(catalog, engine, clock, name):
    return Scheduler(catalog, PolicyService(catalog, engine, clock=clock), replica=name,
                     clock=clock)


async def finish_all_jobs(catalog):
    await catalog.db.execute("UPDATE machines SET state = 'succeeded', finished_at = now() "
                             "WHERE state = 'queued'")
    await catalog.db.execute("UPDATE jobs SET state = 'succeeded', finished_at = now() "
                             "WHERE state = 'queued'")


async def test_two_replicas_one_run_per_tick_none_lost(catalog, dsn):
    engine = Engine("vm-1")
    clock = Clock(T0)
    p = await catalog.policies.create({"name": "every-minute", "schedule": "* * * * *",
                                       "timezone": "UTC", "rules": {"tags": ["gold"]}},
                                      scheduled_through=T0)
    pool_b = await connect(dsn, min_size=1, max_size=4)
    try:
        a = replica(catalog, engine, clock, "A")
        b = replica(Catalog(pool_b), engine, clock, "B")
        alive_b = True
        for minute in range(1, 6):
            clock.t = T0 + timedelta(minutes=minute)
            if minute == 3:
                # B dies in the middle of its pass (its transaction rolls back)
                tb = asyncio.create_task(b.pass_once())
                await asyncio.sleep(0.005)
                tb.cancel()
                alive_b = False
                await asyncio.gather(tb, return_exceptions=True)
                await a.pass_once()
            elif alive_b:
                await asyncio.gather(a.pass_once(), b.pass_once())
            else:
                await a.pass_once()
            await finish_all_jobs(catalog)
        # B may have died holding the prune of a finished run: once its claim's
        # lease runs out, A does that work too
        await catalog.db.execute("UPDATE maintenance_ticks SET created_at = now() - "
                                 "interval '1 hour' WHERE finished_at IS NULL")
        await a.pass_once()
    finally:
        await pool_b.close()
    ticks = sorted(await catalog.policies.ticks(p.id), key=lambda t: t.fire_at)
    assert [t.fire_at for t in ticks] == [T0.replace(second=0) + timedelta(minutes=m)
                                         for m in range(1, 6)]
    assert all(t.status == "fired" and t.job_id for t in ticks), ticks
    jobs = await catalog.db.fetch("SELECT id, policy_id, request FROM jobs WHERE kind = 'backup' "
                                  "ORDER BY created_at")
    assert len(jobs) == 5 and {j["policy_id"] for j in jobs} == {p.id}
    assert sorted(str(j["id"]) for j in jobs) == sorted(str(t.job_id) for t in ticks)
    assert {t.replica for t in ticks} <= {"A", "B"}
    # every finished run was pruned (its maintenance row finished) and announced
    done = await catalog.db.fetch("SELECT task FROM maintenance_ticks WHERE finished_at IS NOT NULL")
    assert sorted(r["task"] for r in done) == sorted(f"prune:{j['id']}" for j in jobs)
    ev = await catalog.db.fetch("SELECT payload FROM events WHERE type = 'policy.run.finished'")
    assert sorted(e["payload"]["job_id"] for e in ev) == sorted(str(j["id"]) for j in jobs)
    # and each queued exactly one prune job for its VM
    prunes = await catalog.db.fetch("SELECT request FROM jobs WHERE kind = 'prune'")
    assert len(prunes) == 5 and all(r["request"]["vm_ids"] == [engine.vms[0].id] for r in prunes)


async def test_catch_up_skip_and_missed(catalog):
    engine = Engine("vm-1")
    clock = Clock(T0)
    p = await catalog.policies.create({"name": "quarter", "schedule": "*/15 * * * *",
                                       "timezone": "UTC", "rules": {"tags": ["gold"]},
                                       "window_minutes": 10}, scheduled_through=T0)
    s = replica(catalog, engine, clock, "A")
    # three hours of downtime: one catch-up run, recorded late with the folded count
    clock.t = T0 + timedelta(hours=3)
    [t] = await s.pass_once()
    assert t.status == "late" and t.details["folded"] == 11 and t.job_id
    assert "catch-up" in t.reason
    # the next tick while that run is still queued: the VM is skipped, with the reason
    clock.t = T0 + timedelta(hours=3, minutes=15)
    [t2] = await s.pass_once()
    assert t2.status == "skipped" and "previous run still going" in t2.reason
    assert engine.vms[0].id in t2.details["skipped"]
    # still queued past its window: canceled and recorded missed
    clock.t = T0 + timedelta(hours=3, minutes=25)
    await s.pass_once()
    first = [x for x in await catalog.policies.ticks(p.id) if x.id == t.id][0]
    assert first.status == "missed" and "window_minutes=10" in first.reason
    assert (await catalog.jobs.get(t.job_id)).cancel_requested or \
        (await catalog.jobs.get(t.job_id)).state == "canceled"
