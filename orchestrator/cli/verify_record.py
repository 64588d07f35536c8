"""What `ovault verify` does with a result besides printing it.

- ``print_report``: the plain output — per backup its VM, and per damaged
  chunk its digest, the reason and every (disk, offset, length) that uses it.
- ``catalog_recorder``: records each result in the catalog
  (`BackupRepository.record_verify`: the ``damaged`` flag the API, CLI and UI
  show, and which keeps a backup from being an incremental's parent) and, when
  a backup becomes damaged, appends a ``backup.damaged`` event (webhooks). An
  intact result clears the flag. Backups the catalog does not know (a target
  not imported) are reported as such, not an error.
"""
from __future__ import annotations

import contextlib
import uuid
from typing import AsyncIterator, Awaitable, Callable

from ..jobs.verify import record_result

__all__ = ["print_report", "catalog_recorder", "record_result"]

# Ranges shown per damaged chunk in the plain output (--json lists all).
SHOWN_RANGES = 20


def print_report(info, r) -> None:
    state = "ok     " if r.ok else "DAMAGED"
    line = (f"{info.backup_id}  {state}  vm {info.vm_id}  {r.chunks_checked} chunks, "
            f"{r.bytes_checked / 2**20:.1f} MiB re-hashed")
    if not r.ok:
        line += f"; {len(r.damaged)} damaged chunks, {len(r.bad_indexes)} bad indexes"
    print(line)
    for d in r.damaged:
        print(f"    chunk {d.digest}  {d.reason}")
        ranges = d.ranges()
        for disk_id, off, length in ranges[:SHOWN_RANGES]:
            print(f"        disk {disk_id}  offset {off}  length {length}")
        if len(ranges) > SHOWN_RANGES:
            print(f"        … and {len(ranges) - SHOWN_RANGES} more ranges (--json lists all)")
    for disk_id, reason in sorted(r.bad_indexes.items()):
        print(f"    index of disk {disk_id}  {reason}")


Recorder = Callable[[object, object], Awaitable[str]]


@contextlib.asynccontextmanager
async def catalog_recorder(cfg, *, enabled: bool = True) -> AsyncIterator[Recorder]:
    """Yields ``record(info, report) -> str`` (what happened in the catalog:
    "recorded", "became damaged", "unknown backup" or "not recorded")."""
    if not enabled:
        async def skip(info, r) -> str:
            return "not recorded"

        async def no_digests(info) -> dict[str, str]:
            return {}
        skip.digests = no_digests  # type: ignore[attr-defined]
        yield skip
        return
    from .local_catalog import open_catalog
    async with open_catalog(cfg) as c:

        async def record(info, r) -> str:
            return await record_result(c, info, r)

        async def digests(info) -> dict[str, str]:
            return await catalog_digests(c, info.backup_id)
        record.digests = digests  # type: ignore[attr-defined]
        yield record


async def catalog_digests(c, backup_id: str) -> dict[str, str]:
    """Disk id -> the index SHA-256 the catalog recorded when the backup was
    published ({} for a backup the catalog does not know): verify checks the
    target's indexes against them, so a manifest + index replaced on the
    target is found."""
    from .. import catalog as cat
    try:
        b = await c.backups.get(uuid.UUID(backup_id))
    except cat.NotFound:
        return {}
    return {d.disk_id: d.index_digest for d in b.disks if d.index_digest}
