"""The job runner: claims jobs, drives their machines, keeps the lease.

One runner per `ovault serve` replica. Jobs are claimed from PostgreSQL with
SKIP LOCKED and a lease that a heartbeat renews every lease/3 seconds. A
replica that dies stops renewing; when the lease expires another replica (or
this one after a restart) claims the job again and resumes each machine from
its persisted state. A replica that finds its lease lost stops its machines
at once without cleaning up: the new owner does that.

Limits: VMs in flight on this replica (`limits.total`), VMs of one job in
parallel (`limits.per_job`), VMs whose transfers run on one host
(`limits.per_host`, taken around each disk copy), disks of a VM in parallel.

What a claimed job runs is looked up by its kind in `JobRunner.handlers`
(kind → coroutine taking the claimed `Job`). Backup and restore jobs drive one
state machine per VM (`_run_machines`, the machine class from
`statemachines.MACHINES`); a job kind without machines registers its own
handler with `runner.register(kind, handler)`. A handler that returns has
finished the job (it ends it in the catalog, e.g. `catalog.jobs.rollup`); one
that raises lets the job be claimed again, up to `MAX_ATTEMPTS`.
"""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from typing import Awaitable, Callable

import structlog

from statemachines import MACHINES, BackupMachine, CatalogUnreachable, Deps, LostOwnership, VmMachine

from imageio_ext.store.leases import WriterLease

from .. import catalog as cat
from ..engine.port import EnginePort
from .adapters import CatalogJournal, CatalogPort, MoverPort, StorePort
from .outage import ride_out

log = structlog.get_logger("ovault.jobs")
MAX_ATTEMPTS = 5

JobHandler = Callable[[cat.Job], Awaitable[None]]


class JobRunner:
    def __init__(self, *, catalog: cat.Catalog, engine, mover: MoverPort, store: StorePort,
                 config, target_id=None, on_event=None, waker=None, on_release=None, on_resume=None):
        self.catalog, self.engine, self.mover, self.store = catalog, engine, mover, store
        self.machine_engine = EnginePort(engine)  # the machines' port over the SDK client
        self.cfg = config
        self.owner = config.replica
        self.target_id = target_id
        self.total = asyncio.Semaphore(config.limits.total)
        self.hosts: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(config.limits.per_host))
        self.sds: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(config.limits.per_storage_domain))
        self.jobs: dict[uuid.UUID, asyncio.Task] = {}
        self.machines: dict[uuid.UUID, list] = {}
        self.on_event = on_event
        self.on_release = on_release  # called with the number of machines whose engine objects
        #                               were released after a long catalog outage (a metric)
        self.waker = waker
        self.on_resume = on_resume  # called with the machine kind per transfer resumed (a metric)
        self.target_ports = None  # async job -> (store, mover, target id) | None (policies/targets.py)
        self.wakeup = asyncio.Event()
        self._stopping = False
        self.handlers: dict[str, JobHandler] = {kind: self._run_machines for kind in MACHINES}

    def register(self, kind: str, handler: JobHandler) -> None:
        """Run jobs of `kind` with `handler` (a job kind without VM machines)."""
        self.handlers[kind] = handler

    # --- life cycle -------------------------------------------------------------------
    async def run(self):
        hb = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping:
                free = max(0, self.cfg.limits.total - len(self.jobs))
                if free:
                    try:
                        claimed = await self.catalog.jobs.claim(
                            self.owner, lease_seconds=self.cfg.jobs.lease_seconds, limit=min(free, 4))
                    except cat.CatalogError as e:
                        log.warning("claim failed", error=str(e))
                        claimed = []
                    for job in claimed:
                        if job.id in self.jobs:
                            # still ours, waiting out a catalog outage (outage.py): its lease ran
                            # out meanwhile; that task hands it back when it is done
                            continue
                        log.info("job claimed", job_id=str(job.id), kind=job.kind,
                                 attempt=job.attempts, owner=self.owner)
                        t = asyncio.create_task(self._run_job(job))
                        self.jobs[job.id] = t
                        t.add_done_callback(lambda _t, jid=job.id: self._job_done(jid, _t))
                try:
                    await asyncio.wait_for(self.wakeup.wait(), self.cfg.jobs.claim_interval)
                except asyncio.TimeoutError:
                    pass
                self.wakeup.clear()
        finally:
            hb.cancel()
            await self.stop()

    def poke(self):
        self.wakeup.set()

    def _job_done(self, job_id, task):
        # A job handed back (released) may already run again in a new task.
        if self.jobs.get(job_id) is task:
            del self.jobs[job_id]
        self.poke()

    async def stop(self):
        """Stop driving machines; release the leases so another replica resumes
        them at once (after a crash the leases simply expire)."""
        self._stopping = True
        held = list(self.jobs)
        tasks = list(self.jobs.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job_id in held:
            try:
                await self.catalog.jobs.release(job_id, self.owner)
            except Exception:
                pass

    async def _heartbeat(self):
        while True:
            await asyncio.sleep(self.cfg.jobs.lease_seconds / 3)
            for job_id in list(self.jobs):
                try:
                    job = await self.catalog.jobs.renew_lease(
                        job_id, self.owner, lease_seconds=self.cfg.jobs.lease_seconds)
                except cat.CatalogError as e:
                    log.warning("lease renewal failed", job_id=str(job_id), error=str(e))
                    continue
                if job is None:
                    try:
                        if (await self.catalog.jobs.get(job_id)).state in cat.TERMINAL:
                            continue  # it just ended here: a finished job holds no lease
                    except cat.CatalogError:
                        pass
                    log.warning("lease lost; stopping the job here", job_id=str(job_id))
                    t = self.jobs.get(job_id)
                    if t:
                        t.cancel()
                elif job.cancel_requested:
                    for m in self.machines.get(job_id, []):
                        m.request_cancel()

    # --- one job ---------------------------------------------------------------------
    async def _run_job(self, job: cat.Job):
        try:
            await self.catalog.events.append(
                "job.running", {"job_id": str(job.id), "kind": job.kind, "attempt": job.attempts,
                                "replica": self.owner}, job_id=job.id)
        except cat.CatalogError as e:
            log.warning("could not record job.running", job_id=str(job.id), error=str(e))
        handler = self.handlers.get(job.kind)
        if handler is None:
            await self.catalog.jobs.fail(job.id, f"no handler for jobs of kind {job.kind!r} "
                                                 f"on replica {self.owner}")
            return
        try:
            await handler(job)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("job handler crashed", job_id=str(job.id), kind=job.kind, error=repr(e))
            await self._crashed(job, e)

    async def _crashed(self, job: cat.Job, error: BaseException):
        """Let it be claimed again (here or elsewhere) and resumed; give up
        after a few attempts so a poison job cannot loop forever."""
        try:
            if job.attempts >= MAX_ATTEMPTS:
                await self.catalog.jobs.fail(job.id, f"gave up after {job.attempts} attempts: "
                                                     f"{error!r}")
            else:
                await self.catalog.jobs.release(job.id, self.owner)
        except cat.CatalogError as e:  # the lease runs out and the job is claimed again
            log.warning("could not release the crashed job", job_id=str(job.id), error=str(e))

    def _deps(self, job: cat.Job) -> Deps:
        return Deps(engine=self.machine_engine, mover=self.mover, store=self.store,
                    catalog=CatalogPort(self.catalog, str(job.id), self.target_id),
                    timeouts=self.cfg.timeouts, disks_per_vm=self.cfg.limits.disks_per_vm,
                    consistency=self.cfg.backup.consistency,
                    host_slot=self._host_slot, sd_slot=self._sd_slot, waker=self.waker,
                    on_resume=self.on_resume)

    def _machine(self, job: cat.Job, m: cat.Machine, deps: Deps) -> VmMachine:
        journal = CatalogJournal(self.catalog, m, self.owner, str(job.id), publish=self._publish)
        cls = MACHINES[job.kind]
        common = dict(vm_id=m.vm_id, job_id=str(job.id), machine_id=str(m.id))
        if cls is BackupMachine:
            return cls(journal, deps, mode=(job.request or {}).get("mode", "auto"), **common)
        return cls(journal, deps, request={**(job.request or {}), **(m.context or {})}, **common)

    async def _run_machines(self, job: cat.Job):
        """A backup or restore job: one machine per VM not finished yet."""
        lim = self.cfg.limits
        per_job = asyncio.Semaphore(  # a policy run has its own (larger) parallelism
            (lim.per_policy_run or lim.total) if (job.request or {}).get("policy_id")
            else lim.per_job)
        deps = self._deps(job)
        ports = await self.target_ports(job) if self.target_ports else None
        if ports:  # (store, mover, target id) of another target: a policy's own (policies/targets.py)
            deps.store, deps.mover = ports[0], ports[1]
            deps.catalog = CatalogPort(self.catalog, str(job.id), ports[2])
        machines = []
        for m in job.machines:
            if m.terminal:
                continue
            vm = self._machine(job, m, deps)
            if job.cancel_requested:
                vm.request_cancel()
            machines.append(vm)
        self.machines[job.id] = machines

        stopped: list[float] = []  # when machines stopped for an unreachable catalog

        async def drive(vm):
            async with per_job, self.total, _publish_lease(deps.store, vm):
                structlog.contextvars.bind_contextvars(job_id=str(job.id), vm_id=vm.vm_id)
                try:
                    return await vm.run()
                except CatalogUnreachable as e:
                    stopped.append(asyncio.get_running_loop().time())
                    log.warning("catalog unreachable: machine stopped (not failed)", error=str(e),
                                state=vm.state, job_id=str(job.id), machine_id=vm.machine_id)
                    raise
                except LostOwnership as e:
                    log.warning("machine lost to another replica", error=str(e))
                    raise
        try:
            results = await asyncio.gather(*(drive(vm) for vm in machines), return_exceptions=True)
            unreachable = [vm for vm, r in zip(machines, results) if isinstance(r, CatalogUnreachable)]
            if unreachable:
                loop = asyncio.get_running_loop()
                await ride_out(self.catalog, job, unreachable, owner=self.owner,
                               release_after=self.cfg.jobs.catalog_unreachable_release_seconds,
                               lease_seconds=self.cfg.jobs.lease_seconds, since=min(stopped),
                               on_release=self.on_release, clock=loop.time)
                return
            if any(isinstance(r, LostOwnership) for r in results):
                return
            crashed = [r for r in results if isinstance(r, BaseException)
                       and not isinstance(r, asyncio.CancelledError)]
            for r in crashed:
                log.error("machine crashed", error=repr(r))
            if crashed:
                await self._crashed(job, crashed[0])
                return
            if any(isinstance(r, asyncio.CancelledError) for r in results):
                return
            final = await self.catalog.jobs.rollup(job.id)  # writes job.<state> with it
            log.info("job finished", job_id=str(job.id), state=final.state, error=final.error)
        finally:
            self.machines.pop(job.id, None)

    @contextlib.asynccontextmanager
    async def _host_slot(self, host_id: str):
        async with self.hosts[host_id]:
            yield

    @contextlib.asynccontextmanager
    async def _sd_slot(self, sd_id: str | None):
        if sd_id is None:
            yield
            return
        async with self.sds[sd_id]:
            yield

    async def _publish(self, type_: str, payload: dict):
        if self.on_event:
            await self.on_event(type_, payload)


@contextlib.asynccontextmanager
async def _publish_lease(store_port, vm):
    """A backup machine holds a writer lease on its target from its start to its end,
    so gc keeps the chunks of disks the movers committed but this machine has not
    published yet (their indexes are not published, so nothing else marks them;
    docs/store-format.md, "Writers and garbage collection"). Without a lease (the
    target refused it) the backup goes on: gc's grace period still protects them."""
    store = getattr(store_port, "store", None)
    if not isinstance(vm, BackupMachine) or store is None or getattr(store, "target", None) is None:
        yield
        return
    lease: WriterLease | None = WriterLease(store.target, purpose="publish", vm_id=vm.vm_id)
    try:
        await lease.register()
    except Exception as e:
        lease = None
        log.warning("publish lease not registered: gc's grace period protects this backup",
                    vm_id=vm.vm_id, error=str(e))
    namer = asyncio.create_task(_name_backup(lease, vm)) if lease is not None else None
    try:
        yield
    finally:
        if namer is not None:
            namer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await namer
        if lease is not None:
            await lease.release()


async def _name_backup(lease: WriterLease, vm, poll: float = 1.0) -> None:
    """Writes the machine's backup id into its lease as soon as the machine has one."""
    while True:
        backup_id = (getattr(vm, "res", None) or {}).get("backup_id")
        if backup_id:
            try:
                await lease.name_backup(str(backup_id))
            except Exception as e:  # the heartbeat keeps the lease; grace keeps the directory
                log.warning("publish lease: could not name the backup", error=str(e))
            return
        await asyncio.sleep(poll)
