"""Backup targets (NFS exports or mounted paths) by id and unique name."""
from __future__ import annotations

import uuid
from typing import Any, Mapping

from .db import Repository
from .errors import NotFound, wrap_errors
from .models import Target

__all__ = ["TargetRepository"]


class TargetRepository(Repository):

    @wrap_errors
    async def create(self, name: str, url: str, options: Mapping[str, Any] | None = None, *,
                     target_id: uuid.UUID | None = None) -> Target:
        """A duplicate name is a `Conflict`."""
        row = await self._db.fetchrow(
            "INSERT INTO targets (id, name, url, options) "
            "VALUES (coalesce($1, gen_random_uuid()), $2, $3, $4) RETURNING *",
            target_id, name, url, dict(options or {}))
        return Target.from_record(row)

    @wrap_errors
    async def get(self, target_id: uuid.UUID) -> Target:
        row = await self._db.fetchrow("SELECT * FROM targets WHERE id = $1", target_id)
        if row is None:
            raise NotFound("target", target_id)
        return Target.from_record(row)

    @wrap_errors
    async def get_by_name(self, name: str) -> Target:
        row = await self._db.fetchrow("SELECT * FROM targets WHERE name = $1", name)
        if row is None:
            raise NotFound("target", name)
        return Target.from_record(row)

    @wrap_errors
    async def list(self) -> list[Target]:
        return [Target.from_record(r) for r in
                await self._db.fetch("SELECT * FROM targets ORDER BY name")]

    @wrap_errors
    async def update(self, target_id: uuid.UUID, *, name: str | None = None,
                     url: str | None = None, options: Mapping[str, Any] | None = None) -> Target:
        """Change the given fields; `options` replaces the whole object."""
        row = await self._db.fetchrow(
            "UPDATE targets SET name = coalesce($2, name), url = coalesce($3, url), "
            "options = coalesce($4, options) WHERE id = $1 RETURNING *",
            target_id, name, url, None if options is None else dict(options))
        if row is None:
            raise NotFound("target", target_id)
        return Target.from_record(row)

    @wrap_errors
    async def delete(self, target_id: uuid.UUID) -> None:
        """A target that backups still reference is a `Conflict`."""
        status = await self._db.execute("DELETE FROM targets WHERE id = $1", target_id)
        if status != "DELETE 1":
            raise NotFound("target", target_id)
