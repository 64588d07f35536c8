"""Disk images with real file systems for the file-level restore tests, built
with libguestfs itself and cached in OVAULT_TEST_CACHE by their recipe.

One 1 GiB GPT disk, three versions (as three backups of one disk would see it):
  sda1  ext4  /etc/hostname, /etc/app.conf (changes in v2 and v3), /data/blob.bin,
              /etc/evil -> / (a link out), /docs/a.txt, /docs/sub/b.txt
  sda2  xfs   /srv/report.txt, /srv/big.bin (3 MiB + 5 bytes)
  sda3  LVM   vg0/root ext4: /etc/hostname, /var/log/app.log
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers import CACHE_DIR

SIZE = 1 << 30
MiB = 2048  # sectors
CACHE = CACHE_DIR / "files-disks"
APPLIANCE_CACHE = CACHE_DIR / "guestfs"


def _blob(name: str, n: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{name}-{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


def app_conf(version: int) -> bytes:
    return (f"# app configuration, version {version}\n" + "key = value\n" * (10 * version)).encode()


# path on the API (file system name + guest path) -> content, per version
def files(version: int) -> dict[str, bytes]:
    return {
        "/sda1/etc/hostname": b"files-vm\n",
        "/sda1/etc/app.conf": app_conf(version),
        "/sda1/data/blob.bin": _blob("blob", 1_500_000),
        "/sda1/docs/a.txt": b"alpha\n",
        "/sda1/docs/sub/b.txt": b"beta\n",
        "/sda2/srv/report.txt": "xfs report \u00e9t\u00e9\n".encode(),
        "/sda2/srv/big.bin": _blob("big", 3 * (1 << 20) + 5),
        "/vg0/root/etc/hostname": b"files-vm-lvm\n",
        "/vg0/root/var/log/app.log": b"".join(b"record %d\n" % i for i in range(50 * version)),
    }


DEVICES = {"sda1": "/dev/sda1", "sda2": "/dev/sda2", "vg0/root": "/dev/vg0/root"}
RECIPE = 3  # bump when the recipe below changes


def _guestfs():
    import guestfs
    g = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
    g.set_backend("direct")
    g.set_cachedir(str(APPLIANCE_CACHE))
    g.set_backend_settings(["force_tcg"])  # KVM does not start on every nested host; TCG always does
    return g


def _write_version(g, version: int, mtime: int) -> None:
    for dev, mp in (("/dev/sda1", "/a"), ("/dev/sda2", "/b"), ("/dev/vg0/root", "/c")):
        g.mkmountpoint(mp)
        g.mount(dev, mp)
    prefix = {"sda1": "/a", "sda2": "/b", "vg0": "/c"}
    for path, data in files(version).items():
        head, rest = path.lstrip("/").split("/", 1)
        if head == "vg0":
            rest = rest.split("/", 1)[1]
        p = f"{prefix[head]}/{rest}"
        g.mkdir_p(os.path.dirname(p))
        g.write(p, data)
        g.touch(p)
        g.utimens(p, mtime + version, 0, mtime + version, 0)
    if version == 1:
        g.ln_s("/", "/a/etc/evil")
    g.umount_all()


def build() -> dict[int, Path]:
    """The three versions' raw images (cached)."""
    key = hashlib.sha256(json.dumps([RECIPE, SIZE, {v: {k: hashlib.sha256(d).hexdigest()
                                     for k, d in files(v).items()} for v in (1, 2, 3)}]).encode()).hexdigest()[:16]
    d = CACHE / key
    out = {v: d / f"v{v}.img" for v in (1, 2, 3)}
    if all(p.exists() for p in out.values()):
        return out
    d.mkdir(parents=True, exist_ok=True)
    APPLIANCE_CACHE.mkdir(parents=True, exist_ok=True)
    base = 1_700_000_000
    for v in (1, 2, 3):
        tmp = d / f"v{v}.img.tmp"
        if v == 1:
            with open(tmp, "wb") as f:
                f.truncate(SIZE)
        else:
            subprocess.run(["cp", "--sparse=always", str(out[v - 1]), str(tmp)], check=True)
        g = _guestfs()
        try:
            g.add_drive_opts(str(tmp), format="raw")
            g.launch()
            if v == 1:
                g.part_init("/dev/sda", "gpt")
                g.part_add("/dev/sda", "p", MiB, 65 * MiB - 1)
                g.part_add("/dev/sda", "p", 65 * MiB, 385 * MiB - 1)
                g.part_add("/dev/sda", "p", 385 * MiB, -MiB)
                g.mkfs("ext4", "/dev/sda1")
                g.mkfs("xfs", "/dev/sda2")
                g.pvcreate("/dev/sda3")
                g.vgcreate("vg0", ["/dev/sda3"])
                g.lvcreate("root", "vg0", 200)
                g.mkfs("ext4", "/dev/vg0/root")
            _write_version(g, v, base + 86400 * v)
            g.shutdown()
        finally:
            g.close()
        os.rename(tmp, out[v])
    return out


def mtime(version: int) -> int:
    return 1_700_000_000 + 86400 * version + version


def cleanup_partial() -> None:
    for p in CACHE.glob("*/*.tmp"):
        p.unlink(missing_ok=True)
    shutil.rmtree(CACHE / "none", ignore_errors=True)
