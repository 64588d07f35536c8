"""Search a VM's backups for paths by name.

Search answers at once from the indexes there are; the backup disks without
one are indexed in the background (`indexing.Indexer`). Each backup disk is
walked once (`GuestFs.walk`, links not followed, at most
`files.search_max_entries` entries per disk) and its index — path, type,
size, mtime of every entry — is kept in `<cache_dir>/index/<backup>/<disk>.json.gz`:
a backup never changes, so an index never goes stale, and later searches
(and restarts) reuse it.

Matching: a glob (`fnmatch`, case-sensitive: `*`, `?`, `[...]`) against the
entry's name, or against the whole API path when the pattern holds a `/`.
The answer groups matches by (disk, path) with one version per backup, newest
first, so a file's history reads top to bottom.
"""
from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import gzip
import json
import os
import secrets
import zlib

import structlog

from ..errors import Invalid

log = structlog.get_logger("ovault.files")

MAX_PATTERN = 255


def check_pattern(name: str | None) -> str:
    if not name or not isinstance(name, str):
        raise Invalid("name is required: a glob such as hostname or *.conf")
    if len(name) > MAX_PATTERN or "\x00" in name:
        raise Invalid(f"name must be at most {MAX_PATTERN} characters, without NUL")
    if name.strip("*/") == "":
        raise Invalid("name must say more than * (a name or a glob such as *.conf)")
    return name


def matches(pattern: str, path: str) -> bool:
    if "/" in pattern:
        return fnmatch.fnmatchcase(path, pattern if pattern.startswith("/") else "*/" + pattern)
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


class IndexCache:
    def __init__(self, cache_dir: str):
        self.dir = os.path.join(cache_dir, "index")
        self._mem: dict[tuple[str, str], dict] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _path(self, backup_id: str, disk_id: str) -> str:
        return os.path.join(self.dir, backup_id, f"{disk_id}.json.gz")

    def _load(self, key) -> dict | None:
        try:
            with gzip.open(self._path(*key), "rt", encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError, EOFError, zlib.error):
            # missing, or cut short or damaged (a crash before the data reached the disk):
            # no index, so the disk is indexed again instead of every search failing
            return None

    def _save(self, key, doc: dict) -> None:
        p = self._path(*key)
        os.makedirs(os.path.dirname(p), mode=0o700, exist_ok=True)
        tmp = f"{p}.tmp.{secrets.token_hex(4)}"
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            json.dump(doc, f)
        os.rename(tmp, p)

    async def get(self, key: tuple[str, str], build) -> dict:
        """The index of one backup disk; ``build()`` makes it when there is none."""
        hit = self._mem.get(key)
        if hit is not None:
            return hit
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            doc = self._mem.get(key) or await asyncio.to_thread(self._load, key)
            if doc is None:
                doc = await build()
                await asyncio.to_thread(self._save, key, doc)
            self._remember(key, doc)
            return doc

    async def peek(self, key: tuple[str, str]) -> dict | None:
        """The index of one backup disk if there is one (in memory or on disk), else None."""
        hit = self._mem.get(key)
        if hit is not None:
            return hit
        doc = await asyncio.to_thread(self._load, key)
        if doc is not None:
            self._remember(key, doc)
        return doc

    def _remember(self, key, doc: dict) -> None:
        if len(self._mem) > 64:
            self._mem.pop(next(iter(self._mem)))
        self._mem[key] = doc

    def forget(self, backup_id: str) -> None:
        """Drop a backup's indexes, in memory and on disk."""
        for key in [k for k in self._mem if k[0] == backup_id]:
            self._mem.pop(key, None)
        d = os.path.join(self.dir, backup_id)
        for name in (os.listdir(d) if os.path.isdir(d) else ()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(d, name))
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(d)

    def indexed(self) -> list[str]:
        """The backups that have an index on disk."""
        try:
            return [n for n in os.listdir(self.dir) if os.path.isdir(os.path.join(self.dir, n))]
        except FileNotFoundError:
            return []

    async def prune(self, live) -> int:
        """Remove the indexes of backups that ``await live(ids)`` no longer lists (deleted or
        pruned): an index names the files a backup held, and goes with the backup."""
        have = await asyncio.to_thread(self.indexed)
        if not have:
            return 0
        keep = set(await live(have))
        gone = [b for b in have if b not in keep]
        for b in gone:
            await asyncio.to_thread(self.forget, b)
        if gone:
            log.info("files.index_pruned", backups=len(gone))
        return len(gone)


async def walk_index(s, limit: int) -> dict:
    """The index of the disk session ``s`` reads: at most ``limit`` entries."""
    entries, truncated = await s.call("walk", "/", limit)
    return {"entries": [[e["path"], e["type"], e["size"], e["mtime"]] for e in entries],
            "truncated": truncated, "filesystems": s.filesystems}


def _match(found: dict, b, d, idx: dict, pattern: str, max_results: int) -> bool:
    """Add the entries of one disk's index matching ``pattern`` to ``found``; whether the
    answer is truncated (the index was, or ``max_results`` paths were reached)."""
    truncated = bool(idx.get("truncated"))
    for path, typ, size, mtime in idx["entries"]:
        if not matches(pattern, path):
            continue
        item = found.get((d.disk_id, path))
        if item is None:
            if len(found) >= max_results:
                truncated = True
                continue
            item = found[(d.disk_id, path)] = {
                "disk_id": d.disk_id, "disk_alias": d.alias, "path": path, "versions": []}
        item["versions"].append({"backup_id": str(b.id), "created_at": _iso(b), "type": typ,
                                 "size": size, "mtime": mtime})
    return truncated


async def search(cache: IndexCache, indexer, backups: list, pattern: str, settings) -> dict:
    """Answer from the indexes there are, at once. ``backups``: catalog rows of one VM, newest
    first (succeeded only). The disks without an index are named in ``not_indexed`` and handed
    to ``indexer`` (`indexing.Indexer`), whose round of the VM is ``indexing``."""
    from .indexing import DiskRef
    found: dict[tuple[str, str], dict] = {}
    truncated = False
    missing: list = []
    chosen = backups[:settings.search_backups]
    for b in chosen:
        for d in b.disks:
            idx = await cache.peek((str(b.id), d.disk_id))
            if idx is None:
                missing.append((b, DiskRef(b.vm_id, str(b.id), d.disk_id, d.alias, d.index_digest)))
                continue
            truncated |= _match(found, b, d, idx, pattern, settings.search_max_results)
    indexing = indexer.ensure(chosen[0].vm_id, [r for _, r in missing]) if missing else None
    active = {(p["backup_id"], p["disk_id"]): p["state"] for p in (indexing or {}).get("pending", ())}
    not_indexed = []
    for b, r in missing:
        error = indexer.failure(r.key)
        state = "failed" if error is not None else active.get(r.key, "queued")
        not_indexed.append({"backup_id": r.backup_id, "disk_id": r.disk_id, "disk_alias": r.disk_alias,
                            "created_at": _iso(b), "state": state,
                            **({"error": error} if error is not None else {})})
    items = sorted(found.values(), key=lambda i: (i["path"], i["disk_id"]))
    summary = None if indexing is None else {
        k: indexing[k] for k in ("state", "done", "total")} | {"failed": len(indexing["failed"])}
    return {"items": items, "backups_searched": len(chosen), "truncated": truncated,
            "complete": not missing, "not_indexed": not_indexed, "indexing": summary}


def _iso(b) -> str | None:
    t = getattr(b, "created_at", None) or getattr(b, "started_at", None)
    return t.isoformat().replace("+00:00", "Z") if t is not None else None
