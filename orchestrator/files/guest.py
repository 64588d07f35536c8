"""One backup disk opened with libguestfs, read-only (synchronous; called from
the session's own thread, `sessions.Session.run`).

The disk reaches the appliance as a read-only NBD drive served by ovault's own
export (`imageio_ext.nbd.server`) on a private unix socket; libguestfs puts a
throw-away overlay above it, so a dirty journal can be replayed without a
write reaching the backup. Nothing is mounted on the host: the guest's file
systems are mounted inside libguestfs' appliance (a small VM), so a hostile
file system meets the appliance's kernel, not the host's.

Symbolic links are listed with their target and never followed: every
operation first checks that the appliance path has no link in it
(`check_no_links`: ``realpath`` must give the path back), so a link to ``/``
cannot reach the appliance's own root or another file system.
"""
from __future__ import annotations

import datetime as dt
import os
import stat
import tarfile
from typing import BinaryIO, Iterator

import structlog

from ..errors import Invalid, NotFound, OvaultError
from . import paths as P

log = structlog.get_logger("ovault.files")

READ_SIZE = 1 << 20  # per pread call (libguestfs messages are limited to 4 MiB)
STAT_BATCH = 4000  # names per lstatnslist call
SKIP_FSTYPES = {"swap", "unknown", "", "LVM2_member", "crypto_LUKS"}


class GuestfsError(OvaultError):
    code, title, status = "files_unavailable", "File-level restore unavailable", 503


def _type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _iso(sec: int | None) -> str | None:
    if sec is None:
        return None
    return dt.datetime.fromtimestamp(sec, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _entry(name: str, path: str, st: dict, target: str | None = None) -> dict:
    mode = st["st_mode"]
    e = {"name": name, "path": path, "type": _type(mode), "size": st["st_size"],
         "mode": f"{stat.S_IMODE(mode):04o}", "mtime": _iso(st["st_mtime_sec"])}
    if target is not None:
        e["target"] = target
    return e


class GuestFs:
    def __init__(self, g, mounts: dict[str, str], fstypes: dict[str, str], sizes: dict[str, int],
                 failed: dict[str, str]):
        self.g = g
        self.mounts = mounts  # API name -> appliance mount point
        self.fstypes = fstypes
        self.sizes = sizes
        self.failed = failed  # API name -> why it could not be mounted

    # --- opening ---------------------------------------------------------------------------
    @classmethod
    def launch(cls, nbd_socket: str, *, accel: str = "auto", memsize_mib: int = 512,
               cache_dir: str | None = None) -> "GuestFs":
        try:
            import guestfs  # Debian's python3-guestfs (scripts/setup.sh exposes it to the venv)
        except ImportError:
            raise GuestfsError("libguestfs is not installed (Debian package python3-guestfs)") from None
        tries = ["tcg"] if accel == "tcg" else ["default", "tcg"]
        last: Exception | None = None
        for mode in tries:
            g = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
            try:
                g.set_backend("direct")
                if cache_dir:
                    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
                    g.set_cachedir(cache_dir)
                if mode == "tcg":
                    g.set_backend_settings(["force_tcg"])
                g.set_memsize(memsize_mib)
                g.set_network(False)
                g.add_drive_opts("", format="raw", protocol="nbd", server=[f"unix:{nbd_socket}"],
                                 readonly=True)
                g.launch()
                return cls._mount_all(g)
            except RuntimeError as e:
                last = e
                log.warning("libguestfs launch failed", accel=mode, error=str(e).splitlines()[0])
                g.close()
        raise GuestfsError(f"the libguestfs appliance did not start: {str(last).splitlines()[0]}")

    @classmethod
    def _mount_all(cls, g) -> "GuestFs":
        mounts, fstypes, sizes, failed = {}, {}, {}, {}
        for i, (dev, fstype) in enumerate(sorted(g.list_filesystems().items())):
            if fstype in SKIP_FSTYPES or dev.startswith("btrfsvol:"):
                continue
            name = P.fs_name(g.canonical_device_name(dev))
            mp = f"/fs{i}"
            g.mkmountpoint(mp)
            fallback = {"xfs": "ro,norecovery", "ext4": "ro,noload", "ext3": "ro,noload"}.get(fstype)
            for opts in ("ro", fallback):
                if opts is None:
                    continue
                try:
                    g.mount_options(opts, dev, mp)
                    break
                except RuntimeError as e:
                    failed[name] = str(e).splitlines()[0]
            else:
                continue
            failed.pop(name, None)
            mounts[name], fstypes[name] = mp, fstype
            try:
                sizes[name] = g.blockdev_getsize64(dev)
            except RuntimeError:
                sizes[name] = 0
        return cls(g, mounts, fstypes, sizes, failed)

    def close(self) -> None:
        try:
            self.g.umount_all()
            self.g.shutdown()
        except RuntimeError:
            pass
        finally:
            self.g.close()

    # --- paths -----------------------------------------------------------------------------
    def resolve(self, path: str) -> P.Resolved:
        return P.resolve(path, self.mounts)

    def check_no_links(self, r: P.Resolved, path: str) -> None:
        """Refuse a path that goes through a symbolic link (or does not exist)."""
        if r.fs is None:
            return
        try:
            real = self.g.realpath(r.appliance)
        except RuntimeError:  # missing, or a link on the way that leads nowhere in the file system
            self._no_link_on_the_way(r, path)
            raise NotFound("path", path) from None
        if real != r.appliance:
            raise Invalid(f"{path} goes through a symbolic link; links are listed, not followed")
        if not self.g.exists(r.appliance):
            raise NotFound("path", path)

    def _no_link_on_the_way(self, r: P.Resolved, path: str) -> None:
        at = r.mount
        for part in [p for p in r.inner.split("/") if p]:
            at = f"{at}/{part}"
            try:
                mode = self.g.lstatns(at)["st_mode"]
            except RuntimeError:
                return
            if stat.S_ISLNK(mode):
                raise Invalid(f"{path} goes through a symbolic link; links are listed, not followed")

    def _lstat(self, r: P.Resolved, path: str) -> dict:
        try:
            return self.g.lstatns(r.appliance)
        except RuntimeError:
            raise NotFound("path", path) from None

    # --- operations ------------------------------------------------------------------------
    def list(self, path: str) -> list[dict]:
        r = self.resolve(path)
        if r.fs is None:
            out = []
            for name, is_fs in sorted(P.virtual_children(r.virtual, self.mounts).items()):
                full = "/".join(r.virtual + (name,))
                if is_fs and full in self.mounts:
                    out.append({"name": name, "path": "/" + full, "type": "filesystem",
                                "fstype": self.fstypes[full], "size": self.sizes.get(full, 0),
                                "mode": None, "mtime": None})
                else:
                    out.append({"name": name, "path": "/" + full, "type": "volume_group",
                                "size": None, "mode": None, "mtime": None})
            return out
        self.check_no_links(r, path)
        st = self._lstat(r, path)
        if not stat.S_ISDIR(st["st_mode"]):
            return [_entry(path.rstrip("/").rsplit("/", 1)[-1], path, st)]
        return [e for e in self._dir(r.appliance, P.split(path))]

    def _dir(self, adir: str, api_parts: list[str]) -> Iterator[dict]:
        names = sorted(self.g.ls(adir))
        for i in range(0, len(names), STAT_BATCH):
            batch = names[i:i + STAT_BATCH]
            for name, st in zip(batch, self.g.lstatnslist(adir, batch)):
                target = None
                if stat.S_ISLNK(st["st_mode"]):
                    try:
                        target = self.g.readlink(f"{adir}/{name}")
                    except RuntimeError:
                        target = ""
                yield _entry(name, "/" + "/".join(api_parts + [name]), st, target)

    def stat_file(self, path: str) -> dict:
        """The entry of a regular file (content and archives refuse anything else)."""
        r = self.resolve(path)
        if r.fs is None:
            raise Invalid(f"{path} is not a file")
        self.check_no_links(r, path)
        st = self._lstat(r, path)
        if not stat.S_ISREG(st["st_mode"]):
            raise Invalid(f"{path} is a {_type(st['st_mode'])}, not a file")
        return _entry(path.rsplit("/", 1)[-1], path, st)

    def read(self, path: str, offset: int) -> bytes:
        r = self.resolve(path)
        return self.g.pread(r.appliance, READ_SIZE, offset)

    def walk(self, root: str, limit: int) -> tuple[list[dict], bool]:
        """Every entry below ``root`` (an API path), links not followed; at most
        ``limit`` entries (then the second value is True)."""
        out: list[dict] = []
        stack = [root]
        while stack:
            d = stack.pop()
            r = self.resolve(d)
            if r.fs is None:
                entries = self.list(d)
            else:
                try:
                    entries = list(self._dir(r.appliance, P.split(d)))
                except RuntimeError as e:  # unreadable folder: note it and go on
                    log.info("folder not listed", path=d, error=str(e).splitlines()[0])
                    continue
            for e in entries:
                if e["type"] in ("directory", "filesystem", "volume_group"):
                    stack.append(e["path"])
                if e["type"] not in ("filesystem", "volume_group"):
                    out.append(e)
                    if len(out) >= limit:
                        return out, True
        return out, False

    def write_tar(self, paths: list[str], sink: BinaryIO, max_entries: int) -> int:
        """A gzip'ed tar of ``paths`` (files, folders, whole file systems) into
        ``sink`` as it is read; links are stored as links. Returns the entries written."""
        n = 0
        with tarfile.open(fileobj=sink, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:
            for path in paths:
                r = self.resolve(path)
                self.check_no_links(r, path)
                if r.fs is not None and r.inner != "/":
                    st = self._lstat(r, path)
                    top = [_entry(path.rsplit("/", 1)[-1], path, st)]
                else:
                    top = []
                below = []
                if not top or top[0]["type"] == "directory":
                    below, truncated = self.walk(path, max_entries)
                    if truncated:
                        raise Invalid(f"{path} holds more than {max_entries} entries; archive less at once")
                for e in sorted(top + below, key=lambda e: e["path"]):
                    self._add(tar, e)
                    n += 1
                    if n > max_entries:
                        raise Invalid(f"more than {max_entries} entries; archive less at once")
        return n

    def _add(self, tar: tarfile.TarFile, e: dict) -> None:
        info = tarfile.TarInfo(e["path"].lstrip("/"))
        info.mode = int(e["mode"], 8)
        info.mtime = int(dt.datetime.fromisoformat(e["mtime"].replace("Z", "+00:00")).timestamp())
        if e["type"] == "directory":
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif e["type"] == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, e.get("target") or ""
            tar.addfile(info)
        elif e["type"] == "file":
            info.size = e["size"]
            tar.addfile(info, _Reader(self, e["path"], e["size"]))

    # Device nodes, sockets and fifos are left out of archives.


class _Reader:
    """A file-like view of one guest file for tarfile (1 MiB reads, buffered:
    tarfile asks for 16 KiB at a time)."""

    def __init__(self, gfs: GuestFs, path: str, size: int):
        self.gfs, self.path, self.size, self.pos = gfs, path, size, 0
        self.buf = b""

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        want = left if n is None or n < 0 else min(n, left)
        while len(self.buf) < want:
            data = self.gfs.read(self.path, self.pos + len(self.buf))
            if not data:
                raise OSError(f"{self.path} ended early at {self.pos + len(self.buf)} of {self.size} bytes")
            self.buf += data
        out, self.buf = self.buf[:want], self.buf[want:]
        self.pos += len(out)
        return out
