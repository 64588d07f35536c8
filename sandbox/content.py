"""Realistic initial guest content for sample disks.

A disk gets: a "template" region identical on every VM (the OS image they
were all cloned from, so dedup across VMs matters), per-VM data that is
partly compressible text (like OS and application files) and partly random
(like media or encrypted data), and unallocated space for the rest.
Every 1 MiB block carries its own header so that no two blocks are equal by
accident (the dedup numbers would otherwise flatter the store).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

MiB = 1 << 20
WORDS = ("kernel module service daemon config package library binary socket thread "
         "memory storage volume network bridge address route journal systemd unit "
         "python java nginx postgres backup restore snapshot cluster host engine disk "
         "image checkpoint bitmap transfer ticket extent block chunk digest index").split()


def _text_pool(rnd: random.Random, size: int = 64 << 10) -> bytes:
    words = rnd.choices(WORDS, k=size // 5)
    out, line = [], []
    for w in words:
        line.append(w)
        if len(line) >= rnd.randint(6, 14):
            out.append(" ".join(line))
            line = []
    return ("\n".join(out)).encode()[:size]


def _blocks(kind: str, seed: str, count: int):
    rnd = random.Random(seed)
    pool = _text_pool(rnd) if kind == "text" else b""
    for i in range(count):
        tag = f"[{seed}:{kind}:{i}]".encode()
        if kind == "text":
            # Lines of words with numbers in them (log and config files):
            # compresses like text (zstd -1: about 3:1), costs almost nothing.
            k = rnd.randrange(len(pool))
            text = (pool[k:] + pool[:k]) * (MiB // len(pool) + 1)
            noise = rnd.randbytes(MiB // 8).hex().encode()
            parts = [tag]
            for j in range(MiB // 64):
                parts.append(text[j * 48:(j + 1) * 48])
                parts.append(noise[j * 16:(j + 1) * 16])
            yield b"".join(parts)[:MiB]
        else:
            yield tag + rnd.randbytes(MiB - len(tag))


def layout(size: int, *, template_mib: int, text_mib: int, random_mib: int, vm_seed: str):
    """[(offset, kind, seed, MiB count)] that fits in `size`."""
    regions, off = [], 0
    for kind, seed, n in (("text", "template-os", template_mib // 2),
                          ("random", "template-os", template_mib - template_mib // 2),
                          ("text", vm_seed, text_mib), ("random", vm_seed, random_mib)):
        if n <= 0:
            continue
        if off + n * MiB > size:
            n = max(0, (size - off) // MiB)
        if n:
            regions.append((off, kind, seed, n))
        off += n * MiB
        off += 8 * MiB  # a hole between regions
    return regions


def write_raw(path: Path, size: int, regions) -> None:
    """A sparse raw file of `size` bytes with the regions written."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off, kind, seed, n in regions:
            f.seek(off)
            for block in _blocks(kind, seed, n):
                f.write(block)
        f.flush()
        os.fsync(f.fileno())
