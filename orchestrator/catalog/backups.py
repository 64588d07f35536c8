"""Backups (one row per VM point in time) and their disks.

A backup row is created `running` when a backup machine starts writing and
becomes `succeeded` only after its manifest is published on the target; it is
soft-deleted (`deleted`) so that history and parent links survive.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from .db import Repository
from .errors import Conflict, NotFound, wrap_errors
from .models import (Backup, BackupDisk, BackupMethod, BackupMode, Consistency, Page,
                     parse_enum)
from .paging import Where, check_limit, encode_cursor

__all__ = ["BackupRepository"]


class BackupRepository(Repository):

    @wrap_errors
    async def create(self, *, vm_id: str, vm_name: str | None, mode: str, method: str,
                     job_id: uuid.UUID | None = None, target_id: uuid.UUID | None = None,
                     parent_id: uuid.UUID | None = None, checkpoint_id: str | None = None,
                     fallback_reason: str | None = None, config: Mapping[str, Any] | None = None,
                     backup_id: uuid.UUID | None = None) -> Backup:
        """A `running` backup. Pass `backup_id` to make the call idempotent on retry
        (a second create with the same id is a `Conflict`)."""
        row = await self._db.fetchrow(
            "INSERT INTO backups (id, vm_id, vm_name, job_id, target_id, mode, method, "
            "                     parent_id, checkpoint_id, fallback_reason, config) "
            "VALUES (coalesce($1, gen_random_uuid()), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
            "RETURNING *",
            backup_id, vm_id, vm_name, job_id, target_id,
            parse_enum(BackupMode, mode, "mode").value,
            parse_enum(BackupMethod, method, "method").value,
            parent_id, checkpoint_id, fallback_reason, dict(config or {}))
        return Backup.from_record(row)

    @wrap_errors
    async def put_disk(self, backup_id: uuid.UUID, disk: BackupDisk) -> BackupDisk:
        """Insert or update one disk of a backup (safe to repeat)."""
        row = await self._db.fetchrow(
            """
            INSERT INTO backup_disks (backup_id, disk_id, alias, provisioned_size, format,
                                      bytes_read, bytes_written, index_digest, info)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (backup_id, disk_id) DO UPDATE
               SET alias = EXCLUDED.alias, provisioned_size = EXCLUDED.provisioned_size,
                   format = EXCLUDED.format, bytes_read = EXCLUDED.bytes_read,
                   bytes_written = EXCLUDED.bytes_written, index_digest = EXCLUDED.index_digest,
                   info = EXCLUDED.info
            RETURNING *
            """, backup_id, disk.disk_id, disk.alias, disk.provisioned_size, disk.format,
            disk.bytes_read, disk.bytes_written, disk.index_digest, dict(disk.info))
        return BackupDisk.from_record(row)

    @wrap_errors
    async def complete(self, backup_id: uuid.UUID, *, size_bytes: int, new_bytes: int,
                       consistency: str, checkpoint_id: str | None = None) -> Backup:
        """`running` → `succeeded`, once the manifest is published."""
        row = await self._db.fetchrow(
            "UPDATE backups SET status = 'succeeded', completed_at = now(), size_bytes = $2, "
            "       new_bytes = $3, consistency = $4, "
            "       checkpoint_id = coalesce($5, checkpoint_id) "
            "WHERE id = $1 AND status = 'running' RETURNING *",
            backup_id, size_bytes, new_bytes,
            parse_enum(Consistency, consistency, "consistency").value, checkpoint_id)
        if row is None:
            await self._conflict_or_missing(backup_id, "complete")
        return await self.get(backup_id)

    @wrap_errors
    async def fail(self, backup_id: uuid.UUID, error: str) -> Backup:
        """`running` → `failed` (nothing was published)."""
        row = await self._db.fetchrow(
            "UPDATE backups SET status = 'failed', completed_at = now(), error = $2 "
            "WHERE id = $1 AND status = 'running' RETURNING *", backup_id, error)
        if row is None:
            await self._conflict_or_missing(backup_id, "fail")
        return Backup.from_record(row)

    @wrap_errors
    async def mark_deleted(self, backup_id: uuid.UUID) -> Backup:
        """Soft delete (after its manifest was removed from the target).
        A running backup cannot be deleted; deleting twice is a no-op."""
        row = await self._db.fetchrow(
            "UPDATE backups SET status = 'deleted' "
            "WHERE id = $1 AND status IN ('succeeded', 'failed', 'deleted') RETURNING *",
            backup_id)
        if row is None:
            await self._conflict_or_missing(backup_id, "delete")
        return Backup.from_record(row)

    @wrap_errors
    async def not_deleted(self, ids: Iterable[str]) -> list[str]:
        """Those of ``ids`` (text) that name a backup the catalog still holds (not deleted)."""
        want = []
        for x in ids:
            try:
                want.append(uuid.UUID(str(x)))
            except ValueError:
                continue
        rows = await self._db.fetch(
            "SELECT id FROM backups WHERE id = ANY($1::uuid[]) AND status <> 'deleted'", want)
        return [str(r["id"]) for r in rows]

    @wrap_errors
    async def record_verify(self, backup_id: uuid.UUID, damage: Mapping[str, Any] | None) -> tuple[Backup, bool]:
        """Record a verify of the backup: ``damage`` is what it found (None: intact).

        Returns the backup and whether it *became* damaged with this verify
        (the caller announces that once, as the `backup.damaged` event). An
        intact result clears the flag (a newer backup rewrote the chunks)."""
        async with self._transaction() as c:
            was = await c.fetchval("SELECT damaged FROM backups WHERE id = $1 FOR UPDATE", backup_id)
            if was is None:
                raise NotFound("backup", backup_id)
            row = await c.fetchrow(
                "UPDATE backups SET damaged = $2, damage = $3, verified_at = now() WHERE id = $1 RETURNING *",
                backup_id, damage is not None, dict(damage) if damage is not None else None)
        return (await self._attach([row]))[0], damage is not None and not was

    async def _conflict_or_missing(self, backup_id: uuid.UUID, action: str) -> None:
        status = await self._db.fetchval("SELECT status FROM backups WHERE id = $1", backup_id)
        if status is None:
            raise NotFound("backup", backup_id)
        raise Conflict(f"cannot {action} backup {backup_id}: it is {status}",
                       backup_id=backup_id, status=status)

    @wrap_errors
    async def get(self, backup_id: uuid.UUID) -> Backup:
        row = await self._db.fetchrow("SELECT * FROM backups WHERE id = $1", backup_id)
        if row is None:
            raise NotFound("backup", backup_id)
        return (await self._attach([row]))[0]

    @wrap_errors
    async def last_succeeded(self, vm_id: str, *, target_id: uuid.UUID | None = None,
                             method: str | None = None) -> Backup | None:
        """The newest succeeded backup of a VM that verify has not found damaged:
        the parent (and, for CBT, the `from_checkpoint_id`) of the next incremental."""
        row = await self._db.fetchrow(
            "SELECT * FROM backups WHERE vm_id = $1 AND status = 'succeeded' AND NOT damaged "
            "  AND ($2::uuid IS NULL OR target_id = $2) AND ($3::text IS NULL OR method = $3) "
            "ORDER BY created_at DESC, id DESC LIMIT 1", vm_id, target_id, method)
        return None if row is None else (await self._attach([row]))[0]

    @wrap_errors
    async def checkpoints(self, vm_id: str) -> dict[str, list[str]]:
        """Engine checkpoints of a VM: ``ours`` (made by any ovault backup of it,
        whatever became of the backup) and ``keep`` (per target, the newest
        succeeded undamaged CBT backup's: the next incremental starts there)."""
        ours = await self._db.fetch(
            "SELECT DISTINCT checkpoint_id FROM backups WHERE vm_id = $1 AND checkpoint_id IS NOT NULL", vm_id)
        keep = await self._db.fetch(
            "SELECT DISTINCT ON (target_id) checkpoint_id FROM backups "
            "WHERE vm_id = $1 AND status = 'succeeded' AND NOT damaged AND method = 'cbt' "
            "  AND checkpoint_id IS NOT NULL ORDER BY target_id, created_at DESC, id DESC", vm_id)
        return {"ours": sorted(r[0] for r in ours), "keep": sorted(r[0] for r in keep)}

    @wrap_errors
    async def last_succeeded_many(self, vm_ids: Iterable[str]) -> dict[str, Backup]:
        """`last_succeeded` of many VMs in one query (the VM list's protection status)."""
        rows = await self._db.fetch(
            "SELECT DISTINCT ON (vm_id) * FROM backups WHERE vm_id = ANY($1::text[]) "
            "  AND status = 'succeeded' ORDER BY vm_id, created_at DESC, id DESC", list(vm_ids))
        return {b.vm_id: b for b in await self._attach(rows)}

    @wrap_errors
    async def list(self, *, vm_id: str | None = None, vm_ids: Iterable[str] | None = None,
                   status: str | Iterable[str] | None = None, job_id: uuid.UUID | None = None,
                   target_id: uuid.UUID | None = None,
                   created_after: datetime | None = None, created_before: datetime | None = None,
                   include_deleted: bool = False, limit: int = 50, cursor: str | None = None,
                   with_disks: bool = False) -> Page[Backup]:
        """Newest first; `deleted` ones only when asked (or named in `status`).
        `vm_ids` restricts to the VMs a user may see."""
        check_limit(limit)
        w = Where()
        if vm_id is not None:
            w.add("b.vm_id = {}", vm_id)
        if vm_ids is not None:
            w.add("b.vm_id = ANY({}::text[])", list(vm_ids))
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            w.add("b.status = ANY({}::text[])", statuses)
        elif not include_deleted:
            # a backup being deleted is hidden at once (its manifest may be gone)
            w.add("b.status <> ALL({}::text[])", ["deleted", "deleting"])
        if job_id is not None:
            w.add("b.job_id = {}", job_id)
        if target_id is not None:
            w.add("b.target_id = {}", target_id)
        if created_after is not None:
            w.add("b.created_at >= {}", created_after)
        if created_before is not None:
            w.add("b.created_at < {}", created_before)
        w.keyset(cursor, "b")
        rows = await self._db.fetch(
            f"SELECT b.* FROM backups b {w.sql()} ORDER BY b.created_at DESC, b.id DESC "
            f"LIMIT {limit + 1}", *w.args)
        more = len(rows) > limit
        rows = rows[:limit]
        items = await self._attach(rows) if with_disks else [Backup.from_record(r) for r in rows]
        nxt = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return Page(tuple(items), nxt)

    async def _attach(self, rows: Sequence[Any]) -> list[Backup]:
        if not rows:
            return []
        ds = await self._db.fetch(
            "SELECT * FROM backup_disks WHERE backup_id = ANY($1::uuid[]) ORDER BY disk_id",
            [r["id"] for r in rows])
        by: dict[Any, list[BackupDisk]] = {}
        for d in ds:
            by.setdefault(d["backup_id"], []).append(BackupDisk.from_record(d))
        return [Backup.from_record(r, disks=tuple(by.get(r["id"], ()))) for r in rows]
