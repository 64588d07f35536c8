"""Snapshots, VM backups and checkpoints of the simulated engine (a mixin of
`state.Engine`).

A snapshot freezes the disks' top volumes (real qcow2 overlays); removing one
is a cold merge; restoring one reverts the disks and the configuration. A
backup freezes the disks for a consistent point in time and adds a checkpoint
(a persistent dirty bitmap in every layer); finalizing it merges the freeze
back. Locks as the engine's: one snapshot or backup operation per VM.
"""
from __future__ import annotations

import asyncio
import copy

from . import live
from .model import (ACTIVE_PHASES, Backup, BadRequest, Checkpoint, Conflict, NotFound, Snapshot,
                    Vm, new_id, now, vm_config)


class SnapshotOps:
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
                g = live.guest_of(self, vm)
                if g is not None:
                    # A live snapshot: the guest's qemu switches to new overlays,
                    # its file systems frozen around it when the agent answers.
                    vols, _ = await live.snapshot(self, vm, g, disks, job.correlation_id)
                    snap.volumes.update(vols)
                else:
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
                g = live.guest_of(self, vm)
                for d in disks:
                    vol = snap.volumes[d.id]
                    if g is not None:
                        removed = await live.merge(self, g, d, vol)
                    else:
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
                g = live.guest_of(self, vm)
                if g is not None:
                    # The VM runs: qemu exports the point in time itself.
                    await live.begin_backup(self, vm, g, b, disks, incremental_capable,
                                            require_consistency, job.correlation_id)
                elif vm.status == "up" and require_consistency:
                    # A record-only VM "runs" without a guest agent: vdsm cannot freeze it.
                    raise live.FreezeRequired(f"VM {vm.name}: freezing the guest failed (no guest "
                                              "agent) and the backup requires consistency")
                for d in disks if g is None else ():
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
                # Ready: the engine's audit log says nothing (10791 is its "incremental
                # failed, a full backup is needed").
                b.phase, b.modified = "ready", now()
            except Exception:
                b.phase = "failed"
                await live.end_backup(b)
                await self._unfreeze(b)
                vm.busy = None
                self.event(10792, f"Backup {b.id} for VM {vm.name} failed "
                           "(User: admin@internal-authz).", severity="error",
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
            await live.end_backup(b)
            await self._unfreeze(b)
            await asyncio.sleep(self.timing.backup_finalize)
            self.event(10794, f"Backup {b.id} for VM {vm.name} finalized "
                       "(User: admin@internal-authz).", vm_id=vm.id,
                       correlation_id=job.correlation_id)
            b.phase, b.modified = "succeeded", now()
            vm.busy = None
            self.event(10793, f"Backup {b.id} for VM {vm.name} completed successfully "
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
        g = live.guest_of(self, vm)
        for d in cp.disk_ids:
            if d in self.disks:
                if g is not None:
                    await live.remove_bitmap(g, self.disks[d], cp_id)
                else:
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
