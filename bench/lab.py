"""A bare imageio lab for the mover's integration tests and benchmarks: one real
ovirt-imageio daemon (TLS from a throw-away CA, local unix socket) and qemu-nbd
exports with imageio tickets, the way vdsm serves image transfers.
"""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from sandbox.hosts import ImageioDaemon, NbdExport
from sandbox.pki import make_pki
from sandbox.proc import Registry
from sandbox.storage import image_sha256  # noqa: F401  (the benches' content check)


class Transfer:
    def __init__(self, ticket: str, url: str, export: NbdExport):
        self.ticket, self.url, self.export = ticket, url, export


class ImageioLab:
    def __init__(self, base: Path):
        self.base = Path(base)
        self.registry = Registry(self.base / "pids")
        self.daemon: ImageioDaemon | None = None
        self.transfers: list[Transfer] = []

    async def start(self) -> "ImageioLab":
        self.pki = await make_pki(self.base / "pki")
        self.daemon = ImageioDaemon("lab", self.base / "host", self.pki, self.registry)
        await self.daemon.start()
        return self

    @property
    def ca(self) -> str:
        return str(self.pki["ca"])

    @property
    def local_socket(self) -> str:
        return str(self.daemon.local_socket)

    @property
    def control_socket(self) -> str:
        return str(self.daemon.control_socket)

    async def transfer(self, path: Path, fmt: str, size: int, *, write: bool = False,
                       bitmap: str | None = None) -> Transfer:
        tid = str(uuid.uuid4())
        exp = NbdExport(f"nbd-{tid[:8]}", self.base / f"{tid[:8]}.sock", Path(path), fmt, readonly=not write,
                        bitmap=bitmap, registry=self.registry)
        await exp.start()
        await self.daemon.add_ticket({"uuid": tid, "size": size, "url": exp.url, "timeout": 3600,
                                      "ops": ["read", "write"] if write else ["read"],
                                      "sparse": True, "dirty": bitmap is not None})
        t = Transfer(tid, f"{self.daemon.url}/images/{tid}", exp)
        self.transfers.append(t)
        return t

    async def close_transfer(self, t: Transfer) -> None:
        await self.daemon.remove_ticket(t.ticket)
        await t.export.stop()
        self.transfers.remove(t)

    async def stop(self) -> None:
        for t in list(self.transfers):
            await self.close_transfer(t)
        if self.daemon:
            await self.daemon.stop()
        self.registry.kill_all()


def qemu_io(path: Path, fmt: str, *cmds: str) -> None:
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    subprocess.run(args + [str(path)], check=True, capture_output=True)
