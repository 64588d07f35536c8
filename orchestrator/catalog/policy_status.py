"""The catalog's maintenance claims (daily gc, weekly verify, the summary), the
per-VM protection log and the figures the metrics, the summary mail and the
scheduler's window checks read: the policy repository's reporting half
(catalog/policies.py holds policies, ticks, bare jobs and two-step deletion).
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Mapping, Sequence

from .errors import wrap_errors


class PolicyStatusQueries:
    """Mixed into `PolicyRepository` (``self._db``): one repository to callers."""

    @wrap_errors
    async def claim_maintenance(self, task: str, fire_at: datetime, replica: str, *,
                                lease_seconds: float = 600.0) -> bool:
        """True for the one caller that gets the task. A claim whose holder never
        finished it (killed) can be taken again after `lease_seconds`: the work
        runs at least once, and exactly once unless a replica dies during it."""
        row = await self._db.fetchrow(
            "INSERT INTO maintenance_ticks (task, fire_at, replica) VALUES ($1, $2, $3) "
            "ON CONFLICT (task, fire_at) DO UPDATE SET replica = EXCLUDED.replica, "
            "       created_at = now() "
            "   WHERE maintenance_ticks.finished_at IS NULL "
            "     AND maintenance_ticks.created_at < now() - make_interval(secs => $4) "
            "RETURNING task", task, fire_at, replica, lease_seconds)
        return row is not None

    @wrap_errors
    async def finish_maintenance(self, task: str, fire_at: datetime,
                                 result: Mapping[str, Any]) -> None:
        await self._db.execute(
            "UPDATE maintenance_ticks SET result = $3, finished_at = now() "
            "WHERE task = $1 AND fire_at = $2", task, fire_at, dict(result))

    @wrap_errors
    async def backup_policy(self, backup_id: uuid.UUID) -> uuid.UUID | None:
        """The policy whose run made a backup (None: a manual backup, or the policy
        is gone)."""
        return await self._db.fetchval(
            "SELECT j.policy_id FROM backups b JOIN jobs j ON j.id = b.job_id WHERE b.id = $1",
            backup_id)

    @wrap_errors
    async def last_maintenance(self, task: str) -> Mapping[str, Any] | None:
        row = await self._db.fetchrow(
            "SELECT * FROM maintenance_ticks WHERE task = $1 ORDER BY fire_at DESC LIMIT 1", task)
        return None if row is None else dict(row)

    @wrap_errors
    async def record_protection(self, vm_id: str, status: str,
                                policy_id: uuid.UUID | None) -> str | None:
        """Store a VM's protection status; the previous status when it changed
        ('' for a VM seen for the first time), None when it did not change. Two
        replicas recording the same change at once: one of them gets it."""
        row = await self._db.fetchrow(
            "WITH prev AS (SELECT status FROM vm_protection WHERE vm_id = $1) "
            "INSERT INTO vm_protection (vm_id, status, policy_id) VALUES ($1, $2, $3) "
            "ON CONFLICT (vm_id) DO UPDATE SET status = EXCLUDED.status, "
            "       policy_id = EXCLUDED.policy_id, changed_at = now() "
            "   WHERE vm_protection.status <> EXCLUDED.status "
            "RETURNING coalesce((SELECT status FROM prev), '') AS previous",
            vm_id, status, policy_id)
        return None if row is None else row["previous"]

    @wrap_errors
    async def runs_summary(self, since: datetime) -> Sequence[Mapping[str, Any]]:
        """Policy jobs since `since`: counts per policy and state (daily summary)."""
        rows = await self._db.fetch(
            "SELECT p.name, j.state, count(*) AS n FROM jobs j JOIN policies p "
            "ON p.id = j.policy_id WHERE j.created_at >= $1 GROUP BY p.name, j.state "
            "ORDER BY p.name, j.state", since)
        return [dict(r) for r in rows]

    @wrap_errors
    async def metrics_snapshot(self) -> tuple[list[tuple[str, str | None, str, datetime | None]],
                                              dict[str, int], dict[tuple[str, str], int]]:
        """What /metrics shows of policies: per member VM (vm_id, vm name, policy,
        newest success), VMs per protection status, ended policy jobs per state."""
        rows = await self._db.fetch(
            "SELECT vp.vm_id, p.name AS policy, b.vm_name, b.created_at FROM vm_protection vp "
            "JOIN policies p ON p.id = vp.policy_id "
            "LEFT JOIN LATERAL (SELECT vm_name, created_at FROM backups x WHERE x.vm_id = vp.vm_id "
            "  AND x.status = 'succeeded' ORDER BY created_at DESC LIMIT 1) b ON true "
            "ORDER BY vp.vm_id")
        last = [(r["vm_id"], r["vm_name"], r["policy"], r["created_at"]) for r in rows]
        status = {r["status"]: r["n"] for r in await self._db.fetch(
            "SELECT status, count(*) AS n FROM vm_protection GROUP BY status")}
        runs = {(r["name"], r["state"]): r["n"] for r in await self._db.fetch(
            "SELECT p.name, j.state, count(*) AS n FROM jobs j JOIN policies p "
            "ON p.id = j.policy_id WHERE j.state IN ('succeeded', 'failed', 'canceled') "
            "GROUP BY p.name, j.state")}
        return last, status, runs

    @wrap_errors
    async def damaged_count(self) -> int:
        """Backups verify found damaged (and not deleted): what no restore should trust."""
        return await self._db.fetchval(
            "SELECT count(*) FROM backups WHERE damaged AND status = 'succeeded'")

    @wrap_errors
    async def backups_in_flight(self) -> int:
        """Backup jobs queued or running (garbage collection waits for none)."""
        return await self._db.fetchval(
            "SELECT count(*) FROM jobs WHERE kind = 'backup' AND state IN ('queued', 'running')")

    @wrap_errors
    async def runs_past_window(self, now: datetime) -> list[Mapping[str, Any]]:
        """Fired ticks whose job is still queued after the policy's window."""
        rows = await self._db.fetch(
            "SELECT t.id, t.job_id, t.fire_at, p.window_minutes, p.name FROM policy_ticks t "
            "JOIN policies p ON p.id = t.policy_id JOIN jobs j ON j.id = t.job_id "
            "WHERE t.status IN ('fired', 'late') AND j.state = 'queued' "
            "AND t.fire_at + make_interval(mins => p.window_minutes) < $1", now)
        return [dict(r) for r in rows]

    @wrap_errors
    async def finished_runs(self, *, limit: int = 50) -> list[Mapping[str, Any]]:
        """Policy backup jobs that ended in the last day and whose follow-up (prune
        job, policy.run.finished) nobody has claimed yet, or whose claim expired."""
        rows = await self._db.fetch(
            "SELECT j.id, j.state, j.finished_at, j.policy_id FROM jobs j "
            "WHERE j.policy_id IS NOT NULL AND j.kind = 'backup' AND j.finished_at IS NOT NULL "
            "AND j.finished_at > now() - interval '1 day' AND NOT EXISTS ("
            "  SELECT 1 FROM maintenance_ticks m WHERE m.task = 'prune:' || j.id::text "
            "  AND (m.finished_at IS NOT NULL OR m.created_at > now() - interval '10 minutes')) "
            "ORDER BY j.finished_at LIMIT $1", limit)
        return [dict(r) for r in rows]

    @wrap_errors
    async def vms_with_status(self, status: str) -> list[str]:
        rows = await self._db.fetch(
            "SELECT vm_id FROM vm_protection WHERE status = $1 ORDER BY vm_id", status)
        return [r["vm_id"] for r in rows]
