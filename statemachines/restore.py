"""RestoreMachine: one VM of a restore job (architecture §3).

    queued → prepare → transfer → finalize → succeeded
    any working state → cleanup → failed | canceled

Kinds:
- `new`: a new VM from the backed-up OVF (new name, chosen cluster), new disks
  with ids chosen here (recorded before the engine call, so a crash never
  creates a second disk), upload, attach, optionally power on.
- `in_place`: the VM must be powered off; its disks are overwritten from the
  backup (uploads into the existing disks).
- `disks`: chosen disks restored as new disks, attached to `target_vm_id`
  or left floating.

Cleanup removes what `new` and `disks` created. An in-place restore cannot be
undone; a failure says so plainly (the disks hold partial data).
"""
from __future__ import annotations

import asyncio
import uuid
from typing import cast

from .backup import ACTIVE
from .base import StepFailed, VmMachine
from .engine import Attachment, CpuTopology, NewDisk, NewVm, VmConfig
from .lifecycle import CLEANUP, QUEUED
from .ports import Deps
from .resources import RestoreResources
from .resume import copy_with_resume, end_transfer


def vm_config(cfg: dict, *, in_place: bool) -> VmConfig:
    """The settings a restore applies, from a backup's `config`. A new VM
    (without OVF) gets memory, CPU, OS and BIOS; an in-place restore gets its
    description and high availability back too (its name stays)."""
    cpu = cfg.get("cpu")
    return VmConfig(
        memory=cfg.get("memory"), cpu=CpuTopology(**cpu) if cpu else None,
        os_type=cfg.get("os_type"), boot_devices=tuple(cfg.get("boot_devices") or ()),
        bios_type=cfg.get("bios_type"),
        description=cfg.get("description") if in_place else None,
        high_availability=(bool(cfg["high_availability"])
                           if in_place and cfg.get("high_availability") is not None else None))


class RestoreMachine(VmMachine):
    kind = "restore"
    WORK_STATES = ("prepare", "transfer", "finalize")

    def __init__(self, journal, deps: Deps, *, vm_id, job_id, machine_id, request: dict):
        super().__init__(journal, deps, vm_id=vm_id, job_id=job_id, machine_id=machine_id)
        self.req = request

    @property
    def res(self) -> RestoreResources:
        return cast(RestoreResources, self.journal.resources)

    # --- prepare ----------------------------------------------------------------------
    async def step_prepare(self):
        e = self.engine
        backup = await self.deps.catalog.get_backup(self.req["backup_id"])
        if backup["status"] != "succeeded":
            raise StepFailed(f"backup {backup['id']} is {backup['status']}, not restorable")
        cfg = backup["config"]
        kind = self.req.get("kind", "new")
        src_disks = cfg["disks"]
        chosen = self.req.get("disk_ids") or list(src_disks)
        unknown = [d for d in chosen if d not in src_disks]
        if unknown:
            raise StepFailed(f"disks {unknown} are not in backup {backup['id']}")
        if "plan" not in self.res:
            plan = {}
            for d in chosen:
                src = src_disks[d]
                plan[d] = {"target_disk": d if kind == "in_place" else str(uuid.uuid4()),
                           "size": src["size"], "format": src["format"], "alias": src["alias"],
                           "bootable": src.get("bootable", False),
                           "interface": src.get("interface", "virtio_scsi"),
                           "backup": src.get("backup", "none"), "sparse": src.get("sparse", True),
                           "storage_domain": src.get("storage_domain"),
                           # the index as published: a restore refuses one replaced on the target since
                           "index_sha256": (backup.get("index_digests") or {}).get(d)}
            await self.record(plan=plan, kind=kind, source_vm=backup["vm_id"],
                              backup_id=str(backup["id"]))
        if kind == "new":
            await self._new_vm(cfg)
        elif kind == "in_place":
            vm = await e.get_vm(self.vm_id)
            if vm.status != "down":
                raise StepFailed(f"VM {vm.name} is {vm.status}: power it off before an "
                                 "in-place restore")
            await self.record(target_vm=self.vm_id)
        else:
            await self.record(target_vm=self.req.get("target_vm_id"))
        if kind != "in_place":
            await self._create_disks()
        return "prepare_done"

    async def _new_vm(self, cfg: dict):
        e = self.engine
        name = self.req.get("name") or f"{cfg['name']}-restored"
        if not self.res.get("target_vm"):
            found = await e.list_vms(search=f"name={name}")
            if found and self.res.get("vm_create_sent"):
                await self.record(target_vm=found[0].id)
            elif found:
                raise StepFailed(f"a VM named {name!r} already exists; choose another name")
            else:
                await self.record(vm_create_sent=True, vm_name=name)
                cluster = self.req.get("cluster_id") or cfg.get("cluster_id")
                created = await e.add_vm(NewVm(name=name, cluster_id=cluster, ovf=cfg.get("ovf"),
                                               config=vm_config(cfg, in_place=False)),
                                         self.correlation_id)
                await self.record(target_vm=created.id)
        await self.journal.event("restore.vm_created", {"vm_id": self.res["target_vm"]})

    async def _any_sd(self):
        for sd in await self.engine.list_storage_domains():
            if sd.type == "data":
                return sd.id
        raise StepFailed("no data storage domain to restore into")

    async def _create_disks(self):
        e = self.engine
        sd = self.req.get("storage_domain_id")
        for src_id, p in self.res["plan"].items():
            if p.get("created"):
                continue
            if await e.get_disk(p["target_disk"]) is None:
                await e.add_disk(NewDisk(
                    id=p["target_disk"], alias=p["alias"], format=p["format"], sparse=p["sparse"],
                    description=f"restored by ovault from backup {self.res['backup_id']}",
                    provisioned_size=p["size"],
                    backup=p["backup"] if p["format"] == "cow" else None,
                    storage_domain_id=sd or p.get("storage_domain") or await self._any_sd()),
                    self.correlation_id)

            async def ok(did=p["target_disk"]):
                d = await e.get_disk(did)
                if d is None:
                    raise StepFailed(f"disk {did} vanished (its creation failed)")
                if d.status == "illegal":
                    raise StepFailed(f"disk {did} became illegal")
                return d.status == "ok"
            await self.wait(ok, timeout=self.deps.timeouts.disk, interval=self.deps.timeouts.poll,
                            what="the new disk")
            await self.record(plan={src_id: {**p, "created": True}})

    # --- transfer -------------------------------------------------------------------------
    async def step_transfer(self):
        sem = asyncio.Semaphore(self.deps.disks_per_vm)
        total = sum(p["size"] for p in self.res["plan"].values())

        async def one(src_id):
            async with sem:
                await self._copy_disk(src_id, total)
        await asyncio.gather(*(one(s) for s, p in self.res["plan"].items() if not p.get("copied")))
        return "transfer_done"

    async def _copy_disk(self, src_id: str, total: int):
        e = self.engine
        p = self.res["plan"][src_id]
        t_rec = (self.res.get("transfers") or {}).get(src_id)
        if t_rec is None or t_rec.get("finalized"):
            t = None
            for cur in await e.list_transfers():
                if cur.disk_id == p["target_disk"] and cur.phase in ACTIVE:
                    t = cur
            if t is None:
                t = await e.create_transfer(direction="upload", disk_id=p["target_disk"],
                                            correlation_id=self.correlation_id)
            t_rec = {"id": t.id}
            await self.record(transfers={src_id: t_rec})

        async def progress(done, size):
            self.disk_progress[src_id] = [done, size]
            await self.journal.progress(sum(v[0] for v in self.disk_progress.values()), total,
                                        {k: {"done": v[0], "total": v[1],
                                             "alias": self.res["plan"][k]["alias"]}
                                         for k, v in self.disk_progress.items()})
        sd = self.req.get("storage_domain_id") or p.get("storage_domain")

        async def copy(t, attempt):
            # a resumed upload writes the whole disk again (statemachines/resume.py)
            name = "restore-" + src_id + (f"/{attempt}" if attempt else "")
            async with self.deps.host_slot(t.host_id), self.deps.sd_slot(sd):
                return await self.deps.mover.restore_disk(
                    host_id=t.host_id, transfer_url=t.transfer_url, vm_id=self.res["source_vm"],
                    backup_id=self.res["backup_id"], disk_id=src_id, size=p["size"],
                    index_sha256=p.get("index_sha256"),
                    copy_id=str(uuid.uuid5(uuid.UUID(self.machine_id), name)), progress=progress)

        async def new_transfer():
            d = await e.get_disk(p["target_disk"])
            if d is None:
                raise StepFailed(f"disk {p['target_disk']} is gone: the engine removed it when its "
                                 "interrupted upload ended")
            return await e.create_transfer(direction="upload", disk_id=p["target_disk"],
                                           correlation_id=self.correlation_id)
        result, t_rec = await copy_with_resume(self, src_id, t_rec, direction="upload", copy=copy,
                                               new_transfer=new_transfer,
                                               info={"target_disk": p["target_disk"]})
        await e.transfer_action(t_rec["id"], "finalize", self.correlation_id)

        async def done():
            cur = await e.get_transfer(t_rec["id"])
            if cur is None:
                d = await e.get_disk(p["target_disk"])
                return "finished_success" if d is not None and d.status == "ok" \
                    else "finished_failure"
            return cur.phase if cur.phase.startswith("finished") else None
        phase = await self.wait(done, timeout=self.deps.timeouts.transfer_end,
                                interval=self.deps.timeouts.transfer_poll, what="the upload to finish")
        if phase != "finished_success":
            raise StepFailed(f"upload of disk {p['target_disk']} ended {phase}")
        await self.record(transfers={src_id: {**t_rec, "finalized": True}},
                          plan={src_id: {**p, "copied": True, "result": result}})

    # --- finalize --------------------------------------------------------------------------
    async def step_finalize(self):
        e = self.engine
        target = self.res.get("target_vm")
        kind = self.res["kind"]
        if target and kind != "in_place":
            atts = {x.attachment.disk_id for x in await e.vm_disks(target)}
            for src_id, p in self.res["plan"].items():
                if p["target_disk"] in atts:
                    continue
                await e.attach_disk(target, Attachment(
                    disk_id=p["target_disk"], bootable=p["bootable"] if kind == "new" else False,
                    interface=p["interface"], active=True), self.correlation_id)
        if kind == "in_place" and not self.res.get("config_restored"):
            # the VM's settings as they were at backup time (the name stays)
            cfg = (await self.deps.catalog.get_backup(self.res["backup_id"]))["config"]
            await e.update_vm(self.vm_id, vm_config(cfg, in_place=True), self.correlation_id)
            await self.record(config_restored=True)
        if kind == "new" and self.req.get("owner_user_id") and not self.res.get("owner_granted"):
            # the SSO user who restored it manages it, as if they had created it
            await e.grant_vm_role(target, self.req["owner_user_id"], "UserVmManager", self.correlation_id)
            await self.record(owner_granted=True)
        if kind == "disks" and self.req.get("owner_user_id") and not self.res.get("owner_granted"):
            # restored disks are the requesting SSO user's, as if they had made them
            for p in self.res["plan"].values():
                await e.grant_disk_role(p["target_disk"], self.req["owner_user_id"], "DiskOperator",
                                        self.correlation_id)
            await self.record(owner_granted=True)
        if kind in ("new", "in_place") and self.req.get("power_on") and not self.res.get("powered_on"):
            await e.start_vm(target or self.vm_id, self.correlation_id)
            await self.record(powered_on=True)
        await self.journal.event("restore.succeeded", {"vm_id": target, "kind": kind,
                                                       "backup_id": self.res["backup_id"],
                                                       "disks": {s: p["target_disk"] for s, p in
                                                                 self.res["plan"].items()}})
        return "finalize_done"

    # --- cleanup -----------------------------------------------------------------------------
    async def step_cleanup(self):
        e = self.engine
        problems = []
        kind = self.res.get("kind")
        for src_id, t_rec in (self.res.get("transfers") or {}).items():
            if t_rec.get("finalized"):
                continue
            try:
                # the engine removes the disk of a canceled upload, even one that existed
                # before it: an in-place restore's transfers are finalized (resume.py)
                await end_transfer(self, t_rec["id"], "finalize" if kind == "in_place" else "cancel")
            except Exception as err:
                problems.append(f"transfer {t_rec['id']}: {err}")
        if kind == "new" and self.res.get("target_vm"):
            try:  # removing the VM removes the disks attached to it
                await e.remove_vm(self.res["target_vm"], self.correlation_id)
            except Exception as err:
                problems.append(f"VM {self.res['target_vm']}: {err}")
        if kind in ("new", "disks"):
            for p in (self.res.get("plan") or {}).values():
                try:
                    await e.remove_disk(p["target_disk"], self.correlation_id)
                except Exception as err:
                    problems.append(f"disk {p['target_disk']}: {err}")
        elif kind == "in_place":
            problems.append("in-place restore did not complete: the VM's disks hold partial "
                            "data; run the restore again")
        if problems:
            raise StepFailed("; ".join(problems))

    STEPS = {QUEUED: VmMachine.step_queued, "prepare": step_prepare, "transfer": step_transfer,
             "finalize": step_finalize, CLEANUP: step_cleanup}
