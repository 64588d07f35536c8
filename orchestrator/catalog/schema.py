"""Apply the forward-only migrations in `migrations/NNNN_name.sql`.

Each file runs in its own transaction together with its row in
`schema_migrations`, so a failure leaves the database at the previous version.
A session advisory lock serialises replicas that start at the same time: the
second waits, then finds nothing left to do.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from .db import Executor
from .errors import MigrationError, wrap_errors

__all__ = ["Migration", "load_migrations", "migrate"]

# pg_advisory_lock key: the first 8 bytes of sha256("ovault.migrate"), signed.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"ovault.migrate").digest()[:8], "big", signed=True)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str = "orchestrator.catalog.migrations") -> list[Migration]:
    """The migrations shipped in `package`, in order; numbering must be 1..n."""
    found = []
    for entry in resources.files(package).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _NAME.match(entry.name)
        if not m:
            raise MigrationError(f"bad migration file name {entry.name!r} (want NNNN_name.sql)")
        found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration numbers must run 1..n without gaps, got {versions}")
    return found


_CREATE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


@wrap_errors
async def migrate(db: Executor, migrations: list[Migration] | None = None) -> list[int]:
    """Bring the schema up to date; return the versions applied by this call."""
    migrations = load_migrations() if migrations is None else migrations
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _migrate(conn, migrations)
    return await _migrate(db, migrations)


async def _migrate(conn: asyncpg.Connection, migrations: list[Migration]) -> list[int]:
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_CREATE)
        applied = {r["version"]: r for r in await conn.fetch(
            "SELECT version, name, checksum FROM schema_migrations")}
        done = []
        for m in migrations:
            row = applied.get(m.version)
            if row is not None:
                if row["checksum"] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name} was changed after it was applied "
                        f"(checksum {row['checksum'][:12]} in the database, {m.checksum[:12]} "
                        f"shipped); add a new migration instead")
                continue
            try:
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)", m.version, m.name, m.checksum)
            except asyncpg.PostgresError as e:
                raise MigrationError(f"{m.version:04d}_{m.name}: {e}") from e
            done.append(m.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
