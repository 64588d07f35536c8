"""The sandbox guests' operating system, built from Debian packages and cached.

`ensure_image()` returns an `OsImage`: a kernel (linux-image-cloud-amd64), a
small initramfs (busybox, the few modules a virtio guest needs, LVM and the
mkfs/fsck tools), and base disks, one per layout:

- `ext4`: an MBR partition table, one ext4 partition;
- `xfs`: a GPT partition table, one XFS partition;
- `lvm`: a GPT partition table, one LVM physical volume, volume group `vg0`,
  the root file system (ext4) on the logical volume `root`.

Every root file system is labelled `ovault-root` and holds a minimal Debian
(mmdebstrap, variant minbase) with qemu-guest-agent, e2fsprogs, xfsprogs,
lvm2 and busybox, a shell PID 1 (`files/ovault-init`) and the records workload
(`files/ovault-workload`). No loop devices and no mounts on the host: the disks
are partitioned and filled by the guest kernel itself in a build boot
(`ovault.mode=build`, the root tree arrives as a tar on a second disk).

Everything lands in `<cache>/<key>/`, the key being a digest of the inputs
(package list, this file, `files/`); `OVAULT_GUEST_CACHE` overrides the cache
directory (default `/var/cache/ovault-tests/guests`).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"
PACKAGES = ["qemu-guest-agent", "e2fsprogs", "xfsprogs", "lvm2", "busybox-static", "fdisk",
            "coreutils"]
KERNEL_PACKAGE = "linux-image-cloud-amd64"
LAYOUTS = ("ext4", "xfs", "lvm")
DISK_SIZE = 1 << 30
MODULES = ["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "virtio_console", "dm-mod",
           "crc32c-intel", "libcrc32c", "xfs"]
# Tools of the initramfs (build/edit/fsck boots and LVM activation), with their libraries.
INITRD_TOOLS = ["sbin/lvm", "sbin/sfdisk", "sbin/mke2fs", "sbin/mkfs.xfs", "sbin/e2fsck",
                "sbin/xfs_repair"]


def sample_hostname(layout: str) -> str:
    """The host name baked into a layout's base disk: the sample VM's name
    (sandbox/lab.py), so a sample VM's disk is a plain copy."""
    return f"linux-{layout}"


def cache_dir() -> Path:
    return Path(os.environ.get("OVAULT_GUEST_CACHE", "/var/cache/ovault-tests/guests"))


def cache_key() -> str:
    h = hashlib.sha256()
    h.update(repr((PACKAGES, KERNEL_PACKAGE, MODULES, INITRD_TOOLS, DISK_SIZE)).encode())
    h.update(Path(__file__).read_bytes())
    for f in sorted(FILES.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class OsImage:
    dir: Path

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    def base_disk(self, layout: str) -> Path:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown guest layout {layout!r}; one of {LAYOUTS}")
        return self.dir / f"disk-{layout}.qcow2"


def _log(msg: str):
    print(f"guests: {msg}", file=sys.stderr, flush=True)


def _run(*argv, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p


def ensure_image() -> OsImage:
    """The cached image, built first when missing (a few minutes; one builder
    at a time, others wait on the lock)."""
    base = cache_dir()
    key = cache_key()
    img = OsImage(base / key)
    if (img.dir / "ready").exists():
        return img
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f".lock-{key}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (img.dir / "ready").exists():
            return img
        t0 = time.monotonic()
        work = base / f"work-{key}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            _build(work)
            shutil.rmtree(img.dir, ignore_errors=True)
            for leftover in ("root", "kernel", "debs"):
                shutil.rmtree(work / leftover, ignore_errors=True)
            (work / "root.tar").unlink(missing_ok=True)
            (work / "ready").write_text(f"built in {time.monotonic() - t0:.0f} s\n")
            os.replace(work, img.dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _log(f"image ready in {img.dir} ({time.monotonic() - t0:.0f} s)")
    return img


def _build(work: Path):
    root = work / "root"
    _log("mmdebstrap (bookworm, minbase)")
    mirror = os.environ.get("OVAULT_GUEST_MIRROR", "http://deb.debian.org/debian")
    _run("mmdebstrap", "--quiet", "--variant=minbase",
         "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
         "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/info/*",
         "--aptopt=APT::Install-Recommends \"false\"", "--include=" + ",".join(PACKAGES),
         "bookworm", root, mirror)
    _log("kernel")
    kdir = _kernel(work)
    vmlinuz = next((kdir / "boot").glob("vmlinuz-*"))
    shutil.copyfile(vmlinuz, work / "vmlinuz")
    kver = vmlinuz.name[len("vmlinuz-"):]
    _customize(root)
    _log("initramfs")
    _initramfs(root, kdir / "lib" / "modules" / kver, kver, work / "initrd.img")
    _run("tar", "--numeric-owner", "-C", root, "-cf", work / "root.tar", ".")
    from .boot import maintenance_boot
    for layout in LAYOUTS:
        _log(f"base disk {layout}")
        raw = work / f"disk-{layout}.raw"
        with open(raw, "wb") as f:
            f.truncate(DISK_SIZE)
        extra = f"ovault.layout={layout} ovault.hostname={sample_hostname(layout)}"
        out = maintenance_boot(OsImage(work), "build", raw, "raw", tar=work / "root.tar",
                               extra=extra, timeout=900)
        if f"build ok {layout}" not in out:
            raise RuntimeError(f"building the {layout} disk failed:\n{out[-3000:]}")
        _run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o",
             "compat=1.1,lazy_refcounts=on", raw, work / f"disk-{layout}.qcow2")
        raw.unlink()


def _kernel(work: Path) -> Path:
    """The kernel package's files (the cloud flavour: small, virtio drivers as modules)."""
    debs = work / "debs"
    debs.mkdir()
    dep = _run("apt-cache", "depends", "--important", KERNEL_PACKAGE).stdout
    real = next(line.split(":", 1)[1].strip() for line in dep.splitlines()
                if line.strip().startswith("Depends:") and "linux-image-" in line)
    _run("apt-get", "download", "-q", real, cwd=debs)
    kdir = work / "kernel"
    _run("dpkg-deb", "-x", next(debs.glob("*.deb")), kdir)
    kver = next((kdir / "lib" / "modules").iterdir()).name
    _run("depmod", "-b", kdir, kver)
    return kdir


def _customize(root: Path):
    for f, dst, mode in (("ovault-init", "sbin/ovault-init", 0o755),
                         ("shutdown", "sbin/shutdown", 0o755),
                         ("ovault-workload", "usr/local/bin/ovault-workload", 0o755)):
        p = root / dst
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FILES / f, p)
        p.chmod(mode)
    (root / "etc" / "hostname").write_text("localhost\n")
    (root / "var" / "lib" / "workload").mkdir(parents=True, exist_ok=True)
    for d in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "var/log/apt"):
        shutil.rmtree(root / d, ignore_errors=True)
    for stale in ("var/cache/ldconfig/aux-cache", "var/log/dpkg.log", "var/log/alternatives.log"):
        (root / stale).unlink(missing_ok=True)


class _Cpio:
    """A newc cpio archive (what the kernel unpacks as an initramfs)."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.ino = 1
        self.names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev=(0, 0)):
        if name in self.names:
            return
        self.names.add(name)
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % v for v in fields) + name.encode() + b"\0"
        self.parts.append(hdr + b"\0" * (-len(hdr) % 4))
        self.parts.append(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str):
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode=0o755):
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str):
        self._entry(name.strip("/"), stat.S_IFLNK | 0o777, target.encode())

    def node(self, name: str, major: int, minor: int):
        self._entry(name.strip("/"), stat.S_IFCHR | 0o600, rdev=(major, minor))

    def bytes(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self.parts)


def _libs(root: Path, binaries: list[str]) -> set[str]:
    out = set()
    for b in binaries:
        p = _run("chroot", root, "ldd", "/" + b).stdout
        for line in p.splitlines():
            w = line.split()
            if "=>" in w and len(w) > 2 and w[2].startswith("/"):
                out.add(w[2])
            elif w and w[0].startswith("/"):
                out.add(w[0])  # the interpreter
    return out


def _initramfs(root: Path, moddir: Path, kver: str, out: Path):
    c = _Cpio()
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "mnt", "newroot", "etc"):
        c.dir(d)
    c.node("dev/console", 5, 1)
    c.node("dev/null", 1, 3)
    c.file("bin/busybox", (root / "bin/busybox").read_bytes())
    c.file("init", (FILES / "initrd-init").read_bytes())
    for t in INITRD_TOOLS:
        c.file(t, (root / t).resolve().read_bytes())
    c.symlink("sbin/mkfs.ext4", "mke2fs")
    for lib in sorted(_libs(root, INITRD_TOOLS)):
        c.file(lib, (root / lib.lstrip("/")).resolve().read_bytes(), 0o755)
    c.file("etc/mke2fs.conf", (root / "etc/mke2fs.conf").read_bytes(), 0o644)
    # the modules and their dependencies, with a modules.dep naming only them
    deps = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        k, _, v = line.partition(":")
        deps[k] = v.split()
    by_name = {Path(k).name.removesuffix(".ko").replace("_", "-"): k for k in deps}
    want: list[str] = []

    def add(k):
        if k in want:
            return
        for d in deps[k]:
            add(d)
        want.append(k)
    for m in MODULES:
        add(by_name[m.replace("_", "-")])
    mroot = f"lib/modules/{kver}"
    for k in want:
        c.file(f"{mroot}/{k}", (moddir / k).read_bytes(), 0o644)
    c.file(f"{mroot}/modules.dep", "".join(f"{k}: {' '.join(deps[k])}\n" for k in want).encode(),
           0o644)
    for f in ("modules.builtin", "modules.order"):
        if (moddir / f).exists():
            c.file(f"{mroot}/{f}", (moddir / f).read_bytes(), 0o644)
    # uncompressed: on TCG the kernel takes seconds to gunzip it, copying is quick
    out.write_bytes(c.bytes())


if __name__ == "__main__":
    print(ensure_image().dir)
