"""Daily maintenance the scheduler drives, each run once across replicas (a
`maintenance_ticks` row per fire time): the target's garbage collection, the
summary mail, and the protection-status log behind `vm.protection_changed`.

Garbage collection never races a backup: it waits (retrying on later passes of
the same day) until no backup job is queued or running, and the store's sweep
keeps every chunk younger than its grace period, so a backup that starts while
the sweep runs loses nothing.
"""
from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta
from typing import Any, Callable

import structlog

from .. import catalog as cat
from .notify import Mailer, summary_mail
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

    async def pass_once(self) -> None:
        now = self.clock()
        if time.monotonic() - self._last_protection >= self.settings.protection_interval:
            self._last_protection = time.monotonic()
            await self.protection()
        if self.settings.gc_schedule:
            await self._daily("gc", self.settings.gc_schedule, now, self.gc)
        if self.settings.summary_schedule and self.mailer is not None and self.mailer.enabled:
            await self._daily("summary", self.settings.summary_schedule, now, self.summary)

    async def _daily(self, task: str, cron: str, now: datetime, fn) -> None:
        fire_at = Schedule.parse(cron, self.settings.timezone).previous(now)
        if now - fire_at > timedelta(hours=20):
            return       # too long after its time (downtime): wait for the next one
        last = await self.catalog.policies.last_maintenance(task)
        if last is not None and last["fire_at"] >= fire_at:
            return
        if task == "gc" and await self._backups_running():
            return       # try again on the next pass
        if not await self.catalog.policies.claim_maintenance(task, fire_at, self.replica):
            return
        result = await fn()
        await self.catalog.policies.finish_maintenance(task, fire_at, result)

    async def _backups_running(self) -> bool:
        return bool(await self.catalog.db.fetchval(
            "SELECT count(*) FROM jobs WHERE kind = 'backup' AND state IN ('queued', 'running')"))

    async def gc(self) -> dict[str, Any]:
        store = self.service.store
        if store is None:
            return {"skipped": "no store"}
        await self.catalog.events.append("gc.started", {"replica": self.replica})
        t0 = time.monotonic()
        report = await store.gc()
        result = {"bytes_freed": report.bytes_removed, "chunks_removed": report.chunks_removed,
                  "chunks_seen": report.chunks_seen, "kept_young": report.chunks_kept_young,
                  "seconds": round(time.monotonic() - t0, 3)}
        await self.catalog.events.append("gc.finished", result)
        log.info("gc finished", **result)
        return result

    async def summary(self) -> dict[str, Any]:
        since = self.clock() - timedelta(days=1)
        runs = await self.catalog.policies.runs_summary(since)
        at_risk = [r["vm_id"] for r in await self.catalog.db.fetch(
            "SELECT vm_id FROM vm_protection WHERE status = 'at_risk' ORDER BY vm_id")]
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

    async def protection(self) -> int:
        """Record every member VM's status; announce each change once."""
        policies = await self.catalog.policies.list()
        if not policies:
            return 0
        inv = await self.service.inventory()
        a = await self.service.assignment(policies, inv)
        by_id = {p.id: p for p in policies}
        last = await self.catalog.backups.last_succeeded_many(v.id for v in inv)
        changed = 0
        for v in inv:
            status, pol = self.service.protection(
                v.id, a, by_id, last[v.id].created_at if v.id in last else None)
            prev = await self.catalog.policies.record_protection(
                v.id, status, pol.id if pol else None)
            if prev is not None:
                changed += 1
                await self.catalog.events.append("vm.protection_changed", {
                    "vm_id": v.id, "vm_name": v.name, "status": status, "previous": prev or None,
                    "policy_id": str(pol.id) if pol else None})
        return changed
