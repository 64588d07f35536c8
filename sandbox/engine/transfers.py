"""Image transfers of the simulated engine (a mixin of `state.Engine`).

A transfer is a real qemu-nbd export of the disk's volume chain (or of a
snapshot volume, or of a backup's frozen chain with its dirty bitmap) plus a
real ticket on the chosen host's ovirt-imageio daemon. Phases follow the
engine's: initializing → transferring → finalizing_success → finished_success,
cancel → cancelled_* → finalizing_cleanup → finished_cleanup; a monitor
reports `transferred`, applies the inactivity timeout and pauses the transfer
(`paused_system`) when the daemon dies.

Like the engine's, the monitor polls the transfer's ticket: an upload whose
ticket the daemon no longer has (restarted: imageio keeps tickets in memory)
is paused by the system. `resume` of a paused transfer goes through
`resuming` back to `transferring` without adding the ticket to the daemon
again, so a lost ticket pauses it again at the next poll. `finalize` is taken
in any phase short of the end (a paused transfer included). Canceling an
upload, or an upload ending failed, removes the disk it wrote, whether the
transfer's client created it or it existed before (a VM's disk, detached).
"""
from __future__ import annotations

import asyncio

from ..hosts import NbdExport
from . import live
from .model import (ACTIVE_PHASES, FINAL_PHASES, Backup, BadRequest, Conflict, Disk, Host,
                    NotFound, Transfer, new_id)


class TransferOps:
    async def create_transfer(self, *, direction: str, disk_id: str | None, snapshot_id: str | None,
                              backup_id: str | None, host_id: str | None, fmt: str,
                              shallow: bool, inactivity_timeout: int | None,
                              timeout_policy: str | None, correlation_id: str | None,
                              transfer_id: str | None = None) -> Transfer:
        if direction not in ("upload", "download"):
            raise BadRequest(f"Invalid direction '{direction}'")
        backup = None
        if snapshot_id:
            disk, _ = self.find_volume(snapshot_id)
            if direction != "download":
                raise Conflict("[Cannot transfer Virtual Disk. Uploading to a disk snapshot is "
                               "not supported.]")
        elif disk_id:
            disk = self.disk(disk_id)
        else:
            raise BadRequest("ImageTransfer [disk.id|snapshot.id] required for add")
        if backup_id:
            for vm in self.vms.values():
                for b in vm.backups:
                    if b.id == backup_id:
                        backup = b
            if backup is None:
                raise NotFound(f"Backup '{backup_id}' not found")
            if backup.phase != "ready":
                raise Conflict(f"[Cannot transfer Virtual Disk. Backup {backup_id} is not ready.]")
            if disk.id not in backup.disk_ids:
                raise Conflict(f"[Cannot transfer Virtual Disk. Disk {disk.id} is not part of "
                               f"backup {backup_id}.]")
            if direction != "download":
                raise Conflict("[Cannot transfer Virtual Disk. A backup disk can only be "
                               "downloaded.]")
        if disk.status != "ok":
            raise Conflict(f"[Cannot transfer Virtual Disk. Disk {disk.alias} is {disk.status}.]")
        for t in self.transfers.values():
            if t.disk_id == disk.id and t.phase in ACTIVE_PHASES:
                raise Conflict(f"[Cannot transfer Virtual Disk. Disk {disk.alias} is locked by "
                               f"another image transfer.]")
        vm = self.vm_of_disk(disk.id)
        if vm and not backup and vm.busy:
            raise Conflict(f"[Cannot transfer Virtual Disk. VM {vm.name} is locked ({vm.busy}).]")
        if direction == "upload" and vm and vm.status != "down":
            raise Conflict(f"[Cannot transfer Virtual Disk. VM {vm.name} is running.]")
        if fmt not in ("raw", "cow"):
            raise BadRequest(f"Invalid transfer format '{fmt}'")
        host = self.host(host_id) if host_id else (
            self.hosts.get(backup.host_id) if backup else self.pick_host())
        if host.status != "up":
            raise Conflict(f"[Cannot transfer Virtual Disk. Host {host.name} is not up.]")
        t = Transfer(transfer_id or new_id(), direction, disk.id, host.id, format=fmt,
                     snapshot_id=snapshot_id, backup_id=backup_id, shallow=bool(shallow),
                     inactivity_timeout=inactivity_timeout or 60,
                     timeout_policy=timeout_policy or "legacy")
        self.transfers[t.id] = t
        if not backup:
            disk.status = "locked"
        disk.locked_by = t.id
        job = self.start_job(f"{'Uploading' if direction == 'upload' else 'Downloading'} "
                             f"disk {disk.alias}", correlation_id)
        self.event(1031, f"Image {'Upload' if direction == 'upload' else 'Download'} with disk "
                   f"{disk.alias} was initiated by admin@internal-authz.",
                   correlation_id=job.correlation_id, vm_id=vm.id if vm else None)
        self.spawn(self._init_transfer(t, disk, host, backup), job)
        return t

    async def _init_transfer(self, t: Transfer, disk: Disk, host: Host, backup: Backup | None):
        try:
            image = disk.image
            bitmap, dirty = None, False
            src = live.transfer_source(backup, disk.id) if backup else None
            if src:
                # A running VM's backup: qemu's own NBD export of the point in time.
                url, dirty = src
                size = image.size
            elif backup:
                vol = image.volume(backup.frozen[disk.id])
                if backup.modes.get(disk.id) == "incremental":
                    bitmap, dirty = backup.from_checkpoint_id, True
            elif t.snapshot_id:
                vol = image.volume(t.snapshot_id)
            else:
                vol = image.top
            readonly = t.direction == "download"
            if src:
                pass
            elif t.format == "cow":
                # The legacy "file" path: the volume's bytes as stored.
                url, size = f"file://{vol.path}", vol.path.stat().st_size
                if not readonly:
                    size = image.size
            else:
                t.export = NbdExport(f"nbd-{t.id}", self.nbd_dir / f"{t.id}.sock", vol.path,
                                     vol.fmt, readonly=readonly, bitmap=bitmap,
                                     shallow=t.shallow, registry=self.registry)
                await t.export.start()
                url, size = t.export.url, image.size
            t.ticket = new_id()
            await host.daemon.add_ticket({
                "uuid": t.ticket, "size": size, "url": url, "timeout": 3600,
                "inactivity_timeout": t.inactivity_timeout,
                "ops": ["read"] if readonly else ["read", "write"],
                "transfer_id": t.id, "sparse": disk.sparse, "dirty": dirty,
                "filename": f"{disk.id}.{'raw' if t.format == 'raw' else 'qcow2'}"})
            await asyncio.sleep(self.timing.transfer_init)
            t.transfer_url = f"https://{self.address}:{host.daemon.port}/images/{t.ticket}"
            t.proxy_url = t.transfer_url
            if t.phase == "initializing":
                t.phase = "transferring"
                self.spawn(self._watch_transfer(t))
        except Exception:
            await self._end_transfer(t, "finished_failure")
            raise

    async def _watch_transfer(self, t: Transfer):
        """Engine-side monitor: transferred bytes and the inactivity timeout."""
        host = self.hosts[t.host_id]
        idle_since = asyncio.get_running_loop().time()
        while t.phase in ("transferring", "paused_user", "paused_system", "resuming"):
            await asyncio.sleep(0.5)
            if t.phase != "transferring":
                continue
            if not host.daemon.running:
                t.phase = "paused_system"
                self.event(1037, f"Image transfer {t.id} was paused by the system: the imageio "
                           f"daemon on host {host.name} is not responding.", severity="error")
                continue
            try:
                info = await host.daemon.get_ticket(t.ticket)
            except Exception:
                info = None
            if not info:
                if t.direction == "upload" and t.phase == "transferring":
                    t.phase = "paused_system"
                    self.event(1038, f"Image transfer {t.id} was paused by the system: the "
                               f"imageio daemon on host {host.name} does not know its ticket.",
                               severity="error")
                continue
            t.transferred = info.get("transferred", t.transferred)
            now_ = asyncio.get_running_loop().time()
            if info.get("active") or info.get("connections"):
                idle_since = now_
            elif now_ - idle_since > t.inactivity_timeout:
                if t.timeout_policy == "cancel" or t.direction == "download":
                    self.event(1035, f"Image transfer {t.id} was cancelled by the system: "
                               "inactivity timeout.", severity="warning")
                    await self._cancel(t, "cancelled_system")
                else:
                    t.phase = "paused_system"
                    self.event(1036, f"Image transfer {t.id} was paused by the system: "
                               "inactivity timeout.", severity="warning")

    async def finalize_transfer(self, transfer_id: str):
        t = self.transfer(transfer_id)
        if t.phase in ("finalizing_success", "finished_success"):
            return
        if t.phase not in ("transferring", "paused_user", "paused_system", "initializing",
                           "resuming"):
            raise Conflict(f"[Cannot finalize image transfer. Phase is {t.phase}.]")
        t.phase = "finalizing_success"
        self.spawn(self._end_transfer(t, "finished_success"))

    async def cancel_transfer(self, transfer_id: str):
        t = self.transfer(transfer_id)
        if t.phase in FINAL_PHASES or t.phase.startswith("finalizing"):
            return
        await self._cancel(t, "cancelled_user")

    async def _cancel(self, t: Transfer, phase: str):
        t.phase = phase
        await asyncio.sleep(0)
        t.phase = "finalizing_cleanup"
        self.spawn(self._end_transfer(t, "finished_cleanup"))

    async def pause_transfer(self, transfer_id: str):
        t = self.transfer(transfer_id)
        if t.phase != "transferring":
            raise Conflict(f"[Cannot pause image transfer. Phase is {t.phase}.]")
        t.phase = "paused_user"

    async def resume_transfer(self, transfer_id: str):
        t = self.transfer(transfer_id)
        if t.phase not in ("paused_user", "paused_system"):
            raise Conflict(f"[Cannot resume image transfer. Phase is {t.phase}.]")
        # Only the phase moves: a ticket the daemon lost stays lost (the monitor,
        # still running, pauses the transfer again).
        t.phase = "resuming"
        self.spawn(self._resumed(t))

    async def _resumed(self, t: Transfer):
        await asyncio.sleep(0.1)
        if t.phase == "resuming":
            t.phase = "transferring"

    def transfer(self, transfer_id: str) -> Transfer:
        try:
            return self.transfers[transfer_id]
        except KeyError:
            raise NotFound(f"Image transfer '{transfer_id}' not found") from None

    async def _end_transfer(self, t: Transfer, final: str):
        host = self.hosts.get(t.host_id)
        if host and t.ticket:
            await host.daemon.remove_ticket(t.ticket)
        if t.export:
            await t.export.stop()
            t.export = None
        await asyncio.sleep(self.timing.transfer_finalize)
        disk = self.disks.get(t.disk_id)
        if disk:
            disk.locked_by = None
            if disk.status == "locked":
                disk.status = "ok"
            if final in ("finished_cleanup", "finished_failure") and t.direction == "upload":
                # An upload that does not succeed takes its disk with it, even one
                # attached to a (down) VM before the transfer.
                try:
                    await self.remove_disk(disk.id)
                except Exception as err:  # the transfer still ends; the engine logs it
                    disk.status = "illegal"
                    self.event(2015, f"Disk {disk.alias} of a failed upload could not be "
                               f"removed: {err}", severity="error")
        t.phase = final
        t.finished_at = asyncio.get_running_loop().time()
        verb = "Upload" if t.direction == "upload" else "Download"
        if final == "finished_success":
            self.event(1032, f"Image {verb} with disk {disk.alias if disk else t.disk_id} "
                       "succeeded.")
        else:
            self.event(1033 if final == "finished_failure" else 1034,
                       f"Image {verb} with disk {disk.alias if disk else t.disk_id} "
                       f"{'failed' if final == 'finished_failure' else 'was cancelled'}.",
                       severity="error" if final == "finished_failure" else "normal")

    def gc_transfers(self):
        loop_now = asyncio.get_running_loop().time()
        for tid, t in list(self.transfers.items()):
            if t.finished_at and loop_now - t.finished_at > self.timing.transfer_gc:
                del self.transfers[tid]
