import asyncio
import uuid

import asyncpg
import pytest

from orchestrator.catalog import (Catalog, Conflict, Invalid, JobRepository, LeaseLost,
                                  NewMachine, NotFound, Retryable, connect)

pytestmark = pytest.mark.integration


async def _backup_job(catalog: Catalog, *vms: str, **kw):
    return await catalog.jobs.create(
        "backup", [NewMachine(vm_id=v, vm_name=f"name-{v}") for v in vms],
        request={"mode": "auto", "vm_ids": list(vms)}, created_by="admin@internal", **kw)


async def test_create_job_with_machines_in_one_transaction(catalog, pool):
    job = await _backup_job(catalog, "vm-a", "vm-b")
    assert job.state == "queued" and job.kind == "backup" and not job.cancel_requested
    assert job.request == {"mode": "auto", "vm_ids": ["vm-a", "vm-b"]}
    assert sorted(m.vm_id for m in job.machines) == ["vm-a", "vm-b"]
    assert {(m.state, m.version, m.kind, m.job_id) for m in job.machines} == \
        {("queued", 0, "backup", job.id)}
    again = await catalog.jobs.get(job.id)
    assert again == job
    # a duplicate VM makes the whole job fail: no job row is left behind
    with pytest.raises(Conflict) as ei:
        await _backup_job(catalog, "vm-c", "vm-c")
    assert isinstance(ei.value.__cause__, asyncpg.UniqueViolationError)
    async with pool.acquire() as c:
        assert await c.fetchval("SELECT count(*) FROM jobs") == 1
        assert await c.fetchval("SELECT count(*) FROM machines") == 2
    with pytest.raises(NotFound):
        await catalog.jobs.get(uuid.uuid4())
    with pytest.raises(Invalid):
        await catalog.jobs.create("backup", [])


async def test_two_racing_claimers_never_share_a_job(catalog, dsn):
    jobs = [await _backup_job(catalog, f"vm-{i}") for i in range(20)]
    pools = [await connect(dsn, min_size=2, max_size=2) for _ in range(2)]
    claimed: dict[str, list] = {"A": [], "B": []}
    start = asyncio.Event()

    async def claimer(name: str, pool):
        repo = JobRepository(pool)
        await start.wait()
        while True:
            got = await repo.claim(name, lease_seconds=60, limit=2)
            if not got:
                return
            claimed[name].extend(got)

    try:
        tasks = [asyncio.create_task(claimer(n, p)) for n, p in zip("AB", pools)]
        start.set()
        await asyncio.gather(*tasks)
    finally:
        for p in pools:
            await p.close()
    ids_a = [j.id for j in claimed["A"]]
    ids_b = [j.id for j in claimed["B"]]
    assert len(ids_a) + len(ids_b) == 20
    assert set(ids_a) | set(ids_b) == {j.id for j in jobs}
    assert not set(ids_a) & set(ids_b)
    assert ids_a and ids_b, "both claimers should have won some jobs"
    for name, got in claimed.items():
        for j in got:
            row = await catalog.jobs.get(j.id, with_machines=False)
            assert (row.state, row.lease_owner, row.attempts) == ("running", name, 1)
            assert row.started_at is not None and row.lease_expires_at > row.started_at


async def test_claim_is_fifo_and_filters_kind(catalog):
    first = await _backup_job(catalog, "vm-1")
    second = await _backup_job(catalog, "vm-2")
    restore = await catalog.jobs.create("restore", [NewMachine("vm-9")])
    got = await catalog.jobs.claim("r1", lease_seconds=30, limit=1, kinds=["backup"])
    assert [j.id for j in got] == [first.id]
    assert [m.vm_id for m in got[0].machines] == ["vm-1"]
    got = await catalog.jobs.claim("r1", lease_seconds=30, limit=5, kinds=["restore"])
    assert [j.id for j in got] == [restore.id]
    got = await catalog.jobs.claim("r1", lease_seconds=30, limit=5)
    assert [j.id for j in got] == [second.id]
    assert await catalog.jobs.claim("r1", lease_seconds=30) == []


async def test_expired_lease_lets_another_replica_claim(catalog):
    job = await _backup_job(catalog, "vm-1")
    [mine] = await catalog.jobs.claim("replica-a", lease_seconds=0.3)
    assert await catalog.jobs.claim("replica-b", lease_seconds=30) == []
    renewed = await catalog.jobs.renew_lease(job.id, "replica-a", lease_seconds=0.3)
    assert renewed is not None and renewed.lease_expires_at > mine.lease_expires_at
    assert await catalog.jobs.renew_lease(job.id, "replica-b", lease_seconds=30) is None
    await asyncio.sleep(0.4)  # replica-a stops heartbeating (it died)
    [theirs] = await catalog.jobs.claim("replica-b", lease_seconds=30)
    assert theirs.id == job.id
    assert (theirs.lease_owner, theirs.attempts, theirs.state) == ("replica-b", 2, "running")
    assert theirs.started_at == mine.started_at
    # the old owner finds out at its next heartbeat and cannot write any more
    assert await catalog.jobs.renew_lease(job.id, "replica-a", lease_seconds=30) is None
    assert await catalog.jobs.renew_leases("replica-a", [job.id], lease_seconds=30) == set()
    assert await catalog.jobs.renew_leases("replica-b", [job.id], lease_seconds=30) == {job.id}
    m = theirs.machines[0]
    assert await catalog.jobs.transition(m.id, from_state="queued", to_state="snapshot",
                                         version=0, owner="replica-a") is None
    with pytest.raises(LeaseLost):
        await catalog.jobs.record_resources(m.id, {"snapshot": {"id": "s"}}, owner="replica-a")
    won = await catalog.jobs.transition(m.id, from_state="queued", to_state="snapshot",
                                        version=0, owner="replica-b")
    assert won is not None and won.state == "snapshot"


async def test_release_makes_job_claimable_at_once(catalog):
    job = await _backup_job(catalog, "vm-1")
    await catalog.jobs.claim("a", lease_seconds=300)
    assert await catalog.jobs.release(job.id, "b") is False
    assert await catalog.jobs.release(job.id, "a") is True
    [got] = await catalog.jobs.claim("b", lease_seconds=300)
    assert got.id == job.id and got.lease_owner == "b"


async def test_cas_transition_loses_when_stale(catalog):
    job = await _backup_job(catalog, "vm-1")
    m = job.machines[0]
    won = await catalog.jobs.transition(m.id, from_state="queued", to_state="snapshot", version=0)
    assert (won.state, won.version) == ("snapshot", 1) and won.started_at is not None
    # a second writer that read the same old row loses
    assert await catalog.jobs.transition(m.id, from_state="queued", to_state="snapshot",
                                         version=0) is None
    # right state, stale version: loses too
    assert await catalog.jobs.transition(m.id, from_state="snapshot", to_state="metadata",
                                         version=0) is None
    row = await catalog.jobs.get_machine(m.id)
    assert (row.state, row.version) == ("snapshot", 1)
    # two writers racing on the same version: exactly one wins
    results = await asyncio.gather(*(catalog.jobs.transition(
        m.id, from_state="snapshot", to_state=to, version=1) for to in ("metadata", "cleanup")))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert (await catalog.jobs.get_machine(m.id)).state == winners[0].state
    # state names are checked against the machine's kind
    with pytest.raises(Invalid):
        await catalog.jobs.transition(m.id, from_state=winners[0].state, to_state="prepare",
                                      version=2)
    with pytest.raises(Invalid):
        await catalog.jobs.transition(m.id, from_state="succeeded", to_state="cleanup", version=2)


async def test_serialization_failure_is_retryable(catalog, pool):
    job = await _backup_job(catalog, "vm-1")
    m = job.machines[0]
    async with pool.acquire() as c1:
        tr = c1.transaction(isolation="repeatable_read")
        await tr.start()
        try:
            assert await c1.fetchval("SELECT state FROM machines WHERE id = $1", m.id) == "queued"
            await catalog.jobs.update_context(m.id, {"other": "replica"})  # commits meanwhile
            with pytest.raises(Retryable) as ei:
                await Catalog(c1).jobs.update_context(m.id, {"x": 1})
            assert isinstance(ei.value.__cause__, asyncpg.SerializationError)
        finally:
            await tr.rollback()


async def test_resources_merge_and_concurrent_disk_tasks_keep_all_keys(catalog):
    job = await _backup_job(catalog, "vm-1")
    m = job.machines[0]
    r = await catalog.jobs.record_resources(m.id, {"snapshot": {"description": f"ovault {job.id}"}})
    assert r.resources == {"snapshot": {"description": f"ovault {job.id}"}}
    r = await catalog.jobs.record_resources(m.id, {"snapshot": {"id": "snap-1"}})
    assert r.resources == {"snapshot": {"description": f"ovault {job.id}", "id": "snap-1"}}
    assert r.version == 0  # resources never move the CAS version
    await asyncio.gather(*(catalog.jobs.record_resources(
        m.id, {"transfers": {f"disk-{i}": f"t-{i}"}}) for i in range(12)))
    r = await catalog.jobs.get_machine(m.id)
    assert r.resources["transfers"] == {f"disk-{i}": f"t-{i}" for i in range(12)}
    r = await catalog.jobs.record_resources(m.id, {"transfers": {"disk-0": None}, "snapshot": None})
    assert "snapshot" not in r.resources and "disk-0" not in r.resources["transfers"]
    with pytest.raises(NotFound):
        await catalog.jobs.record_resources(uuid.uuid4(), {"a": 1})
    await catalog.jobs.update_progress(m.id, bytes_done=10, bytes_total=100,
                                       disks={"disk-1": {"bytes_done": 10, "bytes_total": 100}})
    await catalog.jobs.update_progress(m.id, bytes_done=30,
                                       disks={"disk-2": {"bytes_done": 20, "bytes_total": 50}})
    r = await catalog.jobs.get_machine(m.id)
    assert (r.bytes_done, r.bytes_total) == (30, 100)
    assert r.disks == {"disk-1": {"bytes_done": 10, "bytes_total": 100},
                       "disk-2": {"bytes_done": 20, "bytes_total": 50}}


async def _walk(catalog, m, *states, error=None):
    version = m.version
    cur = m.state
    for s in states:
        m = await catalog.jobs.transition(m.id, from_state=cur, to_state=s, version=version,
                                          error=error if s == "failed" else None)
        assert m is not None
        cur, version = m.state, m.version
    return m


async def test_rollup_follows_machines(catalog):
    job = await _backup_job(catalog, "vm-1", "vm-2")
    [got] = await catalog.jobs.claim("r", lease_seconds=60)
    a, b = got.machines
    assert (await catalog.jobs.rollup(job.id)).state == "running"
    await _walk(catalog, a, "snapshot", "metadata", "transfer", "finalize", "succeeded")
    assert (await catalog.jobs.rollup(job.id)).state == "running"
    await _walk(catalog, b, "snapshot", "cleanup", "failed", error="snapshot timed out")
    done = await catalog.jobs.rollup(job.id)
    assert done.state == "failed" and done.finished_at is not None
    assert done.error == "1 of 2 VMs failed: name-vm-2: snapshot timed out"
    assert (done.lease_owner, done.lease_expires_at) == (None, None)
    assert {m.vm_id: m.state for m in done.machines} == {"vm-1": "succeeded", "vm-2": "failed"}
    assert all(m.finished_at is not None for m in done.machines)
    # a finished job is not claimable
    assert await catalog.jobs.claim("r2", lease_seconds=60) == []


async def test_cancel_queued_job_at_once_and_running_job_by_request(catalog):
    queued = await _backup_job(catalog, "vm-1", "vm-2")
    c = await catalog.jobs.request_cancel(queued.id)
    assert c.state == "canceled" and c.cancel_requested and c.finished_at is not None
    assert {m.state for m in c.machines} == {"canceled"}
    assert (await catalog.jobs.request_cancel(queued.id)).state == "canceled"  # idempotent

    running = await _backup_job(catalog, "vm-3")
    await catalog.jobs.claim("r", lease_seconds=60)
    c = await catalog.jobs.request_cancel(running.id)
    assert (c.state, c.cancel_requested) == ("running", True)
    assert c.machines[0].state == "queued"  # the owner runs cleanup, not the API
    hb = await catalog.jobs.renew_lease(running.id, "r", lease_seconds=60)
    assert hb.cancel_requested
    m = await _walk(catalog, c.machines[0], "cleanup", "canceled")
    assert (await catalog.jobs.rollup(running.id)).state == "canceled"
    assert m.finished_at is not None

    done = await _backup_job(catalog, "vm-4")
    [got] = await catalog.jobs.claim("r", lease_seconds=60)
    await _walk(catalog, got.machines[0], "snapshot", "metadata", "transfer", "finalize",
                "succeeded")
    await catalog.jobs.rollup(done.id)
    with pytest.raises(Conflict, match="already succeeded"):
        await catalog.jobs.request_cancel(done.id)


async def test_fail_job_gives_up_on_unfinished_machines(catalog):
    job = await _backup_job(catalog, "vm-1", "vm-2")
    [got] = await catalog.jobs.claim("r", lease_seconds=60)
    await _walk(catalog, got.machines[0], "snapshot", "metadata", "transfer", "finalize",
                "succeeded")
    failed = await catalog.jobs.fail(job.id, "claimed 5 times, owner died each time")
    assert failed.state == "failed" and failed.lease_owner is None
    assert {m.vm_id: (m.state, m.error) for m in failed.machines} == {
        "vm-1": ("succeeded", None), "vm-2": ("failed", "claimed 5 times, owner died each time")}


async def test_every_end_of_a_job_writes_exactly_one_job_event_with_it(catalog):
    """The terminal state and its job.<state> event are one transaction, whatever ends it."""
    async def ends(job_id):
        evs = await catalog.events.list_after(0, limit=500)
        return [(e.type, e.payload["state"], e.payload["kind"]) for e in evs
                if e.job_id == job_id and e.type in ("job.succeeded", "job.failed", "job.canceled")]
    done = await _backup_job(catalog, "vm-1")
    [got] = await catalog.jobs.claim("r", lease_seconds=60)
    assert await ends(done.id) == []
    await _walk(catalog, got.machines[0], "snapshot", "metadata", "transfer", "finalize", "succeeded")
    await catalog.jobs.rollup(done.id)
    await catalog.jobs.rollup(done.id)  # asked again: no second notice
    assert await ends(done.id) == [("job.succeeded", "succeeded", "backup")]

    queued = await _backup_job(catalog, "vm-2")
    await catalog.jobs.request_cancel(queued.id)
    await catalog.jobs.request_cancel(queued.id)
    assert await ends(queued.id) == [("job.canceled", "canceled", "backup")]

    given_up = await _backup_job(catalog, "vm-3")
    await catalog.jobs.claim("r", lease_seconds=60)
    await catalog.jobs.fail(given_up.id, "gave up")
    await catalog.jobs.fail(given_up.id, "gave up")
    assert await ends(given_up.id) == [("job.failed", "failed", "backup")]


async def test_list_filter_and_paginate_jobs(catalog, pool):
    made = []
    for i in range(7):
        made.append(await _backup_job(catalog, f"vm-{i % 3}", f"vm-x{i}"))
    # spread created_at so the order is unambiguous, one second apart
    async with pool.acquire() as c:
        for i, j in enumerate(made):
            await c.execute("UPDATE jobs SET created_at = '2030-01-01'::timestamptz "
                            "+ make_interval(secs => $2) WHERE id = $1", j.id, i)
    await catalog.jobs.create("restore", [NewMachine("vm-0")])
    page = await catalog.jobs.list(kind="backup", limit=3)
    seen = list(page.items)
    while page.next_cursor:
        page = await catalog.jobs.list(kind="backup", limit=3, cursor=page.next_cursor)
        seen.extend(page.items)
    assert [j.id for j in seen] == [j.id for j in reversed(made)]
    assert all(len(j.machines) == 2 for j in seen)
    vm0 = await catalog.jobs.list(vm_id="vm-0")
    assert {j.kind for j in vm0.items} == {"backup", "restore"} and len(vm0.items) == 4
    from datetime import datetime, timezone
    ranged = await catalog.jobs.list(
        created_after=datetime(2030, 1, 1, 0, 0, 2, tzinfo=timezone.utc),
        created_before=datetime(2030, 1, 1, 0, 0, 5, tzinfo=timezone.utc))
    assert [j.id for j in ranged.items] == [made[4].id, made[3].id, made[2].id]
    # the restore job is the oldest (the others were moved to 2030): FIFO takes it
    [claimed] = await catalog.jobs.claim("r", lease_seconds=60)
    assert claimed.kind == "restore"
    assert [j.id for j in (await catalog.jobs.list(state="running")).items] == [claimed.id]
    assert len((await catalog.jobs.list(state=["queued", "running"])).items) == 8
    with pytest.raises(Invalid):
        await catalog.jobs.list(cursor="garbage!")
    with pytest.raises(Invalid):
        await catalog.jobs.list(limit=0)


async def test_list_only_jobs_of_visible_vms_gives_full_pages(catalog):
    """A restricted user's page is filled from their VMs' jobs, not cut short after reading."""
    mine = []
    for i in range(6):
        mine.append((await _backup_job(catalog, "VM-A" if i % 2 else "vm-b")).id)
        await _backup_job(catalog, "vm-other")
    await _backup_job(catalog, "vm-b", "vm-other")  # one VM not visible: the job is not
    seen, cursor = [], None
    while True:
        page = await catalog.jobs.list(limit=4, cursor=cursor, only_vms={"vm-a", "vm-b"})
        assert len(page.items) == 4 or page.next_cursor is None
        seen += [j.id for j in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(mine))
    assert (await catalog.jobs.list(only_vms=set())).items == ()
