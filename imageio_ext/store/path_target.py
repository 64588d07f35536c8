"""A target that is a local or mounted directory.

Plain os calls run in a small dedicated thread pool (so a slow NFS mount
never blocks the event loop and the I/O concurrency is bounded and
configurable). Atomic writes fsync the file and then the directory, so a
renamed file survives a crash of the host.
"""

from __future__ import annotations

import asyncio
import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import target_error
from .errors import NotFound, TargetUnavailable
from .target import DirEntry, FileStat, Target, check_rel, parent_of, tmp_name


class PathTarget(Target):
    def __init__(self, root: str | os.PathLike, *, io_workers: int = 4):
        self.root = Path(root).absolute()
        self.url = str(self.root)
        self._pool = ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="ovault-path")

    def __repr__(self) -> str:
        return f"PathTarget({self.url!r})"

    # -- plumbing ----------------------------------------------------------

    def _abs(self, path: str) -> str:
        check_rel(path)
        return os.path.join(self.root, path) if path else str(self.root)

    async def _run(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def _translate(self, path: str, e: OSError):
        if e.errno == errno.ENOENT:
            return NotFound(path)
        # full (with the space left, for the message), read-only, permission denied
        return target_error(e, self.url, self._free() if e.errno == errno.ENOSPC else None) or e

    def _free(self) -> int | None:
        try:
            st = os.statvfs(self.root)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    async def connect(self) -> None:
        if not await self._run(os.path.isdir, str(self.root)):
            raise TargetUnavailable(self.url, "not a directory")

    async def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- operations --------------------------------------------------------

    async def read_file(self, path: str) -> bytes:
        p = self._abs(path)

        def read() -> bytes:
            with open(p, "rb") as f:
                return f.read()

        try:
            return await self._run(read)
        except OSError as e:
            raise self._translate(path, e) from e

    async def write_file(self, path: str, data: bytes, *, make_parents: bool = True) -> None:
        p = self._abs(path)
        tmp = self._abs(tmp_name(path))
        dirname = os.path.dirname(p)

        def write() -> None:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                if not make_parents:
                    raise
                os.makedirs(dirname, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, p)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            dfd = os.open(dirname, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

        try:
            await self._run(write)
        except OSError as e:
            raise self._translate(parent_of(path), e) from e

    async def stat(self, path: str) -> FileStat:
        p = self._abs(path)
        try:
            st = await self._run(os.stat, p)
        except OSError as e:
            raise self._translate(path, e) from e
        import stat as _stat

        return FileStat(size=st.st_size, mtime=st.st_mtime_ns / 1e9, is_dir=_stat.S_ISDIR(st.st_mode))

    async def scandir(self, path: str) -> list[DirEntry]:
        p = self._abs(path)

        def scan() -> list[DirEntry]:
            out = []
            with os.scandir(p) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while listing
                    import stat as _stat

                    out.append(
                        DirEntry(
                            name=e.name,
                            is_dir=_stat.S_ISDIR(st.st_mode),
                            size=st.st_size,
                            mtime=st.st_mtime_ns / 1e9,
                        )
                    )
            return out

        try:
            return await self._run(scan)
        except OSError as e:
            raise self._translate(path, e) from e

    async def remove(self, path: str) -> None:
        try:
            await self._run(os.unlink, self._abs(path))
        except OSError as e:
            raise self._translate(path, e) from e

    async def rmdir(self, path: str) -> bool:
        try:
            await self._run(os.rmdir, self._abs(path))
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise self._translate(path, e) from e
        return True

    async def rename(self, src: str, dst: str) -> None:
        try:
            await self._run(os.rename, self._abs(src), self._abs(dst))
        except OSError as e:
            raise self._translate(src, e) from e

    async def makedirs(self, path: str) -> None:
        await self._run(lambda: os.makedirs(self._abs(path), exist_ok=True))

    async def touch(self, path: str) -> None:
        try:
            await self._run(os.utime, self._abs(path), None)
        except OSError as e:
            raise self._translate(path, e) from e
