"""The `prune` and `gc` jobs: job kinds without VM machines, run by handlers the
job runner calls (`JobRunner.register`). Both are safe to run again after a crash:
the runner re-claims a job whose replica died and the handler starts over.

- prune: `request.backup_ids` (explicit deletes, already marked `deleting`) and/or
  `request.vms` [{vm_id, policy_id}] (apply each policy's retention). Backups of
  those VMs left `deleting` by an earlier attempt are finished first.
- gc: waits until no backup job is queued or running (checked again every
  `poll` seconds while the lease is renewed), then sweeps each target in use
  (the service's own and any policy's own target, policies/targets.py), with
  `result.progress` {done, total} (backup and chunk directories) while it runs;
  `result.bytes_freed` says what it freed.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import structlog

from .. import catalog as cat
from .service import PolicyService

log = structlog.get_logger("ovault.jobs.policies")

__all__ = ["MaintenanceJobs"]

PROGRESS_EVERY = 2.0


class MaintenanceJobs:
    def __init__(self, catalog: cat.Catalog, service: PolicyService, *, poll: float = 10.0,
                 gc_grace_seconds: float | None = None):
        self.catalog, self.service, self.poll = catalog, service, poll
        self.gc_grace_seconds = gc_grace_seconds

    def register(self, runner: Any) -> None:
        runner.register("prune", self.prune)
        runner.register("gc", self.gc)

    async def prune(self, job: cat.Job) -> None:
        req = job.request or {}
        deleted: list[str] = []
        for bid in req.get("backup_ids", []):
            b = await self.catalog.backups.get(uuid.UUID(bid))
            if b.status == "deleting" and await self.service.finish_one(
                    b.id, b.vm_id, event="backup.deleted", extra={"by": job.created_by,
                                                                   "job_id": str(job.id)},
                    target_id=getattr(b, "target_id", None)):
                deleted.append(bid)
        vms = req.get("vms", [])
        if vms:
            await self.service.finish_deletions(vm_ids=[v["vm_id"] for v in vms])
        per_vm = []
        for v in vms:
            try:
                policy = await self.catalog.policies.get(uuid.UUID(v["policy_id"]))
            except cat.NotFound:
                per_vm.append({"vm_id": v["vm_id"], "skipped": "its policy was deleted"})
                continue
            res = await self.service.prune_vm(v["vm_id"], policy,
                                              requested_by=job.created_by or "policy")
            deleted += res.get("deleted", [])
            per_vm.append({"vm_id": v["vm_id"], "kept": len(res["kept"]),
                           "pruned": res.get("deleted", [])})
        result = {"deleted": deleted, "vms": per_vm}
        await self.catalog.policies.end_job(job.id, "succeeded", result=result)
        log.info("prune finished", job_id=str(job.id), deleted=len(deleted))

    async def gc(self, job: cat.Job) -> None:
        """Sweep the service's own target and every other target a backup is on
        (a policy's own target), one after the other."""
        if self.service.stores is not None:
            stores = await self.service.stores.all_in_use()
        else:
            stores = [(None, self.service.store)] if self.service.store is not None else []
        if not stores:
            await self.catalog.policies.end_job(job.id, "failed", error="no target store here")
            return
        while await self.catalog.policies.backups_in_flight():
            await asyncio.sleep(self.poll)
        t0 = time.monotonic()
        totals = {"bytes_freed": 0, "chunks_removed": 0, "chunks_seen": 0, "kept_young": 0}
        per_target = []
        for tid, store in stores:
            r = await self._gc_one(job, store)
            for k in totals:
                totals[k] += r[k]
            per_target.append({"target_id": str(tid) if tid else None, **r})
        result = {**totals, "seconds": round(time.monotonic() - t0, 3)}
        if len(per_target) > 1:
            result["targets"] = per_target
        await self.catalog.policies.end_job(job.id, "succeeded", result=result)
        await self.catalog.events.append("gc.finished", {"job_id": str(job.id), **result},
                                         job_id=job.id)
        log.info("gc finished", job_id=str(job.id), **totals)

    async def _gc_one(self, job: cat.Job, store: Any) -> dict:
        kw = {} if self.gc_grace_seconds is None else {"grace_seconds": self.gc_grace_seconds}
        writes: list[asyncio.Task] = []
        last = [float("-inf")]

        def progress(done: int, total: int) -> None:
            # job.result.progress, at most every PROGRESS_EVERY seconds (and at the end)
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or done == total:
                last[0] = now
                writes.append(asyncio.get_running_loop().create_task(
                    self.catalog.policies.job_progress(job.id, done, total)))

        try:
            report = await store.gc(progress=progress, **kw)
        finally:
            await asyncio.gather(*writes, return_exceptions=True)
        return {"bytes_freed": report.bytes_removed, "chunks_removed": report.chunks_removed,
                "chunks_seen": report.chunks_seen, "kept_young": report.chunks_kept_young}
