"""A catalog that cannot be reached while a machine runs: the machine stops
without failing, resumes once the catalog is back, and — when the outage lasts
too long — its engine objects are released and it ends failed with the cause.
Fakes of the ports (tests/unit/test_statemachines.py) and of the catalog."""
from __future__ import annotations

import asyncio
import copy
import uuid
from dataclasses import replace

import pytest

from orchestrator import catalog as cat
from orchestrator.jobs.adapters import CatalogJournal, reachable
from orchestrator.jobs.outage import ride_out
from statemachines import BackupMachine, CatalogUnreachable, LostOwnership, RestoreMachine
from statemachines.release import release_engine
from tests.unit.test_statemachines import FakeCatalog, FakeEngine, FakeMover, Journal, deps


class FlakyJournal(Journal):
    """A journal whose writes fail (the catalog is down) while `down` is set,
    starting at the first write that patches `at` (a resources key)."""

    def __init__(self, *a, at=None, **kw):
        super().__init__(*a, **kw)
        self.at, self.down = at, False

    def _check(self, what):
        if self.down or (self.at is not None and self.at == what):
            self.down = True
            raise CatalogUnreachable(f"Database unavailable: connection refused ({what})")

    async def transition(self, frm, to, error, event):
        self._check(to)
        return await super().transition(frm, to, error, event)

    async def record(self, patch):
        self._check(next(iter(patch)))
        await super().record(patch)

    async def event(self, type_, payload):
        self._check(type_)
        await super().event(type_, payload)


def machine(j, d, machine_id=None, job_id=None):
    return BackupMachine(j, d, vm_id="vm1", job_id=job_id or str(uuid.uuid4()),
                         machine_id=machine_id or str(uuid.uuid4()))


def resumed(j, m, d):
    """The machine as a runner builds it again from the catalog row."""
    j2 = Journal(state=j.state, resources=copy.deepcopy(j.resources))
    return j2, BackupMachine(j2, d, vm_id="vm1", job_id=m.job_id, machine_id=m.machine_id)


@pytest.mark.parametrize("at", ["copies", "transfers", "metadata", "finalize"])
async def test_unreachable_catalog_stops_the_machine_and_it_resumes_to_success(at):
    e, c = FakeEngine(), FakeCatalog()
    d = deps(e, catalog=c)
    j = FlakyJournal(at=at)
    m = machine(j, d)
    with pytest.raises(CatalogUnreachable):
        await m.run()
    assert isinstance(CatalogUnreachable("x"), LostOwnership)
    # not a failure: no cleanup, no error, the engine backup still held
    assert "cleanup" not in j.history and "error" not in j.resources and "outcome" not in j.resources
    assert [b.phase for b in e.backups.values()] == ["ready"]
    j2, m2 = resumed(j, m, d)
    assert await m2.run() == "succeeded"
    assert [b.phase for b in e.backups.values()] == ["succeeded"]
    assert all(t.phase == "finished_success" for t in e.transfers.values())
    assert [r["status"] for r in c.rows.values()] == ["succeeded"]
    assert len([x for x in e.calls if x[0] == "start_backup"]) == 1


async def test_cbt_release_finalizes_transfer_and_backup_then_the_machine_fails_with_the_cause():
    e, c = FakeEngine(), FakeCatalog()
    d = deps(e, catalog=c)
    j = FlakyJournal(at="copies")  # the copy is done, recording it fails
    m = machine(j, d)
    with pytest.raises(CatalogUnreachable):
        await m.run()
    assert [t.phase for t in e.transfers.values()] == ["transferring"]
    done = await release_engine(m)
    (tid,) = e.transfers
    (bid,) = e.backups
    assert done == [f"image transfer {tid} finalized", f"engine backup {bid} finalized"]
    assert e.transfers[tid].phase == "finished_success" and e.backups[bid].phase == "succeeded"
    assert await release_engine(m) == []  # idempotent: nothing left to release
    # back: the runner recorded the release; the machine fails with the cause
    j2, m2 = resumed(j, m, d)
    await j2.record({"engine_released": {"error": "catalog unreachable for 120 s: released", "released": done}})
    assert await m2.run() == "failed"
    assert j2.history[-3:] == ["transfer", "cleanup", "failed"]
    assert j2.resources["error"].startswith("catalog unreachable for 120 s")
    assert [r["status"] for r in c.rows.values()] == ["failed"]
    assert ("finalize_backup", bid) in e.calls and len([x for x in e.calls if x[0] == "finalize_backup"]) == 1


async def test_snapshot_release_removes_the_snapshot():
    e = FakeEngine(cow=False)
    d = deps(e)
    j = FlakyJournal(at="metadata")
    m = machine(j, d)
    with pytest.raises(CatalogUnreachable):
        await m.run()
    (sid,) = e.snapshots
    assert await release_engine(m) == [f"snapshot {sid} removed"]
    assert e.snapshots == {}


async def test_restore_release_cancels_its_uploads():
    e = FakeEngine()
    j = Journal()
    req = {"backup_id": str(uuid.uuid4()), "kind": "new", "name": "vm1-copy"}
    class Hanging(FakeMover):
        async def restore_disk(self, **kw):
            await asyncio.sleep(3600)
    m = RestoreMachine(j, deps(e, mover=Hanging()), vm_id="vm1", job_id=str(uuid.uuid4()),
                       machine_id=str(uuid.uuid4()), request=req)
    task = asyncio.create_task(m.run())
    while j.state != "transfer" or not e.transfers:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    (tid,) = e.transfers
    assert await release_engine(m) == [f"image transfer {tid} canceled"]
    assert e.transfers[tid].phase == "finished_cleanup"


class FakeJobs:
    def __init__(self, down_for: int):
        self.down_for, self.probes = down_for, 0
        self.recorded, self.released, self.renewed = {}, [], []

    async def get(self, job_id):
        self.probes += 1
        if self.probes <= self.down_for:
            raise cat.Unavailable("connection refused")
        return None

    async def renew_lease(self, job_id, owner, *, lease_seconds):
        self.renewed.append(owner)
        return object()

    async def record_resources(self, machine_id, patch, *, owner=None):
        self.recorded[str(machine_id)] = patch

    async def release(self, job_id, owner):
        self.released.append((job_id, owner))
        return True


class FakeEvents:
    def __init__(self):
        self.items = []

    async def append(self, type_, payload, job_id=None):
        self.items.append((type_, payload))


class FakeCat:
    def __init__(self, down_for):
        self.jobs, self.events = FakeJobs(down_for), FakeEvents()


class Job:
    id = uuid.uuid4()


async def _stopped_machine():
    e = FakeEngine()
    m = machine(FlakyJournal(at="copies"), deps(e))
    with pytest.raises(CatalogUnreachable):
        await m.run()
    return e, m


async def test_short_outage_hands_the_job_back_without_releasing():
    e, m = await _stopped_machine()
    c, counted = FakeCat(down_for=3), []
    out = await ride_out(c, Job, [m], owner="r1", release_after=60, lease_seconds=4,
                         on_release=counted.append, probe_interval=0.01)
    assert out == {} and counted == [] and c.jobs.recorded == {}
    assert c.jobs.released == [(Job.id, "r1")]  # claimed again at once, resumes
    assert [t.phase for t in e.transfers.values()] == ["transferring"]  # still held for the resume


async def test_long_outage_releases_counts_and_records_the_cause_once_back():
    e, m = await _stopped_machine()
    c, counted = FakeCat(down_for=8), []
    out = await ride_out(c, Job, [m], owner="r1", release_after=0.03, lease_seconds=4,
                         on_release=counted.append, probe_interval=0.01)
    assert counted == [1]
    assert [t.phase for t in e.transfers.values()] == ["finished_success"]
    assert [b.phase for b in e.backups.values()] == ["succeeded"]
    rec = c.jobs.recorded[m.machine_id]["engine_released"]
    assert rec["released"] == out[m.machine_id] and len(rec["released"]) == 2
    assert rec["error"].startswith("catalog unreachable for ") and "run it again" in rec["error"]
    assert [t for t, _ in c.events.items] == ["machine.engine_released"]
    assert c.jobs.released == [(Job.id, "r1")]


class _Row:
    id, state, version, resources, vm_id = uuid.uuid4(), "transfer", 3, {}, "vm1"


class _DownJobs:
    async def update_progress(self, *a, **kw):
        raise cat.Unavailable("connection refused")

    async def record_resources(self, *a, **kw):
        raise cat.Unavailable("connection refused")


class _DownCatalog:
    jobs = _DownJobs()


async def test_catalog_ports_turn_unavailable_into_catalog_unreachable():
    j = CatalogJournal(_DownCatalog(), _Row(), "r1", str(uuid.uuid4()))
    with pytest.raises(CatalogUnreachable, match="Database unavailable"):
        await j.record({"copies": {"d1": {"done": True}}})
    await j.progress(1, 2, {})  # a progress sample is a courtesy: never stops the copy

    @reachable
    async def other():
        raise cat.Conflict("taken")
    with pytest.raises(cat.Conflict):  # only unavailability is translated
        await other()


# --- a transfer whose ticket imageio lost (statemachines/resume.py) ---------------------

class TicketLost(Exception):
    code = "transfer_not_found"


class LosingMover(FakeMover):
    """Fails the first `losses` copies the way a restarted imageio does."""

    def __init__(self, losses=1, code="transfer_not_found"):
        super().__init__()
        self.losses, self.code = losses, code

    async def backup_disk(self, **kw):
        if self.losses:
            self.losses -= 1
            self.copies.append(kw)
            await kw["progress"](3 << 20, kw["size"])
            err = TicketLost(f"ovirt-imageio GET /images/x failed: HTTP 404 ticket not found")
            err.code = self.code
            raise err
        return await super().backup_disk(**kw)


@pytest.mark.parametrize("cow", [True, False])
async def test_a_lost_ticket_resumes_the_disk_on_a_new_transfer(cow):
    e, c, mover = FakeEngine(cow=cow), FakeCatalog(), LosingMover()
    j = Journal()
    m = machine(j, deps(e, mover=mover, catalog=c))
    assert await m.run() == "succeeded"
    first, second = e.transfers
    assert e.transfers[first].phase == e.transfers[second].phase == "finished_success"
    assert ("transfer_finalize", first) in e.calls
    (r,) = j.resources["resumes"]["d1"]
    assert (r["from"], r["to"], r["bytes_done"]) == (first, second, 3 << 20)
    assert "HTTP 404 ticket not found" in r["cause"]
    assert j.resources["transfers"]["d1"]["id"] == second
    assert "backup.transfer_resumed" in j.events
    # the same backup id (the chunks already stored are reused); a new copy id for the mover
    assert [x["backup_id"] for x in mover.copies] == [j.resources["backup_id"]] * 2
    assert len({x["copy_id"] for x in mover.copies}) == 2
    assert [r["status"] for r in c.rows.values()] == ["succeeded"]


async def test_a_ticket_lost_again_and_again_fails_the_disk_with_the_cause():
    e, mover = FakeEngine(), LosingMover(losses=10, code="imageio_unavailable")
    j = Journal()
    assert await machine(j, deps(e, mover=mover)).run() == "failed"
    assert len(j.resources["resumes"]["d1"]) == 3 and len(mover.copies) == 4
    assert "ticket not found" in j.resources["error"]
    assert all(t.phase == "finished_success" for t in e.transfers.values())


async def test_other_copy_errors_are_not_resumed():
    e = FakeEngine()
    j = Journal()
    assert await machine(j, deps(e, mover=FakeMover(fail=True))).run() == "failed"
    assert len(e.transfers) == 1 and "resumes" not in j.resources


async def test_a_copy_failing_under_a_transfer_the_engine_paused_is_resumed():
    e = FakeEngine()

    class PausedMover(FakeMover):
        paused = False

        async def backup_disk(self, **kw):
            if not self.paused:
                self.paused = True
                self.copies.append(kw)
                (tid,) = e.transfers
                e.transfers[tid] = replace(e.transfers[tid], phase="paused_system")
                raise RuntimeError("imageio: connection reset by peer")
            return await super().backup_disk(**kw)
    j = Journal()
    assert await machine(j, deps(e, mover=PausedMover())).run() == "succeeded"
    (r,) = j.resources["resumes"]["d1"]
    assert "connection reset" in r["cause"] and len(e.transfers) == 2
    assert all(t.phase.startswith("finished") for t in e.transfers.values())


async def test_released_in_finalize_the_backup_still_completes():
    e, c, store = FakeEngine(), FakeCatalog(), None
    d = deps(e, catalog=c)
    j = FlakyJournal(at="published")  # the manifest is written, recording it fails
    m = machine(j, d)
    with pytest.raises(CatalogUnreachable):
        await m.run()
    assert j.state == "finalize"
    await release_engine(m)  # the engine backup was finalized already: nothing to do
    j2, m2 = resumed(j, m, d)
    await j2.record({"engine_released": {"error": "catalog unreachable for 120 s: released", "released": []}})
    assert await m2.run() == "succeeded"
    assert [r["status"] for r in c.rows.values()] == ["succeeded"]
