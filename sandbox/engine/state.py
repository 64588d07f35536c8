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
import random
from pathlib import Path
from typing import Callable

import structlog

from ..proc import Registry
from ..storage import QCOW2, RAW, Image
from .model import (ACTIVE_PHASES, BLANK, FINAL_PHASES, Attachment, Backup, BadRequest, Checkpoint,
                    Cluster, Conflict, DataCenter, Disk, EngineError, Event, Host, Job, Nic,
                    NotFound, Permission, Snapshot, StorageDomain, Timing, Transfer, Vm, new_id, now,
                    vm_config)
from .snapshots import SnapshotOps
from .transfers import TransferOps

# The entities live in `model`; they are re-exported here for the HTTP modules.
__all__ = ["Engine", "ACTIVE_PHASES", "BLANK", "FINAL_PHASES", "Attachment", "Backup", "BadRequest",
           "Checkpoint", "Cluster", "Conflict", "DataCenter", "Disk", "EngineError", "Event", "Host",
           "Job", "Nic", "NotFound", "Snapshot", "StorageDomain", "Timing", "Transfer", "Vm",
           "new_id", "now", "vm_config"]

log = structlog.get_logger("sandbox.engine")


class Engine(TransferOps, SnapshotOps):
    def __init__(self, base: Path, registry: Registry, timing: Timing | None = None):
        self.base = base
        self.registry = registry
        self.timing = timing or Timing()
        # The address of this machine in the URLs handed to clients (transfer URLs);
        # a lab reached from a VM on user-mode networking uses 10.0.2.2 (LabConfig.address).
        self.address = "127.0.0.1"
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
        self.tags: dict = {}  # id -> Tag (the root tag is implicit, id BLANK)
        # Permission, at every level; the built-in admin is SuperUser on the system.
        self.permissions: list = [Permission(new_id(), "SuperUser", self.admin_user_id, "system")]
        self.templates: dict = {}  # id -> Vm-like template records (Blank is implicit)
        self.guests = None  # sandbox.guests.manager.Guests: VMs that run real qemu guests

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
        if self.guests is not None:
            await self.guests.close()
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
                          wait: bool = False, source: tuple | None = None) -> Disk:
        """A new disk, `locked` until its image exists (with the content of
        `source` = (volume path, qemu format) when given: a copy)."""
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
            try:
                img = await Image.create(self.sds[sd_id].dir, disk_id, size,
                                         QCOW2 if fmt == "cow" else RAW, sparse)
                d.image = img
                if source is not None:
                    await img.replace_with(*source)
            except Exception:
                d.status = "illegal"  # as the engine marks a disk whose creation failed
                self.event(2022, f"Add-Disk operation failed to complete on {d.alias}.",
                           severity="error", sd_id=sd_id, correlation_id=job.correlation_id)
                raise
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

    async def set_power(self, vm_id: str, up: bool, correlation_id: str | None = None,
                        graceful: bool = False):
        vm = self.vm(vm_id)
        if up and vm.status == "up":
            raise Conflict(f"[Cannot run VM. VM {vm.name} is running.]")
        if vm.busy == "restore" or vm.status == "image_locked":
            raise Conflict(f"[Cannot run VM. VM {vm.name} is locked.]")
        guest = self.guests is not None and self.guests.is_guest(vm)  # a real qemu guest
        if up and guest:
            self.guests.check_start(vm)
        job = self.start_job(("Launching" if up else "Stopping") + f" VM {vm.name}", correlation_id)

        async def go():
            if up:
                vm.status = "restoring_state" if vm.status == "suspended" else "powering_up"
                vm.host_id = self.pick_host().id
                if guest:
                    try:
                        await self.guests.start(vm)
                    except Exception as ex:
                        vm.status, vm.host_id = "down", None
                        self.event(119, f"VM {vm.name} is down with error. Exit message: {ex}.",
                                   severity="error", vm_id=vm.id, correlation_id=job.correlation_id)
                        raise
                else:
                    await asyncio.sleep(self.timing.vm_power)
                vm.status = "up"
                self.event(153, f"VM {vm.name} started on Host {self.hosts[vm.host_id].name}",
                           vm_id=vm.id, correlation_id=job.correlation_id)
            else:
                vm.status = "powering_down"
                if guest:
                    await self.guests.stop(vm, graceful)
                else:
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
            if self.guests is not None and self.guests.get(vm.id):
                await self.guests.reboot(vm)
            else:
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
        if self.guests is not None and self.guests.get(vm.id):
            raise Conflict(f"[Cannot hibernate VM. VM {vm.name} runs a sandbox guest (no memory "
                           "state is saved in the sandbox).]")
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

    async def copy_disk(self, src: Disk, vol_id: str | None, alias: str,
                        correlation_id: str | None = None, wait: bool = False) -> Disk:
        """A new disk with the guest-visible content of `src` at volume `vol_id`
        (a snapshot's frozen volume; None: the active layer), as the engine
        copies disks when cloning a VM or making a template; `locked` until
        copied unless `wait`."""
        vol = src.image.volume(vol_id) if vol_id else src.image.top
        return await self.create_disk(alias=alias, size=src.provisioned_size, fmt=src.format,
                                      sparse=src.sparse, backup=src.backup, sd_id=src.sd_id,
                                      description=src.description, content_type=src.content_type,
                                      correlation_id=correlation_id, wait=wait,
                                      source=(vol.path, vol.fmt))

    def after_disks(self, disks: list, then, failed=None):
        """Run `then()` once every disk of `disks` is out of `locked` and `ok` (the
        copies finished), else `failed()` (a creation failed or a disk went away)."""
        async def watch():
            while any(d.status == "locked" and d.id in self.disks for d in disks):
                await asyncio.sleep(0.05)
            if all(d.id in self.disks and d.status == "ok" for d in disks):
                then()
            elif failed is not None:
                failed()
        self.spawn(watch())
