"""Which sandbox VMs run real guests, and their life cycle for the engine.

A VM runs a real guest when its OS type is `GUEST_OS` (the sample guest VMs
have it, and VMs created from their OVF — restores — keep it); every other VM
stays a record, exactly as before. `Guests` is attached to the engine as
`engine.guests`; the engine's start/stop/shutdown/reboot call it, the admin
API writes files through it, and live backups find a VM's `Guest` (QMP and
guest agent sockets, node names) with `engine.guests.get(vm_id)`.
"""
from __future__ import annotations

import asyncio
import io
import os
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import structlog

from ..proc import Registry, run
from . import boot
from .build import OsImage, ensure_image, sample_hostname
from .runner import Guest, GuestDisk, GuestError

log = structlog.get_logger("sandbox.guests")
GUEST_OS = "debian_12"  # the sandbox's guest Linux; other OS types never boot


def max_running() -> int:
    return int(os.environ.get("OVAULT_SANDBOX_MAX_GUESTS", "2"))


def files_tar(files: dict[str, bytes]) -> bytes:
    """A tar of files (absolute guest paths), root-owned, mode 0644, parents 0755."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        dirs = set()
        for path in files:
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, now
            t.addfile(ti)
        for path, data in files.items():
            ti = tarfile.TarInfo(path.strip("/"))
            ti.size, ti.mode, ti.mtime = len(data), 0o644, now
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def check_guest_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise ValueError("path must be an absolute path in the guest")
    parts = path.strip("/").split("/")
    if not parts or parts == [""] or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"path {path!r}: no empty, '.' or '..' parts, and not the root")
    return "/" + "/".join(parts)


async def offline_edit(image: OsImage, disk: Path, fmt: str, files: dict[str, bytes]) -> str:
    """Write files into the root file system of a disk that no guest runs on
    (a maintenance boot that unpacks them)."""
    with tempfile.NamedTemporaryFile(suffix=".tar", dir=disk.parent, prefix=".edit-") as t:
        data = files_tar(files)
        t.write(data + b"\0" * (-len(data) % 512))
        t.flush()
        try:
            out = await asyncio.to_thread(boot.maintenance_boot, image, "edit", disk, fmt,
                                          Path(t.name))
        except (RuntimeError, subprocess.TimeoutExpired) as e:  # qemu refused the disk (held)
            raise GuestError(f"offline write failed: {e}") from None
    if "edit ok" not in boot.results(out):
        raise GuestError("offline write failed: " + "; ".join(boot.results(out))
                         or out[-800:])
    return out


async def offline_fsck(image: OsImage, disk: Path, fmt: str) -> dict:
    """fsck (read-only) of a disk's root file system: {"rc", "type", "log"}."""
    out = await asyncio.to_thread(boot.maintenance_boot, image, "fsck", disk, fmt)
    res = next((r for r in boot.results(out) if r.startswith("fsck")), "")
    if "rc=" not in res:
        raise GuestError(f"fsck did not run: {res or out[-800:]}")
    kv = dict(w.split("=", 1) for w in res.split() if "=" in w)
    return {"rc": int(kv["rc"]), "type": kv.get("type"), "device": kv.get("dev"),
            "log": "\n".join(line.split("OVAULT-FSCK ", 1)[1] for line in out.splitlines()
                             if "OVAULT-FSCK " in line)}


async def make_disk(top: Path, layout: str, hostname: str):
    """Fill a new disk's (empty) top volume with the base disk of `layout`,
    its /etc/hostname holding `hostname`."""
    image = await asyncio.to_thread(ensure_image)
    await run("qemu-img", "convert", "-q", "-n", "-f", "qcow2", "-O", "qcow2",
              image.base_disk(layout), top)
    if hostname != sample_hostname(layout):  # the base disk has the sample VM's name
        await offline_edit(image, top, "qcow2", {"/etc/hostname": (hostname + "\n").encode()})


class Guests:
    def __init__(self, engine, base: Path, registry: Registry):
        self.engine = engine
        self.base = base
        self.registry = registry
        self.running: dict[str, Guest] = {}
        self._offline = asyncio.Lock()
        self._watchers: set[asyncio.Task] = set()

    @staticmethod
    def is_guest(vm) -> bool:
        return vm.os_type == GUEST_OS

    def get(self, vm_id: str) -> Guest | None:
        g = self.running.get(vm_id)
        return g if g is not None and g.running else None

    def _disks(self, vm) -> list[GuestDisk]:
        out = []
        for i, a in enumerate(a for a in vm.attachments if a.active):
            d = self.engine.disks[a.disk_id]
            top = d.image.top
            out.append(GuestDisk(d.id, f"disk-{i}", f"file-{i}", f"dev-{i}", top.path, top.fmt,
                                 "virtio" if a.interface == "virtio" else "virtio_scsi"))
        return out

    def check_start(self, vm):
        """Refuse (409) what cannot boot, before the engine accepts the start."""
        from ..engine.model import Conflict
        if len([g for vid, g in self.running.items() if vid != vm.id]) >= max_running():
            raise Conflict(f"[Cannot run VM. The sandbox runs at most {max_running()} guests at "
                           "a time (OVAULT_SANDBOX_MAX_GUESTS).]")
        if not any(a.bootable for a in vm.attachments if a.active):
            raise Conflict("[Cannot run VM without at least one bootable disk.]")

    async def start(self, vm) -> Guest:
        if self.get(vm.id):
            return self.running[vm.id]
        if len([g for vid, g in self.running.items() if vid != vm.id]) >= max_running():
            raise GuestError(f"the sandbox runs at most {max_running()} guests at a time")
        if not any(a.bootable for a in vm.attachments if a.active):
            raise GuestError(f"VM {vm.name} has no bootable disk")
        image = await asyncio.to_thread(ensure_image)
        g = Guest(vm.id, vm.name, self.base / vm.id, self._disks(vm))
        self.running[vm.id] = g
        try:
            await g.start(image, self.registry)
            # `up` once the agent answers too (it starts with the workload), so freezes and
            # file writes right after a start find it
            await g.agent_ready(30)
            g.boot_seconds = round(time.monotonic() - g.started_at, 1)
        except BaseException:
            await g.kill()
            self.running.pop(vm.id, None)
            raise
        log.info("guest up", vm=vm.name, seconds=g.boot_seconds, accel=g.accel)
        t = asyncio.get_running_loop().create_task(self._watch_exit(vm, g))
        self._watchers.add(t)
        t.add_done_callback(self._watchers.discard)
        return g

    async def _watch_exit(self, vm, g: Guest):
        """A guest that powers itself off (or dies) takes its VM down, as vdsm reports it."""
        await g.child.proc.wait()
        if self.running.get(vm.id) is g:
            self.running.pop(vm.id, None)
            await g.kill()
            vm.status, vm.host_id = "down", None
            self.engine.event(61, f"VM {vm.name} is down. Exit message: the guest stopped "
                                  f"(qemu exit code {g.child.proc.returncode}).", vm_id=vm.id)

    async def stop(self, vm, graceful: bool, timeout: float = 30.0) -> str:
        g = self.running.pop(vm.id, None)
        if g is None:
            return "down"
        how = await g.shutdown(timeout) if graceful else "killed"
        await g.kill()
        return how

    async def reboot(self, vm):
        g = self.get(vm.id)
        if g is None:
            raise GuestError(f"VM {vm.name} has no running guest")
        await g.reboot()

    async def write_file(self, vm, path: str, data: bytes) -> str:
        """A file in the VM's root file system: through the agent when it runs,
        offline otherwise. Returns "agent" or "offline"."""
        path = check_guest_path(path)
        g = self.get(vm.id)
        if g is not None:
            parent = path.rsplit("/", 1)[0] or "/"
            r = await g.exec(["/bin/mkdir", "-p", parent])
            if r["exitcode"]:
                raise GuestError(f"mkdir -p {parent} in the guest: {r['err'].strip()}")
            await g.write_file(path, data)
            return "agent"
        boot_disk = next((a for a in vm.attachments if a.bootable), None)
        if boot_disk is None:
            raise GuestError(f"VM {vm.name} has no bootable disk")
        top = self.engine.disks[boot_disk.disk_id].image.top
        async with self._offline:
            image = await asyncio.to_thread(ensure_image)
            await offline_edit(image, top.path, top.fmt, {path: data})
        return "offline"

    async def close(self):
        for t in list(self._watchers):
            t.cancel()
        for vm_id in list(self.running):
            g = self.running.pop(vm_id)
            await g.kill()
