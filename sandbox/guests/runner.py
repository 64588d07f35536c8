"""A running sandbox guest: one `qemu-system-x86_64` per VM that is up.

Each guest gets a directory `<lab>/guests/<vm_id>/` with
- `qmp.sock`         QMP, free for other users (live backups keep a connection open),
- `qmp-sandbox.sock` QMP used by the sandbox itself (one short connection per command),
- `qga.sock`         the guest agent's virtio-serial channel (use `Guest.qga()`: the
                     channel takes one client at a time, so calls are serialised),
- `console.log`      the serial console.

Disks are `-blockdev`s with explicit node names (see `GuestDisk`): the
protocol node `file-<n>` on the top volume and the format node `disk-<n>` on
it (the backing chain below is opened by qemu from the qcow2 headers), so a
live backup can add bitmaps, a fleecing node or an NBD export by node name.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..proc import Child, Registry
from . import boot

BOOT_TIMEOUT = 90.0


class GuestError(RuntimeError):
    pass


@dataclass
class GuestDisk:
    disk_id: str
    node_name: str        # format node (qcow2/raw) of the active volume: what the guest sees
    file_node_name: str   # protocol node under it
    device_id: str        # the qdev id of the guest's disk device
    path: Path            # the active volume
    fmt: str              # qcow2 | raw
    interface: str        # virtio_scsi | virtio


@dataclass
class Guest:
    vm_id: str
    name: str
    dir: Path
    disks: list[GuestDisk] = field(default_factory=list)
    accel: str = "tcg"
    child: Child | None = None
    started_at: float = 0.0
    boot_seconds: float | None = None
    _qga_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _ids = itertools.count(1)

    # --- sockets ----------------------------------------------------------------------
    @property
    def qmp_socket(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def sandbox_qmp_socket(self) -> Path:
        return self.dir / "qmp-sandbox.sock"

    @property
    def qga_socket(self) -> Path:
        return self.dir / "qga.sock"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.running

    def disk(self, disk_id: str) -> GuestDisk:
        for d in self.disks:
            if d.disk_id == disk_id:
                return d
        raise KeyError(f"disk {disk_id} is not in guest {self.name}")

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ups(self) -> int:
        """How many times the guest reached its workload (boots)."""
        return self.console().count("OVAULT-RESULT up")

    # --- life cycle -------------------------------------------------------------------
    def argv(self, image) -> list[str]:
        argv = boot.machine_args(self.accel) + boot.kernel_args(image, "ovault.mode=run")
        argv += ["-name", f"guest={self.name}",
                 "-serial", f"file:{self.console_log}",
                 "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
                 "-qmp", f"unix:{self.sandbox_qmp_socket},server=on,wait=off",
                 "-chardev", f"socket,id=qga0,path={self.qga_socket},server=on,wait=off",
                 "-device", "virtio-serial-pci,id=vser0",
                 "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
                 "-device", "virtio-scsi-pci,id=scsi0"]
        for d in self.disks:
            argv += ["-blockdev", json.dumps({"driver": "file", "filename": str(d.path),
                                              "node-name": d.file_node_name,
                                              "cache": {"direct": False}, "discard": "unmap"}),
                     "-blockdev", json.dumps({"driver": d.fmt, "file": d.file_node_name,
                                              "node-name": d.node_name, "discard": "unmap"})]
            if d.interface == "virtio":
                argv += ["-device", f"virtio-blk-pci,drive={d.node_name},id={d.device_id}"]
            else:
                argv += ["-device", f"scsi-hd,drive={d.node_name},id={d.device_id},bus=scsi0.0"]
        return argv

    async def start(self, image, registry: Registry | None = None, wait: bool = True):
        self.dir.mkdir(parents=True, exist_ok=True)
        for p in (self.qmp_socket, self.sandbox_qmp_socket, self.qga_socket, self.console_log):
            p.unlink(missing_ok=True)
        self.accel = await asyncio.to_thread(boot.accel, image)
        self.started_at = time.monotonic()
        self.child = await Child(f"guest-{self.vm_id}", self.argv(image), registry=registry,
                                 log=self.dir / "qemu.log").start()
        if wait:
            await self.wait_up(0)

    async def wait_up(self, ups_before: int, timeout: float = BOOT_TIMEOUT):
        """Until the guest's init reports its workload running (boot number ups_before+1)."""
        deadline = time.monotonic() + timeout
        while self.ups() <= ups_before:
            if not self.running:
                raise GuestError(f"guest {self.name} exited while booting "
                                 f"(rc {self.child.proc.returncode if self.child else '?'}): "
                                 f"{self._tail()}")
            failed = [r for r in boot.results(self.console()) if r.startswith("boot failed")]
            if failed:
                raise GuestError(f"guest {self.name}: {failed[-1]}")
            if time.monotonic() > deadline:
                raise GuestError(f"guest {self.name} did not boot in {timeout:.0f} s: {self._tail()}")
            await asyncio.sleep(0.1)
        self.boot_seconds = round(time.monotonic() - self.started_at, 1)

    def _tail(self) -> str:
        text = self.console()[-1500:]
        try:
            text += (self.dir / "qemu.log").read_text(errors="replace")[-500:]
        except FileNotFoundError:
            pass
        return text

    async def wait_exit(self, timeout: float) -> bool:
        if not self.running:
            return True
        try:
            await asyncio.wait_for(self.child.proc.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def kill(self):
        """Power cut (the engine's stop): SIGTERM to qemu, SIGKILL after 10 s, as
        libvirt's destroy does for vdsm. The guest gets no warning, but qemu itself
        exits cleanly, so persistent dirty bitmaps (checkpoints) reach the qcow2."""
        if self.child:
            await self.child.stop(timeout=10.0)

    async def shutdown(self, timeout: float = 30.0) -> str:
        """A clean power-off: the guest agent's guest-shutdown, else ACPI power
        button; a kill after `timeout`. Returns how it went down."""
        if not self.running:
            return "down"
        how = "agent"
        try:
            await self.qga("guest-shutdown", {"mode": "powerdown"}, timeout=5, reply=False)
        except (OSError, GuestError, asyncio.TimeoutError):
            how = "acpi"
            try:
                await self.qmp("system_powerdown")
            except (OSError, GuestError, asyncio.TimeoutError):
                pass
        if not await self.wait_exit(timeout):
            how = "killed"
        await self.kill()
        return how

    async def reboot(self, timeout: float = BOOT_TIMEOUT):
        """A clean reboot through the agent (reset when it does not answer)."""
        before = self.ups()
        try:
            await self.qga("guest-shutdown", {"mode": "reboot"}, timeout=5, reply=False)
        except (OSError, GuestError, asyncio.TimeoutError):
            await self.qmp("system_reset")
        self.started_at = time.monotonic()
        await self.wait_up(before, timeout)

    # --- QMP and guest agent ------------------------------------------------------------
    async def qmp(self, command: str, arguments: dict | None = None, timeout: float = 30.0):
        """One QMP command on the sandbox's own monitor; its `return` value."""
        async def go():
            r, w = await asyncio.open_unix_connection(str(self.sandbox_qmp_socket), limit=1 << 24)
            try:
                await r.readline()  # greeting
                for cmd in ({"execute": "qmp_capabilities"},
                            {"execute": command, **({"arguments": arguments} if arguments else {})}):
                    w.write(json.dumps(cmd).encode() + b"\n")
                    await w.drain()
                    while True:
                        msg = json.loads(await r.readline() or b'{"error": {"desc": "closed"}}')
                        if "return" in msg or "error" in msg:
                            break
                    if "error" in msg:
                        raise GuestError(f"QMP {cmd['execute']}: {msg['error'].get('desc')}")
                return msg["return"]
            finally:
                w.close()
        return await asyncio.wait_for(go(), timeout)

    async def hmp(self, command_line: str) -> str:
        return await self.qmp("human-monitor-command", {"command-line": command_line})

    async def qga(self, command: str, arguments: dict | None = None, timeout: float = 30.0,
                  reply: bool = True):
        """One guest agent command (serialised: the channel has one client at a time)."""
        async def go():
            r, w = await asyncio.open_unix_connection(str(self.qga_socket), limit=1 << 24)
            try:
                sync_id = next(self._ids) + int(time.time()) % 100000 * 1000
                # guest-sync-delimited: flush what an earlier client left in the channel
                w.write(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                              "arguments": {"id": sync_id}}).encode() + b"\n")
                await w.drain()
                while True:
                    line = await r.readline()
                    if not line:
                        raise GuestError("guest agent channel closed")
                    line = line.lstrip(b"\xff").strip()
                    if not line:
                        continue
                    try:
                        if json.loads(line).get("return") == sync_id:
                            break
                    except ValueError:
                        continue
                w.write(json.dumps({"execute": command,
                                    **({"arguments": arguments} if arguments else {})}).encode() + b"\n")
                await w.drain()
                if not reply:
                    return None
                msg = json.loads(await r.readline() or b'{"error": {"desc": "closed"}}')
                if "error" in msg:
                    raise GuestError(f"guest agent {command}: {msg['error'].get('desc')}")
                return msg.get("return")
            finally:
                w.close()
        async with self._qga_lock:
            return await asyncio.wait_for(go(), timeout)

    async def agent_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await self.qga("guest-ping", timeout=3)
                return True
            except (OSError, GuestError, asyncio.TimeoutError, ValueError):
                await asyncio.sleep(0.3)
        return False

    async def write_file(self, path: str, data: bytes, mode: str = "w"):
        """A file inside the guest through the agent (guest-file-open/write/close)."""
        h = await self.qga("guest-file-open", {"path": path, "mode": mode})
        try:
            for i in range(0, len(data), 1 << 20):
                await self.qga("guest-file-write", {
                    "handle": h, "buf-b64": base64.b64encode(data[i:i + (1 << 20)]).decode()})
            await self.qga("guest-file-flush", {"handle": h})
        finally:
            await self.qga("guest-file-close", {"handle": h})

    async def read_file(self, path: str) -> bytes:
        h = await self.qga("guest-file-open", {"path": path, "mode": "r"})
        out = b""
        try:
            while True:
                r = await self.qga("guest-file-read", {"handle": h, "count": 1 << 20})
                out += base64.b64decode(r.get("buf-b64", ""))
                if r.get("eof") or not r.get("count"):
                    return out
        finally:
            await self.qga("guest-file-close", {"handle": h})

    async def exec(self, argv: list[str], timeout: float = 60.0) -> dict:
        """guest-exec and wait: {"exitcode", "out", "err"}."""
        r = await self.qga("guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True})
        deadline = time.monotonic() + timeout
        while True:
            s = await self.qga("guest-exec-status", {"pid": r["pid"]})
            if s.get("exited"):
                return {"exitcode": s.get("exitcode"),
                        "out": base64.b64decode(s.get("out-data", "")).decode(errors="replace"),
                        "err": base64.b64decode(s.get("err-data", "")).decode(errors="replace")}
            if time.monotonic() > deadline:
                raise GuestError(f"{argv} still running after {timeout} s")
            await asyncio.sleep(0.2)

    async def write_disk(self, disk_id: str, offset: int, length: int, data_file: Path | None = None,
                         pattern: int | None = None):
        """A raw write into a disk of the running guest, below its file systems (HMP qemu-io
        on the disk's device)."""
        d = self.disk(disk_id)
        op = f"write -s {data_file}" if data_file else f"write -P {int(pattern or 0)}"
        out = await self.hmp(f'qemu-io -d {d.device_id} "{op} {offset} {length}"')
        if "error" in out.lower() or "failed" in out.lower():
            raise GuestError(f"qemu-io on {d.device_id}: {out.strip()}")

    def handle(self) -> dict:
        """What live backups need, as plain data."""
        return {"vm_id": self.vm_id, "name": self.name, "qmp": str(self.qmp_socket),
                "qga": str(self.qga_socket), "accel": self.accel,
                "disks": [{"disk_id": d.disk_id, "node_name": d.node_name,
                           "file_node_name": d.file_node_name, "device_id": d.device_id,
                           "path": str(d.path), "format": d.fmt} for d in self.disks]}

