import uuid

import asyncpg
import pytest

from orchestrator.catalog import BackupDisk, Conflict, Invalid, NewMachine, NotFound

pytestmark = pytest.mark.integration


async def test_backup_lifecycle_and_chain(catalog):
    target = await catalog.targets.create("nfs1", "nfs://10.0.0.1/export", {"chunk_size": 4 << 20})
    job = await catalog.jobs.create("backup", [NewMachine("vm-1", "db01")])
    full = await catalog.backups.create(vm_id="vm-1", vm_name="db01", mode="full", method="cbt",
                                        job_id=job.id, target_id=target.id,
                                        config={"ovf": "<ovf/>"})
    await catalog.jobs.set_backup(job.machines[0].id, full.id)
    assert (await catalog.jobs.get_machine(job.machines[0].id)).backup_id == full.id
    assert full.status == "running" and full.completed_at is None
    assert await catalog.backups.last_succeeded("vm-1") is None
    disk = BackupDisk(disk_id="d1", alias="db01_Disk1", provisioned_size=10 << 30, format="cow",
                      bytes_read=3 << 30, bytes_written=1 << 30, index_digest="ab" * 32,
                      info={"bootable": True, "interface": "virtio_scsi"})
    await catalog.backups.put_disk(full.id, disk)
    await catalog.backups.put_disk(full.id, BackupDisk("d2", 1 << 30, "raw"))
    await catalog.backups.put_disk(full.id, BackupDisk("d2", 2 << 30, "raw"))  # retried step
    done = await catalog.backups.complete(full.id, size_bytes=12 << 30, new_bytes=1 << 30,
                                          consistency="filesystem", checkpoint_id="cp-1")
    assert (done.status, done.checkpoint_id, done.consistency) == \
        ("succeeded", "cp-1", "filesystem")
    assert done.completed_at is not None
    assert [(d.disk_id, d.provisioned_size) for d in done.disks] == \
        [("d1", 10 << 30), ("d2", 2 << 30)]
    assert done.disks[0] == disk
    with pytest.raises(Conflict, match="it is succeeded"):
        await catalog.backups.complete(full.id, size_bytes=1, new_bytes=1, consistency="crash")

    inc = await catalog.backups.create(vm_id="vm-1", vm_name="db01", mode="incremental",
                                       method="cbt", parent_id=done.id,
                                       checkpoint_id=None, target_id=target.id)
    last = await catalog.backups.last_succeeded("vm-1", target_id=target.id)
    assert last.id == full.id and last.checkpoint_id == "cp-1"  # the running one does not count
    failed = await catalog.backups.fail(inc.id, "transfer timed out")
    assert (failed.status, failed.error) == ("failed", "transfer timed out")
    # synthetic fulls: deleting the parent never breaks the child
    deleted = await catalog.backups.mark_deleted(full.id)
    assert deleted.status == "deleted"
    # what the file-restore search keeps indexes for: held backups only (junk names ignored)
    stranger = str(uuid.uuid4())
    assert sorted(await catalog.backups.not_deleted([str(full.id), str(inc.id), stranger, "junk"])) == \
        [str(inc.id)]
    assert await catalog.backups.last_succeeded("vm-1") is None
    assert (await catalog.backups.get(inc.id)).parent_id == full.id
    # backups still use the target
    with pytest.raises(Conflict) as ei:
        await catalog.targets.delete(target.id)
    assert isinstance(ei.value.__cause__, asyncpg.ForeignKeyViolationError)
    with pytest.raises(NotFound):
        await catalog.backups.get(uuid.uuid4())
    with pytest.raises(Invalid, match="mode must be one of full, incremental"):
        await catalog.backups.create(vm_id="v", vm_name=None, mode="differential", method="cbt")


async def test_list_backups_filters_and_pages(catalog, pool):
    made = []
    for i in range(9):
        b = await catalog.backups.create(vm_id=f"vm-{i % 2}", vm_name=None, mode="full",
                                         method="snapshot")
        if i % 3:
            b = await catalog.backups.complete(b.id, size_bytes=i, new_bytes=0,
                                               consistency="crash")
        made.append(b)
    async with pool.acquire() as c:
        for i, b in enumerate(made):
            await c.execute("UPDATE backups SET created_at = '2031-05-01'::timestamptz "
                            "+ make_interval(mins => $2) WHERE id = $1", b.id, i)
    await catalog.backups.mark_deleted(made[8].id)
    page = await catalog.backups.list(vm_id="vm-0", limit=2)
    ids = [b.id for b in page.items]
    while page.next_cursor:
        page = await catalog.backups.list(vm_id="vm-0", limit=2, cursor=page.next_cursor)
        ids += [b.id for b in page.items]
    assert ids == [made[i].id for i in (6, 4, 2, 0)]  # 8 is deleted
    ok = await catalog.backups.list(status="succeeded")
    assert [b.size_bytes for b in ok.items] == [7, 5, 4, 2, 1]
    withdel = await catalog.backups.list(include_deleted=True, vm_ids=["vm-0"])
    assert len(withdel.items) == 5
    from datetime import datetime, timezone
    rng = await catalog.backups.list(
        created_after=datetime(2031, 5, 1, 0, 3, tzinfo=timezone.utc),
        created_before=datetime(2031, 5, 1, 0, 5, tzinfo=timezone.utc), with_disks=True)
    assert [b.id for b in rng.items] == [made[4].id, made[3].id]
    assert rng.items[0].disks == ()
    with pytest.raises(Invalid):
        await catalog.backups.list(limit=10_000)


async def test_targets_crud_and_conflicts(catalog):
    t = await catalog.targets.create("nfs1", "nfs://h/e")
    with pytest.raises(Conflict) as ei:
        await catalog.targets.create("nfs1", "nfs://other/e")
    assert isinstance(ei.value.__cause__, asyncpg.UniqueViolationError)
    assert "targets_name_key" in str(ei.value)
    u = await catalog.targets.update(t.id, url="nfs://h/e2", options={"verify": True})
    assert (u.name, u.url, u.options) == ("nfs1", "nfs://h/e2", {"verify": True})
    assert (await catalog.targets.get_by_name("nfs1")).id == t.id
    assert [x.name for x in await catalog.targets.list()] == ["nfs1"]
    await catalog.targets.delete(t.id)
    with pytest.raises(NotFound, match="target .* not found"):
        await catalog.targets.get(t.id)


async def test_last_succeeded_many_matches_last_succeeded(catalog):
    """The VM list asks once for every VM; the answer equals asking per VM."""
    made = {}
    for vm, n in (("vm-a", 3), ("vm-b", 1), ("vm-c", 2)):
        for i in range(n):
            b = await catalog.backups.create(vm_id=vm, vm_name=vm, mode="full", method="snapshot")
            if vm != "vm-c" or i == 0:  # vm-c's newest one is still running
                await catalog.backups.complete(b.id, size_bytes=1, new_bytes=1, consistency="crash")
            made.setdefault(vm, []).append(b.id)
    many = await catalog.backups.last_succeeded_many(["vm-a", "vm-b", "vm-c", "vm-none"])
    assert set(many) == {"vm-a", "vm-b", "vm-c"}
    for vm in ("vm-a", "vm-b", "vm-c"):
        assert many[vm].id == (await catalog.backups.last_succeeded(vm)).id
    assert many["vm-a"].id == made["vm-a"][-1] and many["vm-c"].id == made["vm-c"][0]
    assert await catalog.backups.last_succeeded_many([]) == {}
