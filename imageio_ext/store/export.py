"""Export a backup disk to a plain raw or qcow2 file (no lock-in).

Kept simple and obviously correct: the disk is written as a sparse raw file
(zero chunks are holes), then, for qcow2, ``qemu-img convert`` turns it into
a compact qcow2 (it detects zeros itself). Both outputs appear at ``dest``
only when complete (temp name in the same directory, fsync, rename); the
temp files are removed on any failure. Every chunk is verified as it is read.

Space: the raw temp file needs as much room as the disk's non-zero data.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ExportFailed
from .fidx import ZERO_DIGEST
from .reader import DiskReader

FORMATS = ("raw", "qcow2")


@dataclass(frozen=True)
class ExportResult:
    path: str
    format: str
    size: int  # virtual size in bytes
    sha256: str  # SHA-256 of the guest-visible content that was exported


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


async def export_disk(
    reader: DiskReader,
    dest: str | os.PathLike,
    fmt: str = "raw",
    *,
    overwrite: bool = False,
    qemu_img: str = "qemu-img",
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Write ``reader``'s disk to ``dest``; ``progress(done, total)`` counts bytes read."""
    if fmt not in FORMATS:
        raise ExportFailed(str(dest), f"format {fmt!r} is not one of {FORMATS}")
    dest = Path(dest).absolute()
    if dest.exists() and not overwrite:
        raise ExportFailed(str(dest), "destination exists")
    if not dest.parent.is_dir():
        raise ExportFailed(str(dest), "destination directory does not exist")
    tag = secrets.token_hex(6)
    raw_tmp = dest.parent / f".{dest.name}.raw.tmp.{tag}"
    out_tmp = dest.parent / f".{dest.name}.tmp.{tag}"
    h = hashlib.sha256()
    fd = os.open(raw_tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            os.ftruncate(fd, reader.size)
            if progress is not None:
                progress(0, reader.size)
            async for offset, data in reader.iter_chunks():
                await reader.chunks.cpu(h.update, data)
                if reader.index.get(offset // reader.chunk_size) != ZERO_DIGEST:
                    await asyncio.to_thread(_write_at, fd, data, offset)
                if progress is not None:
                    progress(offset + len(data), reader.size)
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        if fmt == "raw":
            os.rename(raw_tmp, dest)
        else:
            proc = await asyncio.create_subprocess_exec(
                qemu_img, "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw_tmp), str(out_tmp),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise ExportFailed(str(dest), f"qemu-img convert failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
            ofd = os.open(out_tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(ofd)
            finally:
                os.close(ofd)
            os.rename(out_tmp, dest)
        dfd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        for p in (raw_tmp, out_tmp):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        raise
    else:
        if raw_tmp.exists():
            os.unlink(raw_tmp)
    return ExportResult(path=str(dest), format=fmt, size=reader.size, sha256=h.hexdigest())
