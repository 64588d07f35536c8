"""Incremental commit time against the size of what the incremental inherits.

    .venv/bin/python -m bench.commit_bench [--virtual-gib 1024] [--inherited-gib 16 256]
        [--change-mib 64] [--dir /var/tmp/ovault-commit-bench] [--target URL] [--old-touch]

For each inherited size, on a disk of ``--virtual-gib``: a parent backup whose
index names ``inherited / chunk size`` distinct chunks (synthesized: random
digests, no chunk data — an incremental commit does not look at inherited
chunks, which is the point), then an incremental that writes ``--change-mib``
of random data at scattered chunk slots and commits. Times add_disk (reading
and inheriting the parent index), the writes (hash, compress, store) and the
commit (checks, index write, parent check) separately.

``--old-touch`` also measures what the commit used to do: touch every
inherited chunk (the per-chunk touch gc relied on before writer leases);
the chunk files are created empty for it. The NFS figure beside it is the
issue's measured 0.22 ms per touch times the chunk count (not measured here).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import time
import uuid
from pathlib import Path

from imageio_ext.store import DiskInfo, FixedIndex, Store
from imageio_ext.store.layout import chunk_path

MiB, GiB = 1 << 20, 1 << 30
NFS_TOUCH_SECONDS = 0.22e-3  # per chunk over NFS, measured for issue #11


async def synth_parent(store: Store, vm: str, disk: str, size: int, inherited: int, rnd: random.Random):
    """A published full backup whose index names ``inherited`` bytes of distinct chunks."""
    cs = store.chunk_size
    index = FixedIndex.empty(size, cs)
    n = inherited // cs
    step = max(1, index.count // n)
    data_slots = [i * step for i in range(n)]
    for i in data_slots:
        index.set(i, rnd.randbytes(32))
    bid = str(uuid.uuid4())
    await store.backups.prepare(vm, bid)
    sha = await store.write_index(vm, bid, disk, index)
    info = DiskInfo(disk_id=disk, size=size, chunk_size=cs, index_sha256=sha, chunks=index.count,
                    zero_chunks=index.count - n)
    await store.publish_backup(vm, bid, [info])
    return bid, [index.get(i) for i in data_slots]


async def one(store: Store, size: int, inherited: int, change: int, old_touch: bool, root: Path | None) -> dict:
    rnd = random.Random(inherited)
    cs = store.chunk_size
    vm, disk = str(uuid.uuid4()), str(uuid.uuid4())
    parent, digests = await synth_parent(store, vm, disk, size, inherited, rnd)
    t0 = time.perf_counter()
    bw = await store.begin_backup(vm, str(uuid.uuid4()), parent_id=parent)
    dw = await bw.add_disk(disk, size)
    t1 = time.perf_counter()
    count = size // cs
    for k in range(change // cs):
        slot = (k * 7919 + 13) % count  # scattered
        await dw.write(slot * cs, rnd.randbytes(cs))
    await dw._drain()
    t2 = time.perf_counter()
    await dw.commit()
    t3 = time.perf_counter()
    await bw.publish()
    out = {"inherited_gib": inherited / GiB, "inherited_chunks": len(digests), "add_disk_s": t1 - t0,
           "write_s": t2 - t1, "commit_s": t3 - t2}
    if old_touch:
        assert root is not None, "--old-touch needs a local directory target"
        made = set()
        for d in digests:
            p = root / chunk_path(d)
            if p.parent not in made:
                p.parent.mkdir(parents=True, exist_ok=True)
                made.add(p.parent)
            p.touch()
        t4 = time.perf_counter()
        gone = await store.chunks.touch_all(digests)
        out["old_touch_s"] = time.perf_counter() - t4
        assert not gone
        out["old_touch_nfs_s"] = len(digests) * NFS_TOUCH_SECONDS
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--virtual-gib", type=int, default=1024)
    ap.add_argument("--inherited-gib", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--change-mib", type=int, default=64)
    ap.add_argument("--dir", default="/var/tmp/ovault-commit-bench")
    ap.add_argument("--target", help="a store URL instead of a fresh --dir (nfs://...)")
    ap.add_argument("--old-touch", action="store_true")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    root = None
    if a.target:
        url = a.target
    else:
        root = Path(a.dir) / f"store-{os.getpid()}"
        root.mkdir(parents=True)
        url = str(root)
    store = await Store.open(url, create=True)
    try:
        print(f"store {url} (chunk {store.chunk_size // MiB} MiB), disk {a.virtual_gib} GiB virtual, "
              f"{a.change_mib} MiB changed")
        hdr = f"{'inherited':>10} {'chunks':>8} {'add_disk':>9} {'write':>8} {'commit':>8}"
        if a.old_touch:
            hdr += f" {'old touch (local)':>18} {'old touch (NFS, 0.22 ms)':>25}"
        print(hdr)
        for gib in a.inherited_gib:
            r = await one(store, a.virtual_gib * GiB, gib * GiB, a.change_mib * MiB, a.old_touch, root)
            line = (f"{gib:>7} GiB {r['inherited_chunks']:>8} {r['add_disk_s']:>8.3f}s {r['write_s']:>7.3f}s "
                    f"{r['commit_s']:>7.3f}s")
            if a.old_touch:
                line += f" {r['old_touch_s']:>17.3f}s {r['old_touch_nfs_s']:>24.1f}s"
            print(line, flush=True)
    finally:
        await store.close()
        if root is not None and not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
