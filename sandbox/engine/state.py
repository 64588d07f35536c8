"""The simulated engine's state and operations, free of HTTP.

The entities are in `model.py` and image transfers in `transfers.py` (a mixin
of `Engine`); `render.py` turns entities into the SDK's types and XML. Long operations (snapshots, transfers, backups, disk creation) run
as tasks that move the entity through the phases the real engine reports,
with realistic delays (`Timing`).

Locks, like the engine's: a VM with a running backup or snapshot operation
refuses another one (409); a disk under an image transfer is `locked`.
"""
from __future__ import annotations

import asyncio
import copy
import random
from pathlib import Path
from typing import Callable

import structlog

from ..proc import Registry
from ..storage import QCOW2, RAW, Image
from .model import (ACTIVE_PHASES, BLANK, FINAL_PHASES, Attachment, Backup, BadRequest, Checkpoint,
                    Cluster, Conflict, DataCenter, Disk, EngineError, Event, Host, Job, Nic,
                    NotFound, Snapshot, StorageDomain, Timing, Transfer, Vm, new_id, now,
                    vm_config)
from .transfers import TransferOps

# The entities live in `model`; they are re-exported here for the HTTP modules.
__all__ = ["Engine", "ACTIVE_PHASES", "BLANK", "FINAL_PHASES", "Attachment", "Backup", "BadRequest",
           "Checkpoint", "Cluster", "Conflict", "DataCenter", "Disk", "EngineError", "Event", "Host",
           "Job", "Nic", "NotFound", "Snapshot", "StorageDomain", "Timing", "Transfer", "Vm",
           "new_id", "now", "vm_config"]

log = structlog.get_logger("sandbox.engine")


class Engine(TransferOps):
    def __init__(self, base: Path, registry: Registry, timing: Timing | None = None):
        self.base = base
        self.registry = registry
        self.timing = timing or Timing()
        self.dcs: dict[str, DataCenter] = {}
        self.clusters: dict[str, Cluster] = {}
        self.hosts: dict[str, Host] = {}
        self.sds: dict[str, StorageDomain] = {}
        self.vms: dict[str, Vm] = {}
        self.disks: dict[str, Disk] = {}
        self.transfers: dict[str, Transfer] = {}
        self.events: list[Event] = []
        self.jobs: dict[str, Job] = {}
        self.tasks: set[asyncio.Task] = set()
        self._next_event = 1
        self._rr = 0
        self.nbd_dir = base / "nbd"
        self.nbd_dir.mkdir(parents=True, exist_ok=True)
        self.listeners: list[Callable[[Event], None]] = []
        self.instance_id = new_id()
        self.network_id = new_id()
        self.vnic_profile_id = new_id()
        self.admin_user_id = new_id()

    # --- plumbing -----------------------------------------------------------
    def spawn(self, coro, job: Job | None = None):
        async def runner():
            try:
                await coro
                if job:
                    self.finish_job(job, "finished")
            except Exception as e:  # an async engine command failed
                log.exception("engine task failed", error=str(e))
                if job:
                    self.finish_job(job, "failed")
        t = asyncio.get_running_loop().create_task(runner())
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    async def close(self):
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for tr in self.transfers.values():
            if tr.export:
                await tr.export.stop()

    def event(self, code: int, description: str, **kw) -> Event:
        e = Event(self._next_event, code, description, **kw)
        self._next_event += 1
        self.events.append(e)
        for fn in self.listeners:
            fn(e)
        return e

    def start_job(self, description: str, correlation_id: str | None) -> Job:
        j = Job(new_id(), description, correlation_id or new_id(), external=False)
        self.jobs[j.id] = j
        return j

    def finish_job(self, job: Job, status: str):
        job.status, job.end = status, now()

    def vm(self, vm_id: str) -> Vm:
        try:
            return self.vms[vm_id]
        except KeyError:
            raise NotFound(f"VM '{vm_id}' not found") from None

    def disk(self, disk_id: str) -> Disk:
        try:
            return self.disks[disk_id]
        except KeyError:
            raise NotFound(f"Disk '{disk_id}' not found") from None

    def host(self, host_id: str) -> Host:
        try:
            return self.hosts[host_id]
        except KeyError:
            raise NotFound(f"Host '{host_id}' not found") from None

    def pick_host(self) -> Host:
        up = [h for h in self.hosts.values() if h.status == "up"]
        if not up:
            raise Conflict("[Cannot transfer Virtual Disk. No active host in the Data Center.]")
        self._rr += 1
        return up[self._rr % len(up)]

    def vm_of_disk(self, disk_id: str) -> Vm | None:
        for vm in self.vms.values():
            if any(a.disk_id == disk_id for a in vm.attachments):
                return vm
        return None

    def snapshot(self, vm: Vm, snap_id: str) -> Snapshot:
        if snap_id == vm.active_snapshot_id:
            return Snapshot(vm.active_snapshot_id, vm.id, "Active VM", type="active",
                            date=vm.created)
        for s in vm.snapshots:
            if s.id == snap_id:
                return s
        raise NotFound(f"Snapshot '{snap_id}' not found")

    def find_volume(self, vol_id: str):
        """(disk, snapshot-or-None) owning volume `vol_id`."""
        for d in self.disks.values():
            for v in d.image.volumes:
                if v.id == vol_id:
                    vm = self.vm_of_disk(d.id)
                    snap = None
                    if vm:
                        for s in vm.snapshots:
                            if s.volumes.get(d.id) == vol_id:
                                snap = s
                    return d, snap
        raise NotFound(f"Disk snapshot '{vol_id}' not found")

    # --- disks ----------------------------------------------------------------
    async def create_disk(self, *, alias: str, size: int, fmt: str, sparse: bool, backup: str,
                          sd_id: str, description: str = "", disk_id: str | None = None,
                          content_type: str = "data", correlation_id: str | None = None,
                          wait: bool = False) -> Disk:
        if sd_id not in self.sds:
            raise NotFound(f"Storage domain '{sd_id}' not found")
        if fmt not in ("cow", "raw"):
            raise BadRequest(f"Invalid disk format '{fmt}'")
        if size <= 0:
            raise BadRequest("Disk provisioned_size must be positive")
        if backup == "incremental" and fmt != "cow":
            raise Conflict("[Cannot add Virtual Disk. Incremental backup is supported only "
                           "for disks in QCOW2 format.]")
        disk_id = disk_id or new_id()
        if disk_id in self.disks:
            raise Conflict(f"[Cannot add Virtual Disk. Disk with id {disk_id} already exists.]")
        size = (size + 511) // 512 * 512
        image = Image(disk_id, self.sds[sd_id].dir / "images" / disk_id, size)
        d = Disk(disk_id, alias or f"disk-{disk_id[:8]}", size, fmt, sparse, backup, sd_id,
                 image, description=description, status="locked", content_type=content_type)
        self.disks[disk_id] = d
        job = self.start_job(f"Adding Disk {d.alias}", correlation_id)

        async def create():
            img = await Image.create(self.sds[sd_id].dir, disk_id, size,
                                     QCOW2 if fmt == "cow" else RAW, sparse)
            d.image = img
            await asyncio.sleep(self.timing.disk_add)
            d.status = "ok"
            self.event(2021, f"The disk {d.alias} was successfully added.", sd_id=sd_id,
                       correlation_id=job.correlation_id)
        if wait:
            await create()
            self.finish_job(job, "finished")
        else:
            self.spawn(create(), job)
        return d

    async def extend_disk(self, disk_id: str, size: int, correlation_id: str | None = None):
        """Grow a disk (`provisioned_size` on update): asynchronous, the disk is
        locked meanwhile; shrinking is refused."""
        d = self.disk(disk_id)
        size = (size + 511) // 512 * 512
        if size == d.provisioned_size:
            return
        if size < d.provisioned_size:
            raise Conflict("[Cannot edit Virtual Disk. New disk size must be larger than the "
                           "current disk size.]")
        if d.status != "ok":
            raise Conflict(f"[Cannot edit Virtual Disk. Disk {d.alias} is locked. Please try "
                           "again in a few minutes.]")
        vm = self.vm_of_disk(d.id)
        if vm and vm.busy:
            raise Conflict(f"[Cannot edit Virtual Disk. VM {vm.name} is locked ({vm.busy}).]")
        d.status = "locked"
        job = self.start_job(f"Extending Disk {d.alias}", correlation_id)

        async def go():
            try:
                await d.image.resize(size, d.sparse)
                d.provisioned_size = size
                await asyncio.sleep(self.timing.disk_add)
                self.event(371, f"Size of the disk '{d.alias}' was successfully updated to "
                           f"{size / (1 << 30):g} GB by admin@internal-authz.",
                           vm_id=vm.id if vm else None, correlation_id=job.correlation_id)
            except Exception:
                self.event(372, f"Failed to update size of the disk '{d.alias}'.",
                           severity="error", correlation_id=job.correlation_id)
                raise
            finally:
                d.status = "ok"
        self.spawn(go(), job)

    async def remove_disk(self, disk_id: str):
        d = self.disk(disk_id)
        if d.status == "locked":
            raise Conflict(f"[Cannot remove Virtual Disk. Disk {d.alias} is locked. "
                           "Please try again in a few minutes.]")
        vm = self.vm_of_disk(disk_id)
        if vm:
            if vm.status != "down":
                raise Conflict("[Cannot remove Virtual Disk. At least one of the VMs is not down.]")
            vm.attachments = [a for a in vm.attachments if a.disk_id != disk_id]
        del self.disks[disk_id]
        await d.image.remove()
        self.event(2014, f"Disk {d.alias} was successfully removed.", sd_id=d.sd_id)

    # --- VMs --------------------------------------------------------------------
    def add_vm(self, vm: Vm, correlation_id: str | None = None) -> Vm:
        if any(v.name == vm.name for v in self.vms.values()):
            raise Conflict("[Cannot add VM. The VM name is already in use, please choose "
                           "a unique name and try again.]")
        if vm.cluster_id not in self.clusters:
            raise NotFound(f"Cluster '{vm.cluster_id}' not found")
        self.vms[vm.id] = vm
        job = self.start_job(f"Creating VM {vm.name}", correlation_id)
        self.finish_job(job, "finished")
        self.event(34, f"VM {vm.name} was created by admin@internal-authz.", vm_id=vm.id,
                   correlation_id=job.correlation_id)
        return vm

    def new_mac(self) -> str:
        r = random.Random()
        return "56:6f:" + ":".join(f"{r.randrange(256):02x}" for _ in range(4))

    async def remove_vm(self, vm_id: str, detach_only: bool = False):
        vm = self.vm(vm_id)
        if vm.status != "down":
            raise Conflict(f"[Cannot remove VM. VM {vm.name} is running.]")
        if vm.busy:
            raise Conflict(f"[Cannot remove VM. VM {vm.name} is locked ({vm.busy}).]")
        for a in list(vm.attachments):
            if detach_only:
                continue
            d = self.disks.pop(a.disk_id, None)
            if d:
                await d.image.remove()
        del self.vms[vm_id]
        self.event(113, f"VM {vm.name} was successfully removed.")

    async def set_power(self, vm_id: str, up: bool, correlation_id: str | None = None):
        vm = self.vm(vm_id)
        if up and vm.status == "up":
            raise Conflict(f"[Cannot run VM. VM {vm.name} is running.]")
        if vm.busy == "restore" or vm.status == "image_locked":
            raise Conflict(f"[Cannot run VM. VM {vm.name} is locked.]")
        job = self.start_job(("Launching" if up else "Stopping") + f" VM {vm.name}", correlation_id)

        async def go():
            if up:
                vm.status = "restoring_state" if vm.status == "suspended" else "powering_up"
                vm.host_id = self.pick_host().id
                await asyncio.sleep(self.timing.vm_power)
                vm.status = "up"
                self.event(153, f"VM {vm.name} started on Host {self.hosts[vm.host_id].name}",
                           vm_id=vm.id, correlation_id=job.correlation_id)
            else:
                vm.status = "powering_down"
                await asyncio.sleep(self.timing.vm_power)
                vm.status, vm.host_id = "down", None
                self.event(33, f"VM {vm.name} powered off by admin@internal-authz.",
                           vm_id=vm.id, correlation_id=job.correlation_id)
        self.spawn(go(), job)

    async def reboot(self, vm_id: str, correlation_id: str | None = None):
        vm = self.vm(vm_id)
        if vm.status != "up":
            raise Conflict(f"[Cannot reboot VM. VM {vm.name} is not running.]")
        job = self.start_job(f"Rebooting VM {vm.name}", correlation_id)
        self.event(157, f"User admin@internal-authz initiated reboot of VM {vm.name}.",
                   vm_id=vm.id, correlation_id=job.correlation_id)

        async def go():
            vm.status = "reboot_in_progress"
            await asyncio.sleep(self.timing.vm_power)
            if vm.status == "reboot_in_progress":
                vm.status = "up"
        self.spawn(go(), job)

    async def suspend(self, vm_id: str, correlation_id: str | None = None):
        vm = self.vm(vm_id)
        if vm.status != "up":
            raise Conflict(f"[Cannot hibernate VM. VM {vm.name} is not running.]")
        if vm.busy:
            raise Conflict(f"[Cannot hibernate VM. VM {vm.name} is locked ({vm.busy}).]")
        job = self.start_job(f"Suspending VM {vm.name}", correlation_id)
        self.event(46, f"Suspending VM {vm.name} was initiated by User admin@internal-authz.",
                   vm_id=vm.id, correlation_id=job.correlation_id)

        async def go():
            vm.status = "saving_state"
            await asyncio.sleep(self.timing.vm_power)
            vm.status, vm.host_id = "suspended", None
            self.event(47, f"VM {vm.name} on Host was suspended.", vm_id=vm.id,
                       correlation_id=job.correlation_id)
        self.spawn(go(), job)

    def attach(self, vm_id: str, att: Attachment):
        vm = self.vm(vm_id)
        d = self.disk(att.disk_id)
        if self.vm_of_disk(d.id):
            raise Conflict(f"[Cannot attach Virtual Disk. Disk {d.alias} is already attached to a VM.]")
        if att.bootable and any(a.bootable for a in vm.attachments):
            raise Conflict("[Cannot attach Virtual Disk. The VM already has a bootable disk.]")
        vm.attachments.append(att)
        self.event(2016, f"Disk {d.alias} was successfully attached to VM {vm.name}.", vm_id=vm.id)
        return att

    def detach(self, vm_id: str, disk_id: str):
        vm = self.vm(vm_id)
        for a in vm.attachments:
            if a.disk_id == disk_id:
                if self.disks.get(disk_id) and self.disks[disk_id].status == "locked":
                    raise Conflict("[Cannot detach Virtual Disk. Disk is locked.]")
                vm.attachments.remove(a)
                return
        raise NotFound(f"Disk attachment '{disk_id}' not found")

    # --- snapshots ----------------------------------------------------------------
    def _claim_vm(self, vm: Vm, what: str, verb: str):
        if vm.busy:
            raise Conflict(f"[Cannot {verb}. Snapshot or backup operation is in progress "
                           f"on VM {vm.name} ({vm.busy}).]")
        for a in vm.attachments:
            d = self.disks.get(a.disk_id)
            if d and d.status == "locked":
                raise Conflict(f"[Cannot {verb}. Disk {d.alias} is locked. "
                               "Please try again in a few minutes.]")
        vm.busy = what

    async def create_snapshot(self, vm_id: str, description: str, disk_ids: list | None,
                              persist_memorystate: bool | None, correlation_id: str | None,
                              snap_id: str | None = None) -> Snapshot:
        vm = self.vm(vm_id)
        if not description:
            raise BadRequest("Snapshot [description] required for add")
        attached = [a.disk_id for a in vm.attachments]
        disk_ids = disk_ids if disk_ids is not None else attached
        for d in disk_ids:
            if d not in attached:
                raise Conflict(f"[Cannot create Snapshot. Disk {d} is not attached to VM {vm.name}.]")
        self._claim_vm(vm, "snapshot", "create Snapshot")
        snap = Snapshot(snap_id or new_id(), vm.id, description, status="locked",
                        persist_memorystate=bool(persist_memorystate and vm.status == "up"),
                        config=vm_config(vm))
        vm.snapshots.append(snap)
        disks = [self.disks[i] for i in disk_ids]
        for d in disks:
            d.status = "locked"
        job = self.start_job(f"Creating VM Snapshot {description} for VM {vm.name}", correlation_id)
        self.event(45, f"Snapshot '{description}' creation for VM '{vm.name}' was initiated "
                   "by admin@internal-authz.", vm_id=vm.id, correlation_id=job.correlation_id)

        async def go():
            try:
                for d in disks:
                    frozen = await d.image.freeze()
                    snap.volumes[d.id] = frozen.id
                await asyncio.sleep(self.timing.snapshot)
                snap.status = "ok"
                self.event(68, f"Snapshot '{description}' creation for VM '{vm.name}' has been "
                           "completed.", vm_id=vm.id, correlation_id=job.correlation_id)
            except Exception:
                vm.snapshots.remove(snap)
                self.event(69, f"Failed to complete snapshot '{description}' creation for VM "
                           f"'{vm.name}'.", severity="error", vm_id=vm.id,
                           correlation_id=job.correlation_id)
                raise
            finally:
                for d in disks:
                    d.status = "ok"
                vm.busy = None
        self.spawn(go(), job)
        return snap

    async def remove_snapshot(self, vm_id: str, snap_id: str, correlation_id: str | None):
        vm = self.vm(vm_id)
        snap = self.snapshot(vm, snap_id)
        if snap.type == "active":
            raise Conflict("[Cannot remove Snapshot. The active snapshot cannot be removed.]")
        if snap.status != "ok":
            raise Conflict(f"[Cannot remove Snapshot. Snapshot is currently being created "
                           f"for VM {vm.name}.]")
        for t in self.transfers.values():
            if t.snapshot_id in snap.volumes.values() and t.phase in ACTIVE_PHASES:
                raise Conflict("[Cannot remove Snapshot. Disk snapshot is in use by an image "
                               "transfer.]")
        self._claim_vm(vm, "snapshot removal", "remove Snapshot")
        snap.status = "locked"
        disks = [self.disks[d] for d in snap.volumes if d in self.disks]
        for d in disks:
            d.status = "locked"
        job = self.start_job(f"Removing Snapshot {snap.description} of VM {vm.name}", correlation_id)
        self.event(342, f"Snapshot '{snap.description}' deletion for VM '{vm.name}' was "
                   "initiated by admin@internal-authz.", vm_id=vm.id, correlation_id=job.correlation_id)

        async def go():
            try:
                for d in disks:
                    vol = snap.volumes[d.id]
                    removed = await d.image.merge(vol)
                    # The snapshot taken after this one now owns the merged volume.
                    for s in vm.snapshots:
                        if s is not snap and s.volumes.get(d.id) == removed:
                            s.volumes[d.id] = vol
                await asyncio.sleep(self.timing.snapshot_remove)
                vm.snapshots.remove(snap)
                self.event(356, f"Snapshot '{snap.description}' deletion for VM '{vm.name}' has "
                           "been completed.", vm_id=vm.id, correlation_id=job.correlation_id)
            except Exception:
                snap.status = "ok"
                self.event(357, f"Failed to delete snapshot '{snap.description}' for VM "
                           f"'{vm.name}'.", severity="error", vm_id=vm.id,
                           correlation_id=job.correlation_id)
                raise
            finally:
                for d in disks:
                    d.status = "ok"
                vm.busy = None
        self.spawn(go(), job)

    async def restore_snapshot(self, vm_id: str, snap_id: str, correlation_id: str | None,
                               disk_ids: list | None = None):
        """Preview then commit, as the REST `restore` action does: the disks go
        back to the snapshot (the active layers are discarded and a new overlay
        is put on the snapshot volume), the configuration is the snapshot's,
        snapshots taken after it are removed. Returns when done (the API waits)."""
        vm = self.vm(vm_id)
        snap = self.snapshot(vm, snap_id)
        if snap.type == "active":
            raise Conflict("[Cannot revert to Snapshot. The active snapshot cannot be restored.]")
        if snap.status != "ok":
            raise Conflict("[Cannot revert to Snapshot. Snapshot is locked.]")
        if vm.status != "down":
            raise Conflict(f"[Cannot revert to Snapshot. VM {vm.name} is not down. "
                           "VM must be in Down status.]")
        for t in self.transfers.values():
            vm_disks = {a.disk_id for a in vm.attachments}
            if t.disk_id in vm_disks and t.phase in ACTIVE_PHASES:
                raise Conflict("[Cannot revert to Snapshot. A disk of the VM is locked by an "
                               "image transfer.]")
        self._claim_vm(vm, "snapshot restore", "revert to Snapshot")
        targets = {d: v for d, v in snap.volumes.items() if d in self.disks
                   and (disk_ids is None or d in disk_ids)}
        idx = vm.snapshots.index(snap)
        newer = vm.snapshots[idx + 1:]
        disks = [self.disks[d] for d in {*targets, *(d for s in newer for d in s.volumes)}
                 if d in self.disks]
        for d in disks:
            d.status = "locked"
        vm.status = "image_locked"
        job = self.start_job(f"Restoring VM Snapshot {snap.description} of VM {vm.name}",
                             correlation_id)
        self.event(95, f"Snapshot-Preview {snap.description} for VM {vm.name} was initiated by "
                   "admin@internal-authz.", vm_id=vm.id, correlation_id=job.correlation_id)
        try:
            for disk_id, vol in targets.items():
                await self.disks[disk_id].image.revert(vol)
            # Snapshots taken after this one are obsolete: their volumes on the
            # restored disks are gone; on other disks they are merged away.
            for s in reversed(newer):
                for disk_id, vol in s.volumes.items():
                    d = self.disks.get(disk_id)
                    if disk_id in targets or d is None:
                        continue
                    if vol in [v.id for v in d.image.volumes[:-1]]:
                        await d.image.merge(vol)
                vm.snapshots.remove(s)
            if snap.config is not None:
                c = snap.config
                for f in ("memory", "cpu_sockets", "cpu_cores", "cpu_threads", "os_type",
                          "bios_type", "boot_devices", "type", "ha", "description", "comment"):
                    setattr(vm, f, copy.deepcopy(getattr(c, f)))
            # The restored disks' bitmaps no longer describe the guest's history.
            for cp in list(vm.checkpoints):
                for d in cp.disk_ids:
                    if d in self.disks:
                        await self.disks[d].image.remove_bitmap(cp.id)
            vm.checkpoints.clear()
            await asyncio.sleep(self.timing.snapshot)
            self.event(99, f"Snapshot-Preview {snap.description} for VM {vm.name} has been "
                       "completed.", vm_id=vm.id, correlation_id=job.correlation_id)
            self.event(100, f"VM {vm.name} restored from Snapshot.", vm_id=vm.id,
                       correlation_id=job.correlation_id)
            self.finish_job(job, "finished")
        except Exception:
            self.finish_job(job, "failed")
            self.event(97, f"Failed to restore VM {vm.name} from Snapshot.", severity="error",
                       vm_id=vm.id, correlation_id=job.correlation_id)
            raise
        finally:
            for d in disks:
                d.status = "ok"
            vm.status = "down"
            vm.busy = None

    # --- backups and checkpoints ----------------------------------------------------
    def backup(self, vm: Vm, backup_id: str) -> Backup:
        for b in vm.backups:
            if b.id == backup_id:
                return b
        raise NotFound(f"Backup '{backup_id}' not found")

    async def start_backup(self, vm_id: str, disk_ids: list, from_checkpoint_id: str | None,
                           backup_id: str | None, description: str,
                           correlation_id: str | None, require_consistency: bool = False) -> Backup:
        vm = self.vm(vm_id)
        if not disk_ids:
            raise BadRequest("Backup [disks] required for add")
        attached = {a.disk_id for a in vm.attachments}
        for d in disk_ids:
            if d not in self.disks:
                raise NotFound(f"Disk '{d}' not found")
            if d not in attached:
                raise Conflict(f"[Cannot backup VM. Disk {d} is not attached to the VM.]")
        if vm.status not in ("up", "down"):
            raise Conflict(f"[Cannot backup VM. VM {vm.name} status is {vm.status}.]")
        if from_checkpoint_id:
            cp = next((c for c in vm.checkpoints if c.id == from_checkpoint_id), None)
            if cp is None:
                raise Conflict(f"[Cannot backup VM. Checkpoint {from_checkpoint_id} does not "
                               "exist.]")
            if cp.state == "invalid":
                raise Conflict(f"[Cannot backup VM. Checkpoint {from_checkpoint_id} is invalid.]")
        if backup_id and any(b.id == backup_id for v in self.vms.values() for b in v.backups):
            raise Conflict(f"[Cannot backup VM. Backup {backup_id} already exists.]")
        self._claim_vm(vm, "backup", "backup VM")
        disks = [self.disks[d] for d in disk_ids]
        incremental_capable = [d for d in disks if d.format == "cow" and d.backup == "incremental"]
        to_cp = new_id() if incremental_capable else None
        host = self.hosts.get(vm.host_id) or self.pick_host()
        b = Backup(backup_id or new_id(), vm.id, list(disk_ids), from_checkpoint_id, to_cp,
                   host.id, description=description or "")
        vm.backups.append(b)
        job = self.start_job(f"Backing up VM {vm.name}", correlation_id)
        self.event(10790, f"Backup {b.id} for VM {vm.name} started (User: admin@internal-authz).",
                   vm_id=vm.id, correlation_id=job.correlation_id)

        async def go():
            try:
                b.phase = "starting"
                await asyncio.sleep(self.timing.backup_start / 2)
                for d in disks:
                    d.status = "locked"
                    frozen = await d.image.freeze()
                    b.frozen[d.id] = frozen.id
                    has_bitmap = (from_checkpoint_id is not None and d in incremental_capable
                                  and from_checkpoint_id in await d.image.bitmaps(frozen))
                    b.modes[d.id] = "incremental" if has_bitmap else "full"
                    if to_cp and d in incremental_capable:
                        await d.image.add_bitmap(to_cp)
                    d.status = "ok"
                if to_cp:
                    parent = vm.checkpoints[-1].id if vm.checkpoints else None
                    vm.checkpoints.append(Checkpoint(to_cp, vm.id, parent,
                                                     [d.id for d in incremental_capable]))
                await asyncio.sleep(self.timing.backup_start / 2)
                b.phase, b.modified = "ready", now()
                self.event(10791, f"Backup {b.id} for VM {vm.name} is ready.", vm_id=vm.id,
                           correlation_id=job.correlation_id)
            except Exception:
                b.phase = "failed"
                await self._unfreeze(b)
                vm.busy = None
                self.event(10793, f"Backup {b.id} for VM {vm.name} failed.", severity="error",
                           vm_id=vm.id, correlation_id=job.correlation_id)
                raise
        self.spawn(go(), job)
        return b

    async def _unfreeze(self, b: Backup):
        for disk_id, vol in list(b.frozen.items()):
            d = self.disks.get(disk_id)
            if d and d.image.top.id != vol:
                await d.image.merge(vol)
            b.frozen.pop(disk_id, None)

    async def finalize_backup(self, vm_id: str, backup_id: str, correlation_id: str | None):
        vm = self.vm(vm_id)
        b = self.backup(vm, backup_id)
        if b.phase in ("succeeded", "finalizing"):
            return
        if b.phase not in ("ready", "failed"):
            raise Conflict(f"[Cannot stop VM Backup. Backup {b.id} is not ready "
                           f"(phase {b.phase}).]")
        b.phase = "finalizing"
        job = self.start_job(f"Finalizing backup of VM {vm.name}", correlation_id)

        async def go():
            # Transfers of this backup that the client left open are ended.
            for t in list(self.transfers.values()):
                if t.backup_id == b.id and t.phase in ACTIVE_PHASES:
                    await self._end_transfer(t, "finished_failure")
            await self._unfreeze(b)
            await asyncio.sleep(self.timing.backup_finalize)
            b.phase, b.modified = "succeeded", now()
            vm.busy = None
            self.event(10792, f"Backup {b.id} for VM {vm.name} completed successfully "
                       "(User: admin@internal-authz).", vm_id=vm.id,
                       correlation_id=job.correlation_id)
        self.spawn(go(), job)

    async def remove_checkpoint(self, vm_id: str, cp_id: str):
        vm = self.vm(vm_id)
        cp = next((c for c in vm.checkpoints if c.id == cp_id), None)
        if cp is None:
            raise NotFound(f"Checkpoint '{cp_id}' not found")
        # The engine removes only the root checkpoint of the chain.
        if vm.checkpoints[0].id != cp_id:
            raise Conflict("[Cannot remove VM checkpoint. Only the oldest checkpoint can be "
                           "removed.]")
        if vm.busy == "backup":
            raise Conflict("[Cannot remove VM checkpoint. A backup is in progress.]")
        for d in cp.disk_ids:
            if d in self.disks:
                await self.disks[d].image.remove_bitmap(cp_id)
        vm.checkpoints.remove(cp)
        if vm.checkpoints:
            vm.checkpoints[0].parent_id = None

    async def invalidate_checkpoint(self, vm_id: str, cp_id: str):
        """Fault: the checkpoint's bitmap is lost (as after an unclean host shutdown)."""
        vm = self.vm(vm_id)
        cp = next((c for c in vm.checkpoints if c.id == cp_id), None)
        if cp is None:
            raise NotFound(f"Checkpoint '{cp_id}' not found")
        for d in cp.disk_ids:
            if d in self.disks:
                await self.disks[d].image.remove_bitmap(cp_id)
        cp.state = "invalid"
