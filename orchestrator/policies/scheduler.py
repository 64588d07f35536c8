"""The policy scheduler: durable in PostgreSQL, every tick fired exactly once across
replicas.

Every replica runs one `Scheduler`. A pass, for each enabled policy:

1. lists the fire times between the policy's cursor (`scheduled_through`) and now;
2. evaluates the membership against the engine (before any transaction: no
   connection is held while the engine answers);
3. in ONE transaction: claims the newest due fire time
   (`INSERT … ON CONFLICT (policy_id, fire_at) DO NOTHING`), creates the backup
   job(s) tagged with the policy, records the tick's outcome and moves the
   cursor. The replica whose INSERT returns the row fires the tick; another
   replica gets nothing back and moves on. A replica killed half-way rolls the
   whole transaction back, so the tick stays unclaimed and the next pass (here or
   on another replica) fires it: none lost, none doubled.

Older due fire times (downtime) fold into that one run, recorded `late` with the
number folded. A VM whose previous run still goes is skipped with the reason; a
tick where nothing could start is recorded `skipped`. A fired run whose job has
still not started `window_minutes` after its fire time is canceled and recorded
`missed`. After a policy job ends, a `prune` job applies the policy's retention
to the VMs it backed up (queued once across replicas: the `maintenance_ticks` row
and the job are one transaction).
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Callable

import structlog

from .. import catalog as cat
from .maintenance import Maintenance
from .notify import Mailer, failure_mail, success_mail, tick_mail
from .schedule import Schedule
from .service import PolicyService, utcnow

log = structlog.get_logger("ovault.scheduler")

__all__ = ["Scheduler"]

ON_TIME = timedelta(seconds=90)     # fired this long after its time still counts as on time


class Scheduler:
    def __init__(self, catalog: cat.Catalog, service: PolicyService, *, replica: str,
                 clock: Callable[[], datetime] = utcnow, interval: float = 15.0,
                 mailer: Mailer | None = None, base_url: str = "",
                 maintenance: Maintenance | None = None):
        self.catalog, self.service, self.replica = catalog, service, replica
        self.clock, self.interval = clock, interval
        self.mailer, self.base_url, self.maintenance = mailer, base_url, maintenance
        self.wakeup = asyncio.Event()

    async def run(self) -> None:
        while True:
            delay = self.interval
            try:
                await self.pass_once()
                delay = await self._until_next_fire()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler pass failed")
            try:
                await asyncio.wait_for(self.wakeup.wait(), delay)
            except asyncio.TimeoutError:
                pass
            self.wakeup.clear()

    async def _until_next_fire(self) -> float:
        """Seconds to sleep: `interval`, or less when a policy fires sooner (a tick
        then starts within a fraction of a second of its time, not up to
        `interval` late)."""
        now = self.clock()
        soonest = None
        for p in await self.catalog.policies.list(enabled=True):
            try:
                t = Schedule.parse(p.schedule, p.timezone).next_after(max(now, p.scheduled_through))
            except Exception:
                continue
            soonest = t if soonest is None or t < soonest else soonest
        if soonest is None:
            return self.interval
        return max(0.05, min(self.interval, (soonest - now).total_seconds() + 0.05))

    async def pass_once(self) -> list[cat.Tick]:
        fired = []
        now = self.clock()
        policies = await self.catalog.policies.list(enabled=True)
        assignment = None
        for p in policies:
            sched = Schedule.parse(p.schedule, p.timezone)
            due = list(sched.between(p.scheduled_through, now))
            if not due:
                continue
            if assignment is None:
                assignment = await self.service.assignment(
                    await self.catalog.policies.list())
            tick = await self._fire(p, due, now, assignment)
            if tick is not None:
                fired.append(tick)
        await self._expire_windows(now)
        await self._prune_finished()
        # deletions whose prune job was given up (a job that crashes its replica
        # five times): finish them here after an hour
        await self.service.finish_deletions(older_than_seconds=3600)
        if self.maintenance is not None:
            await self.maintenance.pass_once()
        return fired

    async def _mail(self, policy: cat.Policy, kind: str, message: tuple[str, str]) -> None:
        notify = policy.notify or {}
        if self.mailer is None or kind not in notify.get("on", ["failure"]):
            return
        await self.mailer.send(notify.get("emails", []), *message)

    async def _fire(self, p: cat.Policy, due: list[datetime], now: datetime, a) -> cat.Tick | None:
        fire_at = due[-1]
        folded = len(due) - 1
        late = folded > 0 or now - fire_at > ON_TIME
        async with self.catalog.transaction() as tx:
            tick = await tx.policies.claim_tick(
                p.id, fire_at, status="late" if late else "fired", replica=self.replica,
                details={"folded": folded} if folded else None)
            await tx.policies.advance(p.id, fire_at)
            if tick is None:
                return None       # another replica fired it
            svc = PolicyService(tx, self.service.engine, store=self.service.store,
                                clock=self.clock)
            res = await svc.run(p, created_by=f"policy:{p.name}", a=a)
            details: dict[str, Any] = {"jobs": [str(j.id) for j in res.jobs]}
            if res.skipped:
                details["skipped"] = res.skipped
            if res.jobs:
                reason = (f"catch-up run for {folded + 1} fire times missed while no replica ran"
                          if folded else ("started late" if late else None))
                tick = await tx.policies.finish_tick(tick.id, job_id=res.jobs[0].id,
                                                     reason=reason, details=details)
            else:
                why = "; ".join(f"{k}: {r}" for k, r in sorted(res.skipped.items())) \
                    or "the policy has no members"
                tick = await tx.policies.finish_tick(tick.id, status="skipped", reason=why,
                                                     details=details)
        log.info("policy tick", policy=p.name, fire_at=fire_at.isoformat(), status=tick.status,
                 job_id=str(tick.job_id) if tick.job_id else None, replica=self.replica)
        if tick.job_id and self.service.poke:
            self.service.poke()
        if tick.status in ("late", "skipped"):
            await self._mail(p, "failure", tick_mail(p, tick))
        return tick

    async def _expire_windows(self, now: datetime) -> None:
        """A run still queued after its window: cancel it and record the tick missed
        (one transaction: the cancel, the tick and the `policy.run.missed` event)."""
        for r in await self.catalog.policies.runs_past_window(now):
            try:
                async with self.catalog.transaction() as tx:
                    await tx.jobs.request_cancel(r["job_id"])
                    tick = await tx.policies.finish_tick(
                        r["id"], status="missed",
                        reason=f"could not start within window_minutes={r['window_minutes']}")
                    await tx.events.append("policy.run.missed", {
                        "policy": r["name"], "job_id": str(r["job_id"]),
                        "fire_at": r["fire_at"].isoformat()}, job_id=r["job_id"])
            except cat.CatalogError as e:
                log.warning("could not cancel a run past its window", error=str(e))
                continue
            policy = await self.catalog.policies.get(tick.policy_id)
            await self._mail(policy, "failure", tick_mail(policy, tick))

    async def _prune_finished(self) -> None:
        """Once per finished policy job (across replicas): prune its VMs, and say
        the run finished (webhook `policy.run.finished`)."""
        for r in await self.catalog.policies.finished_runs():
            job = await self.catalog.jobs.get(r["id"])
            policy = await self.catalog.policies.get(r["policy_id"])
            vms = [(m.vm_id, policy) for m in job.machines if m.state == "succeeded"]
            task = f"prune:{r['id']}"
            async with self.catalog.transaction() as tx:
                if not await tx.policies.claim_maintenance(task, r["finished_at"], self.replica):
                    continue
                await tx.events.append("policy.run.finished", {
                    "policy_id": str(policy.id), "policy": policy.name, "job_id": str(job.id),
                    "state": job.state, "error": job.error}, job_id=job.id)
                prune_job = None
                if vms:
                    svc = PolicyService(tx, self.service.engine, store=self.service.store,
                                        clock=self.clock)
                    prune_job = await svc.request_prune(vms, requested_by=f"policy:{policy.name}",
                                                        policy_id=policy.id)
                await tx.policies.finish_maintenance(task, r["finished_at"], {
                    "prune_job_id": str(prune_job.id) if prune_job else None})
            if prune_job is not None and self.service.poke:
                self.service.poke()
            if job.state == "succeeded":
                await self._mail(policy, "success", success_mail(policy, job, self.base_url))
            elif job.state == "failed":     # canceled: by a person, or missed (mailed then)
                await self._mail(policy, "failure", failure_mail(policy, job, self.base_url))
