"""BackupMachine: one VM of a backup job (architecture §2).

    queued → snapshot → metadata → transfer → finalize → succeeded
    any working state → cleanup → failed | canceled

What each step records in the journal's `resources` before and after its
engine calls, so a restarted replica can resume or compensate:

| key                  | written                                   | used by            |
|----------------------|-------------------------------------------|--------------------|
| method, backup_id    | before anything is created                | every step         |
| engine_backup.id     | before POST /vms/{id}/backups (our id)    | resume, cleanup    |
| engine_backup.require_consistency | before the POST: a frozen guest asked | consistency  |
| engine_backup.consistent_attempt | a failed consistent attempt's id | consistency `crash` |
| snapshot.description | before POST /snapshots (carries job id)   | find after a crash |
| snapshot.id          | after the POST                            | cleanup            |
| transfers[disk]      | after POST /imagetransfers; `finalized`   | adopt, cleanup     |
| copies[disk]         | when the disk's data is in the store      | skip on resume     |
| published            | after the manifest rename                 | cleanup keeps it   |

Image transfers created before their id was recorded are found again by
disk id among active transfers (they are never left behind).
"""
from __future__ import annotations

import asyncio
import uuid
from typing import cast

from . import consistency
from .base import StepFailed, VmMachine
from .engine import CheckpointRefused
from .lifecycle import CLEANUP, QUEUED
from .ports import Deps
from .resources import BackupResources, TransferRec
from .resume import copy_with_resume

from .consistency import FAILED_TO_FREEZE_VM, FREEZE_VM_SUCCESS  # noqa: F401 - re-exported

ACTIVE = {"initializing", "transferring", "resuming", "paused_user", "paused_system",
          "finalizing_success", "finalizing_failure", "finalizing_cleanup",
          "cancelled_user", "cancelled_system"}


class _EngineBackupFailed(StepFailed):
    """The engine backup ended `failed` (or vanished: `vanished`)."""
    vanished = False


class BackupMachine(VmMachine):
    kind = "backup"
    WORK_STATES = ("snapshot", "metadata", "transfer", "finalize")

    def __init__(self, journal, deps: Deps, *, vm_id, job_id, machine_id, mode="auto"):
        super().__init__(journal, deps, vm_id=vm_id, job_id=job_id, machine_id=machine_id)
        self.mode = mode

    @property
    def res(self) -> BackupResources:
        return cast(BackupResources, self.journal.resources)

    # --- snapshot -----------------------------------------------------------------------
    async def step_snapshot(self):
        e = self.engine
        if "disks" not in self.res:
            disks = await e.vm_disks(self.vm_id)
            if not disks:
                raise StepFailed("the VM has no disks to back up")
            info = {x.disk.id: {"alias": x.disk.alias, "size": x.disk.provisioned_size,
                                "format": x.disk.format, "backup": x.disk.backup,
                                "sparse": x.disk.sparse, "bootable": x.attachment.bootable,
                                "interface": x.attachment.interface,
                                "storage_domain": x.disk.storage_domain_id}
                    for x in disks if x.attachment.active}
            cbt_ok = all(v["format"] == "cow" and v["backup"] == "incremental" for v in info.values())
            method = "cbt" if cbt_ok else "snapshot"
            await self.record(disks=info, method=method, backup_id=str(uuid.uuid4()),
                              mode_requested=self.mode,
                              method_reason=None if cbt_ok else
                              "not every disk is qcow2 with incremental backup enabled")
        if self.res["method"] == "cbt":
            await self._cbt_backup()
        else:
            await self._snapshot()
        return "snapshot_done"

    async def _parent(self, method: str | None):
        """The last good backup to build on, and the reason when there is none."""
        if self.mode == "full":
            return None, "full backup requested"
        last = await self.deps.catalog.last_backup(self.vm_id, method)
        if last is None:
            return None, "no earlier successful, undamaged backup of this VM"
        return last, None

    async def _cbt_backup(self):
        e = self.engine
        eb = self.res.get("engine_backup")
        if eb is None:
            parent, reason = await self._parent("cbt")
            cp = parent.get("checkpoint_id") if parent else None
            if parent and not cp:
                parent, reason = None, "the last backup has no checkpoint"
            vm = await e.get_vm(self.vm_id)
            ask, why_not = consistency.ask_engine(self.deps.consistency, "cbt", vm.status,
                                                  vm.guest_agent, await e.version())
            eb = {"id": self.res["backup_id"], "from_checkpoint": cp,
                  "parent_id": parent["id"] if parent else None, "require_consistency": ask}
            await self.record(engine_backup=eb, fallback_reason=reason, consistency_reason=why_not)
        try:
            eb, b = await self._engine_backup_ready(eb)
        except _EngineBackupFailed as err:
            eb = dict(self.res["engine_backup"])  # as recorded (a refused checkpoint dropped)
            if not eb.get("require_consistency") or err.vanished:
                raise
            eb, b = await self._engine_backup_ready(await consistency.crash_attempt(self, eb))
        if eb.get("require_consistency"):
            cons = "filesystem"  # the engine would have failed it unfrozen
        elif eb.get("consistent_attempt"):
            cons = "crash"  # the consistent attempt failed
        else:
            cons = await consistency.from_audit_log(self)
        modes = await e.backup_disk_modes(self.vm_id, eb["id"])
        mode = "incremental" if eb.get("parent_id") and any(m == "incremental" for m in modes.values()) \
            else "full"
        await self.record(engine_backup={**eb, "to_checkpoint": b.to_checkpoint_id, "ready": True},
                          consistency=cons, disk_modes=modes, mode=mode, parent_id=eb.get("parent_id") if mode == "incremental" else None)

    async def _engine_backup_ready(self, eb):
        """Start engine backup `eb` unless it exists, wait until it is ready:
        (eb, the engine's backup); raises _EngineBackupFailed when it fails."""
        e = self.engine
        b = await e.get_backup(self.vm_id, eb["id"])
        if b is None:
            try:
                b = await e.start_backup(self.vm_id, eb["id"], list(self.res["disks"]),
                                         eb.get("from_checkpoint"), f"ovault job {self.job_id}",
                                         self.correlation_id,
                                         require_consistency=bool(eb.get("require_consistency")))
            except CheckpointRefused as err:
                # The engine refused the checkpoint (missing or invalid bitmap):
                # fall back to a full backup and say why.
                reason = f"{err}; full backup"
                self.log.warning("incremental refused, full backup instead", reason=reason)
                eb = {**eb, "from_checkpoint": None, "parent_id": None}
                await self.record(engine_backup=eb, fallback_reason=reason)
                await self.journal.event("backup.fallback_full", {"reason": reason})
                b = await e.start_backup(self.vm_id, eb["id"], list(self.res["disks"]), None,
                                         f"ovault job {self.job_id}", self.correlation_id,
                                         require_consistency=bool(eb.get("require_consistency")))

        async def ready():
            cur = await e.get_backup(self.vm_id, eb["id"])
            if cur is None:  # not the guest's doing: no consistency fallback for this
                err = _EngineBackupFailed(f"the engine backup {eb['id']} disappeared before it was ready")
                err.vanished = True
                raise err
            if cur.phase == "failed":
                raise _EngineBackupFailed(f"the engine backup {eb['id']} failed")
            return cur if cur.phase == "ready" else None
        b = await self.wait(ready, timeout=self.deps.timeouts.engine_backup,
                            interval=self.deps.timeouts.poll, what="the engine backup to be ready")
        return eb, b

    async def _snapshot(self):
        e = self.engine
        snap = self.res.get("snapshot") or {}
        if not snap.get("description"):
            snap = {"description": f"ovault backup job={self.job_id} vm={self.vm_id} "
                                   f"machine={self.machine_id}"}
            await self.record(snapshot=snap)
        if not snap.get("id"):
            found = [s for s in await e.list_snapshots(self.vm_id) if s.description == snap["description"]]
            if found:
                snap = {**snap, "id": found[0].id}
            else:
                s = await e.create_snapshot(self.vm_id, snap["description"], list(self.res["disks"]),
                                            self.correlation_id)
                snap = {**snap, "id": s.id}
            await self.record(snapshot=snap)

        async def ok():
            s = await e.get_snapshot(self.vm_id, snap["id"])
            if s is None:
                raise StepFailed(f"snapshot {snap['id']} disappeared (its creation failed)")
            return s.status == "ok"
        await self.wait(ok, timeout=self.deps.timeouts.snapshot, interval=self.deps.timeouts.poll,
                         what="the snapshot to be ready")
        images = {d.disk_id: d.image_id for d in await e.snapshot_disks(self.vm_id, snap["id"])}
        missing = [d for d in self.res["disks"] if d not in images]
        if missing:
            raise StepFailed(f"snapshot {snap['id']} lacks disks {missing}")
        parent, reason = await self._parent(None)
        cons = await consistency.from_audit_log(self)
        await self.record(snapshot={**snap, "images": images, "ready": True},
                          consistency=cons,
                          disk_modes={d: "full" for d in self.res["disks"]},
                          mode="incremental" if parent else "full",
                          parent_id=parent["id"] if parent else None,
                          fallback_reason=self.res.get("fallback_reason") or reason)

    # --- metadata ----------------------------------------------------------------------
    async def step_metadata(self):
        e = self.engine
        vm = await e.get_vm(self.vm_id, all_content=True)
        nics = await e.vm_nics(self.vm_id)
        c, topo = vm.config, vm.config.cpu
        config = {
            "name": vm.name, "description": c.description or "", "memory": c.memory,
            "cpu": {"sockets": topo.sockets, "cores": topo.cores, "threads": topo.threads} if topo else None,
            "os_type": c.os_type, "boot_devices": list(c.boot_devices),
            "bios_type": c.bios_type, "type": vm.type,
            "high_availability": bool(c.high_availability), "cluster_id": vm.cluster_id,
            "nics": [{"name": n.name, "interface": n.interface, "mac": n.mac} for n in nics],
            "disks": self.res["disks"], "ovf": vm.ovf,
        }
        self.vm_name = vm.name
        await self.deps.catalog.backup_started(
            backup_id=self.res["backup_id"], vm_id=self.vm_id, vm_name=vm.name, mode=self.res["mode"],
            method=self.res["method"], parent_id=self.res.get("parent_id"),
            checkpoint_id=(self.res.get("engine_backup") or {}).get("to_checkpoint"),
            fallback_reason=self.res.get("fallback_reason"), config=config,
            disks=[{"disk_id": k, **v} for k, v in self.res["disks"].items()])
        await self.record(metadata=True, vm_name=vm.name)
        return "metadata_done"

    # --- transfer ----------------------------------------------------------------------
    async def step_transfer(self):
        sem = asyncio.Semaphore(self.deps.disks_per_vm)
        total = sum(v["size"] for v in self.res["disks"].values())

        async def one(disk_id):
            async with sem:
                await self._copy_disk(disk_id, total)
        await asyncio.gather(*(one(d) for d in self.res["disks"]
                               if not (self.res.get("copies") or {}).get(d, {}).get("done")))
        return "transfer_done"

    async def _find_transfer(self, disk_id: str, ended: str | None = None):
        """A live download of the disk made before its id was recorded (not `ended`)."""
        for t in await self.engine.list_transfers():
            if t.disk_id == disk_id and t.phase in ACTIVE and t.direction == "download" and t.id != ended \
                    and not t.phase.startswith(("finalizing", "cancelled")):  # ending: no use
                return t
        return None

    async def _copy_disk(self, disk_id: str, total: int):
        info = self.res["disks"][disk_id]
        t_rec = (self.res.get("transfers") or {}).get(disk_id)
        if t_rec is None or t_rec.get("finalized"):  # finalized: a resume stopped before recording
            t = await self._find_transfer(disk_id, ended=t_rec and t_rec["id"])
            if t is None:
                t = await self._new_transfer(disk_id)
            t_rec = {"id": t.id, "host_id": t.host_id, "finalized": False}
            await self.record(transfers={disk_id: t_rec})
        incremental = self.res.get("disk_modes", {}).get(disk_id) == "incremental"

        async def progress(done, size):
            self.disk_progress[disk_id] = [done, size]
            d = sum(p[0] for p in self.disk_progress.values())
            await self.journal.progress(d, total, {k: {"done": v[0], "total": v[1],
                                                       "alias": self.res["disks"][k]["alias"]}
                                                   for k, v in self.disk_progress.items()})

        async def copy(t, attempt):
            async with self.deps.host_slot(t.host_id), self.deps.sd_slot(info.get("storage_domain")):
                return await self.deps.mover.backup_disk(
                    host_id=t.host_id, transfer_url=t.transfer_url, vm_id=self.vm_id,
                    backup_id=self.res["backup_id"], disk_id=disk_id,
                    parent_backup_id=self.res.get("parent_id"),
                    incremental=incremental and bool(self.res.get("parent_id")), size=info["size"],
                    copy_id=str(uuid.uuid5(uuid.UUID(self.machine_id), disk_id if not attempt
                                           else f"{disk_id}/{attempt}")), progress=progress)
        # a transfer whose ticket imageio lost goes on on a new one (resume.py)
        result, t_rec = await copy_with_resume(self, disk_id, t_rec, direction="download", copy=copy,
                                               new_transfer=lambda: self._new_transfer(disk_id))
        await self.record(copies={disk_id: {"done": True, "result": result}})
        await self._finalize_transfer(disk_id, t_rec)

    async def _new_transfer(self, disk_id: str):
        if self.res["method"] == "cbt":
            return await self.engine.create_transfer(direction="download", disk_id=disk_id,
                                                     backup_id=self.res["engine_backup"]["id"],
                                                     correlation_id=self.correlation_id)
        return await self.engine.create_transfer(direction="download",
                                                 snapshot_id=self.res["snapshot"]["images"][disk_id],
                                                 correlation_id=self.correlation_id)

    async def _finalize_transfer(self, disk_id: str, t_rec: TransferRec, *, strict=True):
        e = self.engine
        t = await e.get_transfer(t_rec["id"])
        if t is not None and t.phase not in ("finished_success", "finished_failure",
                                             "finished_cleanup"):
            if t.phase not in ("finalizing_success", "finalizing_cleanup", "finalizing_failure"):
                await e.transfer_action(t_rec["id"], "finalize", self.correlation_id)

            async def done():
                cur = await e.get_transfer(t_rec["id"])
                if cur is None:  # engines before 4.4.7 drop finished transfers
                    return "gone"
                p = cur.phase
                return p if p.startswith("finished") or p.startswith("cancelled") else None
            phase = await self.wait(done, timeout=self.deps.timeouts.transfer_end,
                                    interval=self.deps.timeouts.transfer_poll,
                                    what=f"image transfer {t_rec['id']} to finish")
            if strict and phase not in ("finished_success", "gone"):
                raise StepFailed(f"image transfer {t_rec['id']} ended {phase}")
        await self.record(transfers={disk_id: {**t_rec, "finalized": True}})

    # --- finalize -------------------------------------------------------------------------
    async def step_finalize(self):
        e = self.engine
        for disk_id, t_rec in (self.res.get("transfers") or {}).items():
            if not t_rec.get("finalized"):
                await self._finalize_transfer(disk_id, t_rec)
        await self._release_engine_point_in_time(strict=True)
        if not self.res.get("published"):
            # The manifest carries the VM configuration too: a target alone is
            # enough to rebuild a catalog and restore (`ovault import`).
            row = await self.deps.catalog.get_backup(self.res["backup_id"])
            meta = {"job_id": self.job_id, "method": self.res["method"], "mode": self.res["mode"],
                    "consistency": self.res.get("consistency") or "crash",
                    "checkpoint_id": (self.res.get("engine_backup") or {}).get("to_checkpoint"),
                    "vm_name": self.res.get("vm_name"), "config": row.get("config") or {}}
            disks = [self.res["copies"][d]["result"]["disk"] for d in self.res["disks"]]
            await self.deps.store.publish(self.vm_id, self.res["backup_id"], self.res.get("parent_id"),
                                          disks, meta)
            await self.record(published=True)
        copies = self.res.get("copies") or {}
        stats = {"bytes_read": sum(c["result"].get("bytes_read", 0) for c in copies.values()),
                 "new_bytes": sum(c["result"].get("new_bytes", 0) for c in copies.values()),
                 "size": sum(v["size"] for v in self.res["disks"].values()),
                 "disks": {k: c["result"] for k, c in copies.items()}}
        await self.deps.catalog.backup_succeeded(
            self.res["backup_id"], checkpoint_id=(self.res.get("engine_backup") or {}).get("to_checkpoint"),
            stats=stats, consistency=self.res.get("consistency") or "crash")
        await self.journal.event("backup.created", {"backup_id": self.res["backup_id"],
                                                    "vm_id": self.vm_id, "mode": self.res["mode"],
                                                    "method": self.res["method"],
                                                    "consistency": self.res.get("consistency") or "crash",
                                                    **{k: v for k, v in stats.items() if k != "disks"}})
        reread = {k: c["result"].get("reread_offsets") for k, c in copies.items()
                  if c["result"].get("reread_offsets")}
        if reread:
            # Chunks the parent referenced were no longer on the target (found
            # damaged and set aside, or collected): those ranges were read again
            # from the disk, which rewrote them if the content is unchanged.
            self.log.warning("unchanged ranges re-read: the target no longer had their chunks", disks=reread)
            await self.journal.event("backup.chunks_reread", {"backup_id": self.res["backup_id"],
                                                              "vm_id": self.vm_id, "offsets": reread})
        if self.res["method"] == "cbt":
            await self._tidy_checkpoints()
        try:
            await e.add_event(f"ovault: {self.res['mode']} backup {self.res['backup_id']} of VM "
                              f"{self.res.get('vm_name') or self.vm_id} succeeded", vm_id=self.vm_id)
        except Exception:
            pass  # the engine's event log is a courtesy
        return "finalize_done"

    async def _tidy_checkpoints(self):
        """Remove the engine checkpoints ovault no longer needs (after a successful
        CBT backup). Each is a persistent dirty bitmap in every qcow2 layer of the
        VM's disks; ovault needs only the one its next incremental starts from
        (per target). The engine removes only the oldest, so walk from the root
        and stop at the first checkpoint that is still needed or not ovault's
        (another tool's chain is left alone). Best effort: the backup has
        succeeded; a failure here is logged and recorded as an event."""
        keep_cp = (self.res.get("engine_backup") or {}).get("to_checkpoint")
        if not keep_cp:
            return
        removed: list[str] = []
        try:
            known = await self.deps.catalog.checkpoints(self.vm_id)
            ours, keep = set(known["ours"]) | {keep_cp}, set(known["keep"]) | {keep_cp}
            for cp in await self.engine.list_checkpoints(self.vm_id):
                if cp.id in keep or cp.id not in ours:
                    break
                await self.engine.remove_checkpoint(self.vm_id, cp.id, self.correlation_id)
                removed.append(cp.id)
        except Exception as err:
            self.log.warning("engine checkpoints not tidied", error=str(err), removed=removed)
            await self.journal.event("backup.checkpoints_kept", {"vm_id": self.vm_id, "removed": removed,
                                                                "error": str(err)})
        if removed:
            self.log.info("engine checkpoints removed", removed=removed, kept=keep_cp)
            await self.record(checkpoints_removed=removed)

    async def _release_engine_point_in_time(self, strict: bool):
        """Finalize the engine backup (CBT) or remove the snapshot."""
        e = self.engine
        eb = self.res.get("engine_backup")
        if eb and not eb.get("finalized"):
            b = await e.get_backup(self.vm_id, eb["id"])
            if b is not None and b.phase not in ("succeeded", "failed"):
                if b.phase != "finalizing":
                    await e.finalize_backup(self.vm_id, eb["id"], self.correlation_id)

                async def done():
                    cur = await e.get_backup(self.vm_id, eb["id"])
                    return cur is None or cur.phase in ("succeeded", "failed")
                await self.wait(done, timeout=self.deps.timeouts.engine_backup,
                                 interval=self.deps.timeouts.poll, what="the engine backup to finish")
            await self.record(engine_backup={**eb, "finalized": True})
        snap = self.res.get("snapshot")
        if snap and not snap.get("removed"):
            if not snap.get("id"):  # created but not recorded before a crash?
                found = [s for s in await e.list_snapshots(self.vm_id)
                         if s.description == snap.get("description")]
                snap = {**snap, "id": found[0].id} if found else {**snap, "removed": True}
            if not snap.get("removed"):
                await self._remove_snapshot(snap["id"])
            await self.record(snapshot={**snap, "removed": True})

    async def _remove_snapshot(self, snap_id: str, attempts: int = 6):
        """Leftover snapshots are the top complaint about oVirt backups: insist.

        A snapshot that is `locked` is either still being created (a cleanup
        right after a cancel) or being removed; either way the thing to do is
        to wait until it is `ok` (then ask for removal) or gone (done). A
        removal the engine refuses or fails leaves it `ok`: ask again, with
        backoff, `attempts` times."""
        e = self.engine
        last = None
        for i in range(attempts):
            async def settled():
                cur = await e.get_snapshot(self.vm_id, snap_id)
                if cur is None:
                    return "gone"
                return "ok" if cur.status == "ok" else None
            if await self.wait(settled, timeout=self.deps.timeouts.snapshot, interval=self.deps.timeouts.poll,
                               what=f"snapshot {snap_id} to settle") == "gone":
                return
            if i:
                await asyncio.sleep(min(30, 2 ** i))  # the engine refused or failed the last try
            try:
                await e.remove_snapshot(self.vm_id, snap_id, self.correlation_id)
            except Exception as err:
                last = err
                continue
            if await self.wait(settled, timeout=self.deps.timeouts.snapshot, interval=self.deps.timeouts.poll,
                               what="snapshot removal") == "gone":
                return
            last = StepFailed("the engine failed to remove it")  # ok again: the merge failed
        raise StepFailed(f"snapshot {snap_id} of VM {self.vm_id} could not be removed: {last}")

    # --- cleanup ---------------------------------------------------------------------------
    async def step_cleanup(self):
        problems = []
        for disk_id, t_rec in list((self.res.get("transfers") or {}).items()):
            if not t_rec.get("finalized"):
                try:  # downloads are finalized, never canceled (the disk stays intact)
                    await self._finalize_transfer(disk_id, t_rec, strict=False)
                except Exception as err:
                    problems.append(f"transfer {t_rec['id']}: {err}")
        for disk_id in self.res.get("disks", {}):
            if disk_id not in (self.res.get("transfers") or {}):
                t = await self._find_transfer(disk_id)
                if t is not None and self.res.get("method"):
                    try:
                        await self._finalize_transfer(disk_id, {"id": t.id}, strict=False)
                    except Exception as err:
                        problems.append(f"transfer {t.id}: {err}")
        try:
            await self._release_engine_point_in_time(strict=False)
        except Exception as err:
            problems.append(str(err))
        if self.res.get("backup_id") and not self.res.get("published"):
            try:
                await self.deps.store.discard(self.vm_id, self.res["backup_id"])
            except Exception as err:
                problems.append(f"store: {err}")
        if self.res.get("metadata"):
            await self.deps.catalog.backup_failed(self.res["backup_id"], self.error or "canceled")
        if problems:
            raise StepFailed("; ".join(problems))

    STEPS = {QUEUED: VmMachine.step_queued, "snapshot": step_snapshot, "metadata": step_metadata,
             "transfer": step_transfer, "finalize": step_finalize, CLEANUP: step_cleanup}
