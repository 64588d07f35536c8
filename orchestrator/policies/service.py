"""The policies' glue: membership against the engine, runs as backup jobs, retention
previews, protection status, and two-step backup deletion.

Used by the API (`api/policies.py`) and the scheduler (`scheduler.py`); time comes
from an injectable `clock` so tests can move it.

Deletion is crash-safe in both directions: the catalog marks a backup `deleting`
first (hidden from every list at once) in the transaction that queues its `prune`
job; the job removes the manifest from the target, then the row becomes
`deleted`. A job whose replica dies is claimed again and finishes (every step is
idempotent); a manifest still on the target meanwhile is still importable.
"""
from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

import structlog

from imageio_ext.store.errors import BackupNotFound, MissingOnTarget

from .. import catalog as cat
from ..catalog.vmlocks import create_job_skipping_busy
from .membership import Assignment, VmRef, assign
from .retention import Decision, Item, Retention, plan
from .schedule import Schedule

log = structlog.get_logger("ovault.policies")

__all__ = ["PolicyService", "PROTECTION_STATUSES", "utcnow"]

PROTECTION_STATUSES = ("protected", "at_risk", "unprotected", "excluded")
AT_RISK_FACTOR = 1.5


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@functools.lru_cache(maxsize=256)
def _cron_at(cron: str, tz: str, minute: datetime, count: int) -> tuple[timedelta, tuple]:
    """(interval, next `count` fire times) of a schedule during one minute: both are
    constant within a minute (fire times fall on whole minutes), so a list of
    hundreds of VMs computes them once per policy, not once per VM."""
    s = Schedule.parse(cron, tz)
    return s.interval(minute), tuple(s.next_times(minute, count))


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class RunResult:
    jobs: list[cat.Job]
    skipped: dict[str, str]          # vm_id -> why it was not started


class PolicyService:
    def __init__(self, catalog: cat.Catalog, engine: Any, *, store: Any = None,
                 clock: Callable[[], datetime] = utcnow, poke: Callable[[], None] | None = None,
                 on_event: Callable[[str, dict], Awaitable[None]] | None = None):
        self.catalog, self.engine, self.store = catalog, engine, store
        self.clock = clock
        self.poke = poke
        self.on_event = on_event
        self.cache: Any = None     # orchestrator.inventory.Inventory, when the service runs one
        self.stores: Any = None    # policies.targets.TargetStores: a policy's own target
        self.default_target_id: uuid.UUID | None = None   # the service's own target
        self.on_change: Callable[[], None] | None = None   # membership may differ (wiring.attach)

    def changed(self) -> None:
        """A policy was created, edited or deleted: membership may differ, so the
        protection status is checked now (not at the next periodic check)."""
        if self.on_change is not None:
            self.on_change()

    # -- membership -----------------------------------------------------------------------

    async def inventory(self, search: str | None = None, *, cached: bool = False) -> list[VmRef]:
        return [VmRef.from_sdk(vm) for vm in await self.list_vms(search, cached=cached)]

    async def list_vms(self, search: str | None = None, *, cached: bool = False) -> list[Any]:
        """The engine's VMs with their tags (engines without tag support: without).
        `cached`: from the event-fed inventory when it is current (no `search`:
        the engine's search language is the engine's to answer)."""
        if cached and search is None and self.cache is not None and self.cache.fresh():
            return self.cache.vms()
        lister = getattr(self.engine, "list_vms_with_tags", None) or self.engine.list_vms
        return await lister(search=search)

    async def assignment(self, policies: Iterable[cat.Policy] | None = None,
                         inventory: list[VmRef] | None = None) -> Assignment:
        ps = list(policies) if policies is not None else await self.catalog.policies.list()
        return assign(ps, inventory if inventory is not None else await self.inventory())

    def next_runs(self, policy: cat.Policy, count: int = 5) -> list[datetime]:
        if not policy.enabled:
            return []
        now = self.clock()
        _, times = _cron_at(policy.schedule, policy.timezone, _minute(now), count)
        return [t for t in times if t > now] if times and times[0] <= now else list(times)

    async def view(self, policy: cat.Policy, a: Assignment, names: Mapping[Any, str]) -> dict:
        members = a.members.get(policy.id, [])
        return {
            "id": str(policy.id), "name": policy.name, "schedule": policy.schedule,
            "timezone": policy.timezone, "retention": policy.retention,
            "vm_ids": list(policy.vm_ids), "rules": policy.rules,
            "window_minutes": policy.window_minutes, "full_every_days": policy.full_every_days,
            "target_id": str(policy.target_id) if policy.target_id else None,
            "enabled": policy.enabled, "notify": policy.notify,
            "created_by": policy.created_by, "created_at": policy.created_at.isoformat(),
            "updated_at": policy.updated_at.isoformat(),
            "next_runs": [t.isoformat() for t in self.next_runs(policy)],
            "members": [{"vm_id": m.vm_id, "vm_name": m.vm_name, "why": m.why,
                         "conflict_with": [{"id": str(o), "name": names.get(o)}
                                           for o in a.conflicts.get(m.vm_id, []) if o != policy.id]}
                        for m in members],
            "excluded": [{"vm_id": k, "why": w} for k, w in sorted(a.excluded.get(policy.id, {}).items())],
            "conflicts": sorted(m.vm_id for m in members if m.vm_id in a.conflicts),
        }

    # -- runs -----------------------------------------------------------------------------

    async def run(self, policy: cat.Policy, *, created_by: str, a: Assignment | None = None
                  ) -> RunResult:
        """Start backups of every member that can run now: a VM in conflict or still
        busy with another job is skipped, with the reason. Members due a full backup
        (`full_every_days` since their last full) go in a job of mode `full`, the
        others in one of mode `auto` (incremental whenever a checkpoint allows)."""
        a = a or await self.assignment()
        members = a.members.get(policy.id, [])
        skipped: dict[str, str] = {}
        runnable = []
        for m in members:
            others = [str(o) for o in a.conflicts.get(m.vm_id, []) if o != policy.id]
            if others:
                skipped[m.vm_id] = f"conflict: also a member of policy {', '.join(others)}"
            else:
                runnable.append(m)
        busy = await self.catalog.policies.busy_vms(m.vm_id for m in runnable)
        ready = []
        for m in runnable:
            if m.vm_id in busy:
                job_id, kind = busy[m.vm_id]
                skipped[m.vm_id] = f"previous run still going ({kind} job {job_id})"
            else:
                ready.append(m)
        full_ids: set[str] = set()
        if policy.full_every_days and ready:
            last_full = await self.catalog.policies.last_full_many(m.vm_id for m in ready)
            due = self.clock() - timedelta(days=policy.full_every_days)
            full_ids = {m.vm_id for m in ready if m.vm_id in last_full and last_full[m.vm_id] <= due}
        jobs = []
        for mode, group in (("auto", [m for m in ready if m.vm_id not in full_ids]),
                            ("full", [m for m in ready if m.vm_id in full_ids])):
            if not group:
                continue
            machines = [cat.NewMachine(vm_id=m.vm_id, vm_name=m.vm_name) for m in group]

            async def started(tx, job, mode=mode):  # in the job's transaction
                await tx.policies.tag_job(job.id, policy.id)
                await tx.events.append("policy.run.started", {
                    "policy_id": str(policy.id), "policy": policy.name, "job_id": str(job.id),
                    "vm_ids": [m.vm_id for m in job.machines], "mode": mode}, job_id=job.id)
            # Each VM is locked with the job (catalog.vmlocks): one taken since
            # the look above is skipped too, never started alongside.
            job, raced = await create_job_skipping_busy(
                self.catalog, "backup", machines, created_by=created_by, queued_event=False,
                then=started, request={"vm_ids": [m.vm_id for m in group], "mode": mode,
                                       "policy_id": str(policy.id), "policy": policy.name,
                                       **({"target_id": str(policy.target_id)}
                                          if policy.target_id else {})})
            for vm_id, busy in raced.items():
                skipped[vm_id] = f"busy: {busy}"
            if job is not None:
                jobs.append(job)
        if jobs and self.poke:
            self.poke()
        return RunResult(jobs, skipped)

    # -- retention ------------------------------------------------------------------------

    def _on_policy_target(self, policy: cat.Policy, target_id: Any) -> bool:
        """Whether a backup on `target_id` is one the policy's retention decides on:
        those on the policy's target (the service's own when it names none)."""
        want = policy.target_id or self.default_target_id
        if want is None:
            return True
        return (target_id or self.default_target_id) == want

    async def decisions(self, vm_id: str, policy: cat.Policy) -> list[tuple[Decision, dict]]:
        rows = [r for r in await self.catalog.policies.retention_items(vm_id)
                if self._on_policy_target(policy, r.get("target_id"))]
        by_id = {r["id"]: r for r in rows}
        items = [Item(r["id"], r["created_at"], r["status"], r["protected"]) for r in rows]
        ds = plan(items, Retention.from_mapping(policy.retention), tz=ZoneInfo(policy.timezone))
        return [(d, by_id[d.id]) for d in ds]

    async def preview(self, policy: cat.Policy, *, vm_id: str | None = None,
                      a: Assignment | None = None) -> dict:
        a = a or await self.assignment()
        members = a.members.get(policy.id, [])
        if vm_id is not None:
            members = [m for m in members if m.vm_id.lower() == vm_id.lower()]
        vms = []
        for m in members:
            ds = await self.decisions(m.vm_id, policy)
            vms.append({"vm_id": m.vm_id, "vm_name": m.vm_name,
                        "keep": sum(1 for d, _ in ds if d.keep),
                        "prune": sum(1 for d, _ in ds if not d.keep),
                        "backups": [{**d.to_dict(), "status": r["status"], "mode": r["mode"],
                                     "protected": r["protected"]} for d, r in ds]})
        return {"policy_id": str(policy.id), "timezone": policy.timezone,
                "next_runs": [t.isoformat() for t in self.next_runs(policy)], "vms": vms}

    async def prune_vm(self, vm_id: str, policy: cat.Policy, *, dry_run: bool = False,
                       requested_by: str = "policy") -> dict:
        """Apply the policy's retention to one VM: mark every pruned backup
        `deleting`, then delete each (manifest first, then the row)."""
        ds = await self.decisions(vm_id, policy)
        prune = [(d, r) for d, r in ds if not d.keep]
        result = {"vm_id": vm_id, "policy_id": str(policy.id), "dry_run": dry_run,
                  "kept": [d.to_dict() for d, _ in ds if d.keep],
                  "pruned": [d.to_dict() for d, _ in prune]}
        if dry_run:
            return result
        done = []
        for d, r in prune:
            try:
                await self.catalog.policies.mark_deleting(d.id)
            except cat.Conflict as e:     # protected or running since the plan was made
                log.info("not pruned", backup_id=str(d.id), reason=str(e))
                continue
            if await self.finish_one(d.id, vm_id, event="backup.pruned",
                                     extra={"policy_id": str(policy.id), "by": requested_by},
                                     target_id=r.get("target_id")):
                done.append(str(d.id))
        result["deleted"] = done
        return result

    async def delete_backup(self, backup_id: uuid.UUID, *, requested_by: str
                            ) -> tuple[Mapping[str, Any], cat.Job]:
        """DELETE /api/v1/backups/{id}: hide the backup and queue the `prune` job that
        removes it, in one transaction (a protected backup is a `Conflict`)."""
        async with self.catalog.transaction() as tx:
            row = await tx.policies.mark_deleting(backup_id)
            job = await tx.policies.create_job(
                "prune", {"backup_ids": [str(backup_id)], "vm_ids": [row["vm_id"]]},
                created_by=requested_by)
        if self.poke:
            self.poke()
        return row, job

    async def request_prune(self, vms: list[tuple[str, cat.Policy]], *, requested_by: str,
                            policy_id: uuid.UUID | None = None) -> cat.Job:
        """Queue a `prune` job applying each VM's policy retention."""
        job = await self.catalog.policies.create_job(
            "prune", {"vms": [{"vm_id": vm, "policy_id": str(p.id)} for vm, p in vms],
                      "vm_ids": [vm for vm, _ in vms]},
            created_by=requested_by, policy_id=policy_id)
        if self.poke:
            self.poke()
        return job

    async def _store_of(self, target_id: Any) -> Any:
        if self.stores is None or target_id is None:
            return self.store
        return await self.stores.store(target_id)

    async def finish_one(self, backup_id: uuid.UUID, vm_id: str, *, event: str,
                         extra: Mapping[str, Any] | None = None, target_id: Any = None) -> bool:
        """Remove a `deleting` backup's manifest from its target (`target_id`: the
        one it is on; None: the service's own), then mark the row `deleted`."""
        try:
            store = await self._store_of(target_id)
        except Exception as e:
            log.warning("target unavailable; will retry", backup_id=str(backup_id), error=str(e))
            return False
        if store is not None:
            try:
                await store.delete_backup(vm_id, str(backup_id))
            except (BackupNotFound, MissingOnTarget):
                pass  # the manifest is already gone (a previous attempt got that far)
            except Exception as e:
                log.warning("manifest removal failed; will retry", backup_id=str(backup_id), error=str(e))
                return False
        async with self.catalog.transaction() as tx:
            if not await tx.policies.finish_deleted(backup_id):
                return False
            await tx.events.append(event, {"backup_id": str(backup_id), "vm_id": vm_id,
                                           **(extra or {})})
        return True

    async def finish_deletions(self, *, vm_ids: Iterable[str] | None = None,
                               older_than_seconds: float = 0.0) -> int:
        """Finish deletions left half-done (by a job that died and was given up)."""
        n = 0
        for r in await self.catalog.policies.deleting(vm_ids=vm_ids,
                                                      older_than_seconds=older_than_seconds):
            if await self.finish_one(r["id"], r["vm_id"], event="backup.deleted",
                                     extra={"by": "recovery"}, target_id=r.get("target_id")):
                n += 1
        return n

    # -- protection status ----------------------------------------------------------------

    def protection(self, vm_id: str, a: Assignment, policies: Mapping[Any, cat.Policy],
                   last_success: datetime | None) -> tuple[str, cat.Policy | None]:
        pid = a.policy_of(vm_id)
        if pid is None:
            return ("excluded" if a.is_excluded(vm_id) else "unprotected"), None
        p = policies[pid]
        if not p.enabled:
            return "unprotected", p
        now = self.clock()
        interval, _ = _cron_at(p.schedule, p.timezone, _minute(now), 1)
        if last_success is not None and now - last_success <= interval * AT_RISK_FACTOR:
            return "protected", p
        return "at_risk", p
