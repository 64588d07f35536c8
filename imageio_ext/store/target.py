"""The backend interface through which the store reaches a backup target.

A target is a tree of small files. The store needs only whole-file
operations (chunks are whole files), so the interface is deliberately narrow:

=================  ==========================================================
operation          contract
=================  ==========================================================
read_file          whole file -> bytes, at most ``max_size`` (checked on the
                   file's size before a byte is read: FileTooLarge);
                   NotFound if missing
write_file         atomic: temp name in the same dir, write, fsync, rename;
                   readers see the old content or the new one, never a mix
exists / stat      size, mtime (target clock, float seconds), is_dir
scandir            entries with size/mtime (NFS READDIRPLUS gives them free)
remove / rmdir     one file / one empty dir (rmdir returns False if not empty)
rename             atomic replace of the destination
makedirs           mkdir -p
touch              set mtime to the target's "now" (server time on NFS)
=================  ==========================================================

Paths are relative POSIX paths ("chunks/ab/cd/<digest>"), checked by
`check_rel` so nothing can escape the target root. The target's content is
hostile input: no operation follows a symbolic link, in any component
(`UnsafeTargetEntry`), and reads are bounded before they happen. Temp files are named
``.<name>.tmp.<random>`` (see `tmp_name`); gc removes stale ones.

Implementations: `PathTarget` (a local or mounted directory) and `NfsTarget`
(``nfs://server/export/path`` through libnfs in user space); `registry`
picks one for a URL or path.
"""

from __future__ import annotations

import abc
import itertools
import os
import secrets
from dataclasses import dataclass

from .errors import InvalidPath, NotFound

TMP_MARKER = ".tmp."
# The ceiling of any single read when the caller names no tighter bound:
# larger than the largest index (a 64 TiB disk in 4 MiB chunks: 512 MiB).
MAX_READ = 1 << 30


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime: float
    is_dir: bool


@dataclass(frozen=True)
class Space:
    """The target file system's size (statvfs / NFS FSSTAT), in bytes."""
    capacity: int
    used: int
    free: int          # what this client may still write

    @classmethod
    def of(cls, *, blocks: int, bfree: int, bavail: int, frsize: int, bsize: int = 0) -> "Space":
        """From statvfs-style counts. An NFS server's answer is not trusted: counts
        that contradict each other are clamped into 0 <= free, used <= capacity."""
        unit = max(0, frsize or bsize)
        cap = max(0, blocks) * unit
        used = min(cap, max(0, blocks - bfree) * unit)
        return cls(capacity=cap, used=used, free=min(cap, max(0, bavail) * unit))


@dataclass(frozen=True)
class DirEntry:
    name: str
    is_dir: bool
    size: int
    mtime: float


def check_rel(path: str) -> str:
    """Validate a target-relative path; "" means the target root."""
    if not isinstance(path, str):
        raise InvalidPath(repr(path), "not a string")
    if path == "":
        return path
    if "\0" in path:
        raise InvalidPath(path, "contains NUL")
    if path.startswith("/"):
        raise InvalidPath(path, "must be relative to the target")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidPath(path, "empty, '.' or '..' component")
    return path


def join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


# Temp names: a random prefix per process and a counter (one getrandom per process,
# not per chunk written); unguessable from outside, and created with O_EXCL anyway.
_TMP_PREFIX = secrets.token_hex(4)
_TMP_COUNT = itertools.count()


def _new_tmp_prefix() -> None:
    global _TMP_PREFIX
    _TMP_PREFIX = secrets.token_hex(4)


os.register_at_fork(after_in_child=_new_tmp_prefix)  # a forked child never repeats its parent's names


def tmp_name(path: str) -> str:
    """A unique temp name in the same directory as ``path``."""
    head, _, name = path.rpartition("/")
    return join(head, f".{name}{TMP_MARKER}{_TMP_PREFIX}{next(_TMP_COUNT):x}")


def is_tmp_name(name: str) -> bool:
    return name.startswith(".") and TMP_MARKER in name


class Target(abc.ABC):
    """Async access to one backup target. Use as ``async with target:``."""

    url: str

    async def __aenter__(self) -> "Target":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> None:
        """Check the target is reachable; raise TargetUnavailable if not."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def read_file(self, path: str, *, max_size: int = MAX_READ) -> bytes:
        """The whole regular file; `FileTooLarge` (before reading) if it is
        larger than ``max_size``; `UnsafeTargetEntry` for a symlink."""

    @abc.abstractmethod
    async def write_file(self, path: str, data: bytes | list, *, make_parents: bool = True) -> None:
        """Atomically create or replace ``path`` with ``data`` (tmp + fsync + rename).

        ``data`` is bytes-like, or a list of bytes-like parts that make the
        file one after the other (a chunk's header and its raw bytes, written
        without joining them first)."""

    @abc.abstractmethod
    async def stat(self, path: str) -> FileStat: ...

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except NotFound:
            return False
        return True

    @abc.abstractmethod
    async def scandir(self, path: str) -> list[DirEntry]: ...

    @abc.abstractmethod
    async def remove(self, path: str) -> None: ...

    @abc.abstractmethod
    async def rmdir(self, path: str) -> bool:
        """Remove an empty directory; False if it is not empty."""

    @abc.abstractmethod
    async def rename(self, src: str, dst: str) -> None: ...

    @abc.abstractmethod
    async def makedirs(self, path: str) -> None: ...

    @abc.abstractmethod
    async def touch(self, path: str) -> None:
        """Set mtime of an existing file to the target's current time."""

    async def space(self) -> Space | None:
        """Size of the file system holding the target; None where it cannot be known."""
        return None

    async def touch_checked(self, path: str) -> None:
        """`touch`, then `stat`: NotFound unless the file is still under its
        name after its time was set (see `ChunkStore.touch`). Targets may do
        both in one round trip."""
        await self.touch(path)
        await self.stat(path)

