"""Simulated hypervisor hosts: a real ovirt-imageio daemon each, and the
qemu-nbd exports that vdsm would start for image transfers on that host.
"""
from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp

from .proc import Child, Registry, wait_for


_given: set[int] = set()


def free_port() -> int:
    """A free loopback port never handed out before by this process: daemons started
    side by side each bind theirs later, and the kernel may offer one port twice
    meanwhile (two movers once got the same port; the second failed to bind and its
    host's copies went to the first, which refused their token)."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port
    raise RuntimeError("no free loopback port")


class ImageioDaemon:
    """A real ovirt-imageio daemon, run without root, systemd or privileges drop."""

    def __init__(self, name: str, base: Path, pki: dict, registry: Registry, port: int = 0):
        self.name, self.base, self.pki, self.registry = name, base, pki, registry
        self.port = port or free_port()
        self.run_dir = base / "run"
        self.local_socket = self.run_dir / "local.sock"
        self.control_socket = self.run_dir / "control.sock"
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _write_conf(self):
        conf = self.base / "conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (conf / "daemon.conf").write_text(f"""
[daemon]
run_dir = {self.run_dir}
drop_privileges = false
systemd_enable = false
poll_interval = 0.2

[tls]
enable = true
key_file = {self.pki['key']}
cert_file = {self.pki['cert']}
ca_file = {self.pki['ca']}

[remote]
host = 127.0.0.1
port = {self.port}

[local]
enable = true
socket = {self.local_socket}

[control]
transport = unix
socket = {self.control_socket}
remove_timeout = 10
""")
        (conf / "logger.conf").write_text(f"""
[loggers]
keys = root

[handlers]
keys = logfile

[formatters]
keys = long

[logger_root]
level = INFO
handlers = logfile
propagate = 0

[handler_logfile]
class = logging.handlers.RotatingFileHandler
args = ('{self.base / "daemon.log"}',)
kwargs = {{"maxBytes": 10485760, "backupCount": 1}}
level = DEBUG
formatter = long

[formatter_long]
format = %(asctime)s %(levelname)-7s (%(threadName)s) [%(name)s] %(message)s
""")

    async def start(self):
        self._write_conf()
        for s in (self.control_socket, self.local_socket):
            s.unlink(missing_ok=True)
        import sys
        exe = Path(sys.executable).with_name("ovirt-imageio")
        self.child = await Child(f"imageio-{self.name}", [exe, "--conf-dir", self.base],
                                 registry=self.registry, log=self.base / "stdout.log").start()
        # 60 s: four daemons start beside the making of hundreds of VM disks on a busy machine
        await wait_for(self._ready, timeout=60, what=f"imageio daemon of {self.name}")

    async def _ready(self) -> bool:
        if not self.child.running:
            raise RuntimeError(f"imageio daemon of {self.name} exited; see {self.base}/daemon.log")
        if not self.control_socket.exists():
            return False
        try:
            r = await asyncio.wait_for(self._ctl("GET", "/tickets/ready-probe"), 2)
            return r[0] in (404, 200)
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError):
            return False

    async def stop(self):
        if self.child:
            await self.child.stop()

    async def kill(self):
        if self.child:
            await self.child.kill()

    @property
    def running(self) -> bool:
        return bool(self.child and self.child.running)

    async def _ctl(self, method, path, body=None):
        conn = aiohttp.UnixConnector(path=str(self.control_socket))
        async with aiohttp.ClientSession(connector=conn) as s:
            async with s.request(method, "http://localhost" + path,
                                 data=json.dumps(body) if body is not None else None) as r:
                return r.status, await r.text()

    async def add_ticket(self, ticket: dict):
        st, text = await self._ctl("PUT", f"/tickets/{ticket['uuid']}", ticket)
        if st != 200:
            raise RuntimeError(f"imageio refused ticket: {st} {text}")

    async def get_ticket(self, ticket_id: str) -> dict | None:
        st, text = await self._ctl("GET", f"/tickets/{ticket_id}")
        return json.loads(text) if st == 200 else None

    async def extend_ticket(self, ticket_id: str, timeout: int):
        await self._ctl("PATCH", f"/tickets/{ticket_id}", {"timeout": timeout})

    async def remove_ticket(self, ticket_id: str):
        """Delete a ticket; the daemon answers 409 while connections are open."""
        for _ in range(50):
            try:
                st, _ = await self._ctl("DELETE", f"/tickets/{ticket_id}")
            except (OSError, aiohttp.ClientError):
                return  # daemon gone: its tickets are gone with it
            if st in (200, 204, 404):
                return
            await asyncio.sleep(0.2)


class NbdExport:
    """qemu-nbd serving one disk chain on a unix socket, as vdsm does for transfers."""

    def __init__(self, name: str, sock: Path, path: Path, fmt: str, *, readonly: bool,
                 bitmap: str | None = None, shallow: bool = False,
                 registry: Registry | None = None):
        self.name, self.sock = name, sock
        self.child: Child | None = None
        if shallow and fmt == "qcow2":
            image = "json:" + json.dumps({"driver": "qcow2", "backing": None,
                                          "file": {"driver": "file", "filename": str(path)}})
            fmt_args = []
        else:
            image, fmt_args = str(path), [f"--format={fmt}"]
        argv = ["qemu-nbd", f"--socket={sock}", "--persistent", "--shared=8",
                "--cache=writeback", "--aio=threads", "--allocation-depth",
                "--export-name=", *fmt_args]
        if readonly:
            argv.append("--read-only")
        else:
            argv += ["--discard=unmap", "--detect-zeroes=unmap"]
        if bitmap:
            argv.append(f"--bitmap={bitmap}")
        argv.append(image)
        self.argv = argv
        self.registry = registry

    @property
    def url(self) -> str:
        return f"nbd:unix:{self.sock}"

    async def start(self):
        self.sock.unlink(missing_ok=True)
        self.child = await Child(self.name, self.argv, registry=self.registry,
                                 log=self.sock.with_suffix(".log")).start()

        def ready():
            if not self.child.running:
                raise RuntimeError(f"qemu-nbd failed: {self.sock.with_suffix('.log').read_text()[-500:]}")
            return self.sock.exists()
        await wait_for(ready, timeout=10, what="qemu-nbd socket")

    async def stop(self):
        if self.child:
            await self.child.stop()
        self.sock.unlink(missing_ok=True)
