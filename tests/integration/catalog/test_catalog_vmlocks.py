"""Per-VM locks (one operation per VM at a time) on a real PostgreSQL."""
import asyncio

import pytest

from orchestrator.catalog import Catalog, NewMachine, connect
from orchestrator.catalog.vmlocks import (VmBusy, VmLockRepository, create_job_locked,
                                          try_create_job)

pytestmark = pytest.mark.integration

VM = "0f0e0d0c-0000-4000-8000-000000000001"
OTHER = "0f0e0d0c-0000-4000-8000-000000000002"


async def _backup(catalog, *vms):
    return await create_job_locked(catalog, "backup", [NewMachine(vm_id=v, vm_name=f"n-{v[-1]}")
                                                       for v in vms],
                                   lock_vms=vms, request={"vm_ids": list(vms)}, created_by="t")


async def _count(pool, sql, *args):
    async with pool.acquire() as c:
        return await c.fetchval(sql, *args)


async def test_lock_is_taken_with_the_job_and_refuses_a_second(catalog, pool):
    job = await _backup(catalog, VM)
    locks = await VmLockRepository(pool).held_by(job.id)
    assert [(lk.vm_id, lk.job_id, lk.kind) for lk in locks] == [(VM, job.id, "backup")]
    # its job.queued event was written in the same transaction
    assert await _count(pool, "SELECT count(*) FROM events WHERE job_id = $1 AND type = 'job.queued'",
                        job.id) == 1
    with pytest.raises(VmBusy) as ei:
        await create_job_locked(catalog, "restore", [NewMachine(vm_id=VM, vm_name="n-1")],
                                lock_vms=[VM.upper()], request={"kind": "in_place"})
    busy = ei.value
    assert (busy.job_id, busy.kind, busy.vm_id) == (job.id, "backup", VM)
    assert str(busy) == f"VM n-1 ({VM}) is busy with backup job {job.id}"
    # nothing of the refused request is left: one job, one machine, one event
    assert await _count(pool, "SELECT count(*) FROM jobs") == 1
    assert await _count(pool, "SELECT count(*) FROM machines") == 1
    assert await _count(pool, "SELECT count(*) FROM events") == 1
    # a multi-VM job with one busy VM is refused whole; the free VM stays free
    with pytest.raises(VmBusy):
        await _backup(catalog, OTHER, VM)
    assert await VmLockRepository(pool).holder(OTHER) is None
    # the policy form answers instead of raising
    none, why = await try_create_job(catalog, "backup", [NewMachine(vm_id=VM, vm_name="n-1")],
                                     lock_vms=[VM])
    assert none is None and why.job_id == job.id


async def test_three_at_once_one_wins(dsn):
    pools = [await connect(dsn, min_size=1, max_size=1) for _ in range(3)]
    try:
        results = await asyncio.gather(*(_backup(Catalog(p), VM) for p in pools),
                                       return_exceptions=True)
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 2, results
        assert all(isinstance(e, VmBusy) and e.job_id == won[0].id for e in lost)
        assert await _count(pools[0], "SELECT count(*) FROM jobs") == 1
    finally:
        for p in pools:
            await p.close()


@pytest.mark.parametrize("end", ["succeeded", "failed", "canceled-queued", "gave-up"])
async def test_every_end_of_a_job_releases_its_vms(catalog, pool, end):
    job = await _backup(catalog, VM, OTHER)
    locks = VmLockRepository(pool)
    assert {lk.vm_id for lk in await locks.held_by(job.id)} == {VM, OTHER}
    if end in ("succeeded", "failed"):
        for m in job.machines:
            await catalog.jobs.transition(m.id, from_state="queued", to_state="snapshot", version=0)
            await catalog.jobs.transition(m.id, from_state="snapshot", to_state=end, version=1)
        assert (await catalog.jobs.rollup(job.id)).state == end
    elif end == "canceled-queued":
        assert (await catalog.jobs.request_cancel(job.id)).state == "canceled"
    else:
        assert (await catalog.jobs.fail(job.id, "gave up after 5 attempts")).state == "failed"
    assert await locks.held_by(job.id) == []
    assert await locks.holder(VM) is None
    nxt = await _backup(catalog, VM)  # the VM can be backed up again at once
    assert (await locks.holder(VM)).job_id == nxt.id


async def test_running_job_keeps_its_lock_and_a_stale_lock_is_free(catalog, pool):
    job = await _backup(catalog, VM)
    claimed = await catalog.jobs.claim("replica-a", lease_seconds=30)
    assert [j.id for j in claimed] == [job.id]
    assert (await VmLockRepository(pool).holder(VM)).job_id == job.id
    # A job row ended by hand with the trigger bypassed leaves a stale lock:
    # the next request takes it over.
    async with pool.acquire() as c:
        await c.execute("ALTER TABLE jobs DISABLE TRIGGER jobs_release_vm_locks")
        await c.execute("UPDATE jobs SET state = 'failed', finished_at = now(), lease_owner = NULL, "
                        "lease_expires_at = NULL WHERE id = $1", job.id)
        await c.execute("ALTER TABLE jobs ENABLE TRIGGER jobs_release_vm_locks")
    assert await VmLockRepository(pool).holder(VM) is None
    nxt = await _backup(catalog, VM)
    assert (await VmLockRepository(pool).holder(VM)).job_id == nxt.id


async def test_policy_run_takes_the_free_vms_and_skips_the_busy_ones(catalog, pool):
    from orchestrator.catalog.vmlocks import create_job_skipping_busy
    third = "0f0e0d0c-0000-4000-8000-000000000003"
    holder = await _backup(catalog, OTHER)
    tagged = []

    async def then(tx, job):  # same transaction: a failure here would undo the job and its locks
        await tx.events.append("policy.run.started", {"job_id": str(job.id)}, job_id=job.id)
        tagged.append(job.id)
    machines = [NewMachine(vm_id=v, vm_name=f"n-{v[-1]}") for v in (VM, OTHER, third)]
    job, skipped = await create_job_skipping_busy(catalog, "backup", machines, then=then,
                                                  request={"mode": "auto"})
    assert sorted(m.vm_id for m in job.machines) == [VM, third]
    assert list(skipped) == [OTHER] and skipped[OTHER].job_id == holder.id
    assert "busy with backup job" in str(skipped[OTHER])
    assert tagged == [job.id]
    locks = VmLockRepository(pool)
    assert {lk.vm_id for lk in await locks.held_by(job.id)} == {VM, third}
    # every VM busy: no job at all
    none, skipped = await create_job_skipping_busy(catalog, "backup", machines[:2])
    assert none is None and set(skipped) == {VM, OTHER}
    assert await _count(pool, "SELECT count(*) FROM jobs") == 2
