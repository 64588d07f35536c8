"""Policies, their schedule ticks, bare jobs, protected backups and two-step deletion
(maintenance claims and the protection log: catalog/policy_status.py).

Which lock guards what:

| operation                 | guard                                                    |
|---------------------------|----------------------------------------------------------|
| fire a tick               | `UNIQUE (policy_id, fire_at)`: INSERT … ON CONFLICT DO   |
|                           | NOTHING; only the replica that gets the row back runs it |
| advance the cursor        | `scheduled_through = greatest(old, new)`: never backwards|
| daily maintenance         | primary key (task, fire_at), same rule                   |
| protection status change  | upsert that only returns a row when the status changed   |

The repository speaks in plain values (the API validates policies with
`orchestrator.policies.spec` before they reach it).
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

from .db import Repository
from .errors import Conflict, Invalid, NotFound, wrap_errors
from .models import Job, _from_record
from .policy_status import PolicyStatusQueries

__all__ = ["Policy", "Tick", "PolicyRepository", "TICK_STATUSES"]

TICK_STATUSES = ("fired", "late", "missed", "skipped")
_COLUMNS = ("name", "schedule", "timezone", "retention", "vm_ids", "rules", "window_minutes",
            "full_every_days", "target_id", "enabled", "notify")
_LIVE = "('queued', 'running')"
_BARE_KINDS = ("prune", "gc", "verify")


@dataclass(frozen=True)
class Policy:
    id: uuid.UUID
    name: str
    schedule: str
    timezone: str
    retention: dict
    vm_ids: tuple[str, ...]
    rules: dict
    window_minutes: int
    full_every_days: int | None
    target_id: uuid.UUID | None
    enabled: bool
    notify: dict
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    scheduled_through: datetime

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "Policy":
        p = _from_record(cls, rec)
        return _replace(p, vm_ids=tuple(rec["vm_ids"] or ()),
                        target_id=None if rec["target_id"] is None else uuid.UUID(str(rec["target_id"])))

    def fields(self) -> dict[str, Any]:
        """The user-settable fields, as `create`/`update` take them."""
        return {k: getattr(self, k) for k in _COLUMNS}


@dataclass(frozen=True)
class Tick:
    id: int
    policy_id: uuid.UUID
    fire_at: datetime
    status: str
    reason: str | None
    job_id: uuid.UUID | None
    replica: str | None
    details: dict = field(default_factory=dict)
    created_at: datetime | None = None

    from_record = classmethod(_from_record)


def _replace(obj, **kw):
    return dataclasses.replace(obj, **kw)


def _values(fields: Mapping[str, Any]) -> list[Any]:
    unknown = set(fields) - set(_COLUMNS)
    if unknown:
        raise Invalid(f"unknown policy fields: {', '.join(sorted(unknown))}")
    out = []
    for k in _COLUMNS:
        v = fields.get(k)
        if k in ("retention", "rules", "notify"):
            v = dict(v or {})
        elif k == "vm_ids":
            v = list(v or ())
        out.append(v)
    return out


class PolicyRepository(PolicyStatusQueries, Repository):

    # -- policies ------------------------------------------------------------------------

    @wrap_errors
    async def create(self, fields: Mapping[str, Any], *, created_by: str | None = None,
                     policy_id: uuid.UUID | None = None,
                     scheduled_through: datetime | None = None) -> Policy:
        """A duplicate name is a `Conflict`. The scheduler starts from
        `scheduled_through` (default: now), so a new policy never fires for the past."""
        if not fields.get("name") or not fields.get("schedule") or not fields.get("timezone"):
            raise Invalid("a policy needs a name, a schedule and a timezone")
        cols = ", ".join(_COLUMNS)
        marks = ", ".join(f"${i}" for i in range(4, 4 + len(_COLUMNS)))
        row = await self._db.fetchrow(
            f"INSERT INTO policies (id, created_by, scheduled_through, {cols}) "
            f"VALUES (coalesce($1, gen_random_uuid()), $2, coalesce($3, now()), {marks}) "
            f"RETURNING *", policy_id, created_by, scheduled_through,
            *_values({"enabled": True, "window_minutes": 60, **fields}))
        return Policy.from_record(row)

    @wrap_errors
    async def get(self, policy_id: uuid.UUID) -> Policy:
        row = await self._db.fetchrow("SELECT * FROM policies WHERE id = $1", policy_id)
        if row is None:
            raise NotFound("policy", policy_id)
        return Policy.from_record(row)

    @wrap_errors
    async def get_by_name(self, name: str) -> Policy:
        row = await self._db.fetchrow("SELECT * FROM policies WHERE name = $1", name)
        if row is None:
            raise NotFound("policy", name)
        return Policy.from_record(row)

    @wrap_errors
    async def list(self, *, enabled: bool | None = None) -> list[Policy]:
        rows = await self._db.fetch(
            "SELECT * FROM policies WHERE ($1::boolean IS NULL OR enabled = $1) ORDER BY name",
            enabled)
        return [Policy.from_record(r) for r in rows]

    @wrap_errors
    async def update(self, policy_id: uuid.UUID, fields: Mapping[str, Any]) -> Policy:
        """Replace the user-settable fields (pass them all: `Policy.fields()` merged
        with the change). A schedule change does not fire the past: the cursor
        moves to now if it was behind."""
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(_COLUMNS, start=2))
        row = await self._db.fetchrow(
            f"UPDATE policies SET {sets}, updated_at = now(), "
            f"scheduled_through = greatest(scheduled_through, now()) "
            f"WHERE id = $1 RETURNING *", policy_id, *_values(fields))
        if row is None:
            raise NotFound("policy", policy_id)
        return Policy.from_record(row)

    @wrap_errors
    async def delete(self, policy_id: uuid.UUID) -> None:
        """The policy's backups and jobs stay (their policy_id becomes NULL)."""
        status = await self._db.execute("DELETE FROM policies WHERE id = $1", policy_id)
        if status != "DELETE 1":
            raise NotFound("policy", policy_id)

    # -- the scheduler's ticks -----------------------------------------------------------

    @wrap_errors
    async def claim_tick(self, policy_id: uuid.UUID, fire_at: datetime, *, status: str,
                         replica: str, reason: str | None = None,
                         details: Mapping[str, Any] | None = None) -> Tick | None:
        """Record the tick at `fire_at`; the row if this call created it, None if
        another replica (or an earlier pass) already did."""
        if status not in TICK_STATUSES:
            raise Invalid(f"tick status must be one of {', '.join(TICK_STATUSES)}")
        row = await self._db.fetchrow(
            "INSERT INTO policy_ticks (policy_id, fire_at, status, reason, replica, details) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (policy_id, fire_at) DO NOTHING "
            "RETURNING *", policy_id, fire_at, status, reason, replica, dict(details or {}))
        return None if row is None else Tick.from_record(row)

    @wrap_errors
    async def finish_tick(self, tick_id: int, *, status: str | None = None,
                          reason: str | None = None, job_id: uuid.UUID | None = None,
                          details: Mapping[str, Any] | None = None) -> Tick:
        row = await self._db.fetchrow(
            "UPDATE policy_ticks SET status = coalesce($2, status), "
            "       reason = coalesce($3, reason), job_id = coalesce($4, job_id), "
            "       details = details || coalesce($5, '{}'::jsonb) "
            "WHERE id = $1 RETURNING *", tick_id, status, reason, job_id,
            None if details is None else dict(details))
        if row is None:
            raise NotFound("tick", tick_id)
        return Tick.from_record(row)

    @wrap_errors
    async def advance(self, policy_id: uuid.UUID, through: datetime) -> None:
        await self._db.execute(
            "UPDATE policies SET scheduled_through = greatest(scheduled_through, $2) "
            "WHERE id = $1", policy_id, through)

    @wrap_errors
    async def ticks(self, policy_id: uuid.UUID, *, limit: int = 50) -> list[Tick]:
        rows = await self._db.fetch(
            "SELECT * FROM policy_ticks WHERE policy_id = $1 ORDER BY fire_at DESC LIMIT $2",
            policy_id, limit)
        return [Tick.from_record(r) for r in rows]

    # -- jobs without machines (prune, gc) -------------------------------------------------

    @wrap_errors
    async def create_job(self, kind: str, request: Mapping[str, Any], *,
                         created_by: str | None = None,
                         policy_id: uuid.UUID | None = None) -> Job:
        """A queued `prune` or `gc` job (no VM machines; a handler registered with the
        job runner runs it), with its `job.queued` event."""
        if kind not in _BARE_KINDS:
            raise Invalid(f"only {', '.join(_BARE_KINDS)} jobs have no machines, not {kind!r}")
        async with self._transaction() as c:
            row = await c.fetchrow(
                "INSERT INTO jobs (kind, request, created_by, policy_id) VALUES ($1, $2, $3, $4) "
                "RETURNING *", kind, dict(request), created_by, policy_id)
            from .events import EventRepository
            await EventRepository(c).append("job.queued", {"job_id": str(row["id"]), "kind": kind},
                                            job_id=row["id"])
        return Job.from_record(row)

    @wrap_errors
    async def end_job(self, job_id: uuid.UUID, state: str, *, error: str | None = None,
                      result: Mapping[str, Any] | None = None) -> Job | None:
        """End a machine-less job with its `job.<state>` event, in one transaction
        (`result` merges into what progress wrote); None if it had already ended."""
        if state not in ("succeeded", "failed", "canceled"):
            raise Invalid(f"a job ends succeeded, failed or canceled, not {state!r}")
        async with self._transaction() as c:
            row = await c.fetchrow(
                "UPDATE jobs SET state = $2, error = $3, "
                "       result = CASE WHEN $4::jsonb IS NULL THEN result "
                "                     ELSE coalesce(result, '{}'::jsonb) || $4::jsonb END, "
                "       updated_at = now(), "
                "       finished_at = now(), started_at = coalesce(started_at, now()), "
                "       lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = $1 AND state IN ('queued', 'running') RETURNING *",
                job_id, state, error, None if result is None else dict(result))
            if row is None:
                return None
            from .events import EventRepository
            await EventRepository(c).append(
                f"job.{state}", {"job_id": str(job_id), "kind": row["kind"], "state": state,
                                 "error": error, "result": dict(result or {})}, job_id=job_id)
        return Job.from_record(row)

    @wrap_errors
    async def job_progress(self, job_id: uuid.UUID, done: int, total: int) -> None:
        """A running machine-less job's progress, in `result.progress`."""
        await self._db.execute(
            "UPDATE jobs SET result = coalesce(result, '{}'::jsonb) || "
            "       jsonb_build_object('progress', jsonb_build_object('done', $2::int, "
            "                                                         'total', $3::int)), "
            "       updated_at = now() WHERE id = $1 AND state IN ('queued', 'running')",
            job_id, done, total)

    # -- jobs, VMs, backups as policies see them ------------------------------------------

    @wrap_errors
    async def tag_job(self, job_id: uuid.UUID, policy_id: uuid.UUID) -> None:
        await self._db.execute("UPDATE jobs SET policy_id = $2 WHERE id = $1", job_id, policy_id)

    @wrap_errors
    async def job_policy(self, job_id: uuid.UUID) -> uuid.UUID | None:
        v = await self._db.fetchval("SELECT policy_id FROM jobs WHERE id = $1", job_id)
        return None if v is None else uuid.UUID(str(v))

    @wrap_errors
    async def busy_vms(self, vm_ids: Iterable[str]) -> dict[str, tuple[uuid.UUID, str]]:
        """VMs that a live job (queued or running) still holds: vm_id → (job_id, kind)."""
        rows = await self._db.fetch(
            f"SELECT DISTINCT ON (m.vm_id) m.vm_id, j.id, j.kind FROM machines m "
            f"JOIN jobs j ON j.id = m.job_id WHERE m.vm_id = ANY($1::text[]) "
            f"AND j.state IN {_LIVE} AND m.state NOT IN ('succeeded', 'failed', 'canceled') "
            f"ORDER BY m.vm_id, j.created_at", list(vm_ids))
        return {r["vm_id"]: (uuid.UUID(str(r["id"])), r["kind"]) for r in rows}

    @wrap_errors
    async def last_full_many(self, vm_ids: Iterable[str]) -> dict[str, datetime]:
        """When each VM's newest succeeded full backup was taken."""
        rows = await self._db.fetch(
            "SELECT vm_id, max(created_at) AS at FROM backups WHERE vm_id = ANY($1::text[]) "
            "AND status = 'succeeded' AND mode = 'full' GROUP BY vm_id", list(vm_ids))
        return {r["vm_id"]: r["at"] for r in rows}

    @wrap_errors
    async def retention_items(self, vm_id: str) -> list[Mapping[str, Any]]:
        """Every backup of a VM retention decides on (deleted/deleting ones excluded)."""
        rows = await self._db.fetch(
            "SELECT id, vm_id, vm_name, status, protected, created_at, mode, target_id "
            "FROM backups WHERE vm_id = $1 AND status IN ('running', 'succeeded', 'failed') "
            "ORDER BY created_at DESC, id DESC", vm_id)
        return [dict(r) for r in rows]

    @wrap_errors
    async def last_success_brief(self, vm_ids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        """Per VM, its newest succeeded backup's id, created_at, mode and method (the
        VM list's columns and protection status: one light query, no disks)."""
        rows = await self._db.fetch(
            "SELECT DISTINCT ON (vm_id) vm_id, id, created_at, mode, method FROM backups "
            "WHERE vm_id = ANY($1::text[]) AND status = 'succeeded' "
            "ORDER BY vm_id, created_at DESC, id DESC", list(vm_ids))
        return {r["vm_id"]: dict(r) for r in rows}

    @wrap_errors
    async def targets_in_use(self) -> list[uuid.UUID]:
        """Every target some (not deleted) backup is on."""
        rows = await self._db.fetch(
            "SELECT DISTINCT target_id FROM backups WHERE target_id IS NOT NULL "
            "AND status <> 'deleted'")
        return [uuid.UUID(str(r["target_id"])) for r in rows]

    @wrap_errors
    async def vms_with_backups(self) -> list[str]:
        rows = await self._db.fetch(
            "SELECT DISTINCT vm_id FROM backups WHERE status IN ('succeeded', 'failed')")
        return [r["vm_id"] for r in rows]

    # -- protected backups and two-step deletion -----------------------------------------

    @wrap_errors
    async def set_protected(self, backup_id: uuid.UUID, protected: bool) -> Mapping[str, Any]:
        row = await self._db.fetchrow(
            "UPDATE backups SET protected = $2 WHERE id = $1 "
            "AND status IN ('running', 'succeeded', 'failed') RETURNING id, vm_id, protected",
            backup_id, protected)
        if row is None:
            status = await self._db.fetchval("SELECT status FROM backups WHERE id = $1",
                                             backup_id)
            if status is None:
                raise NotFound("backup", backup_id)
            raise Conflict(f"backup {backup_id} is {status}", backup_id=backup_id, status=status)
        return dict(row)

    @wrap_errors
    async def protected_ids(self, backup_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        rows = await self._db.fetch(
            "SELECT id FROM backups WHERE id = ANY($1::uuid[]) AND protected", list(backup_ids))
        return {uuid.UUID(str(r["id"])) for r in rows}

    @wrap_errors
    async def mark_deleting(self, backup_id: uuid.UUID) -> Mapping[str, Any]:
        """Step 1 of a deletion: hide the backup. A protected or running backup is a
        `Conflict`; a backup already deleting is returned as is (idempotent)."""
        row = await self._db.fetchrow(
            "UPDATE backups SET status = 'deleting', delete_requested_at = now() "
            "WHERE id = $1 AND status IN ('succeeded', 'failed') AND NOT protected "
            "RETURNING id, vm_id, status, target_id", backup_id)
        if row is not None:
            return dict(row)
        cur = await self._db.fetchrow(
            "SELECT id, vm_id, status, protected, target_id FROM backups WHERE id = $1",
            backup_id)
        if cur is None:
            raise NotFound("backup", backup_id)
        if cur["status"] == "deleting":
            return dict(cur)
        if cur["protected"]:
            raise Conflict(f"backup {backup_id} is protected; unmark it first",
                           backup_id=backup_id, status=cur["status"])
        raise Conflict(f"cannot delete backup {backup_id}: it is {cur['status']}",
                       backup_id=backup_id, status=cur["status"])

    @wrap_errors
    async def finish_deleted(self, backup_id: uuid.UUID) -> bool:
        """Step 2, once the manifest is gone from the target: `deleting` → `deleted`
        (the row stays as history, hidden; children keep their links)."""
        status = await self._db.execute(
            "UPDATE backups SET status = 'deleted' WHERE id = $1 AND status = 'deleting'",
            backup_id)
        return status == "UPDATE 1"

    @wrap_errors
    async def deleting(self, *, limit: int = 100, vm_ids: Iterable[str] | None = None,
                       older_than_seconds: float = 0.0) -> list[Mapping[str, Any]]:
        """Backups whose deletion has not finished (oldest request first)."""
        rows = await self._db.fetch(
            "SELECT id, vm_id, status, target_id, delete_requested_at FROM backups "
            "WHERE status = 'deleting' AND ($2::text[] IS NULL OR vm_id = ANY($2::text[])) "
            "AND delete_requested_at < now() - make_interval(secs => $3) "
            "ORDER BY delete_requested_at LIMIT $1", limit,
            None if vm_ids is None else list(vm_ids), older_than_seconds)
        return [dict(r) for r in rows]
