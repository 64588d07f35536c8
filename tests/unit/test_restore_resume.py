"""A restore whose upload loses its ticket (imageio restarted) goes on on a new
transfer into the same disk (statemachines/resume.py): the decision, and the
restore machine against the fakes of tests/unit/test_statemachines.py."""
from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from statemachines import RestoreMachine
from statemachines.resume import MAX_RESUMES, UNKNOWN, should_resume
from tests.unit.test_statemachines import FakeEngine, FakeMover, Journal, deps


class Err(Exception):
    def __init__(self, msg, code=None):
        super().__init__(msg)
        self.code = code


@pytest.mark.parametrize("code,phase,resumes,want", [
    ("transfer_not_found", "paused_system", 0, True),
    ("transfer_not_found", "transferring", 0, True),  # the engine has not noticed yet
    ("imageio_unavailable", UNKNOWN, 2, True),
    ("imageio_unavailable", UNKNOWN, MAX_RESUMES, False),  # at most MAX_RESUMES per disk
    (None, "paused_system", 0, True),  # failed otherwise, but the engine paused it
    (None, "cancelled_system", 1, True),
    (None, None, 0, True),  # the engine dropped the transfer
    (None, "transferring", 0, False),  # a copy error of its own: not retried
    (None, UNKNOWN, 0, False),  # the engine could not be asked
    ("chunk_corrupt", "transferring", 0, False),
    (None, "paused_system", MAX_RESUMES, False),
    (None, "finished_success", 0, True),  # finalized by a run that stopped before recording
    (None, "cancelled_user", 0, False),  # someone canceled it: not overridden
])
def test_should_resume(code, phase, resumes, want):
    assert should_resume(Err("x", code), resumes, phase) is want


class LosingMover(FakeMover):
    """Its first `losses` uploads fail the way a restarted imageio does, after
    writing 3 MiB; the engine pauses the upload as it does for a lost ticket."""

    def __init__(self, engine, losses=1):
        super().__init__()
        self.engine, self.losses = engine, losses

    async def restore_disk(self, **kw):
        if self.losses:
            self.losses -= 1
            self.copies.append(kw)
            await kw["progress"](3 << 20, kw["size"])
            (t,) = [t for t in self.engine.transfers.values() if t.phase == "transferring"]
            self.engine.transfers[t.id] = replace(t, phase="paused_system")
            raise Err("ovirt-imageio PUT /images/x failed: HTTP 404 no such ticket", "transfer_not_found")
        await kw["progress"](kw["size"], kw["size"])
        return await super().restore_disk(**kw)


def restore(e, mover, kind, on_resume=None):
    j = Journal()
    req = {"backup_id": str(uuid.uuid4()), "kind": kind, "disk_ids": ["d1"]}
    m = RestoreMachine(j, replace(deps(e, mover=mover), on_resume=on_resume), vm_id="vm1",
                       job_id=str(uuid.uuid4()), machine_id=str(uuid.uuid4()), request=req)
    return j, m


@pytest.mark.parametrize("kind", ["disks", "in_place"])
async def test_an_upload_that_lost_its_ticket_goes_on_into_the_same_disk(kind):
    e = FakeEngine()
    mover = LosingMover(e)
    counted = []
    j, m = restore(e, mover, kind, on_resume=counted.append)
    assert await m.run() == "succeeded"
    assert counted == ["restore"]  # the metric's hook: one resume of a restore
    target = j.resources["plan"]["d1"]["target_disk"]
    first, second = e.transfers
    # the broken upload was finalized (a canceled one takes its disk), then a new one made
    assert ("transfer_finalize", first) in e.calls and ("transfer_cancel", first) not in e.calls
    assert [t.phase for t in e.transfers.values()] == ["finished_success"] * 2
    assert {t.disk_id for t in e.transfers.values()} == {target} and target in e.disks
    (r,) = j.resources["resumes"]["d1"]
    assert (r["from"], r["to"], r["bytes_done"]) == (first, second, 3 << 20)
    assert "no such ticket" in r["cause"]
    assert j.resources["transfers"]["d1"] == {"id": second, "host_id": "h1", "finalized": True}
    assert "restore.transfer_resumed" in j.events
    # the whole disk written again, under a new copy id for the mover
    assert [c["disk_id"] for c in mover.copies] == ["d1", "d1"]
    assert len({c["copy_id"] for c in mover.copies}) == 2
    assert j.resources["plan"]["d1"]["copied"] is True


@pytest.mark.parametrize("kind", ["disks", "in_place"])
async def test_an_upload_that_keeps_losing_its_ticket_fails_and_leaves_nothing_active(kind):
    e = FakeEngine()
    mover = LosingMover(e, losses=10)
    j, m = restore(e, mover, kind)
    assert await m.run() == "failed"
    assert len(j.resources["resumes"]["d1"]) == MAX_RESUMES and len(mover.copies) == MAX_RESUMES + 1
    assert "no such ticket" in j.resources["error"]
    assert all(t.phase.startswith("finished") for t in e.transfers.values())
    target = j.resources["plan"]["d1"]["target_disk"]
    canceled = [c for c in e.calls if c[0] == "transfer_cancel"]
    if kind == "in_place":
        # never canceled (the engine would remove the VM's disk): it keeps its partly written disk
        assert not canceled and target in e.disks
        assert "restore.cleanup_failed" in j.events  # "... hold partial data; run the restore again"
    else:  # the last upload canceled, the new disk removed by the cleanup
        assert len(canceled) == 1 and target not in e.disks and ("remove_disk", target) in e.calls


async def test_other_upload_errors_are_not_resumed():
    e = FakeEngine()
    j, m = restore(e, FakeMover(fail=True), "disks")
    assert await m.run() == "failed"
    assert len(e.transfers) == 1 and "resumes" not in j.resources
    assert "chunk corrupted" in j.resources["error"]


async def test_a_disk_the_engine_removed_fails_the_restore_naming_it():
    class Removing(FakeEngine):
        async def transfer_action(self, transfer_id, action, correlation_id=None):
            await super().transfer_action(transfer_id, action, correlation_id)
            self.disks.pop(self.transfers[transfer_id].disk_id, None)  # as after a failed upload
    e = Removing()
    j, m = restore(e, LosingMover(e), "in_place")
    assert await m.run() == "failed"
    assert "disk d1 is gone" in j.resources["error"]


async def in_place_found_in(e, phase: str, mover):
    """An in-place restore run again from its record in `transfer`, its upload found in
    `phase`: (journal, machine, that transfer)."""
    t = await e.create_transfer(direction="upload", disk_id="d1", correlation_id=None)
    e.transfers[t.id] = replace(t, phase=phase)
    bid = str(uuid.uuid4())
    j = Journal(state="transfer", resources=dict(
        kind="in_place", backup_id=bid, source_vm="vm1", target_vm="vm1", transfers={"d1": {"id": t.id}},
        plan={"d1": {"target_disk": "d1", "size": 8 << 20, "alias": "boot", "format": "cow",
                     "bootable": True, "interface": "virtio_scsi"}}))
    m = RestoreMachine(j, deps(e, mover=mover), vm_id="vm1", job_id=str(uuid.uuid4()),
                       machine_id=str(uuid.uuid4()), request={"backup_id": bid, "kind": "in_place"})
    return j, m, t


async def test_a_run_resumed_after_a_crash_finds_its_upload_paused_and_goes_on():
    """The replica died; meanwhile imageio lost the ticket and the engine paused
    the upload: the machine, run again from its record, goes on on a new transfer."""
    e = FakeEngine()
    j, m, t = await in_place_found_in(e, "paused_system", FakeMover())
    assert await m.run() == "succeeded"
    (r,) = j.resources["resumes"]["d1"]
    assert r["from"] == t.id and "paused_system" in r["cause"]
    assert e.transfers[t.id].phase == "finished_success"  # finalized: the VM keeps its disk
    assert all(p.phase == "finished_success" for p in e.transfers.values()) and "d1" in e.disks


async def test_a_restore_resumed_after_finalizing_an_unrecorded_upload_writes_the_disk_again():
    """The replica died after finalizing an upload but before recording the disk copied:
    the finished transfer proves nothing about the data, so the disk is written again on
    a new transfer (before, the run failed on the finished transfer)."""
    e, mover = FakeEngine(), FakeMover()
    j, m, t = await in_place_found_in(e, "finished_success", mover)
    assert await m.run() == "succeeded"
    (r,) = j.resources["resumes"]["d1"]
    assert r["from"] == t.id and "finished_success" in r["cause"]
    assert len(e.transfers) == 2 and j.resources["transfers"]["d1"]["id"] != t.id
    assert j.resources["plan"]["d1"]["copied"] is True and len(mover.copies) == 1


async def test_a_backup_resumed_between_a_new_transfer_and_its_record_adopts_that_transfer():
    """A replica died after a resume created the new transfer but before recording it:
    the record shows the old transfer finalized; the copy goes on on the new one, and no
    third transfer is made (none left behind in the engine)."""
    from tests.unit.test_statemachines import FakeCatalog, FakeStore, backup_machine
    e = FakeEngine()
    j = Journal()
    m = backup_machine(j, deps(e, catalog=FakeCatalog(), store=FakeStore()))
    old = await e.create_transfer(direction="download", disk_id="d1", backup_id=None,
                                  snapshot_id=None, correlation_id="c")
    await e.transfer_action(old.id, "finalize", "c")
    new = await e.create_transfer(direction="download", disk_id="d1", backup_id=None,
                                  snapshot_id=None, correlation_id="c")
    await m.record(backup_id="b-1", method="cbt", engine_backup={"id": "eb-1"},
                   disks={"d1": {"size": 8 << 20, "alias": "boot", "storage_domain": "sd1"}},
                   transfers={"d1": {"id": old.id, "host_id": "h1", "finalized": True}})
    await m._copy_disk("d1", 8 << 20)
    assert set(e.transfers) == {old.id, new.id}  # no third transfer
    assert j.resources["transfers"]["d1"]["id"] == new.id
    assert j.resources["copies"]["d1"]["done"] is True
    assert all(t.phase.startswith("finished") for t in e.transfers.values())
