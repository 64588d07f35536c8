"""A minimal ctypes binding of libnfs's synchronous API (Debian 12: libnfs 4.0).

Only what `NfsTarget` needs. Facts that shaped it:

- A ``struct nfs_context`` is not thread-safe: one context per thread.
- libnfs 4.0's ``nfs_pwrite(ctx, fh, offset, count, buf)`` puts the offset
  before the count (later releases changed the order), and the sync calls
  split requests larger than the negotiated rsize/wsize themselves.
- Sync calls return ``-errno`` and leave a message in ``nfs_get_error``.
- ``nfs_utimes(ctx, path, NULL)`` sends SET_TO_SERVER_TIME, so a touched
  file carries the server's clock, the same clock that stamps new files.
- ctypes releases the GIL around every foreign call, so calls in different
  threads run in parallel.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat as _stat
from dataclasses import dataclass

_vp = ctypes.c_void_p
_cp = ctypes.c_char_p
_int = ctypes.c_int
_u64 = ctypes.c_uint64


class _Stat64(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_uint64)
        for n in (
            "dev ino mode nlink uid gid rdev size blksize blocks "
            "atime mtime ctime atime_nsec mtime_nsec ctime_nsec used"
        ).split()
    ]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Dirent(ctypes.Structure):
    pass


_Dirent._fields_ = [
    ("next", ctypes.POINTER(_Dirent)),
    ("name", _cp),
    ("inode", _u64),
    ("type", ctypes.c_uint32),
    ("mode", ctypes.c_uint32),
    ("size", _u64),
    ("atime", _Timeval),
    ("mtime", _Timeval),
    ("ctime", _Timeval),
    ("uid", ctypes.c_uint32),
    ("gid", ctypes.c_uint32),
    ("nlink", ctypes.c_uint32),
    ("dev", _u64),
    ("rdev", _u64),
    ("blksize", _u64),
    ("blocks", _u64),
    ("used", _u64),
    ("atime_nsec", ctypes.c_uint32),
    ("mtime_nsec", ctypes.c_uint32),
    ("ctime_nsec", ctypes.c_uint32),
]

_NF3DIR = 2

_lib = None


def load() -> ctypes.CDLL:
    """Load libnfs once; raise OSError with a hint if it is not installed."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL("libnfs.so.13")
    except OSError as e:
        raise OSError(errno.ENOENT, f"libnfs.so.13 not found (apt-get install libnfs13): {e}") from e
    sig = {
        "nfs_init_context": (_vp, []),
        "nfs_destroy_context": (None, [_vp]),
        "nfs_get_error": (_cp, [_vp]),
        "nfs_set_timeout": (None, [_vp, _int]),
        "nfs_set_autoreconnect": (None, [_vp, _int]),
        "nfs_mount": (_int, [_vp, _cp, _cp]),
        "nfs_stat64": (_int, [_vp, _cp, ctypes.POINTER(_Stat64)]),
        "nfs_lstat64": (_int, [_vp, _cp, ctypes.POINTER(_Stat64)]),
        "nfs_fstat64": (_int, [_vp, _vp, ctypes.POINTER(_Stat64)]),
        "nfs_open": (_int, [_vp, _cp, _int, ctypes.POINTER(_vp)]),
        "nfs_creat": (_int, [_vp, _cp, _int, ctypes.POINTER(_vp)]),
        "nfs_close": (_int, [_vp, _vp]),
        "nfs_pread": (_int, [_vp, _vp, _u64, _u64, _vp]),
        "nfs_pwrite": (_int, [_vp, _vp, _u64, _u64, _vp]),
        "nfs_fsync": (_int, [_vp, _vp]),
        "nfs_rename": (_int, [_vp, _cp, _cp]),
        "nfs_unlink": (_int, [_vp, _cp]),
        "nfs_mkdir": (_int, [_vp, _cp]),
        "nfs_rmdir": (_int, [_vp, _cp]),
        "nfs_symlink": (_int, [_vp, _cp, _cp]),
        "nfs_utimes": (_int, [_vp, _cp, _vp]),
        "nfs_opendir": (_int, [_vp, _cp, ctypes.POINTER(_vp)]),
        "nfs_statvfs64": (_int, [_vp, _cp, ctypes.POINTER(_StatVfs64)]),
        "nfs_readdir": (ctypes.POINTER(_Dirent), [_vp, _vp]),
        "nfs_closedir": (None, [_vp, _vp]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    _lib = lib
    return lib


class _StatVfs64(ctypes.Structure):
    # struct nfs_statvfs_64 (libnfs.h): eleven uint64_t
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
        "f_favail", "f_fsid", "f_flag", "f_namemax")]


class TooLarge(OSError):
    """A file larger than the caller's bound; nothing of it was read."""

    def __init__(self, path: str, size: int, limit: int):
        super().__init__(errno.EFBIG, f"{path}: {size} bytes, more than {limit}")
        self.size, self.limit = size, limit


class NotRegular(OSError):
    """The entry opened as a file is a symlink, a directory or a device."""


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    mtime: float


class Context:
    """One mounted libnfs context. Use from a single thread only.

    Paths are absolute within the mount ("/chunks/ab/cd/..."), bytes or str.
    Failures raise OSError(errno, "<op> <path>: <libnfs message>").
    """

    def __init__(self, server: str, export: str, *, timeout_ms: int = 30000):
        self._lib = load()
        self._ctx = self._lib.nfs_init_context()
        if not self._ctx:
            raise OSError(errno.ENOMEM, "nfs_init_context failed")
        # A bounded RPC timeout: a dead server must surface as an error
        # (the mover then fails the copy) rather than hang a worker forever.
        self._lib.nfs_set_timeout(self._ctx, int(timeout_ms))
        rc = self._lib.nfs_mount(self._ctx, server.encode(), export.encode())
        if rc < 0:
            msg = self._error()
            self.close()
            raise OSError(-rc, f"mount {server}:{export}: {msg}")

    def close(self) -> None:
        if self._ctx:
            self._lib.nfs_destroy_context(self._ctx)
            self._ctx = None

    def _error(self) -> str:
        m = self._lib.nfs_get_error(self._ctx) if self._ctx else None
        return m.decode(errors="replace") if m else ""

    def _check(self, rc: int, op: str, path) -> int:
        if rc < 0:
            p = path.decode(errors="replace") if isinstance(path, bytes) else path
            raise OSError(-rc, f"{op} {p}: {self._error()}", p)
        return rc

    @staticmethod
    def _b(path) -> bytes:
        return path if isinstance(path, bytes) else os.fsencode(path)

    # -- metadata ----------------------------------------------------------

    def stat(self, path) -> tuple[int, float, bool]:
        st = _Stat64()
        self._check(self._lib.nfs_stat64(self._ctx, self._b(path), ctypes.byref(st)), "stat", path)
        return st.size, st.mtime + st.mtime_nsec / 1e9, _stat.S_ISDIR(st.mode)

    def statvfs(self, path) -> dict[str, int]:
        """The exported file system's counts (NFS FSSTAT): blocks, bfree, bavail, frsize, bsize."""
        st = _StatVfs64()
        self._check(self._lib.nfs_statvfs64(self._ctx, self._b(path), ctypes.byref(st)), "statvfs", path)
        return {"blocks": st.f_blocks, "bfree": st.f_bfree, "bavail": st.f_bavail,
                "frsize": st.f_frsize, "bsize": st.f_bsize}

    def lstat(self, path) -> tuple[int, float, int]:
        """(size, mtime, st_mode) of the entry itself (a symlink is not followed)."""
        st = _Stat64()
        self._check(self._lib.nfs_lstat64(self._ctx, self._b(path), ctypes.byref(st)), "lstat", path)
        return st.size, st.mtime + st.mtime_nsec / 1e9, st.mode

    def listdir(self, path) -> list[Entry]:
        d = _vp()
        self._check(self._lib.nfs_opendir(self._ctx, self._b(path), ctypes.byref(d)), "opendir", path)
        out = []
        try:
            while True:
                ent = self._lib.nfs_readdir(self._ctx, d)
                if not ent:
                    break
                e = ent.contents
                name = e.name.decode(errors="surrogateescape")
                if name in (".", ".."):
                    continue
                out.append(
                    Entry(
                        name=name,
                        is_dir=e.type == _NF3DIR,
                        size=e.size,
                        mtime=e.mtime.tv_sec + e.mtime_nsec / 1e9,
                    )
                )
        finally:
            self._lib.nfs_closedir(self._ctx, d)
        return out

    def mkdir(self, path) -> None:
        self._check(self._lib.nfs_mkdir(self._ctx, self._b(path)), "mkdir", path)

    def rmdir(self, path) -> None:
        self._check(self._lib.nfs_rmdir(self._ctx, self._b(path)), "rmdir", path)

    def unlink(self, path) -> None:
        self._check(self._lib.nfs_unlink(self._ctx, self._b(path)), "unlink", path)

    def rename(self, src, dst) -> None:
        self._check(self._lib.nfs_rename(self._ctx, self._b(src), self._b(dst)), "rename", src)

    def symlink(self, target, linkname) -> None:
        """Create a symbolic link (the store never does; tests plant them)."""
        self._check(self._lib.nfs_symlink(self._ctx, self._b(target), self._b(linkname)), "symlink", linkname)

    def touch(self, path) -> None:
        self._check(self._lib.nfs_utimes(self._ctx, self._b(path), None), "utimes", path)

    # -- data --------------------------------------------------------------

    def read_file(self, path, max_size: int) -> bytes:
        """The whole regular file, opened without following a symlink; `TooLarge`
        (before any byte is read or any buffer allocated) past ``max_size``."""
        fh = _vp()
        flags = os.O_RDONLY | os.O_NOFOLLOW
        self._check(self._lib.nfs_open(self._ctx, self._b(path), flags, ctypes.byref(fh)), "open", path)
        try:
            st = _Stat64()
            self._check(self._lib.nfs_fstat64(self._ctx, fh, ctypes.byref(st)), "fstat", path)
            if not _stat.S_ISREG(st.mode):
                what = "a symbolic link" if _stat.S_ISLNK(st.mode) else "not a regular file"
                raise NotRegular(errno.EINVAL, what, path)
            if st.size > max_size:
                raise TooLarge(str(path), st.size, max_size)
            buf = bytearray(st.size)
            done = 0
            if st.size:
                base = ctypes.addressof((ctypes.c_char * st.size).from_buffer(buf))
                while done < st.size:
                    n = self._check(
                        self._lib.nfs_pread(self._ctx, fh, done, st.size - done, base + done), "pread", path
                    )
                    if n == 0:
                        break  # truncated under us; return what is there
                    done += n
            return bytes(buf[:done]) if done != st.size else bytes(buf)
        finally:
            self._lib.nfs_close(self._ctx, fh)

    def write_new(self, path, data: bytes) -> None:
        """Create (or truncate) ``path``, write ``data``, fsync, close."""
        fh = _vp()
        self._check(self._lib.nfs_creat(self._ctx, self._b(path), 0o644, ctypes.byref(fh)), "creat", path)
        try:
            size = len(data)
            if size:
                # Keep a reference to the buffer for the duration of the calls.
                buf = data if isinstance(data, bytes) else bytes(data)
                base = ctypes.cast(ctypes.c_char_p(buf), _vp).value
                done = 0
                while done < size:
                    n = self._check(
                        self._lib.nfs_pwrite(self._ctx, fh, done, size - done, base + done), "pwrite", path
                    )
                    if n == 0:
                        raise OSError(errno.EIO, f"pwrite {path}: wrote 0 bytes")
                    done += n
            self._check(self._lib.nfs_fsync(self._ctx, fh), "fsync", path)
        finally:
            rc = self._lib.nfs_close(self._ctx, fh)
        self._check(rc, "close", path)
