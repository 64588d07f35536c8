"""A job whose machines stopped because the catalog could not be reached.

A catalog `Unavailable` reaching a machine is not a step failure: the machine
stops where it is (`statemachines.CatalogUnreachable`), keeping what it holds
in the engine, because a moment later — once the database answers again — it
resumes from its persisted state (every step is idempotent). `ride_out` does
the waiting, in the job's task, while the heartbeat keeps trying to renew the
lease:

1. Poll the catalog (one cheap read a second).
2. If it stays unreachable for ``jobs.catalog_unreachable_release_seconds``
   (counted from when the first machine stopped), release what the stopped
   machines hold in the engine from what they know in memory
   (`statemachines.release`): transfers finalized or canceled, the engine
   backup finalized, ovault's snapshot removed. Logged and counted
   (``ovault_engine_releases_total``). The VM is usable again and nothing
   waits on an engine lock for a database.
3. Once the catalog answers: after a release, each released machine gets an
   ``engine_released`` record (with the cause in words) and a
   ``machine.engine_released`` event, if this replica still holds the lease;
   the machine then goes to cleanup (which finds the engine objects gone) and
   ends `failed` with that cause — unless it was in its last state
   (`finalize`), where the engine's part is done and it completes. Then the lease is given up so the job is
   claimed again at once (here or on another replica) and resumes.

If another replica took the job over meanwhile, that replica's machine finds
the engine objects gone by itself and fails with the engine's words.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Callable

import structlog

from statemachines.release import release_engine

from .. import catalog as cat

if TYPE_CHECKING:
    from statemachines import VmMachine

log = structlog.get_logger("ovault.jobs")


def released_error(seconds: float, items: list[str]) -> str:
    what = "; ".join(items) if items else "nothing was held"
    return (f"catalog unreachable for {seconds:.0f} s: ovault released what this backup or restore "
            f"held in the engine ({what}); run it again")


async def ride_out(catalog: cat.Catalog, job: cat.Job, machines: list["VmMachine"], *, owner: str,
                   release_after: float, lease_seconds: float, since: float | None = None,
                   on_release: Callable[[int], None] | None = None, probe_interval: float = 1.0,
                   clock: Callable[[], float] = time.monotonic) -> dict[str, list[str]]:
    """Wait for the catalog; release the machines' engine objects if it stays
    away too long; hand the job back. Returns machine id -> what was released."""
    since = clock() if since is None else since
    released: dict[str, list[str]] = {}
    released_after = 0.0
    log.warning("catalog unreachable: machines stopped, waiting for it", job_id=str(job.id),
                machines=[m.machine_id for m in machines], release_after_s=release_after)
    while True:
        try:
            await catalog.jobs.get(job.id)
            break
        except cat.CatalogError:
            pass
        if not released and clock() - since >= release_after:
            released_after = clock() - since
            for m in machines:
                try:
                    released[m.machine_id] = await release_engine(m)
                except Exception as err:  # keep going with the other machines
                    released[m.machine_id] = [f"release failed: {err}"]
                log.warning("catalog unreachable: engine objects released", job_id=str(job.id),
                            machine_id=m.machine_id, vm_id=m.vm_id, down_s=round(released_after, 1),
                            released=released[m.machine_id])
            if on_release is not None:
                on_release(len(machines))
        await asyncio.sleep(probe_interval)
    down = clock() - since
    log.info("catalog reachable again", job_id=str(job.id), down_s=round(down, 1),
             released=bool(released))
    try:
        if released and await catalog.jobs.renew_lease(job.id, owner, lease_seconds=lease_seconds):
            for m in machines:
                items = released.get(m.machine_id, [])
                error = released_error(released_after, items)
                await catalog.jobs.record_resources(uuid.UUID(m.machine_id), {"engine_released": {
                    "error": error, "after_seconds": round(released_after, 1), "released": items}},
                    owner=owner)
                await catalog.events.append("machine.engine_released", {
                    "job_id": str(job.id), "machine_id": m.machine_id, "vm_id": m.vm_id,
                    "after_seconds": round(released_after, 1), "released": items}, job_id=job.id)
        await catalog.jobs.release(job.id, owner)
    except cat.CatalogError as err:  # gone again: the lease runs out and the job is claimed later
        log.warning("could not hand the job back after the catalog outage", job_id=str(job.id),
                    error=str(err))
    return released
