"""The machines' ports, implemented over the catalog, the store and the movers.

- `CatalogJournal`: one machine's durable record (CAS transitions under the
  job's lease, each committed with its event; resources merged as JSON,
  progress, events).
- `CatalogPort`: the backups table as the machines need it.
- `StorePort`: publishing a backup whose disks the movers committed.
- `MoverPort`: a copy on the transfer host's `ovault-mover` when one is
  registered, else in this process ("direct mode", the same copy engine).
"""
from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Awaitable, Callable

import aiohttp
import structlog

from imageio_ext.copy import run_copy
from imageio_ext.store import BackupExists, Store
from statemachines import CatalogUnreachable

from .. import catalog as cat
from ..errors import MoverError, from_dict

log = structlog.get_logger("ovault.jobs")


def reachable(fn):
    """A catalog call of a machine: `Unavailable` (the database cannot be
    reached) becomes the machine's `CatalogUnreachable`, which stops the
    machine without failing it (orchestrator/jobs/outage.py resumes it)."""
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except cat.Unavailable as e:
            raise CatalogUnreachable(str(e)) from e
    return wrapper


class CatalogJournal:
    def __init__(self, catalog: cat.Catalog, machine: cat.Machine, owner: str, job_id: str,
                 publish: Callable[[str, dict], Awaitable[None]] | None = None):
        self.catalog, self.owner, self.job_id = catalog, owner, job_id
        self.id = machine.id
        self.state = machine.state
        self.version = machine.version
        self.resources = dict(machine.resources or {})
        self.vm_id = machine.vm_id
        self._last_progress = 0.0
        self.publish = publish

    @reachable
    async def transition(self, from_state: str, to_state: str, error: str | None,
                         event: tuple[str, dict]) -> bool:
        type_, payload = event
        m = await self.catalog.jobs.transition(self.id, from_state=from_state, to_state=to_state,
                                               version=self.version, error=error, owner=self.owner,
                                               event=(type_, self._payload(payload)))
        if m is None:
            return False
        self.state, self.version = m.state, m.version
        return True

    @reachable
    async def record(self, patch: dict) -> None:
        _merge(self.resources, patch)
        await self.catalog.jobs.record_resources(self.id, patch, owner=self.owner)

    async def progress(self, bytes_done: int, bytes_total: int, disks: dict) -> None:
        now = time.monotonic()
        if now - self._last_progress < 0.5 and bytes_done < bytes_total:
            return  # at most two writes a second per machine
        self._last_progress = now
        try:
            await self.catalog.jobs.update_progress(self.id, bytes_done=bytes_done,
                                                    bytes_total=bytes_total, disks=disks)
        except cat.Unavailable as e:  # progress is a courtesy: the copy goes on
            log.info("progress not recorded: catalog unavailable", machine_id=str(self.id), error=str(e))
        if self.publish:
            await self.publish("machine.progress", {"job_id": self.job_id, "machine_id": str(self.id),
                                                    "vm_id": self.vm_id, "bytes_done": bytes_done,
                                                    "bytes_total": bytes_total, "disks": disks})

    @reachable
    async def event(self, type_: str, payload: dict) -> None:
        await self.catalog.events.append(type_, self._payload(payload), job_id=uuid.UUID(self.job_id))

    def _payload(self, payload: dict) -> dict:
        return {"machine_id": str(self.id), "vm_id": self.vm_id, "job_id": self.job_id, **payload}


def _merge(dst: dict, patch: dict):
    for k, v in patch.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


class CatalogPort:
    def __init__(self, catalog: cat.Catalog, job_id: str, target_id=None):
        self.catalog, self.job_id, self.target_id = catalog, job_id, target_id

    @reachable
    async def last_backup(self, vm_id: str, method: str | None) -> dict | None:
        b = await self.catalog.backups.last_succeeded(vm_id, method=method, target_id=self.target_id)
        return None if b is None else {"id": str(b.id), "checkpoint_id": b.checkpoint_id,
                                       "method": b.method}

    @reachable
    async def backup_started(self, *, backup_id, vm_id, vm_name, mode, method, parent_id,
                             checkpoint_id, fallback_reason, config, disks) -> None:
        try:
            await self.catalog.backups.create(
                backup_id=uuid.UUID(backup_id), vm_id=vm_id, vm_name=vm_name, mode=mode,
                method=method, job_id=uuid.UUID(self.job_id), target_id=self.target_id,
                parent_id=uuid.UUID(parent_id) if parent_id else None, checkpoint_id=checkpoint_id,
                fallback_reason=fallback_reason, config=config)
        except cat.Conflict:
            pass  # resumed after a crash: the row is there
        for d in disks:
            await self.catalog.backups.put_disk(uuid.UUID(backup_id), cat.BackupDisk(
                disk_id=d["disk_id"], provisioned_size=d["size"], format=d["format"],
                alias=d.get("alias"), info={k: v for k, v in d.items() if k not in ("disk_id",)}))

    @reachable
    async def backup_succeeded(self, backup_id: str, *, checkpoint_id, stats: dict,
                               consistency: str = "crash") -> None:
        bid = uuid.UUID(backup_id)
        b = await self.catalog.backups.get(bid)
        for disk in (b.disks or ()):
            r = stats["disks"].get(disk.disk_id, {})
            await self.catalog.backups.put_disk(bid, cat.BackupDisk(
                disk_id=disk.disk_id, provisioned_size=disk.provisioned_size, format=disk.format,
                alias=disk.alias, bytes_read=r.get("bytes_read", 0), bytes_written=r.get("new_bytes", 0),
                index_digest=r.get("index_sha256"), info={**disk.info, "copy": r}))
        if b.status == "succeeded":
            return
        await self.catalog.backups.complete(bid, size_bytes=stats["size"], new_bytes=stats["new_bytes"],
                                            consistency=consistency, checkpoint_id=checkpoint_id)

    @reachable
    async def backup_failed(self, backup_id: str, error: str) -> None:
        try:
            await self.catalog.backups.fail(uuid.UUID(backup_id), error)
        except (cat.Conflict, cat.NotFound):
            pass

    @reachable
    async def checkpoints(self, vm_id: str) -> dict[str, list[str]]:
        return await self.catalog.backups.checkpoints(vm_id)

    @reachable
    async def get_backup(self, backup_id: str) -> dict:
        b = await self.catalog.backups.get(uuid.UUID(str(backup_id)))
        return {"id": str(b.id), "vm_id": b.vm_id, "status": b.status, "config": b.config,
                "index_digests": {d.disk_id: d.index_digest for d in (b.disks or ()) if d.index_digest}}


class StorePort:
    def __init__(self, store: Store):
        self.store = store

    async def publish(self, vm_id, backup_id, parent_id, disks, meta) -> dict:
        try:
            info = await self.store.publish_backup(vm_id, backup_id, disks, parent_id=parent_id,
                                                   meta=meta)
        except BackupExists:  # published before a crash
            return {"backup_id": backup_id}
        return {"backup_id": info.backup_id}

    async def discard(self, vm_id, backup_id) -> None:
        # An unpublished backup has no manifest, so nobody sees it; its indexes
        # and chunks are garbage that `gc` removes after the grace period.
        return None


def _key_channel_ok(base: str) -> bool:
    """HTTPS, or plain HTTP to a loopback mover (the key never leaves this host)."""
    from urllib.parse import urlsplit
    u = urlsplit(base)
    return u.scheme == "https" or (u.scheme == "http" and u.hostname in ("127.0.0.1", "::1", "localhost"))


class MoverPort:
    """Runs a disk copy on the transfer host's mover, or in-process."""

    def __init__(self, *, store: Store, store_url: str, movers: dict, token: str,
                 ca_file: str | None, requests: int, session: aiohttp.ClientSession | None,
                 imageio_ca: str | None, tokens: dict | None = None):
        self.store, self.store_url = store, store_url
        self.movers, self.token, self.ca_file = movers, token, ca_file
        self.tokens = dict(tokens or {})  # host id -> that host's own mover token
        self.requests, self.session, self.imageio_ca = requests, session, imageio_ca

    async def backup_disk(self, *, host_id, transfer_url, vm_id, backup_id, disk_id,
                          parent_backup_id, incremental, size, copy_id, progress) -> dict:
        spec = {"op": "backup", "transfer_url": transfer_url, "store": self.store_url,
                "vm_id": vm_id, "backup_id": backup_id, "disk_id": disk_id, "size": size,
                "parent_backup_id": parent_backup_id, "incremental": incremental,
                "ca_file": self.imageio_ca}
        return await self._copy(host_id, spec, copy_id, progress)

    async def restore_disk(self, *, host_id, transfer_url, vm_id, backup_id, disk_id, size,
                           copy_id, progress, index_sha256=None) -> dict:
        spec = {"op": "restore", "transfer_url": transfer_url, "store": self.store_url,
                "vm_id": vm_id, "backup_id": backup_id, "disk_id": disk_id, "size": size,
                "ca_file": self.imageio_ca, "index_sha256": index_sha256}
        return await self._copy(host_id, spec, copy_id, progress)

    async def _copy(self, host_id, spec, copy_id, progress) -> dict:
        url = self.movers.get(host_id)
        if url and self.session is not None:
            return await self._remote(url, spec, copy_id, progress, self.tokens.get(host_id) or self.token)
        return await self._direct(spec, progress)

    async def _direct(self, spec, progress) -> dict:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task] = set()

        def on_progress(p):
            if len(pending) < 2:
                t = loop.create_task(progress(p.bytes_done, p.bytes_total))
                pending.add(t)
                t.add_done_callback(pending.discard)
        try:
            result = await run_copy(spec, store=self.store, requests=self.requests, progress=on_progress)
        finally:
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        await progress(result.size, result.size)
        return result.to_dict()

    async def _remote(self, base, spec, copy_id, progress, token) -> dict:
        headers = {"Authorization": f"Bearer {token}"}
        # A mover trusts only the imageio CA of its own configuration: none is sent.
        body = {k: v for k, v in spec.items() if v is not None and k != "ca_file"}
        body["id"] = copy_id
        if getattr(self.store, "encrypted", False):  # the store key travels per copy, only inside TLS (or this host)
            if not _key_channel_ok(base):
                raise MoverError(f"refusing to send the store key to {base}: not HTTPS")
            body["store_key"] = self.store.key.hex() if self.store.key else None
        s = self.session
        try:
            async with s.post(f"{base}/v1/copies", json=body, headers=headers) as r:
                doc = await r.json(content_type=None)
                if r.status not in (200, 201, 202):
                    raise MoverError(f"{base} refused the copy: {doc}")
            cid = doc.get("id", copy_id)
            try:
                while True:
                    async with s.get(f"{base}/v1/copies/{cid}", headers=headers) as r:
                        doc = await r.json(content_type=None)
                        if r.status != 200:
                            raise MoverError(f"{base}: copy {cid}: {doc}")
                    await progress(doc.get("bytes_done", 0), doc.get("bytes_total") or spec.get("size") or 0)
                    if doc["state"] == "succeeded":
                        return doc.get("result") or {}
                    if doc["state"] in ("failed", "canceled"):
                        # The copy's own error class and words (TargetFull, ImageioUnavailable, ...).
                        log.warning("mover.copy_ended", mover=base, copy_id=cid, state=doc["state"],
                                    error=doc.get("error"))
                        raise from_dict(doc.get("error"), default=MoverError)
                    await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                try:
                    async with s.delete(f"{base}/v1/copies/{cid}", headers=headers):
                        pass
                except Exception:
                    pass
                raise
        except aiohttp.ClientError as e:
            raise MoverError(f"mover {base} unreachable: {e}") from e
