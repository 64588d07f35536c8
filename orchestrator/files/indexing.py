"""Background indexing of backup disks for search (docs/file-restore.md, "Search").

A search answers at once from the indexes there are and hands the backup disks
without one to `Indexer.ensure`, which starts one task per disk — never two for
the same disk, however many searches ask — and keeps a per-VM *round*: the disks
asked for since the VM's last round ended, how many are done, which failed.
`GET /api/v1/vms/{id}/files/indexing` shows the round; a client polls it and
searches again when it is done.

Parallelism: the tasks open their sessions as the internal user ``INDEX_USER``,
so `files.per_user` bounds how many appliances indexing runs at once and
`files.max_sessions` still bounds the replica; when every session is busy a
task waits for room instead of failing. A session opened only to index is
closed right after (one a user had open is left to them).

A disk whose indexing failed (a store error, an appliance that would not start)
is not retried for `RETRY_FAILED_SECONDS`, so a search that waits for a round
cannot loop; its error is shown in the round and in the search's `not_indexed`.

Why not a catalog job: the index and the appliances are this replica's (its
`files.cache_dir`), while any replica may claim a queued job; and indexing is a
cache fill that the next search starts again after a restart, with nothing to
resume or audit.

| lock / owner  | guards                                                      |
|---------------|-------------------------------------------------------------|
| event loop    | `_tasks`, `_failed`, `_rounds` (no await between check and set) |
| `_slots`      | indexing appliances running at once                         |
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import structlog

from .sessions import TooManySessions

log = structlog.get_logger("ovault.files")

INDEX_USER = "ovault:index"  # the sessions indexing opens are held by this internal user
RETRY_FAILED_SECONDS = 300.0
BUSY_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class DiskRef:
    """One backup disk to index."""
    vm_id: str
    backup_id: str
    disk_id: str
    disk_alias: str | None = None
    index_digest: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.backup_id, self.disk_id)


@dataclass
class Round:
    """The disks of one VM asked for since its last round ended."""
    disks: dict[tuple[str, str], DiskRef] = field(default_factory=dict)
    done: set = field(default_factory=set)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def running(self) -> bool:
        return len(self.done) + len(self.failed) < len(self.disks)


def _ref(d: DiskRef, **extra) -> dict:
    return {"backup_id": d.backup_id, "disk_id": d.disk_id, "disk_alias": d.disk_alias, **extra}


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Indexer:
    """``build(session)``: the index of the disk a session reads (`search.walk_index`)."""

    def __init__(self, manager, cache, settings, build, *, clock=time.monotonic,
                 busy_retry: float = BUSY_RETRY_SECONDS):
        self.manager, self.cache, self.settings, self.build = manager, cache, settings, build
        self.clock, self.busy_retry = clock, busy_retry
        self._slots = asyncio.Semaphore(max(1, min(settings.per_user, settings.max_sessions)))
        self._tasks: dict[tuple[str, str], asyncio.Task] = {}
        self._failed: dict[tuple[str, str], tuple[str, float]] = {}
        self._rounds: dict[str, Round] = {}
        self._running: set[tuple[str, str]] = set()  # holding a slot: indexing now
        self.started: dict[tuple[str, str], int] = {}  # indexings started per disk (observability)

    # -- what searches and the status resource call ---------------------------------------
    def failure(self, key: tuple[str, str]) -> str | None:
        """The error of a recent failed indexing of this disk (not retried yet)."""
        f = self._failed.get(key)
        if f is None or self.clock() - f[1] >= RETRY_FAILED_SECONDS:
            return None
        return f[0]

    def ensure(self, vm_id: str, missing: list[DiskRef]) -> dict | None:
        """Index the disks of ``missing`` (disks of VM ``vm_id`` without an index) in the
        background; the VM's round, as `status` shows it (None: nothing to do)."""
        now = self.clock()  # expired failures are forgotten (they would only grow)
        for k in [k for k, (_, at) in self._failed.items() if now - at >= RETRY_FAILED_SECONDS]:
            del self._failed[k]
        todo = [d for d in missing if d.key in self._tasks or self.failure(d.key) is None]
        if todo:
            r = self._rounds.get(vm_id)
            if r is None or not r.running:
                r = self._rounds[vm_id] = Round()
            for d in todo:
                if d.key in r.disks:
                    continue
                r.disks[d.key] = d
                if d.key not in self._tasks:
                    self._failed.pop(d.key, None)
                    self.started[d.key] = self.started.get(d.key, 0) + 1
                    t = asyncio.create_task(self._index(d), name=f"files-index-{d.backup_id}-{d.disk_id}")
                    self._tasks[d.key] = t
                    t.add_done_callback(lambda t, d=d: self._ended(vm_id, d, t))
        return self.status(vm_id)

    def status(self, vm_id: str) -> dict | None:
        r = self._rounds.get(vm_id)
        if r is None:
            return None
        pending = [d for k, d in r.disks.items() if k not in r.done and k not in r.failed]
        return {"state": "running" if r.running else "done", "done": len(r.done), "total": len(r.disks),
                "failed": [_ref(r.disks[k], error=e) for k, e in r.failed.items()],
                "pending": [_ref(d, state="indexing" if self._active(d.key) else "queued") for d in pending],
                "started_at": _iso(r.started_at), "finished_at": _iso(r.finished_at)}

    async def cancel(self, vm_id: str, wait: float = 30.0) -> int:
        """Stop the VM's round (its disks count as failed, "canceled"); how many disks'
        indexing were stopped. Waits up to ``wait`` seconds for them to end."""
        r = self._rounds.get(vm_id)
        tasks = [t for k in (r.disks if r else ()) if (t := self._tasks.get(k)) is not None and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=wait)
        return len(tasks)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the work -----------------------------------------------------------------------------
    def _active(self, key) -> bool:
        return key in self._running

    async def _index(self, d: DiskRef) -> None:
        async with self._slots:
            self._running.add(d.key)
            try:
                await self.cache.get(d.key, lambda: self._walk(d))
            finally:
                self._running.discard(d.key)

    async def _walk(self, d: DiskRef) -> dict:
        t0 = time.monotonic()
        existed = d.key in self.manager.sessions
        while True:
            try:
                s = await self.manager.get(INDEX_USER, d.vm_id, d.backup_id, d.disk_id, d.index_digest)
                break
            except TooManySessions:  # every session is busy (downloads): wait for room
                await asyncio.sleep(self.busy_retry)
        try:
            doc = await self.build(s)
        finally:
            s.users.discard(INDEX_USER)
            if not existed and not s.users:  # nobody started browsing it meanwhile
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.manager.release(s))
        log.info("files.indexed", backup_id=d.backup_id, disk_id=d.disk_id, entries=len(doc["entries"]),
                 truncated=doc.get("truncated"), seconds=round(time.monotonic() - t0, 1))
        return doc

    def _ended(self, vm_id: str, d: DiskRef, t: asyncio.Task) -> None:
        if self._tasks.get(d.key) is t:
            del self._tasks[d.key]
        if t.cancelled():
            error = "canceled"
        else:
            e = t.exception()
            error = None if e is None else (str(e) or type(e).__name__)
        if error is not None:
            self._failed[d.key] = (error, self.clock())
            log.warning("files.index_failed", backup_id=d.backup_id, disk_id=d.disk_id, error=error)
        r = self._rounds.get(vm_id)
        if r is None or d.key not in r.disks:
            return
        if error is None:
            r.done.add(d.key)
        else:
            r.failed[d.key] = error
        if not r.running:
            r.finished_at = time.time()
