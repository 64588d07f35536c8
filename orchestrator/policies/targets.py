"""The stores of the catalog's targets: the service's own target (opened at start)
and every other one a policy names (`target_id`), opened on first use and kept.

A policy's run writes to the policy's target: its backup job carries
`request.target_id`, and the job runner asks `TargetStores.ports(job)` for that
target's store, mover port and id (a restore reads from its backup's target the
same way). Pruning deletes each backup from the target it is on, and the daily
garbage collection sweeps every target some backup in the catalog is on.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any, Awaitable, Callable

import structlog

from imageio_ext.store import Store, StoreNotInitialized

from .. import catalog as cat

log = structlog.get_logger("ovault.targets")

__all__ = ["TargetStores", "job_target"]


async def job_target(catalog: cat.Catalog, job: Any) -> uuid.UUID | None:
    """The target a job writes to or reads from, when it names one: a policy run's
    `request.target_id`, or the target of the backup a restore reads."""
    req = job.request or {}
    if req.get("target_id"):
        return uuid.UUID(str(req["target_id"]))
    bid = req.get("backup_id")
    if job.kind == "restore" and bid:
        try:
            b = await catalog.backups.get(uuid.UUID(str(bid)))
        except (cat.NotFound, ValueError):
            return None
        return getattr(b, "target_id", None)
    return None


async def _open(url: str, chunk_size: int) -> Store:
    try:
        return await Store.open(url)
    except StoreNotInitialized:
        return await Store.open(url, create=True, chunk_size=chunk_size)


class TargetStores:
    def __init__(self, catalog: cat.Catalog, *, main_id: uuid.UUID | None, main_store: Any,
                 chunk_size: int = 1 << 22,
                 opener: Callable[[str], Awaitable[Any]] | None = None,
                 ports: Callable[[Any, str], tuple[Any, Any]] | None = None,
                 open_target: Callable[[Any], Awaitable[Any]] | None = None):
        """`opener(url)` opens a target's store (default: open, or create with
        `chunk_size`); `open_target(row)`, when given, opens it from its catalog
        row instead (its name finds its key, ``options.encrypt`` the encryption of
        a new store: orchestrator/store_keys.py); `ports(store, url)` makes the
        (store port, mover port) pair the job runner's machines use."""
        self.catalog, self.main_id, self.main_store = catalog, main_id, main_store
        self.opener = opener or (lambda url: _open(url, chunk_size))
        self.make_ports = ports
        self.open_target = open_target
        self._stores: dict[uuid.UUID, Any] = {}
        self._ports: dict[uuid.UUID, tuple[Any, Any]] = {}
        self._lock = asyncio.Lock()

    def is_main(self, target_id: uuid.UUID | None) -> bool:
        return target_id is None or target_id == self.main_id

    async def store(self, target_id: uuid.UUID | None) -> Any:
        """The store of a target (the service's own for None)."""
        if self.is_main(target_id):
            return self.main_store
        async with self._lock:
            s = self._stores.get(target_id)
            if s is None:
                t = await self.catalog.targets.get(target_id)
                s = self._stores[target_id] = await (
                    self.open_target(t) if self.open_target else self.opener(t.url))
                log.info("target opened", target=t.name, target_id=str(target_id))
            return s

    async def ports(self, job: Any) -> tuple[Any, Any, uuid.UUID] | None:
        """(store port, mover port, target id) for a job on another target than the
        service's own; None for the service's own target."""
        tid = await job_target(self.catalog, job)
        if self.is_main(tid) or self.make_ports is None:
            return None
        store = await self.store(tid)
        if tid not in self._ports:
            t = await self.catalog.targets.get(tid)
            self._ports[tid] = self.make_ports(store, t.url)
        sp, mp = self._ports[tid]
        return sp, mp, tid

    async def all_in_use(self) -> list[tuple[uuid.UUID | None, Any]]:
        """The service's own store, and the store of every other target a backup
        in the catalog is on (what garbage collection sweeps)."""
        out: list[tuple[uuid.UUID | None, Any]] = [(self.main_id, self.main_store)]
        for tid in await self.catalog.policies.targets_in_use():
            if not self.is_main(tid):
                try:
                    out.append((tid, await self.store(tid)))
                except Exception as e:       # one unreachable target must not stop the others
                    log.warning("target unavailable", target_id=str(tid), error=str(e))
        return out

    async def close(self) -> None:
        for s in self._stores.values():
            try:
                await s.close()
            except Exception:
                pass
        self._stores.clear()
        self._ports.clear()
