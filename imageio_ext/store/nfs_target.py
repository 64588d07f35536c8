"""A target spoken to as ``nfs://server/export[/sub/dir]`` through libnfs.

No kernel mount is needed (hypervisors need not mount the export, and the
sandbox machine has no kernel NFS client at all). NFSv3 only.

Threads: libnfs contexts are not thread-safe, so the target owns a small
dedicated thread pool and every worker thread lazily mounts its own context
(`threading.local`). The pool size is the I/O concurrency towards the server.
Contexts are destroyed from the caller's thread in `close()` after the pool
has drained, when no worker can touch them any more.

Mount point: the URL's whole path is tried as the export first (nfs-ganesha
and Linux knfsd both allow mounting a directory inside an export); if the
server refuses, shorter prefixes are tried and the rest becomes a directory
inside the mounted export.

A context that fails with a transport error (server stopped, timeout) is
dropped, so the next call on that thread mounts afresh; the failing call
raises `TargetUnavailable`.

Symlinks: libnfs resolves paths itself and would follow a symbolic link
planted on the export, so every directory on a path is checked with LSTAT
(the verified directories are remembered per context for `DIR_CHECK_TTL`
seconds), files are opened with ``O_NOFOLLOW`` and checked to be regular,
and `stat` reports the entry itself. A symlink is refused
(`UnsafeTargetEntry`). Reads are bounded by the file's size before any
buffer is allocated (`FileTooLarge`).

Durability: NFSv3 servers commit CREATE/RENAME/REMOVE to stable storage
before replying, and we COMMIT file data with fsync before the rename, so no
directory fsync is needed here.
"""

from __future__ import annotations

import asyncio
import errno
import stat as _stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from . import _libnfs
from ..errors import target_error
from .errors import FileTooLarge, NotFound, TargetUnavailable, UnsafeTargetEntry
from .target import MAX_READ, DirEntry, FileStat, Space, Target, check_rel, parent_of, tmp_name

DIR_CHECK_TTL = 10.0  # seconds a directory found not to be a symlink is trusted

# errnos that mean "the transport is broken", not "the file system said no".
_TRANSPORT_ERRNOS = {
    errno.EIO,
    errno.ETIMEDOUT,
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ENOTCONN,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EFAULT,  # libnfs reports some RPC-layer failures this way
    errno.EINTR,  # libnfs 4.0: "Socket failed with POLLHUP" when the server goes away
    errno.ECANCELED,
}


def parse_nfs_url(url: str) -> tuple[str, str]:
    """``nfs://host/a/b`` -> ("host", "/a/b"). Queries and ports are refused."""
    u = urlsplit(url)
    if u.scheme != "nfs" or not u.hostname:
        raise ValueError(f"not an nfs:// URL: {url!r}")
    if u.port is not None or u.query or u.fragment or u.username:
        raise ValueError(f"nfs:// URL must be nfs://server/path with nothing else: {url!r}")
    path = "/" + "/".join(p for p in u.path.split("/") if p)
    if any(p in (".", "..") for p in path.split("/")):
        raise ValueError(f"nfs:// URL path must not contain '.' or '..': {url!r}")
    return u.hostname, path


class NfsTarget(Target):
    def __init__(self, url: str, *, io_workers: int = 4, timeout: float = 30.0):
        self.url = url
        self.server, self.path = parse_nfs_url(url)
        self._timeout_ms = max(1000, int(timeout * 1000))
        self._pool = ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="ovault-nfs")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._contexts: set[_libnfs.Context] = set()
        # Resolved once: (export to mount, prefix inside it).
        self._mount: tuple[str, str] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"NfsTarget({self.url!r})"

    # -- per-thread contexts ----------------------------------------------

    def _new_context(self) -> tuple[_libnfs.Context, str]:
        if self._mount is not None:
            export, prefix = self._mount
            return _libnfs.Context(self.server, export, timeout_ms=self._timeout_ms), prefix
        parts = [p for p in self.path.split("/") if p]
        last: OSError | None = None
        for cut in range(len(parts), 0, -1):
            export = "/" + "/".join(parts[:cut])
            prefix = "/".join(parts[cut:])
            try:
                ctx = _libnfs.Context(self.server, export, timeout_ms=self._timeout_ms)
            except OSError as e:
                last = e
                if e.errno in (errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH):
                    break  # the server itself is not answering; shorter paths won't help
                continue
            if prefix:
                try:
                    size, mtime, is_dir = ctx.stat("/" + prefix)
                except OSError as e:
                    ctx.close()
                    last = e
                    break
            self._mount = (export, prefix)
            return ctx, prefix
        raise TargetUnavailable(self.url, str(last) if last else "cannot mount")

    def _ctx(self) -> tuple[_libnfs.Context, str]:
        c = getattr(self._local, "ctx", None)
        if c is None:
            try:
                c = self._new_context()
            except OSError as e:
                raise TargetUnavailable(self.url, str(e)) from e
            with self._lock:
                if self._closed:
                    c[0].close()
                    raise TargetUnavailable(self.url, "target is closed")
                self._contexts.add(c[0])
            self._local.ctx = c
        return c

    def _drop_ctx(self) -> None:
        c = getattr(self._local, "ctx", None)
        self._local.ctx = None
        if c is not None:
            with self._lock:
                self._contexts.discard(c[0])
            c[0].close()

    def _check_dirs(self, ctx: _libnfs.Context, prefix: str, rel_dir: str) -> None:
        """LSTAT every component of ``rel_dir`` (target-relative): each must be a
        real directory, not a symlink. Raises OSError(ELOOP/ENOTDIR)."""
        if not rel_dir:
            return
        seen = getattr(self._local, "dirs", None)
        if seen is None:
            seen = self._local.dirs = {}
        now = time.monotonic()
        parts = rel_dir.split("/")
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            if seen.get(rel, 0) > now:
                continue
            try:
                _, _, mode = ctx.lstat("/" + "/".join(p for p in (prefix, rel) if p))
            except FileNotFoundError:
                return  # nothing below exists (yet): nothing to follow
            if _stat.S_ISLNK(mode):
                raise OSError(errno.ELOOP, f"{rel!r} is a symbolic link", rel)
            if not _stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, f"{rel!r} is not a directory", rel)
            if len(seen) > 4096:
                seen.clear()
            seen[rel] = now + DIR_CHECK_TTL

    def _forget_dirs(self) -> None:
        seen = getattr(self._local, "dirs", None)
        if seen:
            seen.clear()

    def _call(self, path: str, fn, *, check_self: bool = False):
        """Run ``fn(ctx, abs_path)`` on this worker's context, mapping errors.

        Every directory above ``path`` (and ``path`` itself if ``check_self``:
        a directory about to be listed) is checked not to be a symlink first."""
        ctx, prefix = self._ctx()
        check_rel(path)
        abs_path = "/" + "/".join(p for p in (prefix, path) if p)
        try:
            try:
                self._check_dirs(ctx, prefix, path if check_self else parent_of(path))
                return fn(ctx, abs_path)
            except OSError as e:
                if e.errno != errno.ESTALE:
                    raise
                # A file handle went stale: the name was replaced (an atomic rename over
                # it, e.g. a lease rewritten) after this context looked it up. Once more
                # on a fresh context, which looks every name up again.
                self._drop_ctx()
                ctx, prefix = self._ctx()
                self._check_dirs(ctx, prefix, path if check_self else parent_of(path))
                return fn(ctx, abs_path)
        except _libnfs.TooLarge as e:
            raise FileTooLarge(path, e.size, e.limit) from None
        except OSError as e:
            if isinstance(e, _libnfs.NotRegular) or e.errno in (errno.ELOOP, errno.ENOTDIR):
                what = e.strerror or ""
                if e.errno == errno.ELOOP and "symbolic link" not in what:
                    what = f"a symbolic link ({what})"
                raise UnsafeTargetEntry(path, what or "not a plain file or directory") from None
            if e.errno == errno.ENOENT:
                raise NotFound(path) from e
            if e.errno in _TRANSPORT_ERRNOS:
                self._drop_ctx()
                raise TargetUnavailable(self.url, str(e)) from e
            mapped = target_error(e, self.url)  # full, read-only, permission denied
            if mapped is None:
                raise
            raise mapped from e

    async def _run(self, path: str, fn, *, check_self: bool = False):
        if self._closed:
            raise TargetUnavailable(self.url, "target is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self._call(path, fn, check_self=check_self))

    async def connect(self) -> None:
        await self.stat("")

    async def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
        with self._lock:
            ctxs, self._contexts = self._contexts, set()
        for c in ctxs:
            c.close()

    # -- operations --------------------------------------------------------

    async def read_file(self, path: str, *, max_size: int = MAX_READ) -> bytes:
        return await self._run(path, lambda c, p: c.read_file(p, max_size))

    async def space(self) -> Space | None:
        return Space.of(**await self._run("", lambda c, p: c.statvfs(p)))   # the server's word, clamped

    async def write_file(self, path: str, data: bytes | list, *, make_parents: bool = True) -> None:
        if isinstance(data, list):
            data = b"".join(data)
        tmp_rel = tmp_name(path)
        check_rel(path)

        def write(c: _libnfs.Context, tmp: str) -> None:
            final = tmp.rpartition("/")[0] + "/" + path.rpartition("/")[2]
            try:
                try:
                    c.write_new(tmp, data)
                except FileNotFoundError:
                    if not make_parents:
                        raise
                    _makedirs(c, tmp.rpartition("/")[0])
                    c.write_new(tmp, data)
                c.rename(tmp, final)
            except BaseException:
                _try_unlink(c, tmp)
                raise

        try:
            await self._run(tmp_rel, write)
        except NotFound:
            raise NotFound(parent_of(path)) from None

    async def stat(self, path: str) -> FileStat:
        size, mtime, mode = await self._run(path, lambda c, p: c.lstat(p))
        if _stat.S_ISLNK(mode):
            raise UnsafeTargetEntry(path, "a symbolic link")
        return FileStat(size=size, mtime=mtime, is_dir=_stat.S_ISDIR(mode))

    async def scandir(self, path: str) -> list[DirEntry]:
        ents = await self._run(path, lambda c, p: c.listdir(p), check_self=True)
        return [DirEntry(name=e.name, is_dir=e.is_dir, size=e.size, mtime=e.mtime) for e in ents]

    async def remove(self, path: str) -> None:
        await self._run(path, lambda c, p: c.unlink(p))

    async def rmdir(self, path: str) -> bool:
        def rm(c, p):
            self._forget_dirs()
            try:
                c.rmdir(p)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False
                raise
            return True

        return await self._run(path, rm)

    async def rename(self, src: str, dst: str) -> None:
        check_rel(dst)

        def mv(c, p):
            prefix = p[: len(p) - len(src)]
            _, _, mode = c.lstat(p)
            if _stat.S_ISDIR(mode):
                self._forget_dirs()
            c.rename(p, prefix + dst)

        await self._run(src, mv)

    async def makedirs(self, path: str) -> None:
        await self._run(path, _makedirs, check_self=True)

    async def touch(self, path: str) -> None:
        def touch(c, p):
            _, _, mode = c.lstat(p)  # utimes follows symlinks: refuse one first
            if _stat.S_ISLNK(mode):
                raise OSError(errno.ELOOP, "a symbolic link", p)
            c.touch(p)

        await self._run(path, touch)


def _makedirs(c: _libnfs.Context, path: str) -> None:
    """mkdir -p on an absolute in-mount path."""
    if path in ("", "/"):
        return
    try:
        c.mkdir(path)
    except OSError as e:
        if e.errno == errno.EEXIST:
            return
        if e.errno != errno.ENOENT:
            raise
        _makedirs(c, path.rpartition("/")[0])
        try:
            c.mkdir(path)
        except OSError as e2:
            if e2.errno != errno.EEXIST:
                raise


def _try_unlink(c: _libnfs.Context, path: str) -> None:
    try:
        c.unlink(path)
    except OSError:
        pass
