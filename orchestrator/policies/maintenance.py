"""Daily maintenance the scheduler drives, each run once across replicas (a
`maintenance_ticks` row per fire time): the target's garbage collection, the
summary mail, the protection-status log behind `vm.protection_changed`, and the
mail for each `backup.damaged` event (once across replicas).

Garbage collection runs as a `gc` job (policies/jobs.py) that never races a
backup: it waits until no backup job is queued or running, and the store's sweep
keeps every chunk younger than its grace period, so a backup that starts while
the sweep runs loses nothing.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable

import structlog

from .. import catalog as cat
from .notify import Mailer, damaged_mail, summary_mail
from .schedule import Schedule
from .service import PolicyService
from .settings import Policies

log = structlog.get_logger("ovault.maintenance")

__all__ = ["Maintenance"]


class Maintenance:
    def __init__(self, catalog: cat.Catalog, service: PolicyService, *, replica: str,
                 settings: Policies, mailer: Mailer | None = None,
                 clock: Callable[[], datetime] | None = None):
        self.catalog, self.service, self.replica = catalog, service, replica
        self.settings, self.mailer = settings, mailer
        self.clock = clock or service.clock
        self._last_protection = float("-inf")
        self._damaged_after = 0          # events scanned for `backup.damaged` mail

    def request_protection(self) -> None:
        """Check the protection status at the next pass (the inventory saw a VM's
        name, cluster, tags or existence change)."""
        self._last_protection = float("-inf")

    async def pass_once(self) -> None:
        now = self.clock()
        if time.monotonic() - self._last_protection >= self.settings.protection_interval:
            self._last_protection = time.monotonic()
            await self.protection()
        if self.mailer is not None and self.mailer.enabled:
            await self.damaged()
        if self.settings.gc_schedule:
            await self._daily("gc", self.settings.gc_schedule, now, self.gc)
        if self.settings.verify_schedule:
            await self._daily("verify", self.settings.verify_schedule, now, self.verify)
        if self.settings.summary_schedule and self.mailer is not None and self.mailer.enabled:
            await self._daily("summary", self.settings.summary_schedule, now, self.summary)

    async def _daily(self, task: str, cron: str, now: datetime, fn) -> None:
        fire_at = Schedule.parse(cron, self.settings.timezone).previous(now)
        if now - fire_at > timedelta(hours=20):
            return       # too long after its time (downtime): wait for the next one
        last = await self.catalog.policies.last_maintenance(task)
        if last is not None and last["fire_at"] >= fire_at:
            return
        await fn(fire_at)

    async def gc(self, fire_at: datetime) -> cat.Job | None:
        """Queue the day's `gc` job (policies/jobs.py runs it), once across replicas:
        the claim and the job are one transaction."""
        async with self.catalog.transaction() as tx:
            if not await tx.policies.claim_maintenance("gc", fire_at, self.replica):
                return None
            job = await tx.policies.create_job("gc", {"scheduled_for": fire_at.isoformat()},
                                               created_by="schedule")
            await tx.policies.finish_maintenance("gc", fire_at, {"job_id": str(job.id)})
        if self.service.poke:
            self.service.poke()
        return job

    async def verify(self, fire_at: datetime) -> cat.Job | None:
        """Queue the scheduled `verify` job (orchestrator/jobs/verify.py), once across
        replicas, like `gc`."""
        async with self.catalog.transaction() as tx:
            if not await tx.policies.claim_maintenance("verify", fire_at, self.replica):
                return None
            job = await tx.policies.create_job("verify", {"scheduled_for": fire_at.isoformat()},
                                               created_by="schedule")
            await tx.policies.finish_maintenance("verify", fire_at, {"job_id": str(job.id)})
        if self.service.poke:
            self.service.poke()
        return job

    async def summary(self, fire_at: datetime) -> None:
        if not await self.catalog.policies.claim_maintenance("summary", fire_at, self.replica):
            return
        result = await self._summary()
        await self.catalog.policies.finish_maintenance("summary", fire_at, result)

    async def _summary(self) -> dict[str, Any]:
        since = self.clock() - timedelta(days=1)
        runs = await self.catalog.policies.runs_summary(since)
        at_risk = await self.catalog.policies.vms_with_status("at_risk")
        usage = None
        store = self.service.store
        if store is not None:
            try:
                s = await store.stats()
                usage = {k: v for k, v in dataclasses.asdict(s).items()
                         if k in ("backups", "stored_bytes", "logical_bytes")}
            except Exception as e:   # a summary without usage beats no summary
                log.warning("target usage unavailable", error=str(e))
        to = sorted({e for p in await self.catalog.policies.list()
                     if "summary" in (p.notify or {}).get("on", [])
                     for e in (p.notify or {}).get("emails", [])})
        subject, body = summary_mail(runs, at_risk, usage)
        sent = await self.mailer.send(to, subject, body) if to else False
        return {"to": to, "sent": sent, "runs": sum(r["n"] for r in runs),
                "at_risk": len(at_risk)}

    async def damaged(self) -> int:
        """Mail each `backup.damaged` event (of the last day) once across replicas to
        the policy that made the backup (else the VM's policy now), when its
        `notify.on` has `failure`."""
        since = self.clock() - timedelta(days=1)
        sent = 0
        while True:
            events = await self.catalog.events.list_after(self._damaged_after, limit=100,
                                                          types=["backup.damaged"])
            if not events:
                return sent
            for e in events:
                self._damaged_after = e.id
                if e.created_at < since:
                    continue
                task = f"damaged-mail:{e.id}"
                if not await self.catalog.policies.claim_maintenance(task, e.created_at,
                                                                     self.replica):
                    continue
                policy = await self._policy_of_backup(e.payload)
                to = (policy.notify or {}).get("emails", []) if policy is not None and \
                    "failure" in (policy.notify or {}).get("on", ["failure"]) else []
                ok = await self.mailer.send(to, *damaged_mail(e.payload, policy, self.mailer.cfg.base_url)) \
                    if to else False
                sent += bool(ok)
                await self.catalog.policies.finish_maintenance(task, e.created_at,
                                                               {"to": to, "sent": ok})

    async def _policy_of_backup(self, payload: dict) -> cat.Policy | None:
        pid = None
        try:
            pid = await self.catalog.policies.backup_policy(uuid.UUID(str(payload.get("backup_id"))))
        except (ValueError, cat.CatalogError):
            pass
        if pid is None and payload.get("vm_id"):
            policies = await self.catalog.policies.list()
            a = await self.service.assignment(policies, await self.service.inventory(cached=True))
            pid = a.policy_of(payload["vm_id"])
        if pid is None:
            return None
        try:
            return await self.catalog.policies.get(pid)
        except cat.NotFound:
            return None

    async def protection(self) -> int:
        """Record every member VM's status; announce each change once."""
        policies = await self.catalog.policies.list()
        if not policies:
            return 0
        inv = await self.service.inventory(cached=True)
        a = await self.service.assignment(policies, inv)
        by_id = {p.id: p for p in policies}
        last = await self.catalog.policies.last_success_brief(v.id for v in inv)
        changed = 0
        for v in inv:
            status, pol = self.service.protection(
                v.id, a, by_id, last[v.id]["created_at"] if v.id in last else None)
            prev = await self.catalog.policies.record_protection(
                v.id, status, pol.id if pol else None)
            if prev is not None:
                changed += 1
                await self.catalog.events.append("vm.protection_changed", {
                    "vm_id": v.id, "vm_name": v.name, "status": status, "previous": prev or None,
                    "policy_id": str(pol.id) if pol else None})
        return changed
