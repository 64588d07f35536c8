"""One operation per VM at a time: per-VM locks taken with the job that needs them.

A backup, an in-place restore and a disks restore into a VM (later: a prune of a
VM's backups) must never run alongside another of those on the same VM. The
lock is a row of `vm_locks` (primary key `vm_id`) written in the transaction
that creates the job, so a job exists only if it holds its VMs:

    job = await create_job_locked(catalog, "backup", machines, lock_vms=[vm_id], ...)
        # raises VmBusy (a Conflict) naming the job that holds the VM

    job, busy = await try_create_job(catalog, ...)   # one VM, or all or nothing:
    if busy: record(f"skipped: {busy}")             # "VM … is busy with backup job …"

    job, skipped = await create_job_skipping_busy(catalog, "backup", machines,
                                                  then=tag_and_announce, ...)
        # a policy run: the free VMs in one job, {vm_id: VmBusy} for the others

Two requests for one VM at the same moment: the second INSERT waits on the
primary key until the first transaction commits, then finds the row and is
refused (or, if the first rolled back, takes it). Nothing is started.

Release: a trigger (migration 0004) deletes a job's locks when the job reaches
a terminal state, on every path that ends a job. A lock whose job is already
terminal (it cannot happen through the trigger, but an operator may have
edited rows by hand) is treated as free and removed when someone asks for it.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

from .db import Repository
from .errors import Conflict, wrap_errors
from .models import TERMINAL_SQL

__all__ = ["VmBusy", "VmLock", "VmLockRepository", "create_job_locked", "create_job_skipping_busy",
           "try_create_job"]



class VmBusy(Conflict):
    """A VM is held by another job. `job_id`, `kind`, `vm_id` name the holder."""

    msg = "VM {self.who} is busy with {self.kind} job {self.job_id}"
    code, title = "vm_busy", "VM busy"

    def __init__(self, vm_id: str, job_id: uuid.UUID, kind: str, vm_name: str | None = None):
        who = f"{vm_name} ({vm_id})" if vm_name else vm_id
        super().__init__("", vm_id=vm_id, job_id=job_id, kind=kind, vm_name=vm_name, who=who)


@dataclass(frozen=True)
class VmLock:
    vm_id: str
    job_id: uuid.UUID
    kind: str
    acquired_at: Any


class VmLockRepository(Repository):

    @wrap_errors
    async def acquire(self, vm_ids: Iterable[str], job_id: uuid.UUID, kind: str) -> None:
        """Take every VM of `vm_ids` for `job_id`, or none: raises `VmBusy` for the
        first VM another live job holds. Call it inside the transaction that
        creates the job (the refusal then rolls the job back too)."""
        ids = sorted({str(v).lower() for v in vm_ids})
        if not ids:
            return
        async with self._transaction() as c:
            # A lock left by a finished job (only possible by hand) is free.
            await c.execute(
                f"DELETE FROM vm_locks l USING jobs j WHERE l.job_id = j.id "
                f"AND l.vm_id = ANY($1::text[]) AND j.state IN {TERMINAL_SQL}", ids)
            taken = await c.fetch(
                "INSERT INTO vm_locks (vm_id, job_id, kind) "
                "SELECT v, $2, $3 FROM unnest($1::text[]) AS v ORDER BY v "
                "ON CONFLICT (vm_id) DO NOTHING RETURNING vm_id", ids, job_id, kind)
            got = {r["vm_id"] for r in taken}
            for vm in ids:
                if vm in got:
                    continue
                row = await c.fetchrow(
                    "SELECT l.job_id, j.kind AS job_kind, l.kind, "
                    "  (SELECT m.vm_name FROM machines m WHERE m.job_id = l.job_id "
                    "     AND lower(m.vm_id) = l.vm_id LIMIT 1) AS vm_name "
                    "FROM vm_locks l JOIN jobs j ON j.id = l.job_id WHERE l.vm_id = $1", vm)
                if row is not None and row["job_id"] != job_id:
                    raise VmBusy(vm, row["job_id"], row["job_kind"], row["vm_name"])

    @wrap_errors
    async def holder(self, vm_id: str) -> VmLock | None:
        """Who holds `vm_id` now (None: free)."""
        row = await self._db.fetchrow(
            f"SELECT l.* FROM vm_locks l JOIN jobs j ON j.id = l.job_id "
            f"WHERE l.vm_id = $1 AND j.state NOT IN {TERMINAL_SQL}", str(vm_id).lower())
        return None if row is None else VmLock(row["vm_id"], row["job_id"], row["kind"],
                                               row["acquired_at"])

    @wrap_errors
    async def held_by(self, job_id: uuid.UUID) -> list[VmLock]:
        rows = await self._db.fetch("SELECT * FROM vm_locks WHERE job_id = $1 ORDER BY vm_id", job_id)
        return [VmLock(r["vm_id"], r["job_id"], r["kind"], r["acquired_at"]) for r in rows]

    @wrap_errors
    async def release(self, job_id: uuid.UUID) -> int:
        """Drop a job's locks at once (the trigger does it when the job ends)."""
        status = await self._db.execute("DELETE FROM vm_locks WHERE job_id = $1", job_id)
        return int(status.split()[-1])


async def create_job_locked(catalog, kind: str, machines: Sequence, *, lock_vms: Iterable[str],
                            lock_kind: str | None = None, request: Mapping[str, Any] | None = None,
                            created_by: str | None = None, queued_event: bool = True,
                            then: Callable[[Any, Any], Awaitable[None]] | None = None):
    """Create a job holding `lock_vms`, with its `job.queued` event, in one
    transaction; raises `VmBusy` (nothing is created) when a VM is held.
    `lock_kind` is what the lock says the VM is busy with (default: the job kind,
    e.g. "backup", or "restore"). `then(tx, job)` runs in the same transaction
    (a policy run tags its job and writes its own event there)."""
    from .catalog import Catalog  # the facade imports the repositories; avoid a cycle
    lock_vms = list(lock_vms)
    async with catalog.transaction() as tx:
        assert isinstance(tx, Catalog)
        job = await tx.jobs.create(kind, machines, request=request, created_by=created_by)
        await VmLockRepository(tx.db).acquire(lock_vms, job.id, lock_kind or kind)
        if queued_event:
            await tx.events.append("job.queued", {"job_id": str(job.id), "kind": kind}, job_id=job.id)
        if then is not None:
            await then(tx, job)
    return job


async def try_create_job(catalog, kind: str, machines: Sequence, **kw):
    """`(job, None)`, or `(None, busy)` when a VM is held: for callers (policy
    runs) that record "skipped: <str(busy)>" instead of failing."""
    try:
        return await create_job_locked(catalog, kind, machines, **kw), None
    except VmBusy as busy:
        return None, busy


async def create_job_skipping_busy(catalog, kind: str, machines: Sequence, **kw):
    """A job for the machines whose VMs are free (each machine locks its own
    VM); `(job or None, {vm_id: VmBusy})`. A VM taken by another job between
    the look and the insert is dropped and the rest tried again, so a policy
    run never fails, nor starts, a VM that is busy: it records the skip. A
    `request` with "vm_ids" gets the ids of the machines actually in the job."""
    skipped: dict[str, VmBusy] = {}
    todo = list(machines)
    while todo:
        if isinstance(kw.get("request"), Mapping) and "vm_ids" in kw["request"]:
            kw["request"] = {**kw["request"], "vm_ids": [m.vm_id for m in todo]}
        try:
            job = await create_job_locked(catalog, kind, todo, lock_vms=[m.vm_id for m in todo], **kw)
            return job, skipped
        except VmBusy as busy:
            skipped[busy.vm_id] = busy
            todo = [m for m in todo if m.vm_id.lower() != busy.vm_id]
    return None, skipped
