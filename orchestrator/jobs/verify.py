"""The `verify` job: `ovault verify` run by the orchestrator (a job kind without
VM machines, run by a handler the job runner calls).

``request.backup_ids`` (optional): the backups to verify; default every
backup published on the targets: the service's own and every other target a
backup in the catalog is on (a policy's own target), one after the other. Each result is recorded in the catalog by
`record_result` (which `ovault verify` uses too): the ``damaged`` flag,
``backup.damaged`` once, a clean result clearing the flag.
Damaged chunks are set aside on the target by the store itself, so the next
backup of the VM rewrites them. Verify is safe alongside backups, restores and
gc, so the job does not wait for them. `result`: ``backups`` checked,
``damaged`` (backup ids), ``healed`` (flag cleared), ``unknown`` (on the
target, not in the catalog), ``chunks_checked``, ``bytes_checked`` and
``progress`` while it runs. The job succeeds when it could look at every
backup, whatever it found; damage is announced by its events. A target that
cannot be read fails the job, naming it, after the others were verified
(``unreadable_targets``).

It runs again from the start after a crash (the runner re-claims the job).
Queued by `POST /api/v1/verify` and, weekly by default, by the maintenance
scheduler (``policies.verify_schedule``).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import structlog

from .. import catalog as cat

log = structlog.get_logger("ovault.jobs.verify")

__all__ = ["VerifyJobs", "KIND", "record_result"]

KIND = "verify"
PROGRESS_EVERY = 2.0
EVENT_RANGES = 100  # ranges carried by a backup.damaged event; the catalog row keeps all


def damage_doc(r) -> dict | None:
    """The catalog's ``damage`` column for a verify result (None: intact)."""
    if r.ok:
        return None
    return {"damaged_chunks": [d.to_dict() for d in r.damaged], "bad_indexes": dict(r.bad_indexes),
            "chunks_checked": r.chunks_checked}


def event_payload(b, r) -> dict:
    ranges = [{"digest": d.digest, "disk_id": disk, "offset": off, "length": n}
              for d in r.damaged for disk, off, n in d.ranges()]
    return {"backup_id": str(b.id), "vm_id": b.vm_id, "vm_name": b.vm_name,
            "damaged_chunks": len(r.damaged), "bad_indexes": dict(r.bad_indexes),
            "ranges": ranges[:EVENT_RANGES], "ranges_total": len(ranges)}


async def record_result(c, info, r) -> str:
    """Record one verify result in catalog ``c`` (see the module docstring)."""
    try:
        b, became = await c.backups.record_verify(uuid.UUID(info.backup_id), damage_doc(r))
    except cat.NotFound:
        return "unknown backup"
    if became:
        await c.events.append("backup.damaged", event_payload(b, r), job_id=b.job_id)
        return "became damaged"
    return "recorded"


class VerifyJobs:
    """``stores``: ``async () -> [(target id, store)]``, every target to look at (the
    service's TargetStores.all_in_use); without it, ``store`` alone."""

    def __init__(self, catalog: cat.Catalog, store: Any, stores: Any = None):
        self.catalog, self.store, self.stores = catalog, store, stores

    def register(self, runner: Any) -> None:
        runner.register(KIND, self.run)

    async def _targets(self) -> list[tuple[Any, Any]]:
        if self.stores is not None:
            return await self.stores()
        return [(None, self.store)] if self.store is not None else []

    async def run(self, job: cat.Job) -> None:
        targets = await self._targets()
        if not targets:
            await self.catalog.policies.end_job(job.id, "failed", error="no target store here")
            return
        wanted = {b.lower() for b in (job.request or {}).get("backup_ids") or []}
        work, unreadable = [], []
        for tid, store in targets:
            try:
                listed = await store.list_backups()
            except Exception as e:   # one unreadable target must not hide the others' damage
                log.warning("verify: target unreadable", target_id=str(tid), error=str(e))
                unreadable.append({"target_id": str(tid) if tid else None, "error": str(e)})
                continue
            work += [(store, i) for i in listed if not wanted or i.backup_id in wanted]
        infos = [i for _, i in work]
        missing = sorted(wanted - {i.backup_id for i in infos})
        result: dict[str, Any] = {"backups": 0, "damaged": [], "healed": [], "unknown": [],
                                  "not_on_target": missing, "chunks_checked": 0, "bytes_checked": 0}
        if len(targets) > 1:
            result["targets"] = len(targets)
        if unreadable:
            result["unreadable_targets"] = unreadable
        t0, last = time.monotonic(), float("-inf")
        for n, (store, info) in enumerate(work):
            if time.monotonic() - last >= PROGRESS_EVERY:
                last = time.monotonic()
                await self.catalog.policies.job_progress(job.id, n, len(infos))
            row = await self._row(info.backup_id)
            was = bool(row and row.damaged)
            # each index is also checked against the digest the catalog recorded at publication
            digests = {d.disk_id: d.index_digest for d in (row.disks if row else ()) if d.index_digest}
            r = await store.verify(info.vm_id, info.backup_id, catalog_digests=digests)
            outcome = await record_result(self.catalog, info, r)
            result["backups"] += 1
            result["chunks_checked"] += r.chunks_checked
            result["bytes_checked"] += r.bytes_checked
            if not r.ok:
                result["damaged"].append(info.backup_id)
            elif was:
                result["healed"].append(info.backup_id)
            if outcome == "unknown backup":
                result["unknown"].append(info.backup_id)
            await asyncio.sleep(0)
        result["seconds"] = round(time.monotonic() - t0, 3)
        result["progress"] = {"done": len(infos), "total": len(infos)}
        if unreadable:
            names = ", ".join(f"{u['target_id'] or 'the service target'}: {u['error']}" for u in unreadable)
            await self.catalog.policies.end_job(job.id, "failed", result=result,
                                                error=f"could not read target(s) {names}")
            return
        await self.catalog.policies.end_job(job.id, "succeeded", result=result)
        log.info("verify finished", job_id=str(job.id), backups=result["backups"],
                 damaged=len(result["damaged"]), healed=len(result["healed"]))

    async def _row(self, backup_id: str) -> cat.Backup | None:
        try:
            return await self.catalog.backups.get(uuid.UUID(backup_id))
        except cat.NotFound:
            return None
