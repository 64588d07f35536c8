"""Verify's record in the catalog: the damaged flag, its event, and the parent rule."""
import uuid

import pytest

from orchestrator.catalog import NewMachine
from orchestrator.cli.verify_record import record_result
from imageio_ext.store import DamagedChunk, VerifyReport

pytestmark = pytest.mark.integration


async def _succeeded(catalog, vm, job_id=None):
    b = await catalog.backups.create(vm_id=vm, vm_name="web01", mode="full", method="cbt", job_id=job_id)
    return await catalog.backups.complete(b.id, size_bytes=1, new_bytes=1, consistency="crash",
                                          checkpoint_id=f"cp-{b.id}")


class _Info:
    def __init__(self, b):
        self.backup_id, self.vm_id = str(b.id), b.vm_id


async def test_verify_marks_damaged_emits_once_and_clears(catalog):
    vm = f"vm-{uuid.uuid4()}"
    job = await catalog.jobs.create("backup", [NewMachine(vm, "web01")])
    older = await _succeeded(catalog, vm)
    newer = await _succeeded(catalog, vm, job.id)
    assert (await catalog.backups.last_succeeded(vm)).id == newer.id

    disk = str(uuid.uuid4())
    bad = VerifyReport(vm, str(newer.id), chunks_checked=3)
    bad.damaged.append(DamagedChunk("ab" * 32, "SHA-256 differs", {disk: [4 << 20, 12 << 20]}, 4 << 20))
    last_event = await catalog.events.last_id()
    assert await record_result(catalog, _Info(newer), bad) == "became damaged"
    b = await catalog.backups.get(newer.id)
    assert b.damaged and b.verified_at is not None
    assert b.damage["damaged_chunks"][0]["ranges"] == [
        {"disk_id": disk, "offset": 4 << 20, "length": 4 << 20},
        {"disk_id": disk, "offset": 12 << 20, "length": 4 << 20}]
    events = [e for e in await catalog.events.list_after(last_event) if e.type == "backup.damaged"]
    assert len(events) == 1
    ev = events[0]
    assert ev.job_id == job.id
    assert ev.payload["backup_id"] == str(newer.id) and ev.payload["vm_id"] == vm
    assert ev.payload["ranges"] == [{"digest": "ab" * 32, "disk_id": disk, "offset": 4 << 20, "length": 4 << 20},
                                    {"digest": "ab" * 32, "disk_id": disk, "offset": 12 << 20, "length": 4 << 20}]
    # A damaged backup is never the parent of an incremental: the last good one is.
    assert (await catalog.backups.last_succeeded(vm)).id == older.id
    assert (await catalog.backups.last_succeeded(vm, method="cbt")).id == older.id
    # Seen damaged again: recorded, no second event.
    assert await record_result(catalog, _Info(newer), bad) == "recorded"
    assert [e for e in await catalog.events.list_after(ev.id) if e.type == "backup.damaged"] == []
    # Healed (a newer backup rewrote the chunk): the flag is cleared.
    assert await record_result(catalog, _Info(newer), VerifyReport(vm, str(newer.id), chunks_checked=4)) == "recorded"
    b = await catalog.backups.get(newer.id)
    assert not b.damaged and b.damage is None
    assert (await catalog.backups.last_succeeded(vm)).id == newer.id
    # A backup the catalog does not know.
    stranger = VerifyReport(vm, str(uuid.uuid4()))
    assert await record_result(catalog, type("I", (), {"backup_id": stranger.backup_id, "vm_id": vm})(),
                               stranger) == "unknown backup"


async def test_checkpoints_ours_and_kept_per_target(catalog):
    vm = f"vm-{uuid.uuid4()}"
    ta = await catalog.targets.create(f"a-{vm}", "nfs://h/a", {})
    tb = await catalog.targets.create(f"b-{vm}", "nfs://h/b", {})
    made = []
    for t, cp in ((ta, "cp1"), (tb, "cp2"), (ta, "cp3"), (ta, "cp4")):
        b = await catalog.backups.create(vm_id=vm, vm_name=None, mode="full", method="cbt", target_id=t.id,
                                         checkpoint_id=cp)
        made.append(await catalog.backups.complete(b.id, size_bytes=1, new_bytes=1, consistency="crash"))
    failed = await catalog.backups.create(vm_id=vm, vm_name=None, mode="full", method="cbt", target_id=ta.id,
                                          checkpoint_id="cp5")
    await catalog.backups.fail(failed.id, "transfer failed")
    assert await catalog.backups.checkpoints(vm) == {"ours": ["cp1", "cp2", "cp3", "cp4", "cp5"],
                                                     "keep": ["cp2", "cp4"]}
    # cp4's backup found damaged: the next incremental to target A starts at cp3.
    await catalog.backups.record_verify(made[3].id, {"damaged_chunks": []})
    assert (await catalog.backups.checkpoints(vm))["keep"] == ["cp2", "cp3"]
