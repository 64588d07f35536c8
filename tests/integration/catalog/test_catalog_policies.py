"""The policy repository on real PostgreSQL: CRUD, ticks that fire once, protected
backups and two-step deletion."""
import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.catalog import Conflict, Invalid, NewMachine, NotFound

UTC = timezone.utc
FIELDS = {"name": "nightly", "schedule": "0 2 * * *", "timezone": "Europe/Paris",
          "retention": {"keep_daily": 7}, "vm_ids": ["vm-a"], "rules": {"tags": ["prod"]},
          "window_minutes": 30, "full_every_days": 7, "notify": {"emails": ["o@x.org"]}}


async def test_policy_crud(catalog):
    p = await catalog.policies.create(FIELDS, created_by="alice")
    assert (p.name, p.schedule, p.timezone, p.vm_ids, p.window_minutes) == \
        ("nightly", "0 2 * * *", "Europe/Paris", ("vm-a",), 30)
    assert p.retention == {"keep_daily": 7} and p.enabled and p.created_by == "alice"
    assert (await catalog.policies.get(p.id)) == p
    assert (await catalog.policies.get_by_name("nightly")).id == p.id
    with pytest.raises(Conflict):
        await catalog.policies.create(FIELDS)
    u = await catalog.policies.update(p.id, {**p.fields(), "enabled": False, "vm_ids": []})
    assert not u.enabled and u.vm_ids == () and u.rules == {"tags": ["prod"]}
    assert u.scheduled_through >= p.scheduled_through
    assert [x.id for x in await catalog.policies.list(enabled=False)] == [p.id]
    assert await catalog.policies.list(enabled=True) == []
    with pytest.raises(Invalid):
        await catalog.policies.create({**FIELDS, "name": "n2", "colour": "red"})
    await catalog.policies.delete(p.id)
    with pytest.raises(NotFound):
        await catalog.policies.get(p.id)
    with pytest.raises(NotFound):
        await catalog.policies.delete(p.id)


async def test_a_tick_fires_once_across_concurrent_claimers(catalog, pool):
    p = await catalog.policies.create(FIELDS)
    at = datetime(2030, 1, 1, 1, 0, tzinfo=UTC)
    results = await asyncio.gather(*(catalog.policies.claim_tick(
        p.id, at, status="fired", replica=f"r{i}") for i in range(8)))
    won = [r for r in results if r is not None]
    assert len(won) == 1 and won[0].fire_at == at and won[0].status == "fired"
    job = await catalog.jobs.create("backup", [NewMachine(vm_id="vm-a")])
    await catalog.policies.tag_job(job.id, p.id)
    assert await catalog.policies.job_policy(job.id) == p.id
    t = await catalog.policies.finish_tick(won[0].id, job_id=job.id,
                                           details={"skipped": {"vm-b": "busy"}})
    assert t.job_id == job.id and t.details == {"skipped": {"vm-b": "busy"}}
    assert [x.id for x in await catalog.policies.ticks(p.id)] == [t.id]
    assert await catalog.policies.busy_vms(["vm-a", "vm-b"]) == {"vm-a": (job.id, "backup")}
    # the cursor only moves forward
    await catalog.policies.advance(p.id, at + timedelta(days=400))
    await catalog.policies.advance(p.id, at)
    assert (await catalog.policies.get(p.id)).scheduled_through == at + timedelta(days=400)
    # deleting the policy keeps the job, untagged
    await catalog.policies.delete(p.id)
    assert await catalog.policies.job_policy(job.id) is None
    with pytest.raises(Invalid):
        await catalog.policies.claim_tick(p.id, at, status="late!", replica="r")


async def _succeeded(catalog, vm_id, mode="full"):
    b = await catalog.backups.create(vm_id=vm_id, vm_name=vm_id, mode=mode, method="cbt")
    return await catalog.backups.complete(b.id, size_bytes=1, new_bytes=1, consistency="crash")


async def test_protected_and_two_step_delete(catalog):
    a = await _succeeded(catalog, "vm-a")
    b = await _succeeded(catalog, "vm-a", "incremental")
    running = await catalog.backups.create(vm_id="vm-a", vm_name="a", mode="full", method="cbt")
    assert (await catalog.policies.set_protected(a.id, True))["protected"] is True
    assert await catalog.policies.protected_ids([a.id, b.id]) == {a.id}
    with pytest.raises(Conflict, match="protected"):
        await catalog.policies.mark_deleting(a.id)
    with pytest.raises(Conflict, match="running"):
        await catalog.policies.mark_deleting(running.id)
    d = await catalog.policies.mark_deleting(b.id)
    assert d["status"] == "deleting"
    assert (await catalog.policies.mark_deleting(b.id))["status"] == "deleting"   # idempotent
    # hidden from lists and from the last-succeeded lookups at once
    listed = [x.id for x in (await catalog.backups.list(vm_id="vm-a")).items]
    assert b.id not in listed and a.id in listed
    assert (await catalog.backups.last_succeeded("vm-a")).id == a.id
    assert [r["id"] for r in await catalog.policies.deleting()] == [b.id]
    assert [r["id"] for r in await catalog.policies.retention_items("vm-a")] == [running.id, a.id]
    assert await catalog.policies.finish_deleted(b.id) is True
    assert await catalog.policies.finish_deleted(b.id) is False
    assert (await catalog.backups.get(b.id)).status == "deleted"
    with pytest.raises(Conflict):
        await catalog.policies.set_protected(b.id, True)
    with pytest.raises(NotFound):
        await catalog.policies.set_protected(uuid.uuid4(), True)
    assert await catalog.policies.last_full_many(["vm-a"]) == {"vm-a": a.created_at}


async def test_maintenance_and_protection_log(catalog):
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert await catalog.policies.claim_maintenance("gc", at, "r1") is True
    assert await catalog.policies.claim_maintenance("gc", at, "r2") is False
    await catalog.policies.finish_maintenance("gc", at, {"bytes_freed": 5})
    assert (await catalog.policies.last_maintenance("gc"))["result"] == {"bytes_freed": 5}
    assert await catalog.policies.record_protection("vm-a", "unprotected", None) == ""
    assert await catalog.policies.record_protection("vm-a", "unprotected", None) is None
    assert await catalog.policies.record_protection("vm-a", "protected", None) == "unprotected"
