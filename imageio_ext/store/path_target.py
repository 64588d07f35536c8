"""A target that is a local or mounted directory.

Plain os calls run in a small dedicated thread pool (so a slow NFS mount
never blocks the event loop and the I/O concurrency is bounded and
configurable). Atomic writes fsync the file before renaming it into place
and then the directory, and a directory made on the way is fsynced into its
parent before use, so a renamed file survives a crash of the host.

The tree below the root is hostile input: every operation walks the path one
component at a time from a descriptor of the root, opening each directory
with ``O_DIRECTORY | O_NOFOLLOW`` relative to its parent (``dir_fd``), and the
last component is opened, created, renamed, listed or removed relative to
that directory, never following a symbolic link. A symlink anywhere in a path
is refused (`UnsafeTargetEntry`), so nothing is read or written outside the
target. The root itself is the administrator's configuration and may be a
symlink.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat as _stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import target_error
from .errors import FileTooLarge, NotFound, TargetUnavailable, UnsafeTargetEntry
from .target import MAX_READ, DirEntry, FileStat, Space, Target, check_rel, parent_of, tmp_name

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Refused(OSError):
    """A symlink or non-regular entry met while walking (mapped to UnsafeTargetEntry)."""


class PathTarget(Target):
    def __init__(self, root: str | os.PathLike, *, io_workers: int = 4):
        self.root = Path(root).absolute()
        self.url = str(self.root)
        self._pool = ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="ovault-path")

    def __repr__(self) -> str:
        return f"PathTarget({self.url!r})"

    # -- plumbing ----------------------------------------------------------

    async def _run(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def _translate(self, path: str, e: OSError):
        if isinstance(e, _Refused):
            return UnsafeTargetEntry(path, e.strerror or "not a plain file or directory")
        if e.errno == errno.ELOOP:
            return UnsafeTargetEntry(path, "a component is a symbolic link")
        if e.errno == errno.ENOENT:
            return NotFound(path)
        if e.errno == errno.ENOTDIR:
            return UnsafeTargetEntry(path, "a component is not a directory")
        # full (with the space left, for the message), read-only, permission denied
        return target_error(e, self.url, self._free() if e.errno == errno.ENOSPC else None) or e

    def _space(self) -> Space:
        st = os.statvfs(self.root)
        return Space.of(blocks=st.f_blocks, bfree=st.f_bfree, bavail=st.f_bavail, frsize=st.f_frsize,
                        bsize=st.f_bsize)

    async def space(self) -> Space | None:
        return await self._run(self._space)

    def _free(self) -> int | None:
        try:
            return self._space().free
        except OSError:
            return None

    def _open_dir(self, rel: str, *, create: bool = False) -> int:
        """A descriptor of directory ``rel`` (checked), walked without following
        symlinks; missing directories are made when ``create``. Caller closes it."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in check_rel(rel).split("/") if rel else ():
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    else:
                        # The new entry is durable before anything is renamed into the new
                        # directory (a chunk fsynced in a directory whose own entry a crash
                        # loses would be gone although the index naming it was published).
                        os.fsync(fd)
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        st = _lstat_at(part, fd)
                        what = "a symbolic link" if st and _stat.S_ISLNK(st.st_mode) else "not a directory"
                        raise _Refused(e.errno, f"{part!r} is {what}") from None
                    raise
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _at(self, path: str, fn, *, create: bool = False):
        """``fn(dir_fd, name)`` on the last component of ``path`` (not "")."""
        check_rel(path)
        head, _, name = path.rpartition("/")
        dfd = self._open_dir(head, create=create)
        try:
            return fn(dfd, name)
        finally:
            os.close(dfd)

    async def connect(self) -> None:
        if not await self._run(os.path.isdir, str(self.root)):
            raise TargetUnavailable(self.url, "not a directory")

    async def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- operations --------------------------------------------------------

    async def read_file(self, path: str, *, max_size: int = MAX_READ) -> bytes:
        def read(dfd: int, name: str) -> bytes:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            try:
                st = os.fstat(fd)
                if not _stat.S_ISREG(st.st_mode):
                    raise _Refused(errno.EINVAL, "not a regular file")
                if st.st_size > max_size:
                    raise FileTooLarge(path, st.st_size, max_size)
                parts, left = [], max_size + 1  # a file grown since fstat is caught too
                while left > 0:
                    b = os.read(fd, min(left, 1 << 22))
                    if not b:
                        break
                    parts.append(b)
                    left -= len(b)
            finally:
                os.close(fd)
            data = b"".join(parts)
            if len(data) > max_size:
                raise FileTooLarge(path, len(data), max_size)
            return data

        try:
            return await self._run(self._at, path, read)
        except OSError as e:
            raise self._translate(path, e) from e

    async def write_file(self, path: str, data: bytes | list, *, make_parents: bool = True) -> None:
        check_rel(path)
        parts = data if isinstance(data, list) else (data,)
        tmp = tmp_name(path).rpartition("/")[2]

        def write(dfd: int, name: str) -> None:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dfd)
            try:
                try:
                    for part in parts:
                        view = memoryview(part)
                        while view:
                            n = os.write(fd, view)
                            view = view[n:]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                # rename replaces a symlink planted at ``name`` itself, never its target
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
                raise
            os.fsync(dfd)

        try:
            await self._run(lambda: self._at(path, write, create=make_parents))
        except OSError as e:
            raise self._translate(parent_of(path), e) from e

    async def stat(self, path: str) -> FileStat:
        def st_of() -> os.stat_result:
            if not path:
                return os.stat(self.root)
            return self._at(path, lambda dfd, name: os.stat(name, dir_fd=dfd, follow_symlinks=False))

        try:
            st = await self._run(st_of)
        except OSError as e:
            raise self._translate(path, e) from e
        if _stat.S_ISLNK(st.st_mode):
            raise UnsafeTargetEntry(path, "a symbolic link")
        return FileStat(size=st.st_size, mtime=st.st_mtime_ns / 1e9, is_dir=_stat.S_ISDIR(st.st_mode))

    async def scandir(self, path: str) -> list[DirEntry]:
        def scan() -> list[DirEntry]:
            out = []
            dfd = self._open_dir(path)
            try:
                with os.scandir(dfd) as it:
                    for e in it:
                        try:
                            st = e.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # removed while listing
                        out.append(
                            DirEntry(
                                name=e.name,
                                is_dir=_stat.S_ISDIR(st.st_mode),
                                size=st.st_size,
                                mtime=st.st_mtime_ns / 1e9,
                            )
                        )
            finally:
                os.close(dfd)
            return out

        try:
            return await self._run(scan)
        except OSError as e:
            raise self._translate(path, e) from e

    async def remove(self, path: str) -> None:
        try:
            # unlinkat removes a symlink itself, never what it points to
            await self._run(self._at, path, lambda dfd, name: os.unlink(name, dir_fd=dfd))
        except OSError as e:
            raise self._translate(path, e) from e

    async def rmdir(self, path: str) -> bool:
        try:
            await self._run(self._at, path, lambda dfd, name: os.rmdir(name, dir_fd=dfd))
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise self._translate(path, e) from e
        return True

    async def rename(self, src: str, dst: str) -> None:
        check_rel(dst)
        dhead, _, dname = dst.rpartition("/")

        def mv(sfd: int, sname: str) -> None:
            dfd = self._open_dir(dhead)
            try:
                os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            finally:
                os.close(dfd)

        try:
            await self._run(self._at, src, mv)
        except OSError as e:
            raise self._translate(src, e) from e

    async def makedirs(self, path: str) -> None:
        def mk() -> None:
            os.close(self._open_dir(path, create=True))

        try:
            await self._run(mk)
        except OSError as e:
            raise self._translate(path, e) from e

    async def touch(self, path: str, *, check: bool = False) -> None:
        def touch(dfd: int, name: str) -> None:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if _stat.S_ISLNK(st.st_mode):
                raise _Refused(errno.ELOOP, "a symbolic link")
            os.utime(name, None, dir_fd=dfd, follow_symlinks=False)
            if check:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)  # still there (ENOENT if not)
                if _stat.S_ISLNK(st.st_mode):
                    raise _Refused(errno.ELOOP, "a symbolic link")

        try:
            await self._run(self._at, path, touch)
        except OSError as e:
            raise self._translate(path, e) from e

    async def touch_checked(self, path: str) -> None:
        # one walk and one thread hand-off for both (a dedup check of every chunk written)
        await self.touch(path, check=True)


def _lstat_at(name: str, dfd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        return None
