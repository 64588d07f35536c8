"""BackupMachine and RestoreMachine against in-memory fakes of their ports."""
from __future__ import annotations

import asyncio
import copy
import uuid

from dataclasses import replace

import pytest

from statemachines import BackupMachine, Deps, LostOwnership, RestoreMachine, Timeouts
from statemachines import engine as ev


class Journal:
    def __init__(self, state="queued", resources=None, lose_at=None):
        self.state, self.resources = state, resources or {}
        self.history, self.events, self.lose_at = [state], [], lose_at

    async def transition(self, frm, to, error, event):
        assert frm == self.state
        if to == self.lose_at:
            return False
        self.state = to
        self.history.append(to)
        self.events.append(event[0])
        return True

    async def record(self, patch):
        # JSON merge patch, as the catalog stores it (RFC 7386): null removes a key.
        def merge(d, p):
            for k, v in p.items():
                if v is None:
                    d.pop(k, None)
                elif isinstance(v, dict):
                    if not isinstance(d.get(k), dict):
                        d[k] = {}
                    merge(d[k], v)
                else:
                    d[k] = copy.deepcopy(v)
        merge(self.resources, patch)

    async def progress(self, done, total, disks):
        self.progress_seen = (done, total)

    async def event(self, type_, payload):
        self.events.append(type_)


class FakeEngine:
    """The engine port (`statemachines.engine.Engine`) in memory; held to the
    Protocol's methods and signatures by tests/unit/test_engine_port.py."""

    def __init__(self, cow=True, refuse_checkpoint=False):
        self.disks = {"d1": ev.Disk(id="d1", alias="boot", provisioned_size=8 << 20, sparse=True,
                                    format="cow" if cow else "raw",
                                    backup="incremental" if cow else "none",
                                    storage_domain_id="sd1", status="ok")}
        self.backups, self.snapshots, self.transfers, self.vms = {}, {}, {}, {}
        self.attached: dict[str, list[str]] = {}
        self.from_cp: dict[str, str | None] = {}
        self.refuse_checkpoint = refuse_checkpoint
        self.checkpoints: list[ev.Checkpoint] = []  # chain order, oldest first
        self.calls = []
        self.freeze_events: list[int] = []  # what event_codes reports for any operation
        self.agent_answers = True  # a backup with require_consistency fails when False
        self.required: dict[str, bool] = {}  # engine backup id -> require_consistency asked
        self.engine_version = (4, 5, 5)

    async def version(self):
        return self.engine_version

    async def get_vm(self, vm_id, all_content=False):
        if vm_id in self.vms:
            return self.vms[vm_id]
        return ev.Vm(id=vm_id, name="vm1", status="down", type="server", cluster_id="c1",
                     config=ev.VmConfig(memory=1 << 30, cpu=ev.CpuTopology(1, 2, 1),
                                        os_type="rhel_8x64", boot_devices=("hd",),
                                        bios_type="q35_sea_bios", description="",
                                        high_availability=False))

    async def list_vms(self, search=None):
        name = search.split("=", 1)[1]
        return [v for v in self.vms.values() if v.name == name]

    async def vm_disks(self, vm_id):
        if vm_id in self.attached:
            return [ev.AttachedDisk(ev.Attachment(disk_id=d), self.disks[d])
                    for d in self.attached[vm_id]]
        return [ev.AttachedDisk(ev.Attachment(disk_id="d1", bootable=True,
                                              interface="virtio_scsi", active=True),
                                self.disks["d1"])]

    async def vm_nics(self, vm_id):
        return []

    async def get_disk(self, disk_id):
        return self.disks.get(disk_id)

    async def list_storage_domains(self):
        return [ev.StorageDomain(id="sd1", type="data")]

    async def create_snapshot(self, vm_id, description, disk_ids, correlation_id):
        s = ev.Snapshot(id=str(uuid.uuid4()), description=description, status="ok")
        self.snapshots[s.id] = s
        self.calls.append(("create_snapshot", s.id))
        return s

    async def list_snapshots(self, vm_id):
        return list(self.snapshots.values())

    async def get_snapshot(self, vm_id, snap_id):
        return self.snapshots.get(snap_id)

    async def snapshot_disks(self, vm_id, snap_id):
        return [ev.SnapshotDisk(disk_id="d1", image_id="vol-1")]

    async def remove_snapshot(self, vm_id, snap_id, correlation_id):
        self.calls.append(("remove_snapshot", snap_id))
        self.snapshots.pop(snap_id, None)

    async def start_backup(self, vm_id, backup_id, disk_ids, from_checkpoint_id, description,
                           correlation_id, require_consistency=False):
        self.calls.append(("start_backup", from_checkpoint_id))
        self.required[backup_id] = require_consistency
        if from_checkpoint_id and self.refuse_checkpoint:
            raise ev.CheckpointRefused(from_checkpoint_id,
                                       f"[Cannot backup VM. Checkpoint {from_checkpoint_id} is invalid.]")
        if require_consistency and not self.agent_answers:
            # as the engine: accepted, then failed (vdsm could not freeze), nothing kept
            self.backups[backup_id] = ev.EngineBackup(id=backup_id, phase="failed")
            self.from_cp[backup_id] = from_checkpoint_id
            return ev.EngineBackup(id=backup_id, phase="initializing")
        cp = f"cp-new-{len(self.backups) + 1}"
        self.checkpoints.append(ev.Checkpoint(id=cp, parent_id=self.checkpoints[-1].id if self.checkpoints
                                              else None, state="created"))
        self.backups[backup_id] = ev.EngineBackup(id=backup_id, phase="ready", to_checkpoint_id=cp)
        self.from_cp[backup_id] = from_checkpoint_id
        return self.backups[backup_id]

    async def get_backup(self, vm_id, backup_id):
        return self.backups.get(backup_id)

    async def backup_disk_modes(self, vm_id, backup_id):
        return {"d1": "incremental" if self.from_cp[backup_id] else "full"}

    async def finalize_backup(self, vm_id, backup_id, correlation_id):
        self.calls.append(("finalize_backup", backup_id))
        self.backups[backup_id] = replace(self.backups[backup_id], phase="succeeded")

    async def list_checkpoints(self, vm_id):
        return list(self.checkpoints)

    async def remove_checkpoint(self, vm_id, checkpoint_id, correlation_id):
        self.calls.append(("remove_checkpoint", checkpoint_id))
        if checkpoint_id not in {c.id for c in self.checkpoints}:
            return
        if self.checkpoints[0].id != checkpoint_id:  # as the engine: only the root
            raise RuntimeError("Cannot remove VM checkpoint. Only the oldest checkpoint can be removed.")
        self.checkpoints.pop(0)
        if self.checkpoints:
            self.checkpoints[0] = replace(self.checkpoints[0], parent_id=None)

    async def create_transfer(self, *, direction, correlation_id, disk_id=None, snapshot_id=None,
                              backup_id=None, host_id=None):
        t = ev.Transfer(id=str(uuid.uuid4()), phase="transferring", host_id="h1",
                        transfer_url="https://h1/images/t", disk_id=disk_id or "d1",
                        direction=direction)
        self.transfers[t.id] = t
        self.calls.append(("create_transfer", direction))
        return t

    async def get_transfer(self, transfer_id):
        return self.transfers.get(transfer_id)

    async def list_transfers(self):
        return list(self.transfers.values())

    async def transfer_action(self, transfer_id, action, correlation_id=None):
        self.calls.append((f"transfer_{action}", transfer_id))
        self.transfers[transfer_id] = replace(
            self.transfers[transfer_id],
            phase="finished_success" if action == "finalize" else "finished_cleanup")

    async def add_vm(self, vm, correlation_id):
        new = ev.Vm(id=str(uuid.uuid4()), name=vm.name, status="down", cluster_id=vm.cluster_id)
        self.vms[new.id] = new
        self.attached[new.id] = []
        self.calls.append(("add_vm", vm.name))
        return new

    async def update_vm(self, vm_id, config, correlation_id):
        self.calls.append(("update_vm", vm_id, config.memory))

    async def remove_vm(self, vm_id, correlation_id):
        self.calls.append(("remove_vm", vm_id))
        self.vms.pop(vm_id, None)

    async def start_vm(self, vm_id, correlation_id):
        pass

    async def grant_vm_role(self, vm_id, user_id, role, correlation_id):
        self.calls.append(("grant_vm_role", vm_id, user_id, role))

    async def grant_disk_role(self, disk_id, user_id, role, correlation_id):
        self.calls.append(("grant_disk_role", disk_id, user_id, role))

    async def add_disk(self, disk, correlation_id):
        self.disks[disk.id] = ev.Disk(id=disk.id, alias=disk.alias, format=disk.format,
                                      provisioned_size=disk.provisioned_size, status="ok")
        self.calls.append(("add_disk", disk.id))
        return self.disks[disk.id]

    async def remove_disk(self, disk_id, correlation_id):
        self.calls.append(("remove_disk", disk_id))
        self.disks.pop(disk_id, None)

    async def attach_disk(self, vm_id, attachment, correlation_id):
        self.attached[vm_id].append(attachment.disk_id)

    async def add_event(self, description, vm_id=None):
        pass

    async def event_codes(self, correlation_id):
        return list(self.freeze_events)


class FakeMover:
    def __init__(self, fail=False, hang=False):
        self.fail, self.hang, self.copies = fail, hang, []

    async def backup_disk(self, **kw):
        self.copies.append(kw)
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            raise RuntimeError("imageio answered 500 while reading extents")
        await kw["progress"](kw["size"], kw["size"])
        return {"bytes_read": 1, "new_bytes": 1, "disk": {"disk_id": kw["disk_id"]}}

    async def restore_disk(self, **kw):
        self.copies.append(kw)
        if self.fail:
            raise RuntimeError("chunk corrupted")
        return {"bytes_written": kw["size"]}


class FakeCatalog:
    def __init__(self, last=None):
        self.last, self.rows = last, {}

    async def last_backup(self, vm_id, method):
        return self.last

    async def backup_started(self, **kw):
        self.rows[kw["backup_id"]] = {"status": "running", **kw}

    async def backup_succeeded(self, backup_id, **kw):
        self.rows[backup_id]["status"] = "succeeded"
        self.rows[backup_id]["checkpoint_id"] = kw.get("checkpoint_id") or self.rows[backup_id].get("checkpoint_id")
        self.rows[backup_id]["consistency"] = kw.get("consistency", "crash")

    async def checkpoints(self, vm_id):
        ours = [r["checkpoint_id"] for r in self.rows.values() if r.get("checkpoint_id")]
        good = [r["checkpoint_id"] for r in self.rows.values()
                if r.get("checkpoint_id") and r["status"] == "succeeded" and not r.get("damaged")]
        return {"ours": ours, "keep": good[-1:]}

    async def backup_failed(self, backup_id, error):
        self.rows[backup_id]["status"] = "failed"

    async def get_backup(self, backup_id):
        return {"id": backup_id, "vm_id": "vm1", "status": "succeeded",
                "config": {"name": "vm1", "cluster_id": "c1", "ovf": "<ovf/>", "memory": 3 << 30,
                           "disks": {"d1": {"alias": "boot", "size": 8 << 20, "format": "cow",
                                            "backup": "incremental", "bootable": True,
                                            "interface": "virtio_scsi", "storage_domain": "sd1"}}}}


class FakeStore:
    def __init__(self):
        self.published, self.metas = [], {}

    async def publish(self, vm_id, backup_id, parent_id, disks, meta):
        self.published.append((backup_id, parent_id))
        self.metas[backup_id] = meta

    async def discard(self, vm_id, backup_id):
        pass


def deps(engine, mover=None, catalog=None, store=None, consistency="prefer"):
    return Deps(engine=engine, mover=mover or FakeMover(), catalog=catalog or FakeCatalog(),
                store=store or FakeStore(), consistency=consistency,
                timeouts=Timeouts(snapshot=2, transfer=2, transfer_end=2, engine_backup=2, disk=2,
                                  poll=0.01, transfer_poll=0.01))


def backup_machine(journal, d, mode="auto"):
    return BackupMachine(journal, d, vm_id="vm1", job_id=str(uuid.uuid4()),
                         machine_id=str(uuid.uuid4()), mode=mode)


async def test_cbt_full_backup_walks_every_state_and_releases_the_engine_backup():
    e, store, cat = FakeEngine(), FakeStore(), FakeCatalog()
    j = Journal()
    assert await backup_machine(j, deps(e, store=store, catalog=cat)).run() == "succeeded"
    assert j.history == ["queued", "snapshot", "metadata", "transfer", "finalize", "succeeded"]
    assert j.resources["method"] == "cbt" and j.resources["mode"] == "full"
    assert ("finalize_backup", j.resources["engine_backup"]["id"]) in e.calls
    assert e.backups[j.resources["engine_backup"]["id"]].phase == "succeeded"
    assert store.published == [(j.resources["backup_id"], None)]
    assert cat.rows[j.resources["backup_id"]]["status"] == "succeeded"
    assert "backup.created" in j.events


async def test_refused_checkpoint_falls_back_to_full_and_says_why():
    e = FakeEngine(refuse_checkpoint=True)
    cat = FakeCatalog(last={"id": str(uuid.uuid4()), "checkpoint_id": "cp-old"})
    j = Journal()
    assert await backup_machine(j, deps(e, catalog=cat)).run() == "succeeded"
    assert [c for c in e.calls if c[0] == "start_backup"] == [("start_backup", "cp-old"),
                                                              ("start_backup", None)]
    assert j.resources["mode"] == "full"
    assert "refused checkpoint cp-old" in j.resources["fallback_reason"]


async def test_incremental_reads_dirty_extents_from_the_parent():
    parent = str(uuid.uuid4())
    e, mover = FakeEngine(), FakeMover()
    j = Journal()
    d = deps(e, mover=mover, catalog=FakeCatalog(last={"id": parent, "checkpoint_id": "cp-old"}))
    assert await backup_machine(j, d).run() == "succeeded"
    (copy_,) = mover.copies
    assert copy_["incremental"] is True and copy_["parent_backup_id"] == parent


async def test_snapshot_mode_removes_its_snapshot():
    e = FakeEngine(cow=False)
    j = Journal()
    assert await backup_machine(j, deps(e)).run() == "succeeded"
    assert j.resources["method"] == "snapshot"
    created = [c[1] for c in e.calls if c[0] == "create_snapshot"]
    assert len(created) == 1 and ("remove_snapshot", created[0]) in e.calls
    assert e.snapshots == {}


async def test_failed_copy_cleans_up_everything():
    e, cat = FakeEngine(cow=False), FakeCatalog()
    j = Journal()
    assert await backup_machine(j, deps(e, mover=FakeMover(fail=True), catalog=cat)).run() == "failed"
    assert j.history[-2:] == ["cleanup", "failed"]
    assert "500 while reading extents" in j.resources["error"]
    assert e.snapshots == {}  # the snapshot went away
    assert all(t.phase == "finished_success" for t in e.transfers.values())
    assert [r["status"] for r in cat.rows.values()] == ["failed"]


async def test_cancel_during_transfer_ends_canceled_after_cleanup():
    e = FakeEngine()
    j = Journal()
    m = backup_machine(j, deps(e, mover=FakeMover(hang=True)))
    task = asyncio.create_task(m.run())
    while j.state != "transfer" or not e.transfers:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    m.request_cancel()
    assert await asyncio.wait_for(task, 5) == "canceled"
    assert j.history[-2:] == ["cleanup", "canceled"]
    assert all(b.phase == "succeeded" for b in e.backups.values())  # finalized


async def test_resume_in_snapshot_state_finds_the_snapshot_instead_of_creating_another():
    e = FakeEngine(cow=False)
    j = Journal()
    m = backup_machine(j, deps(e))
    # a first run that died right after POST /snapshots, before recording the id
    desc = f"ovault backup job={m.job_id} vm=vm1 machine={m.machine_id}"
    await e.create_snapshot("vm1", desc, ["d1"], "x")
    j2 = Journal(state="snapshot", resources={
        "disks": {"d1": {"alias": "boot", "size": 8 << 20, "format": "raw", "backup": "none",
                         "sparse": True, "bootable": True, "interface": "virtio_scsi",
                         "storage_domain": "sd1"}},
        "method": "snapshot", "backup_id": str(uuid.uuid4()), "snapshot": {"description": desc}})
    m2 = BackupMachine(j2, deps(e), vm_id="vm1", job_id=m.job_id, machine_id=m.machine_id)
    assert await m2.run() == "succeeded"
    assert len([c for c in e.calls if c[0] == "create_snapshot"]) == 1


async def test_resume_in_snapshot_state_after_the_engine_backup_was_recorded():
    e = FakeEngine()
    j = Journal()
    m = backup_machine(j, deps(e))
    await m.record(disks={"d1": {"alias": "boot", "size": 8 << 20, "format": "cow",
                                 "backup": "incremental", "sparse": True, "bootable": True,
                                 "interface": "virtio_scsi", "storage_domain": "sd1"}},
                   method="cbt", backup_id=str(uuid.uuid4()))
    # killed right after recording the intent (from_checkpoint None is dropped by the merge)
    await m.record(engine_backup={"id": j.resources["backup_id"], "from_checkpoint": None,
                                  "parent_id": None})
    j2 = Journal(state="snapshot", resources=copy.deepcopy(j.resources))
    m2 = BackupMachine(j2, deps(e), vm_id="vm1", job_id=m.job_id, machine_id=m.machine_id)
    assert await m2.run() == "succeeded"
    assert [c for c in e.calls if c[0] == "start_backup"] == [("start_backup", None)]


async def test_lost_compare_and_swap_stops_the_machine():
    j = Journal(lose_at="metadata")
    with pytest.raises(LostOwnership):
        await backup_machine(j, deps(FakeEngine())).run()
    assert j.state == "snapshot"


async def test_restore_new_vm_creates_attaches_and_compensates_on_failure():
    e = FakeEngine()
    j = Journal()
    req = {"backup_id": str(uuid.uuid4()), "kind": "new", "name": "vm1-copy"}
    m = RestoreMachine(j, deps(e), vm_id="vm1", job_id=str(uuid.uuid4()),
                       machine_id=str(uuid.uuid4()), request=req)
    assert await m.run() == "succeeded"
    (vm,) = [v for v in e.vms.values() if v.name == "vm1-copy"]
    new_disk = j.resources["plan"]["d1"]["target_disk"]
    assert e.attached[vm.id] == [new_disk] and ("add_disk", new_disk) in e.calls

    e2 = FakeEngine()
    j2 = Journal()
    m2 = RestoreMachine(j2, deps(e2, mover=FakeMover(fail=True)), vm_id="vm1",
                        job_id=str(uuid.uuid4()), machine_id=str(uuid.uuid4()),
                        request={**req, "name": "vm1-copy2"})
    assert await m2.run() == "failed"
    assert e2.vms == {}  # the half-made VM was removed
    assert ("remove_disk", j2.resources["plan"]["d1"]["target_disk"]) in e2.calls


async def test_restored_disks_are_granted_to_the_user_who_asked():
    e = FakeEngine()
    j = Journal()
    m = RestoreMachine(j, deps(e), vm_id="vm1", job_id=str(uuid.uuid4()), machine_id=str(uuid.uuid4()),
                       request={"backup_id": str(uuid.uuid4()), "kind": "disks", "disk_ids": ["d1"],
                                "owner_user_id": "u-1"})
    assert await m.run() == "succeeded"
    new_disk = j.resources["plan"]["d1"]["target_disk"]
    assert [c for c in e.calls if c[0].startswith("grant_")] == [
        ("grant_disk_role", new_disk, "u-1", "DiskOperator")]


async def test_in_place_restore_writes_the_disks_and_restores_the_configuration():
    e = FakeEngine()
    j = Journal()
    mover = FakeMover()
    m = RestoreMachine(j, deps(e, mover=mover), vm_id="vm1", job_id=str(uuid.uuid4()),
                       machine_id=str(uuid.uuid4()),
                       request={"backup_id": str(uuid.uuid4()), "kind": "in_place"})
    assert await m.run() == "succeeded"
    assert [c["disk_id"] for c in mover.copies] == ["d1"]
    assert [c for c in e.calls if c[0] == "create_transfer"] == [("create_transfer", "upload")]
    assert ("update_vm", "vm1", 3 << 30) in e.calls
    assert not [c for c in e.calls if c[0] in ("add_disk", "add_vm")]


async def test_in_place_restore_refuses_a_running_vm():
    e = FakeEngine()
    e.vms["vm1"] = ev.Vm(id="vm1", name="vm1", status="up")
    j = Journal()
    m = RestoreMachine(j, deps(e), vm_id="vm1", job_id=str(uuid.uuid4()),
                       machine_id=str(uuid.uuid4()),
                       request={"backup_id": str(uuid.uuid4()), "kind": "in_place"})
    assert await m.run() == "failed"
    assert "power it off" in j.resources["error"]
    assert not [c for c in e.calls if c[0] == "create_transfer"]

