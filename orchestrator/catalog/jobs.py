"""Jobs and their machines (one per VM): creation, claiming, leases, CAS.

Which lock guards what:

| operation            | lock                                                    |
|----------------------|---------------------------------------------------------|
| claim                | row locks on unleased/expired jobs, `SKIP LOCKED`        |
| renew/release lease  | the job row, only if `lease_owner` is the caller         |
| machine transition   | compare-and-swap on (state, version); optionally the     |
|                      | caller must still hold the job's unexpired lease         |
| record resources     | the machine row (UPDATE); a JSON merge patch, so         |
|                      | concurrent disk tasks never erase each other's keys      |
| rollup, cancel       | `SELECT … FOR UPDATE` of the job row                     |

A job's move to a terminal state and its `job.<state>` event (the webhook
and websocket notice) are written in one transaction, whichever path ends it
(rollup of its machines, cancel of a queued job, giving up): the notice is
never lost to a crash or a cancelled task, and never sent twice.

Time is the database's `now()`, never a replica's clock, so leases mean the
same thing on every replica.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

import asyncpg

from .db import Repository
from .errors import Conflict, Invalid, LeaseLost, NotFound, wrap_errors
from .models import (MACHINE_STATES, TERMINAL, TERMINAL_SQL, Job, JobKind, JobState, Machine,
                     NewMachine, Page, parse_enum)
from .paging import Where, check_limit, encode_cursor

__all__ = ["JobRepository", "rollup_state"]


async def _ended(c, job_id: uuid.UUID, kind: str, state: str, error: str | None) -> None:
    from .events import EventRepository  # same transaction, other aggregate
    await EventRepository(c).append(f"job.{state}", {"job_id": str(job_id), "kind": kind,
                                                    "state": state, "error": error}, job_id=job_id)

_MAX_ERROR = 4000


def rollup_state(current: str, machines: Sequence[tuple[str, str | None, str | None]]
                 ) -> tuple[str, str | None]:
    """The job state implied by its machines' `(state, vm_name, error)`.

    All machines finished: any failed → failed (with their errors), else any
    canceled → canceled, else succeeded. Otherwise running once any machine has
    left `queued`.
    """
    if current in TERMINAL or not machines:
        return current, None
    states = [m[0] for m in machines]
    if all(s in TERMINAL for s in states):
        failed = [m for m in machines if m[0] == "failed"]
        if failed:
            detail = "; ".join(f"{name or '?'}: {err or 'failed'}" for _, name, err in failed)
            msg = f"{len(failed)} of {len(machines)} VMs failed: {detail}"
            return JobState.FAILED, msg[:_MAX_ERROR]
        if "canceled" in states:
            return JobState.CANCELED, None
        return JobState.SUCCEEDED, None
    if any(s != "queued" for s in states):
        return JobState.RUNNING, None
    return current, None


def _secs(seconds: float) -> float:
    if seconds <= 0:
        raise Invalid(f"lease must be positive, got {seconds}")
    return float(seconds)


class JobRepository(Repository):

    # -- creation and reads ----------------------------------------------------

    @wrap_errors
    async def create(self, kind: str, machines: Sequence[NewMachine], *,
                     request: Mapping[str, Any] | None = None, created_by: str | None = None,
                     job_id: uuid.UUID | None = None) -> Job:
        """A queued job with one queued machine per VM, in one transaction."""
        kind = parse_enum(JobKind, kind, "job kind")
        if not machines:
            raise Invalid("a job needs at least one VM")
        async with self._transaction() as c:
            job = await c.fetchrow(
                "INSERT INTO jobs (id, kind, request, created_by) "
                "VALUES (coalesce($1, gen_random_uuid()), $2, $3, $4) RETURNING *",
                job_id, kind.value, dict(request or {}), created_by)
            rows = []
            for m in machines:
                rows.append(await c.fetchrow(
                    "INSERT INTO machines (job_id, kind, vm_id, vm_name, context, backup_id) "
                    "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                    job["id"], kind.value, m.vm_id, m.vm_name, dict(m.context), m.backup_id))
        return Job.from_record(job, machines=tuple(Machine.from_record(r) for r in rows))

    @wrap_errors
    async def get(self, job_id: uuid.UUID, *, with_machines: bool = True) -> Job:
        row = await self._db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        if row is None:
            raise NotFound("job", job_id)
        return (await self._attach([row], with_machines))[0]

    @wrap_errors
    async def list(self, *, kind: str | None = None, state: str | Iterable[str] | None = None,
                   vm_id: str | None = None, created_by: str | None = None,
                   created_after: datetime | None = None, created_before: datetime | None = None,
                   limit: int = 50, cursor: str | None = None,
                   with_machines: bool = True,
                   only_vms: Iterable[str] | None = None) -> Page[Job]:
        """Newest first; keyset pagination through `Page.next_cursor`.
        `only_vms`: jobs that have VMs, every one in this set (what a restricted user sees)."""
        check_limit(limit)
        w = Where()
        if kind is not None:
            w.add("j.kind = {}", kind)
        if state is not None:
            w.add("j.state = ANY({}::text[])", [state] if isinstance(state, str) else list(state))
        if vm_id is not None:
            w.add("EXISTS (SELECT 1 FROM machines m WHERE m.job_id = j.id AND m.vm_id = {})", vm_id)
        if only_vms is not None:
            w.add("EXISTS (SELECT 1 FROM machines m WHERE m.job_id = j.id)")
            w.add("NOT EXISTS (SELECT 1 FROM machines m WHERE m.job_id = j.id "
                  "AND NOT lower(m.vm_id) = ANY({}::text[]))", [x.lower() for x in only_vms])
        if created_by is not None:
            w.add("j.created_by = {}", created_by)
        if created_after is not None:
            w.add("j.created_at >= {}", created_after)
        if created_before is not None:
            w.add("j.created_at < {}", created_before)
        w.keyset(cursor, "j")
        rows = await self._db.fetch(
            f"SELECT j.* FROM jobs j {w.sql()} ORDER BY j.created_at DESC, j.id DESC "
            f"LIMIT {limit + 1}", *w.args)
        more = len(rows) > limit
        rows = rows[:limit]
        jobs = await self._attach(rows, with_machines)
        nxt = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return Page(tuple(jobs), nxt)

    async def _attach(self, rows: Sequence[asyncpg.Record], with_machines: bool) -> list[Job]:
        if not with_machines or not rows:
            return [Job.from_record(r) for r in rows]
        ms = await self._db.fetch(
            "SELECT * FROM machines WHERE job_id = ANY($1::uuid[]) ORDER BY created_at, vm_id",
            [r["id"] for r in rows])
        by_job: dict[Any, list[Machine]] = {}
        for m in ms:
            by_job.setdefault(m["job_id"], []).append(Machine.from_record(m))
        return [Job.from_record(r, machines=tuple(by_job.get(r["id"], ()))) for r in rows]

    # -- statistics (metrics) --------------------------------------------------

    @wrap_errors
    async def count_by_state(self) -> dict[tuple[str, str], int]:
        """(kind, state) -> number of jobs."""
        rows = await self._db.fetch("SELECT kind, state, count(*) AS n FROM jobs GROUP BY kind, state")
        return {(r["kind"], r["state"]): r["n"] for r in rows}

    @wrap_errors
    async def duration_histogram(self, buckets: Sequence[float]
                                 ) -> dict[tuple[str, str], tuple[list[int], float, int]]:
        """(kind, state) -> (cumulative counts per bucket upper bound in seconds,
        sum of durations, count) over finished jobs."""
        cols = ", ".join(f"count(*) FILTER (WHERE d <= {float(b)!r}) AS b{i}"
                         for i, b in enumerate(buckets))
        rows = await self._db.fetch(
            f"SELECT kind, state, count(*) AS n, coalesce(sum(d), 0) AS total, {cols} FROM ("
            "  SELECT kind, state, extract(epoch FROM finished_at - started_at)::float8 AS d FROM jobs"
            "   WHERE finished_at IS NOT NULL AND started_at IS NOT NULL) x GROUP BY kind, state")
        return {(r["kind"], r["state"]): ([r[f"b{i}"] for i in range(len(buckets))], float(r["total"]),
                                          r["n"]) for r in rows}

    # -- leases ----------------------------------------------------------------

    @wrap_errors
    async def claim(self, owner: str, *, lease_seconds: float, limit: int = 1,
                    kinds: Iterable[str] | None = None) -> list[Job]:
        """Take up to `limit` queued jobs, or running jobs whose lease expired.

        Claimed jobs become `running` with `lease_owner=owner`. Two replicas
        claiming at once never get the same job: the inner SELECT locks the
        rows it picks and skips rows another claimer has locked, and a row that
        changed meanwhile is re-checked against the WHERE clause.
        """
        check_limit(limit)
        kinds_arr = (None if kinds is None
                     else [parse_enum(JobKind, k, "job kind").value for k in kinds])
        rows = await self._db.fetch(
            """
            UPDATE jobs j
               SET state = 'running',
                   lease_owner = $1,
                   lease_expires_at = now() + make_interval(secs => $2),
                   started_at = coalesce(j.started_at, now()),
                   updated_at = now(),
                   attempts = j.attempts + 1
              FROM (SELECT id FROM jobs
                     WHERE state IN ('queued', 'running')
                       AND (lease_expires_at IS NULL OR lease_expires_at <= now())
                       AND ($4::text[] IS NULL OR kind = ANY($4::text[]))
                     ORDER BY created_at, id
                     LIMIT $3
                       FOR UPDATE SKIP LOCKED) c
             WHERE j.id = c.id
            RETURNING j.*
            """, owner, _secs(lease_seconds), limit, kinds_arr)
        rows = sorted(rows, key=lambda r: (r["created_at"], str(r["id"])))
        return await self._attach(rows, True)

    @wrap_errors
    async def renew_lease(self, job_id: uuid.UUID, owner: str, *,
                          lease_seconds: float) -> Job | None:
        """Extend the lease if `owner` still holds it; None if it was lost.

        The returned job carries `cancel_requested`, so the heartbeat is also
        how a runner learns of a cancel made on another replica.
        """
        row = await self._db.fetchrow(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3) "
            "WHERE id = $1 AND lease_owner = $2 RETURNING *",
            job_id, owner, _secs(lease_seconds))
        return None if row is None else Job.from_record(row)

    @wrap_errors
    async def renew_leases(self, owner: str, job_ids: Iterable[uuid.UUID], *,
                           lease_seconds: float) -> set[uuid.UUID]:
        """Heartbeat for many jobs in one statement; returns those still held."""
        rows = await self._db.fetch(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3) "
            "WHERE id = ANY($1::uuid[]) AND lease_owner = $2 RETURNING id",
            list(job_ids), owner, _secs(lease_seconds))
        return {uuid.UUID(str(r["id"])) for r in rows}

    @wrap_errors
    async def release(self, job_id: uuid.UUID, owner: str) -> bool:
        """Give the lease up (graceful shutdown): another replica may claim at once."""
        status = await self._db.execute(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, updated_at = now() "
            "WHERE id = $1 AND lease_owner = $2", job_id, owner)
        return status == "UPDATE 1"

    # -- state -----------------------------------------------------------------

    @wrap_errors
    async def rollup(self, job_id: uuid.UUID) -> Job:
        """Set the job's state from its machines; a finished job drops its lease."""
        async with self._transaction() as c:
            job = await c.fetchrow("SELECT * FROM jobs WHERE id = $1 FOR UPDATE", job_id)
            if job is None:
                raise NotFound("job", job_id)
            ms = await c.fetch(
                "SELECT * FROM machines WHERE job_id = $1 ORDER BY created_at, vm_id", job_id)
            new, error = rollup_state(job["state"], [(m["state"], m["vm_name"] or m["vm_id"],
                                                      m["error"]) for m in ms])
            if new != job["state"]:
                job = await c.fetchrow(
                    f"""
                    UPDATE jobs SET state = $2, error = coalesce($3, error), updated_at = now(),
                           finished_at = CASE WHEN $2 IN {TERMINAL_SQL} THEN now() END,
                           lease_owner = CASE WHEN $2 IN {TERMINAL_SQL} THEN NULL
                                              ELSE lease_owner END,
                           lease_expires_at = CASE WHEN $2 IN {TERMINAL_SQL} THEN NULL
                                                   ELSE lease_expires_at END
                     WHERE id = $1 RETURNING *
                    """, job_id, str(new), error)
                if job["state"] in TERMINAL:
                    await _ended(c, job_id, job["kind"], job["state"], job["error"])
            return Job.from_record(job, machines=tuple(Machine.from_record(m) for m in ms))

    @wrap_errors
    async def request_cancel(self, job_id: uuid.UUID) -> Job:
        """Ask for a cancel. A queued job nobody holds is canceled outright;
        a running one gets `cancel_requested` for its owner to act on
        (machines go through `cleanup`). Canceling a canceled job is a no-op;
        a job that already succeeded or failed is a `Conflict`."""
        async with self._transaction() as c:
            job = await c.fetchrow("SELECT * FROM jobs WHERE id = $1 FOR UPDATE", job_id)
            if job is None:
                raise NotFound("job", job_id)
            if job["state"] in ("succeeded", "failed"):
                raise Conflict(f"job {job_id} already {job['state']}", job_id=job_id)
            if job["state"] == "queued" and job["lease_owner"] is None:
                await c.execute(
                    "UPDATE machines SET state = 'canceled', version = version + 1, "
                    "finished_at = now(), updated_at = now() "
                    f"WHERE job_id = $1 AND state NOT IN {TERMINAL_SQL}", job_id)
                await c.execute(
                    "UPDATE jobs SET state = 'canceled', cancel_requested = true, "
                    "finished_at = now(), updated_at = now() WHERE id = $1", job_id)
                await _ended(c, job_id, job["kind"], "canceled", None)
            elif job["state"] != "canceled":
                await c.execute(
                    "UPDATE jobs SET cancel_requested = true, updated_at = now() WHERE id = $1",
                    job_id)
        return await self.get(job_id)

    @wrap_errors
    async def fail(self, job_id: uuid.UUID, error: str) -> Job:
        """Give up on a job (e.g. it keeps killing its owner): the job and every
        unfinished machine become `failed` with `error`. Resources the machines
        recorded stay in place for an operator or a cleanup pass to see."""
        async with self._transaction() as c:
            job = await c.fetchrow("SELECT state, kind FROM jobs WHERE id = $1 FOR UPDATE", job_id)
            if job is None:
                raise NotFound("job", job_id)
            if job["state"] not in TERMINAL:
                await _ended(c, job_id, job["kind"], "failed", error[:_MAX_ERROR])
                await c.execute(
                    "UPDATE machines SET state = 'failed', version = version + 1, error = $2, "
                    "finished_at = now(), updated_at = now() "
                    f"WHERE job_id = $1 AND state NOT IN {TERMINAL_SQL}", job_id, error)
                await c.execute(
                    "UPDATE jobs SET state = 'failed', error = $2, finished_at = now(), "
                    "updated_at = now(), lease_owner = NULL, lease_expires_at = NULL "
                    "WHERE id = $1", job_id, error[:_MAX_ERROR])
        return await self.get(job_id)

    # -- machines ----------------------------------------------------------------

    @wrap_errors
    async def get_machine(self, machine_id: uuid.UUID) -> Machine:
        row = await self._db.fetchrow("SELECT * FROM machines WHERE id = $1", machine_id)
        if row is None:
            raise NotFound("machine", machine_id)
        return Machine.from_record(row)

    @wrap_errors
    async def transition(self, machine_id: uuid.UUID, *, from_state: str, to_state: str,
                         version: int, error: str | None = None, owner: str | None = None,
                         event: tuple[str, Mapping[str, Any]] | None = None) -> Machine | None:
        """Compare-and-swap the machine's state; None if another writer won.

        Wins only if the row is still in `from_state` at `version` (and, with
        `owner`, only while that owner holds an unexpired lease on the job).
        The winner gets the new row, whose `version` is `version + 1`.
        `event` (type, payload) is appended to the event log in the same
        transaction, only when the swap wins.
        """
        if from_state in TERMINAL:
            raise Invalid(f"machine {machine_id} is {from_state}: a finished machine never moves")
        if not any(to_state in states for states in MACHINE_STATES.values()):
            raise Invalid(f"unknown machine state {to_state!r}")
        async with self._transaction() as c:
            row = await self._swap(c, machine_id, from_state, to_state, version, error, owner)
            if row is not None and event is not None:
                from .events import EventRepository  # same transaction, other aggregate
                await EventRepository(c).append(event[0], event[1], job_id=row["job_id"])
        return None if row is None else Machine.from_record(row)

    @staticmethod
    async def _swap(c, machine_id, from_state, to_state, version, error, owner):
        return await c.fetchrow(
            f"""
            UPDATE machines m
               SET state = $2, version = m.version + 1, updated_at = now(),
                   started_at = CASE WHEN m.started_at IS NULL AND $2 <> 'queued'
                                     THEN now() ELSE m.started_at END,
                   finished_at = CASE WHEN $2 IN {TERMINAL_SQL} THEN now() END,
                   error = coalesce($5, m.error)
             WHERE m.id = $1 AND m.state = $3 AND m.version = $4
               AND ($6::text IS NULL OR EXISTS (
                       SELECT 1 FROM jobs j WHERE j.id = m.job_id AND j.lease_owner = $6
                                              AND j.lease_expires_at > now()))
            RETURNING m.*
            """, machine_id, to_state, from_state, version, error, owner)

    async def _patch(self, column: str, machine_id: uuid.UUID, patch: Mapping[str, Any],
                     owner: str | None) -> Machine:
        row = await self._db.fetchrow(
            f"""
            UPDATE machines m
               SET {column} = ovault_merge_patch(m.{column}, $2::jsonb), updated_at = now()
             WHERE m.id = $1
               AND ($3::text IS NULL OR EXISTS (
                       SELECT 1 FROM jobs j WHERE j.id = m.job_id AND j.lease_owner = $3
                                              AND j.lease_expires_at > now()))
            RETURNING m.*
            """, machine_id, dict(patch), owner)
        if row is None:
            await self.get_machine(machine_id)  # NotFound if it is missing
            raise LeaseLost(job_id=None, owner=owner)
        return Machine.from_record(row)

    @wrap_errors
    async def record_resources(self, machine_id: uuid.UUID, patch: Mapping[str, Any], *,
                               owner: str | None = None) -> Machine:
        """Merge `patch` (RFC 7386: nested objects merge, null removes a key) into
        what the machine has created in the engine. Call it before an engine call
        (intent, e.g. {"snapshot": {"description": …}}) and after (the id), so a
        resuming replica can find or undo it. Does not change `version`."""
        return await self._patch("resources", machine_id, patch, owner)

    @wrap_errors
    async def update_context(self, machine_id: uuid.UUID, patch: Mapping[str, Any], *,
                             owner: str | None = None) -> Machine:
        """Merge `patch` into the machine's step context (same rules as resources)."""
        return await self._patch("context", machine_id, patch, owner)

    @wrap_errors
    async def update_progress(self, machine_id: uuid.UUID, *, bytes_done: int,
                              bytes_total: int | None = None,
                              disks: Mapping[str, Any] | None = None) -> None:
        """Progress counters, and a merge patch of per-disk progress."""
        status = await self._db.execute(
            "UPDATE machines SET bytes_done = $2, bytes_total = coalesce($3, bytes_total), "
            "disks = CASE WHEN $4::jsonb IS NULL THEN disks "
            "             ELSE ovault_merge_patch(disks, $4::jsonb) END, updated_at = now() "
            "WHERE id = $1",
            machine_id, bytes_done, bytes_total, None if disks is None else dict(disks))
        if status != "UPDATE 1":
            raise NotFound("machine", machine_id)

    @wrap_errors
    async def set_backup(self, machine_id: uuid.UUID, backup_id: uuid.UUID) -> None:
        """Link a backup machine to the backup row it produces."""
        status = await self._db.execute(
            "UPDATE machines SET backup_id = $2, updated_at = now() WHERE id = $1",
            machine_id, backup_id)
        if status != "UPDATE 1":
            raise NotFound("machine", machine_id)
