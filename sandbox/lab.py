"""The whole sandbox lab: engine simulator, hosts, storage, NFS target.

`Lab.start()` brings everything up and writes `DIR/sandbox.json`;
`Lab.stop()` takes it all down again (no qemu-nbd, imageio or ganesha left).
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web

from . import content
from .engine import api as engine_api
from .engine.model import (Attachment, Cluster, DataCenter, Host, Nic, StorageDomain, Timing,
                           Vm)
from .engine.state import Engine
from .hosts import ImageioDaemon, free_port
from .pki import make_pki
from .proc import Registry, run
from .storage import Image

log = structlog.get_logger("sandbox")
MiB, GiB = 1 << 20, 1 << 30

# How the sample VMs differ, like a real estate does.
PROFILES = [
    dict(name="db-primary", memory=4 * GiB, cpu=(1, 2, 1), os="rhel_8x64", bios="q35_ovmf",
         boot=["hd"], ha=True, nics=[("nic1", "virtio")],
         disks=[("boot", "cow", "incremental", "virtio_scsi", True, 1.0),
                ("data", "cow", "incremental", "virtio", False, 0.5)], tags=["gold"]),
    dict(name="legacy-erp", memory=2 * GiB, cpu=(1, 1, 1), os="windows_2019x64",
         bios="q35_sea_bios", boot=["hd", "cdrom"], ha=False, nics=[("nic1", "e1000")],
         disks=[("boot", "raw", "none", "sata", True, 1.0)], tags=["legacy"]),
    dict(name="web-frontend", memory=8 * GiB, cpu=(2, 2, 1), os="debian_10", bios="q35_sea_bios",
         boot=["network", "hd"], ha=False, nics=[("nic1", "virtio"), ("nic2", "virtio")],
         disks=[("boot", "cow", "incremental", "virtio_scsi", True, 1.0)], tags=["gold"]),
]
# Sample VMs running real guests (opt-in: `LabConfig.guests` lists the layouts): a small
# Debian on a 1 GiB disk, see sandbox/guests/. They start `down`; starting one boots qemu.
GUEST_PROFILES = {
    layout: dict(name=f"linux-{layout}", memory=256 * MiB, cpu=(1, 1, 1), bios="q35_sea_bios",
                 boot=["hd"], ha=False, nics=[("nic1", "virtio")],
                 disks=[("boot", "cow", "incremental", "virtio_scsi", True, layout)], tags=[])
    for layout in ("ext4", "xfs", "lvm")}
# Engine tags of the sample lab: (name, description); VMs carry them per profile.
SAMPLE_TAGS = [("gold", "Sample tag: the lab's most protected VMs"),
               ("legacy", "Sample tag: old systems")]


@dataclass
class LabConfig:
    dir: Path
    hosts: int = 2
    vms: int = 3
    disk_size: int = 1 * GiB
    nfs: bool = True
    port: int = 0
    timing: Timing | None = None
    password: str | None = None
    guests: tuple = ()  # layouts of sample VMs that run real guests: "ext4", "xfs", "lvm"
    # This machine's address in transfer URLs; 10.0.2.2 serves clients in a qemu VM with
    # user-mode networking (the appliance test), which reach the host's loopback there.
    address: str = "127.0.0.1"


class Lab:
    def __init__(self, cfg: LabConfig):
        self.cfg = cfg
        self.dir = cfg.dir.resolve()
        self.registry = Registry(self.dir / "pids")
        self.engine: Engine | None = None
        self.runner: web.AppRunner | None = None
        self.nfs = None
        self.sso = None
        self.faults = engine_api.Faults()
        self.info: dict = {}
        self.movers: dict = {}  # host name -> (Child, url)
        self.mover_tokens: dict = {}  # host name -> that host's own mover token

    # --- start ------------------------------------------------------------------
    async def start(self) -> dict:
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> dict:
        t0 = time.monotonic()
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "sandbox.json").unlink(missing_ok=True)
        self.registry.kill_all()  # leftovers of a crashed earlier run in this dir
        pki = await make_pki(d / "pki")
        e = self.engine = Engine(d / "engine", self.registry, self.cfg.timing)
        e.address = self.cfg.address
        from .guests.manager import Guests
        e.guests = Guests(e, d / "guests", self.registry)
        dc = DataCenter(str(uuid.uuid4()), "Default")
        cl = Cluster(str(uuid.uuid4()), "Default", dc.id)
        e.dcs[dc.id], e.clusters[cl.id] = dc, cl
        sd_dir = d / "storage" / "data"
        sd = StorageDomain(str(uuid.uuid4()), "data", sd_dir, dc.id)
        e.sds[sd.id] = sd
        sd_dir.mkdir(parents=True, exist_ok=True)
        self.nfs_export.mkdir(parents=True, exist_ok=True)

        daemons = [ImageioDaemon(f"host{i + 1}", d / "hosts" / f"host{i + 1}", pki, self.registry)
                   for i in range(self.cfg.hosts)]
        for i, dm in enumerate(daemons):
            h = Host(str(uuid.uuid4()), f"host{i + 1}", cl.id, dm)
            e.hosts[h.id] = h
        jobs = [dm.start() for dm in daemons]
        jobs.append(self._start_movers(daemons))
        jobs.append(self._make_vms(e, cl, sd))
        if self.cfg.nfs:
            jobs.append(self._start_nfs())
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        hosts = list(e.hosts.values())
        for i, vm in enumerate(sorted(e.vms.values(), key=lambda v: v.name)):
            if not e.guests.is_guest(vm):  # guests stay down until started
                vm.status, vm.host_id = "up", hosts[i % len(hosts)].id

        password = self.cfg.password or secrets.token_urlsafe(12)
        self.sso = engine_api.Sso([engine_api.User("admin@internal", password, id=e.admin_user_id)])
        app = engine_api.create_app(e, self.sso, self.faults)
        from . import admin
        admin.install(app, self)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        sslctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        sslctx.load_cert_chain(pki["cert"], pki["key"])
        port = self.cfg.port or free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port, ssl_context=sslctx).start()
        base = f"https://127.0.0.1:{port}"
        self.info = {
            "engine": {"url": base, "api": f"{base}/ovirt-engine/api",
                       "username": "admin@internal", "password": password,
                       "ca_file": str(pki["ca"])},
            "admin_url": f"{base}/sandbox",
            "hosts": [{"id": h.id, "name": h.name, "imageio_url": h.daemon.url,
                       "mover_url": self.movers[h.name][1], "mover_token": self.mover_tokens[h.name]}
                      for h in hosts],
            "target": ({"nfs_url": self.nfs.url, "path": str(self.nfs_export)}
                       if self.nfs else {"nfs_url": None, "path": str(self.nfs_export)}),
            "vms": [{"id": v.id, "name": v.name} for v in sorted(e.vms.values(), key=lambda v: v.name)],
            "pid": os.getpid(),
        }
        tmp = d / "sandbox.json.tmp"
        tmp.write_text(json.dumps(self.info, indent=2))
        os.replace(tmp, d / "sandbox.json")
        log.info("sandbox ready", seconds=round(time.monotonic() - t0, 2), url=base,
                 hosts=len(hosts), vms=len(e.vms))
        return self.info

    async def _start_movers(self, daemons):
        """One `ovault-mover` per host, beside its imageio daemon (its local socket)."""
        import sys
        from .hosts import free_port
        from .proc import Child, wait_for
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
               # the movers may touch this lab's target only
               "OVAULT_MOVER_ALLOWED_STORES": f"nfs://127.0.0.1{self.nfs_export},{self.nfs_export}"}

        async def one(dm):
            port = free_port()
            # each host's mover has a token of its own, and accepts only its own daemon's transfers
            self.mover_tokens[dm.name] = secrets.token_urlsafe(24)
            token_file = self.dir / f"mover-token-{dm.name}"
            token_file.write_text(self.mover_tokens[dm.name] + "\n")
            token_file.chmod(0o600)
            child = await Child(f"mover-{dm.name}", [
                sys.executable, "-m", "imageio_ext.mover_cli", "serve", "--host", "127.0.0.1",
                "--port", str(port), "--imageio-socket", str(dm.local_socket),
                # imageio's control socket is not given: the sandbox's movers copy through the
                # daemon's local socket (tests/e2e/test_mover.py relies on imageio being on the
                # data path); copies beside imageio (NBD) are tested in tests/integration/mover
                "--imageio-control-socket", "",
                "--imageio-url", dm.url, "--imageio-ca", str(dm.pki["ca"]),
                "--token-file", str(token_file)], registry=self.registry, log=dm.base / "mover.log",
                env=env).start()
            url = f"http://127.0.0.1:{port}"
            self.movers[dm.name] = (child, url)

            async def ready():
                if not child.running:
                    raise RuntimeError(f"mover of {dm.name} exited; see {dm.base}/mover.log")
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                    return True
                except OSError:
                    return False
            await wait_for(ready, timeout=20, interval=0.05, what=f"mover of {dm.name}")
        await asyncio.gather(*(one(dm) for dm in daemons))

    @property
    def nfs_export(self) -> Path:
        return self.dir / "target"

    async def _start_nfs(self):
        from .nfs import NfsServer
        self.nfs_export.mkdir(parents=True, exist_ok=True)
        self.nfs = NfsServer(self.nfs_export, self.dir / "nfs")
        await self.nfs.start()

    async def _make_vms(self, e: Engine, cl: Cluster, sd: StorageDomain):
        from .engine.model import Tag
        for name, description in SAMPLE_TAGS:
            t = Tag(str(uuid.uuid4()), name, description)
            e.tags[t.id] = t
        await asyncio.gather(*(self._make_vm(e, cl, sd, i) for i in range(self.cfg.vms)),
                             *(self._make_guest_vm(e, cl, sd, layout) for layout in self.cfg.guests))

    async def _make_guest_vm(self, e: Engine, cl: Cluster, sd: StorageDomain, layout: str):
        from .engine.model import Disk
        from .guests import build, manager
        if layout not in GUEST_PROFILES:
            raise ValueError(f"unknown guest layout {layout!r}; one of {sorted(GUEST_PROFILES)}")
        p = GUEST_PROFILES[layout]
        name = p["name"]
        vm = Vm(str(uuid.uuid4()), name, cl.id, p["memory"], *p["cpu"], os_type=manager.GUEST_OS,
                bios_type=p["bios"], boot_devices=list(p["boot"]), ha=p["ha"],
                description=f"sample VM {name} (a running Debian guest, root on {layout})")
        for nic_name, iface in p["nics"]:
            vm.nics.append(Nic(str(uuid.uuid4()), nic_name, iface, e.new_mac()))
        for label, fmt, backup, iface, boot, lay in p["disks"]:
            disk_id = str(uuid.uuid4())
            img = await Image.create(sd.dir, disk_id, build.DISK_SIZE, "qcow2")
            await manager.make_disk(img.top.path, lay, name)
            e.disks[disk_id] = Disk(disk_id, f"{name}_{label}", build.DISK_SIZE, fmt, True, backup,
                                    sd.id, img, description=f"{label} disk of {name}")
            vm.attachments.append(Attachment(disk_id, boot, iface))
        e.vms[vm.id] = vm

    async def _make_vm(self, e: Engine, cl: Cluster, sd: StorageDomain, i: int):
        p = PROFILES[i % len(PROFILES)]
        name = p["name"] if i < len(PROFILES) else f"{p['name']}-{i // len(PROFILES) + 1}"
        sockets, cores, threads = p["cpu"]
        vm = Vm(str(uuid.uuid4()), name, cl.id, p["memory"], sockets, cores, threads,
                os_type=p["os"], bios_type=p["bios"], boot_devices=list(p["boot"]), ha=p["ha"],
                description=f"sample VM {name}")
        for nic_name, iface in p["nics"]:
            vm.nics.append(Nic(str(uuid.uuid4()), nic_name, iface, e.new_mac()))
        vm.tag_ids = {t.id for t in e.tags.values() if t.name in p["tags"]}
        for label, fmt, backup, iface, boot, scale in p["disks"]:
            size = max(64 * MiB, int(self.cfg.disk_size * scale) // MiB * MiB)
            disk_id = str(uuid.uuid4())
            img = await self._make_image(sd, disk_id, size, fmt, seed=f"{name}-{label}",
                                         template=boot)
            from .engine.model import Disk
            disk = Disk(disk_id, f"{name}_{label}", size, fmt, True, backup, sd.id, img,
                        description=f"{label} disk of {name}")
            e.disks[disk_id] = disk
            vm.attachments.append(Attachment(disk_id, boot, iface))
        e.vms[vm.id] = vm

    async def _make_image(self, sd: StorageDomain, disk_id: str, size: int, fmt: str, seed: str,
                          template: bool) -> Image:
        scale = max(1, size // GiB)
        regions = content.layout(size, template_mib=32 * scale if template else 0,
                                 text_mib=16 * scale, random_mib=12 * scale, vm_seed=seed)
        img_dir = sd.dir / "images" / disk_id
        img_dir.mkdir(parents=True, exist_ok=True)
        raw = img_dir / ".seed.raw"
        await asyncio.to_thread(content.write_raw, raw, size, regions)
        img = await Image.create(sd.dir, disk_id, size, "qcow2" if fmt == "cow" else "raw")
        if fmt == "cow":
            # Zero runs become unallocated clusters, as in a freshly installed guest.
            await run("qemu-img", "convert", "-q", "-n", "-f", "raw", "-O", "qcow2",
                      "-S", "64k", raw, img.top.path)
            raw.unlink()
        else:
            os.replace(raw, img.top.path)
        return img

    # --- stop -----------------------------------------------------------------------
    async def stop(self):
        if self.runner:
            await self.runner.cleanup()
            self.runner = None
        if self.engine:
            await self.engine.close()
            for h in self.engine.hosts.values():
                await h.daemon.stop()
        for child, _ in self.movers.values():
            await child.stop()
        if self.nfs:
            await self.nfs.stop()
        self.registry.kill_all()
        (self.dir / "sandbox.json").unlink(missing_ok=True)
