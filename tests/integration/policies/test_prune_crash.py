"""Deletion is crash-safe in both directions (real catalog, real store): a prune job
killed before the manifest went, or after the manifest went but before the row
changed, leaves a consistent state, and running the job again finishes it."""
import asyncio
import os
import uuid
from types import SimpleNamespace

import pytest

from imageio_ext.store import Store
from orchestrator.policies.jobs import MaintenanceJobs
from orchestrator.policies.service import PolicyService


class Killed(Exception):
    pass


class DyingStore:
    """The real store; `delete_backup` dies before or after doing its work, once."""

    def __init__(self, store, when):
        self.store, self.when = store, when

    async def delete_backup(self, vm_id, backup_id):
        if self.when == "before":
            self.when = None
            raise asyncio.CancelledError()          # the replica is killed mid-call
        await self.store.delete_backup(vm_id, backup_id)
        if self.when == "after":
            self.when = None
            raise asyncio.CancelledError()

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_killed_prune_job_is_finished_by_the_next_attempt(catalog, tmp_path, when):
    (tmp_path / "t").mkdir()
    store = await Store.open(str(tmp_path / "t"), create=True, chunk_size=64 * 1024)
    try:
        vm, bid = str(uuid.uuid4()), uuid.uuid4()
        bw = await store.begin_backup(vm, str(bid))
        dw = await bw.add_disk(str(uuid.uuid4()), 128 * 1024)
        await dw.write(0, os.urandom(128 * 1024))
        await dw.commit()
        await bw.publish({"note": "test"})
        b = await catalog.backups.create(vm_id=vm, vm_name="v", mode="full", method="cbt",
                                         backup_id=bid)
        await catalog.backups.complete(b.id, size_bytes=1, new_bytes=1, consistency="crash")
        engine = SimpleNamespace(list_vms_with_tags=None)
        svc = PolicyService(catalog, engine, store=DyingStore(store, when))
        _, job = await svc.delete_backup(bid, requested_by="op")
        with pytest.raises(asyncio.CancelledError):
            await MaintenanceJobs(catalog, svc).prune(job)
        # consistent meanwhile: hidden from lists; the manifest is there (before) and
        # importable, or gone (after) while the row says deleting, never succeeded
        assert (await catalog.backups.get(bid)).status == "deleting"
        assert bid not in {x.id for x in (await catalog.backups.list(vm_id=vm)).items}
        on_target = [x.backup_id for x in await store.list_backups(vm)]
        assert on_target == ([str(bid)] if when == "before" else [])
        assert (await catalog.jobs.get(job.id)).state == "queued"   # not ended: claimed again
        # the next attempt (this or another replica) finishes it
        await MaintenanceJobs(catalog, svc).prune(await catalog.jobs.get(job.id))
        assert (await catalog.backups.get(bid)).status == "deleted"
        assert await store.list_backups(vm) == []
        done = await catalog.jobs.get(job.id)
        assert done.state == "succeeded" and done.result["deleted"] == [str(bid)]
    finally:
        await store.close()
