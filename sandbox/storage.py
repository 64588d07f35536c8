"""The data storage domain: disks as real qcow2/raw volume chains in a folder.

Layout, like a file storage domain of vdsm:

    <sd_dir>/images/<disk_id>/<volume_id>        raw or qcow2 volume
    <sd_dir>/images/<disk_id>/<volume_id>.meta   JSON: format, parent volume

A disk is a chain of volumes, base first. A snapshot freezes the top volume
(it becomes the snapshot's disk image) and puts a new qcow2 overlay on it.
Checkpoints are persistent dirty bitmaps kept in the qcow2 layers: every
layer carries every checkpoint's bitmap, so `qemu-nbd -B` on any top finds
it, and a merge carries them down (what vdsm does around snapshots).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .proc import CommandFailed, run

QCOW2, RAW = "qcow2", "raw"


@dataclass
class Volume:
    id: str
    path: Path
    fmt: str
    parent: str | None = None


@dataclass
class Image:
    """The volumes of one disk, base first."""
    disk_id: str
    dir: Path
    size: int
    volumes: list[Volume] = field(default_factory=list)

    @property
    def top(self) -> Volume:
        return self.volumes[-1]

    def volume(self, vol_id: str) -> Volume:
        for v in self.volumes:
            if v.id == vol_id:
                return v
        raise KeyError(vol_id)

    def chain_to(self, vol_id: str) -> list[Volume]:
        out = []
        for v in self.volumes:
            out.append(v)
            if v.id == vol_id:
                return out
        raise KeyError(vol_id)

    def _meta(self, v: Volume):
        (self.dir / f"{v.id}.meta").write_text(json.dumps({"format": v.fmt, "parent": v.parent}))

    # --- life cycle -------------------------------------------------------
    @classmethod
    async def create(cls, sd_dir: Path, disk_id: str, size: int, fmt: str,
                     sparse: bool = True, vol_id: str | None = None) -> "Image":
        d = sd_dir / "images" / disk_id
        d.mkdir(parents=True, exist_ok=True)
        img = cls(disk_id, d, size)
        v = Volume(vol_id or str(uuid.uuid4()), d / (vol_id or ""), fmt)
        v.path = d / v.id
        if fmt == QCOW2:
            await run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
                      "compat=1.1,lazy_refcounts=on", v.path, str(size))
        else:
            await run("qemu-img", "create", "-q", "-f", "raw", "-o",
                      f"preallocation={'off' if sparse else 'falloc'}", v.path, str(size))
        img.volumes.append(v)
        img._meta(v)
        return img

    async def remove(self):
        for v in self.volumes:
            v.path.unlink(missing_ok=True)
            (self.dir / f"{v.id}.meta").unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:
            pass
        self.volumes.clear()

    async def replace_with(self, src: Path, src_fmt: str):
        """Make this disk a single volume holding the content of `src` (its format kept)."""
        top = self.top
        tmp = top.path.with_suffix(".new")
        await run("qemu-img", "convert", "-q", "-f", src_fmt, "-O", top.fmt, src, tmp)
        os.replace(tmp, top.path)

    # --- snapshots --------------------------------------------------------
    async def freeze(self) -> Volume:
        """Freeze the top volume and put a fresh qcow2 overlay on it.

        Returns the frozen volume. Bitmaps are copied to the overlay, so
        dirty tracking continues across the snapshot.
        """
        old = self.top
        new = Volume(str(uuid.uuid4()), self.dir / "", QCOW2, parent=old.id)
        new.path = self.dir / new.id
        await run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1,lazy_refcounts=on",
                  "-b", old.path.name, "-F", old.fmt, new.path, str(self.size))
        for name in await self.bitmaps(old):
            await run("qemu-img", "bitmap", "--add", new.path, name)
            await run("qemu-img", "bitmap", "--merge", name, "-b", old.path, "-F", old.fmt,
                      new.path, name)
        self.volumes.append(new)
        self._meta(new)
        return old

    async def merge(self, vol_id: str) -> str:
        """Remove snapshot volume `vol_id` by committing its child into it.

        The child's data and bitmaps go down into `vol_id`, which then takes
        the child's place in the chain (a cold merge). Returns the id of the
        volume that was removed (the child).
        """
        idx = [v.id for v in self.volumes].index(vol_id)
        if idx == len(self.volumes) - 1:
            raise ValueError("cannot merge the active volume")
        base, child = self.volumes[idx], self.volumes[idx + 1]
        await run("qemu-img", "commit", "-q", "-f", child.fmt, child.path)
        if base.fmt == QCOW2:
            have = set(await self.bitmaps(base))
            for name in await self.bitmaps(child):
                if name not in have:
                    await run("qemu-img", "bitmap", "--add", base.path, name)
                await run("qemu-img", "bitmap", "--merge", name, "-b", child.path, "-F", child.fmt,
                          base.path, name)
        if idx + 2 < len(self.volumes):
            grand = self.volumes[idx + 2]
            await run("qemu-img", "rebase", "-u", "-f", grand.fmt, "-b", base.path.name,
                      "-F", base.fmt, grand.path)
            grand.parent = base.id
            self._meta(grand)
        del self.volumes[idx + 1]
        child.path.unlink(missing_ok=True)
        (self.dir / f"{child.id}.meta").unlink(missing_ok=True)
        return child.id

    async def revert(self, vol_id: str) -> Volume:
        """Revert to snapshot volume `vol_id`: every volume above it is discarded
        and a fresh qcow2 overlay is put on it (what committing a snapshot
        preview leaves). Returns the new active volume."""
        idx = [v.id for v in self.volumes].index(vol_id)
        for v in self.volumes[idx + 1:]:
            v.path.unlink(missing_ok=True)
            (self.dir / f"{v.id}.meta").unlink(missing_ok=True)
        del self.volumes[idx + 1:]
        await self.freeze()
        return self.top

    async def resize(self, size: int, sparse: bool = True):
        """Grow the guest-visible size (the active volume's virtual size)."""
        top = self.top
        args = ["qemu-img", "resize", "-q", "-f", top.fmt]
        if top.fmt == RAW and not sparse:
            args.append("--preallocation=falloc")
        await run(*args, top.path, str(size))
        self.size = size

    # --- checkpoints (persistent dirty bitmaps) ---------------------------
    async def bitmaps(self, vol: Volume | None = None) -> list[str]:
        vol = vol or self.top
        if vol.fmt != QCOW2:
            return []
        info = json.loads(await run("qemu-img", "info", "-U", "--output=json", vol.path))
        data = info.get("format-specific", {}).get("data", {})
        return [b["name"] for b in data.get("bitmaps", [])]

    async def add_bitmap(self, name: str):
        await run("qemu-img", "bitmap", "--add", self.top.path, name)

    async def remove_bitmap(self, name: str):
        for v in self.volumes:
            if name in await self.bitmaps(v):
                await run("qemu-img", "bitmap", "--remove", v.path, name)

    # --- guest view ---------------------------------------------------------
    async def write(self, offset: int, length: int, pattern: int | str, seed: int | None = None):
        """A guest write into the active layer."""
        top = self.top
        piece = 64 << 20  # qemu-io takes at most an int's worth of bytes per request
        rnd = random.Random(seed)
        for off in range(offset, offset + length, piece):
            n = min(piece, offset + length - off)
            if pattern == "random":
                with tempfile.NamedTemporaryFile(dir=self.dir, prefix=".w") as f:
                    f.write(rnd.randbytes(n))
                    f.flush()
                    await run("qemu-io", "-f", top.fmt, "-c", f"write -s {f.name} {off} {n}", top.path)
            else:
                await run("qemu-io", "-f", top.fmt, "-c", f"write -P {int(pattern)} {off} {n}",
                          top.path)

    async def digest(self, vol_id: str | None = None) -> dict:
        """SHA-256 of the guest-visible content (whole virtual size)."""
        vol = self.volume(vol_id) if vol_id else self.top
        return await digest_image(vol.path, vol.fmt, self.size)

    async def allocated(self) -> int:
        info = json.loads(await run("qemu-img", "info", "-U", "--output=json",
                                    "--backing-chain", self.top.path))
        return sum(i.get("actual-size", 0) for i in info)


async def digest_image(path: Path, fmt: str, size: int | None = None) -> dict:
    return await asyncio.to_thread(image_content, path, fmt)


def image_content(path: Path, fmt: str = "qcow2") -> dict:
    """SHA-256 and size of an image's guest-visible content (backing files
    followed, unallocated ranges read as zeros), through a temporary raw copy."""
    with tempfile.TemporaryDirectory(dir=Path(path).parent) as tmp:
        raw = Path(tmp) / "raw"
        argv = ["qemu-img", "convert", "-U", "-q", "-f", fmt, "-O", "raw", str(path), str(raw)]
        p = subprocess.run(argv, capture_output=True)
        if p.returncode != 0:
            raise CommandFailed(argv, p.returncode, p.stderr.decode(errors="replace"))
        return _hash_file(raw)


def image_sha256(path: Path, fmt: str = "qcow2") -> str:
    """The hex SHA-256 of an image's guest-visible content (what tests and benches compare)."""
    return image_content(path, fmt)["sha256"]


def _hash_file(path: Path) -> dict:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(8 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
    return {"sha256": h.hexdigest(), "size": n}
