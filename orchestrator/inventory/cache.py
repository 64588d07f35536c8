"""The engine's VMs, kept current in memory from the engine's event log.

`Inventory.run()` (one per replica) starts with a full listing (`vms?follow=tags`)
and then follows `GET /events?from=<index>`:

- an event that names a VM (created, started, renamed, moved to another cluster,
  tagged, untagged, ...; not the snapshot, backup, transfer and disk codes
  in `QUIET_CODES`, nor the notes ovault itself adds) re-reads that VM (`search=id=<id>`, tags
  inlined); a VM the engine no longer has is dropped. More than `batch_max`
  VMs in one poll: one full listing instead;
- an event that changes VMs without naming one (a VM removed, a tag renamed,
  moved or removed) or a gap in the log (the first index read is past the next
  expected one: the engine pruned events we had not read) triggers a full
  listing, at most once per `min_resync_seconds`;
- a failed read marks the inventory dirty: the next successful poll relists;
- every `reconcile_seconds` a full listing corrects whatever the log missed
  (the engine's log is best effort).

Staleness: a change the engine logs is seen within one poll (`interval`, 1 s by
default, plus the re-read); one it does not log, within `reconcile_seconds`.
Listeners get a `Change` after each poll or listing that changed something:
which VMs' membership attributes (name, cluster, tags, existence) changed, and
whether permissions or VM existence changed (so per-user visibility caches can
be dropped).
"""
from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import structlog

log = structlog.get_logger("ovault.inventory")

__all__ = ["Inventory", "Change", "RESYNC_CODES", "VISIBILITY_CODES"]

# Engine audit-log codes that change VMs without naming one: VM removed, tag
# updated / moved / removed (every VM carrying it changes).
RESYNC_CODES = frozenset({113, 430, 434, 555})
# Codes after which a user's VM visibility may differ: permission granted or
# removed, user added or removed, VM created or removed.
VISIBILITY_CODES = frozenset({850, 852, 149, 325, 34, 53, 113})
# Codes that name a VM but change nothing the inventory keeps (snapshots, backups,
# image transfers, disk operations, guest freeze/thaw): no re-read. Every other code naming a VM
# (including codes this list does not know) re-reads it.
QUIET_CODES = frozenset({45, 68, 69, 342, 356, 357, 10790, 10791, 10792, 10793,
                         1031, 1032, 1033, 1034, 1035, 1036, 1037, 2010, 2011, 2014,
                         2016, 2017, 2021, 2022, 371, 372,
                         10764, 10765, 10766, 10767, 10768, 10794})


@dataclass
class Change:
    vm_ids: set[str] = field(default_factory=set)   # membership attributes changed
    visibility: bool = False                          # permissions / VM set changed
    full: bool = False                                # from a full listing

    def __bool__(self) -> bool:
        return bool(self.vm_ids) or self.visibility


def _key(vm: Any) -> tuple:
    """What policy membership and the VM list depend on."""
    cluster = getattr(vm, "cluster", None)
    tags = getattr(vm, "tags", None) or ()
    return (getattr(vm, "name", None), getattr(cluster, "id", None) if cluster else None,
            frozenset(t.name for t in tags if getattr(t, "name", None)))


class Inventory:
    def __init__(self, engine: Any, *, interval: float = 1.0, reconcile_seconds: float = 300.0,
                 min_resync_seconds: float = 30.0, batch_max: int = 25,
                 clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self.interval, self.reconcile_seconds = interval, reconcile_seconds
        self.min_resync_seconds, self.batch_max = min_resync_seconds, batch_max
        self.clock = clock
        self._vms: dict[str, Any] = {}
        self.last_index: int | None = None
        self.synced_at: float | None = None      # clock() of the last full listing
        self.ready = asyncio.Event()
        self.dirty = True
        self._resync_wanted = False
        self.listeners: list[Callable[[Change], Any]] = []
        self.stats = {"full_listings": 0, "vm_reads": 0, "events": 0, "errors": 0, "gaps": 0}
        self._lock = asyncio.Lock()

    # -- reading ------------------------------------------------------------------------

    def fresh(self) -> bool:
        """Whether answers may come from memory (listed once, not known dirty)."""
        return self.ready.is_set() and not self.dirty

    def vms(self) -> list[Any]:
        return list(self._vms.values())

    def get(self, vm_id: str) -> Any | None:
        return self._vms.get(vm_id.lower())

    # -- updating -----------------------------------------------------------------------

    async def _lister(self, search: str | None):
        fn = getattr(self.engine, "list_vms_with_tags", None) or self.engine.list_vms
        return await fn(search=search)

    async def sync(self) -> Change:
        """A full listing; the log position is read first, so events logged while
        the listing runs are applied again afterwards (re-reads are idempotent)."""
        async with self._lock:
            if self.last_index is None:
                newest = await self.engine.events_since(None)
                self.last_index = (newest[0].index or 0) if newest else 0
            vms = await self._lister(None)
            new = {str(vm.id).lower(): vm for vm in vms}
            ch = Change(full=True)
            for k in set(new) | set(self._vms):
                old, cur = self._vms.get(k), new.get(k)
                if old is None or cur is None or _key(old) != _key(cur):
                    ch.vm_ids.add(k)
            if set(new) != set(self._vms) and self.ready.is_set():
                ch.visibility = True
            self._vms = new
            self.synced_at = self.clock()
            self.dirty = self._resync_wanted = False
            self.stats["full_listings"] += 1
            self.ready.set()
        await self._tell(ch)
        return ch

    async def refresh(self, vm_ids: Iterable[str]) -> Change:
        ids = sorted({x.lower() for x in vm_ids if x})
        if len(ids) > self.batch_max:
            return await self.sync()
        ch = Change()
        for vid in ids:
            found = await self._lister(f"id={vid}")
            self.stats["vm_reads"] += 1
            cur = next((vm for vm in found if str(vm.id).lower() == vid), None)
            old = self._vms.get(vid)
            if cur is None:
                if old is not None:
                    del self._vms[vid]
                    ch.vm_ids.add(vid)
                    ch.visibility = True
                continue
            self._vms[vid] = cur
            if old is None or _key(old) != _key(cur):
                ch.vm_ids.add(vid)
        await self._tell(ch)
        return ch

    async def poll_once(self) -> Change:
        """Read the log from the last index (page after page) and apply it."""
        if self.last_index is None or self.dirty or self._resync_wanted and self._may_resync():
            return await self.sync()
        names: set[str] = set()
        visibility = resync = False
        while True:
            events = await self.engine.events_since(self.last_index)
            if events and (events[0].index or 0) > self.last_index + 1 and self.last_index > 0:
                self.stats["gaps"] += 1
                resync = True
            for e in events:
                self.stats["events"] += 1
                self.last_index = max(self.last_index, e.index or 0)
                code = e.code
                if code in VISIBILITY_CODES:
                    visibility = True
                if code in RESYNC_CODES:
                    resync = True
                vm = getattr(e, "vm", None)
                if vm is not None and vm.id and code not in QUIET_CODES \
                        and getattr(e, "origin", None) != "ovault":   # our own notes
                    names.add(str(vm.id))
            if len(events) < 200:
                break
        if resync:
            self._resync_wanted = True
        if self._resync_wanted and self._may_resync() or \
                self.synced_at is not None and self.clock() - self.synced_at >= self.reconcile_seconds:
            ch = await self.sync()
        else:
            ch = await self.refresh(names)
        if visibility and not ch.visibility:
            ch.visibility = True
            await self._tell(Change(visibility=True))
        return ch

    def _may_resync(self) -> bool:
        return self.synced_at is None or self.clock() - self.synced_at >= self.min_resync_seconds

    async def _tell(self, ch: Change) -> None:
        if not ch:
            return
        for fn in list(self.listeners):
            try:
                r = fn(ch)
                if inspect.isawaitable(r):
                    await r
            except Exception:
                log.exception("inventory listener failed")

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.poll_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:   # relist once the engine answers again
                self.dirty = True
                self.stats["errors"] += 1
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("inventory update failed; will relist", error=str(e),
                                failures=failures)
            await asyncio.sleep(self.interval)
