"""The oVirt engine, through ovirt-engine-sdk-python in a bounded thread pool.

The SDK is synchronous and a `Connection` is not for concurrent use, so each
worker thread owns one connection (made on first use). Every call is logged
with its correlation id and duration; transient failures (connection errors,
timeouts, 5xx) are retried with exponential backoff. 409 is the engine's
"validation failed / conflicting operation" and is retried only where the
caller says the operation is safe to repeat (`retry_conflict`).
"""
from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import structlog

from imageio_ext.retry import retrying

from ..config import Engine as EngineConfig
from ..errors import EngineError, EngineUnavailable, NotFound

log = structlog.get_logger("ovault.engine")

TRANSIENT_CODES = {500, 502, 503, 504}
# the object a permission is held on, most specific first (none: the system)
PERMISSION_OBJECTS = ("disk", "vm", "template", "host", "storage_domain", "cluster", "data_center")


def describe(e: Exception) -> str:
    """The engine's own words: fault detail when there is one."""
    text = str(e)
    if 'Fault detail is "' in text:
        text = text.split('Fault detail is "', 1)[1].rsplit('"', 1)[0]
    return text


class EngineClient:
    def __init__(self, cfg: EngineConfig, observer: Callable[[str, float, str | None], None] | None = None):
        self.cfg = cfg
        self._pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="engine")
        self._local = threading.local()
        self._conns: list[sdk.Connection] = []
        self._lock = threading.Lock()
        self.observer = observer  # metrics hook: (operation, seconds, error kind or None)
        self._version: tuple[int, int, int] | None = None  # version(): read once

    # --- plumbing ----------------------------------------------------------------
    def _conn(self) -> sdk.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sdk.Connection(url=self.cfg.url, username=self.cfg.username,
                               password=self.cfg.password, ca_file=self.cfg.ca_file or None,
                               insecure=self.cfg.insecure, timeout=120, connections=1)
            self._local.conn = c
            with self._lock:
                self._conns.append(c)
        return c

    async def close(self):
        def close_all():
            with self._lock:
                for c in self._conns:
                    try:
                        c.close()
                    except Exception:
                        pass
                self._conns.clear()
        await asyncio.get_running_loop().run_in_executor(None, close_all)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[[], Any]):
        """Run `fn` in the pool. If the caller is cancelled while the request
        is already on its way, wait for it to end before passing the
        cancellation on: a thread cannot be stopped, and a machine's cleanup
        must find in the engine whatever that request created (a snapshot made
        after cleanup looked for it would be left behind)."""
        cf = self._pool.submit(fn)
        af = asyncio.wrap_future(cf)
        try:
            return await asyncio.shield(af)
        except asyncio.CancelledError:
            if not cf.cancel():  # already running: let it land
                await asyncio.wait([af])
                if not af.cancelled():
                    af.exception()  # its outcome is not ours to report any more
            raise

    async def call(self, what: str, fn: Callable[[sdk.Connection], Any], *,
                   correlation_id: str | None = None, retry_conflict: bool = False,
                   not_found: tuple[str, str] | None = None, retries: int | None = None):
        """Run `fn(connection)` in the pool; map SDK errors to ours. Transient
        failures (connection, timeout, 5xx; a 409 when `retry_conflict`) are
        tried again with backoff, `engine.retries` times."""
        attempts = (self.cfg.retries if retries is None else retries) + 1

        def transient(e: BaseException) -> bool:
            return isinstance(e, EngineUnavailable) or (
                retry_conflict and isinstance(e, EngineError) and e.http_status == 409)

        try:
            async for attempt in retrying(what=f"engine call {what}", attempts=attempts, retry_if=transient,
                                          first=0.25, cap=8.0, logger=log, op=what, correlation_id=correlation_id):
                with attempt:
                    return await self._once(what, fn, attempt.retry_state.attempt_number, correlation_id,
                                            not_found)
        except EngineUnavailable as e:  # the retries are used up: say what was being done
            raise EngineUnavailable(f"{what} failed {attempts} times, last: {e.reason}",
                                    http_status=e.http_status) from e

    async def _once(self, what, fn, attempt: int, correlation_id, not_found):
        t0 = time.monotonic()
        kind = None
        try:
            return await self._run(lambda: fn(self._conn()))
        except sdk.NotFoundError as e:
            kind = "not_found"
            if not_found:
                raise NotFound(*not_found) from e
            raise EngineError(describe(e), http_status=404) from e
        except sdk.AuthError as e:
            kind = "auth"
            # The SDK logs in again once by itself; a second failure is real.
            raise EngineError(f"authentication failed: {describe(e)}", http_status=401) from e
        except (sdk.ConnectionError, sdk.TimeoutError) as e:
            kind = "unavailable"
            raise EngineUnavailable(describe(e)) from e
        except sdk.Error as e:
            code = getattr(e, "code", None)
            kind = f"http_{code}" if code else "error"
            if code in TRANSIENT_CODES:
                raise EngineUnavailable(f"{describe(e)} (HTTP {code})") from e
            raise EngineError(describe(e), http_status=code) from e
        finally:
            dt = time.monotonic() - t0
            log.debug("engine call", op=what, seconds=round(dt, 3), attempt=attempt,
                      correlation_id=correlation_id, error=kind)
            if self.observer:
                self.observer(what, dt, kind)

    # --- inventory -----------------------------------------------------------------
    async def version(self) -> tuple[int, int, int]:
        """The engine's (major, minor, build), read once (the API root's product info)."""
        if self._version is None:
            api = await self.call("api.get", lambda c: c.system_service().get())
            ver = getattr(getattr(api, "product_info", None), "version", None)
            self._version = tuple(int(getattr(ver, k, None) or 0) for k in ("major", "minor", "build"))
        return self._version

    async def list_vms(self, search: str | None = None) -> list[types.Vm]:
        return await self.call("vms.list", lambda c: c.system_service().vms_service().list(search=search))

    async def list_vms_with_tags(self, search: str | None = None) -> list[types.Vm]:
        """Every VM with its tags inlined (`follow=tags`, one request): what policy
        membership rules (tags, clusters, names) are evaluated against."""
        return await self.call("vms.list", lambda c: c.system_service().vms_service()
                               .list(search=search, follow="tags"))

    async def get_vm(self, vm_id: str, all_content: bool = False) -> types.Vm:
        return await self.call("vm.get", lambda c: c.system_service().vms_service().vm_service(vm_id)
                               .get(all_content=all_content), not_found=("VM", vm_id))

    async def vm_disks(self, vm_id: str) -> list[tuple[types.DiskAttachment, types.Disk]]:
        def fn(c):
            s = c.system_service()
            atts = s.vms_service().vm_service(vm_id).disk_attachments_service().list()
            return [(a, s.disks_service().disk_service(a.disk.id).get()) for a in atts]
        return await self.call("vm.disks", fn, not_found=("VM", vm_id))

    async def vm_nics(self, vm_id: str) -> list[types.Nic]:
        return await self.call("vm.nics", lambda c: c.system_service().vms_service().vm_service(vm_id)
                               .nics_service().list(), not_found=("VM", vm_id))

    async def get_disk(self, disk_id: str) -> types.Disk:
        return await self.call("disk.get", lambda c: c.system_service().disks_service()
                               .disk_service(disk_id).get(), not_found=("disk", disk_id))

    async def list_clusters(self) -> list[types.Cluster]:
        return await self.call("clusters.list", lambda c: c.system_service().clusters_service().list())

    async def list_storage_domains(self) -> list[types.StorageDomain]:
        return await self.call("sds.list", lambda c: c.system_service().storage_domains_service().list())

    # --- snapshots -------------------------------------------------------------------
    async def create_snapshot(self, vm_id: str, description: str, disk_ids: list[str],
                              correlation_id: str) -> types.Snapshot:
        snap = types.Snapshot(description=description, persist_memorystate=False,
                              disk_attachments=[types.DiskAttachment(disk=types.Disk(id=d))
                                                for d in disk_ids])
        return await self.call(
            "snapshot.add", lambda c: c.system_service().vms_service().vm_service(vm_id)
            .snapshots_service().add(snap, query={"correlation_id": correlation_id}),
            correlation_id=correlation_id, retry_conflict=True, not_found=("VM", vm_id))

    async def list_snapshots(self, vm_id: str) -> list[types.Snapshot]:
        return await self.call("snapshots.list", lambda c: c.system_service().vms_service()
                               .vm_service(vm_id).snapshots_service().list(), not_found=("VM", vm_id))

    async def get_snapshot(self, vm_id: str, snap_id: str) -> types.Snapshot | None:
        try:
            return await self.call("snapshot.get", lambda c: c.system_service().vms_service()
                                   .vm_service(vm_id).snapshots_service().snapshot_service(snap_id)
                                   .get(), not_found=("snapshot", snap_id))
        except NotFound:
            return None

    async def snapshot_disks(self, vm_id: str, snap_id: str) -> list[types.Disk]:
        return await self.call("snapshot.disks", lambda c: c.system_service().vms_service()
                               .vm_service(vm_id).snapshots_service().snapshot_service(snap_id)
                               .disks_service().list(), not_found=("snapshot", snap_id))

    async def remove_snapshot(self, vm_id: str, snap_id: str, correlation_id: str):
        try:
            await self.call("snapshot.remove", lambda c: c.system_service().vms_service()
                            .vm_service(vm_id).snapshots_service().snapshot_service(snap_id)
                            .remove(query={"correlation_id": correlation_id}),
                            correlation_id=correlation_id, retry_conflict=True,
                            not_found=("snapshot", snap_id))
        except NotFound:
            pass  # already gone: removal is idempotent

    # --- backups (CBT) -----------------------------------------------------------------
    def _backups(self, c, vm_id):
        return c.system_service().vms_service().vm_service(vm_id).backups_service()

    async def start_backup(self, vm_id: str, backup_id: str, disk_ids: list[str],
                           from_checkpoint_id: str | None, description: str,
                           correlation_id: str, require_consistency: bool = False) -> types.Backup:
        b = types.Backup(id=backup_id, disks=[types.Disk(id=d) for d in disk_ids],
                         from_checkpoint_id=from_checkpoint_id, description=description)
        # require_consistency (engine 4.4.4+): the engine fails the backup when the guest
        # cannot be frozen; older engines ignore it, so it is sent only when asked for
        return await self.call("backup.add", lambda c: self._backups(c, vm_id).add(
            b, require_consistency=require_consistency or None,
            query={"correlation_id": correlation_id}), correlation_id=correlation_id,
            not_found=("VM", vm_id))

    async def get_backup(self, vm_id: str, backup_id: str) -> types.Backup | None:
        try:
            return await self.call("backup.get", lambda c: self._backups(c, vm_id)
                                   .backup_service(backup_id).get(), not_found=("backup", backup_id))
        except NotFound:
            return None

    async def backup_disks(self, vm_id: str, backup_id: str) -> list[types.Disk]:
        return await self.call("backup.disks", lambda c: self._backups(c, vm_id)
                               .backup_service(backup_id).disks_service().list())

    async def finalize_backup(self, vm_id: str, backup_id: str, correlation_id: str):
        await self.call("backup.finalize", lambda c: self._backups(c, vm_id)
                        .backup_service(backup_id).finalize(query={"correlation_id": correlation_id}),
                        correlation_id=correlation_id, retry_conflict=True)

    async def get_checkpoint(self, vm_id: str, checkpoint_id: str) -> types.Checkpoint | None:
        try:
            return await self.call("checkpoint.get", lambda c: c.system_service().vms_service()
                                   .vm_service(vm_id).checkpoints_service()
                                   .checkpoint_service(checkpoint_id).get(),
                                   not_found=("checkpoint", checkpoint_id))
        except NotFound:
            return None

    def _checkpoints(self, c, vm_id):
        return c.system_service().vms_service().vm_service(vm_id).checkpoints_service()

    async def list_checkpoints(self, vm_id: str) -> list[types.Checkpoint]:
        return await self.call("checkpoints.list", lambda c: self._checkpoints(c, vm_id).list(),
                               not_found=("VM", vm_id))

    async def remove_checkpoint(self, vm_id: str, checkpoint_id: str, correlation_id: str):
        try:
            await self.call("checkpoint.remove", lambda c: self._checkpoints(c, vm_id)
                            .checkpoint_service(checkpoint_id).remove(query={"correlation_id": correlation_id}),
                            correlation_id=correlation_id, not_found=("checkpoint", checkpoint_id))
        except NotFound:
            pass  # already gone: removal is idempotent

    # --- image transfers -------------------------------------------------------------------
    async def create_transfer(self, *, direction: str, correlation_id: str, disk_id: str | None = None,
                              snapshot_id: str | None = None, backup_id: str | None = None,
                              host_id: str | None = None) -> types.ImageTransfer:
        t = types.ImageTransfer(direction=types.ImageTransferDirection(direction),
                                format=types.DiskFormat.RAW, inactivity_timeout=120,
                                timeout_policy=types.ImageTransferTimeoutPolicy.CANCEL,
                                backup=types.Backup(id=backup_id) if backup_id else None,
                                host=types.Host(id=host_id) if host_id else None)
        if snapshot_id:
            t.snapshot = types.DiskSnapshot(id=snapshot_id)
        else:
            t.disk = types.Disk(id=disk_id)
        return await self.call("transfer.add", lambda c: c.system_service().image_transfers_service()
                               .add(t, query={"correlation_id": correlation_id}),
                               correlation_id=correlation_id)

    async def get_transfer(self, transfer_id: str) -> types.ImageTransfer | None:
        try:
            return await self.call("transfer.get", lambda c: c.system_service().image_transfers_service()
                                   .image_transfer_service(transfer_id).get(),
                                   not_found=("transfer", transfer_id))
        except NotFound:
            return None

    async def list_transfers(self) -> list[types.ImageTransfer]:
        return await self.call("transfers.list", lambda c: c.system_service()
                               .image_transfers_service().list())

    async def transfer_action(self, transfer_id: str, action: str, correlation_id: str | None = None):
        def fn(c):
            svc = c.system_service().image_transfers_service().image_transfer_service(transfer_id)
            getattr(svc, action)(query={"correlation_id": correlation_id} if correlation_id else None)
        try:
            await self.call(f"transfer.{action}", fn, correlation_id=correlation_id,
                            not_found=("transfer", transfer_id))
        except NotFound:
            pass

    # --- permissions (ovault's authorization of engine users) --------------------------------
    async def user_permissions(self, user_id: str) -> list[tuple[str, str, str | None]]:
        """(role id, object type, object id) of each permission a user holds;
        object type is one of system, data_center, cluster, storage_domain,
        host, template, vm, disk (id None for the system)."""
        def fn(c):
            out = []
            for p in (c.system_service().users_service().user_service(user_id)
                      .permissions_service().list()):
                if p.role is None:
                    continue
                for kind in PERMISSION_OBJECTS:
                    obj = getattr(p, kind, None)
                    if obj is not None and obj.id:
                        out.append((p.role.id, kind, obj.id))
                        break
                else:
                    out.append((p.role.id, "system", None))
            return out
        return await self.call("user.permissions", fn, not_found=("user", user_id))

    async def role_permits(self, role_id: str) -> frozenset[str]:
        """The names of a role's permits (the engine's action groups: `create_vm`, …)."""
        return frozenset(p.name for p in await self.call(
            "role.permits", lambda c: c.system_service().roles_service().role_service(role_id)
            .permits_service().list(), not_found=("role", role_id)) if p.name)

    async def grant_disk_role(self, disk_id: str, user_id: str, role: str, correlation_id: str):
        """Give a user a role (by name) on a disk; twice is harmless (409 = done)."""
        await self._grant("disk", lambda c: c.system_service().disks_service().disk_service(disk_id),
                          user_id, role, correlation_id)

    async def _grant(self, kind: str, service, user_id: str, role: str, correlation_id: str):
        """Add a permission on the object `service(connection)` names. Granting it twice
        is harmless: the engine's 409 "permission already exists" counts as done."""
        try:
            await self.call(f"{kind}.permission.add", lambda c: service(c).permissions_service()
                            .add(types.Permission(role=types.Role(name=role), user=types.User(id=user_id)),
                                 query={"correlation_id": correlation_id}),
                            correlation_id=correlation_id)
        except EngineError as e:
            if getattr(e, "http_status", None) != 409:
                raise

    # --- VMs and disks for restores ------------------------------------------------------------
    async def add_vm(self, vm: types.Vm, correlation_id: str) -> types.Vm:
        return await self.call("vm.add", lambda c: c.system_service().vms_service().add(
            vm, query={"correlation_id": correlation_id}), correlation_id=correlation_id)

    async def grant_vm_role(self, vm_id: str, user_id: str, role: str, correlation_id: str):
        """Give a user a role (by name) on a VM; twice is harmless (409 = done)."""
        await self._grant("vm", lambda c: c.system_service().vms_service().vm_service(vm_id),
                          user_id, role, correlation_id)

    async def update_vm(self, vm_id: str, vm: types.Vm, correlation_id: str) -> types.Vm:
        return await self.call("vm.update", lambda c: c.system_service().vms_service()
                               .vm_service(vm_id).update(vm, query={"correlation_id": correlation_id}),
                               correlation_id=correlation_id)

    async def remove_vm(self, vm_id: str, correlation_id: str):
        try:
            await self.call("vm.remove", lambda c: c.system_service().vms_service().vm_service(vm_id)
                            .remove(query={"correlation_id": correlation_id}),
                            correlation_id=correlation_id, retry_conflict=True,
                            not_found=("VM", vm_id))
        except NotFound:
            pass

    async def start_vm(self, vm_id: str, correlation_id: str):
        await self.call("vm.start", lambda c: c.system_service().vms_service().vm_service(vm_id)
                        .start(query={"correlation_id": correlation_id}), correlation_id=correlation_id)

    async def add_disk(self, disk: types.Disk, correlation_id: str) -> types.Disk:
        return await self.call("disk.add", lambda c: c.system_service().disks_service().add(
            disk, query={"correlation_id": correlation_id}), correlation_id=correlation_id)

    async def remove_disk(self, disk_id: str, correlation_id: str):
        try:
            await self.call("disk.remove", lambda c: c.system_service().disks_service()
                            .disk_service(disk_id).remove(query={"correlation_id": correlation_id}),
                            correlation_id=correlation_id, retry_conflict=True,
                            not_found=("disk", disk_id))
        except NotFound:
            pass

    async def attach_disk(self, vm_id: str, att: types.DiskAttachment, correlation_id: str):
        return await self.call("diskattachment.add", lambda c: c.system_service().vms_service()
                               .vm_service(vm_id).disk_attachments_service()
                               .add(att, query={"correlation_id": correlation_id}),
                               correlation_id=correlation_id)

    async def events_since(self, index: int | None, max_: int = 200) -> list[types.Event]:
        if index is None:
            return await self.call("events.list", lambda c: c.system_service().events_service()
                                   .list(max=1), retries=0)
        return await self.call("events.list", lambda c: c.system_service().events_service()
                               .list(from_=index, max=max_), retries=0)

    async def events_of(self, correlation_id: str, max_: int = 500) -> list[types.Event]:
        """The audit-log events of one operation (the engine's search by correlation id)."""
        return await self.call("events.list", lambda c: c.system_service().events_service()
                               .list(search=f"correlation_id={correlation_id}", max=max_))

    async def add_event(self, description: str, severity: str = "normal", vm_id: str | None = None,
                        custom_id: int | None = None):
        ev = types.Event(description=description, severity=types.LogSeverity(severity),
                         origin="ovault", custom_id=custom_id or random.randrange(1, 2**31),
                         vm=types.Vm(id=vm_id) if vm_id else None)
        return await self.call("events.add", lambda c: c.system_service().events_service().add(ev),
                               retries=1)
