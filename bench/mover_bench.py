"""Benchmarks of the data mover against the reference tools, in one run.

    .venv/bin/python -m bench.mover_bench [all|full|incremental|unchanged|clones|restore|rss]
        [--size-gib 4] [--dir /var/tmp/ovault-bench] [--keep] [--via nbd|unix] [--chunk-mib 4]

``--via nbd`` (the default) lets the mover read and write the ticket's NBD export
beside imageio (it is given the daemon's control socket); ``--via unix`` keeps it
on imageio's local unix socket, as before.

Everything runs on this machine: one real ovirt-imageio daemon, qemu-nbd
exports, a store on a local directory. Each benchmark runs the reference in
the same run and prints a table with the ratio. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.lab import ImageioLab, image_sha256
from imageio_ext.copy import run_copy
from imageio_ext.store import Store
from sandbox.content import _blocks

MiB, GiB = 1 << 20, 1 << 30
ROWS: list[tuple] = []


def row(bench, tool, seconds, **kw):
    ROWS.append((bench, tool, seconds, kw))
    extra = "  ".join(f"{k}={v}" for k, v in kw.items())
    print(f"  {bench:<12} {tool:<34} {seconds:8.2f} s  {extra}", flush=True)


def du(path: Path) -> int:
    """Bytes allocated on disk under path."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def make_disk(path: Path, size: int, seed: str = "bench") -> dict:
    """Mixed content: random, text-like, duplicates of both (chunk-aligned), holes."""
    raw = path.with_suffix(".raw")
    q = size // 16  # 4 GiB -> 256 MiB units
    regions = [(0, "random", 3 * q), (3 * q + 8 * MiB, "text", 3 * q)]
    with open(raw, "wb") as f:
        f.truncate(size)
        for off, kind, n in regions:
            f.seek(off)
            for b in _blocks(kind, f"{seed}-{kind}", n // MiB):
                f.write(b)
        f.flush()
    # duplicates: the first q of each region again, 4 MiB aligned
    with open(raw, "r+b") as f:
        for src, dst in ((0, 7 * q), (3 * q + 8 * MiB, 8 * q + 16 * MiB)):
            for o in range(0, q, 16 * MiB):
                f.seek(src + o)
                d = f.read(16 * MiB)
                f.seek(dst + o)
                f.write(d)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-S", "64k", str(raw), str(path)],
                   check=True)
    raw.unlink()
    return {"size": size, "data": 8 * q, "unique": 6 * q}


VIA = {"via": "nbd"}
LAST_CPU = {"s": 0.0}  # CPU seconds of the last measured copy (see Cpu)
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / _TICK


class Cpu:
    """CPU seconds of everything one copy runs on: this process (the mover or the
    reference client, all threads), its finished children (the client's qemu-nbd),
    the imageio daemon and the transfer's qemu-nbd. Unlike wall time on a shared
    machine, this does not depend on what else runs."""

    def __init__(self, lab, t):
        self.pids = [lab.daemon.child.proc.pid, t.export.child.proc.pid]
        self.start = self._now()

    def _now(self) -> float:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime + sum(_proc_cpu(p) for p in self.pids)

    def stop(self) -> float:
        return round(self._now() - self.start, 2)


def direct(lab) -> dict:
    """How the mover reaches the disk: beside imageio (NBD) or through its unix socket."""
    return dict(local_socket=lab.local_socket,
                control_socket=lab.control_socket if VIA["via"] == "nbd" else None)


async def mover_backup(lab, disk, store_url, size, *, backup_id=None, parent=None, bitmap=None, requests=4,
                       disk_id=None):
    disk_id = disk_id or DISK
    t = await lab.transfer(disk, "qcow2", size, bitmap=bitmap)
    try:
        bid = backup_id or str(uuid.uuid4())
        cpu = Cpu(lab, t)
        t0 = time.monotonic()
        r = await run_copy(dict(op="backup", transfer_url=t.url, ca_file=lab.ca, store=store_url, vm_id=VM,
                                backup_id=bid, disk_id=disk_id, size=size, parent_backup_id=parent,
                                incremental=parent is not None), **direct(lab), requests=requests)
        dt = time.monotonic() - t0
        LAST_CPU["s"] = cpu.stop()
    finally:
        await lab.close_transfer(t)
    async with await Store.open(store_url) as st:
        await st.publish_backup(VM, bid, [r.disk], parent_id=parent)
    return bid, r, dt


async def ref_download(lab, disk, size, dest: Path, *, bitmap=None, backing=None):
    from ovirt_imageio import client
    t = await lab.transfer(disk, "qcow2", size, bitmap=bitmap)
    try:
        cpu = Cpu(lab, t)
        t0 = time.monotonic()
        await asyncio.to_thread(
            client.download, t.url, str(dest), lab.ca, fmt="qcow2", incremental=backing is not None,
            backing_file=str(backing) if backing else None, backing_format="qcow2" if backing else None)
        dt = time.monotonic() - t0
        LAST_CPU["s"] = cpu.stop()
    finally:
        await lab.close_transfer(t)
    return dt


def qemu_img_convert(src_sock_url: str, dest: Path) -> float:
    t0 = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-W", "-m", "4", src_sock_url,
                    str(dest)], check=True)
    return time.monotonic() - t0


VM, DISK = str(uuid.uuid4()), str(uuid.uuid4())


async def main(args) -> None:
    base = Path(args.dir)
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    size = args.size_gib * GiB
    which = set(args.bench) if args.bench and "all" not in args.bench else \
        {"full", "incremental", "unchanged", "clones", "restore", "rss"}
    print(f"machine: {platform.node()} {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, disk {args.size_gib} GiB", flush=True)
    disk = base / "disk.qcow2"
    t0 = time.monotonic()
    info = make_disk(disk, size)
    print(f"  made test disk in {time.monotonic() - t0:.1f} s: {info}", flush=True)
    lab = await ImageioLab(base / "lab").start()
    store_dir = base / "store"
    store_dir.mkdir()
    async with await Store.open(store_dir, create=True, chunk_size=args.chunk_mib * MiB):
        pass
    store_url = str(store_dir)
    results = {"machine": {"cores": os.cpu_count(), "size": size}, "rows": []}
    try:
        # -- full backup -------------------------------------------------------------
        full_id, r, dt = await mover_backup(lab, disk, store_url, size)
        row("full", f"mover ({r.transport}, 4 requests)", dt, cpu_s=LAST_CPU["s"], read_MiB=r.bytes_read // MiB,
            stored_MiB=du(store_dir) // MiB, new_chunks=r.new_chunks)
        mover_full = dt
        ref_full = base / "ref-full.qcow2"
        dt_ref = await ref_download(lab, disk, size, ref_full)
        row("full", "ovirt_imageio.client.download", dt_ref, cpu_s=LAST_CPU["s"], stored_MiB=du(ref_full) // MiB)
        exp = await lab.transfer(disk, "qcow2", size)  # its qemu-nbd socket, no imageio
        dt_q = qemu_img_convert(f"nbd+unix:///?socket={exp.export.sock}", base / "qi.qcow2")
        await lab.close_transfer(exp)
        row("full", "qemu-img convert (nbd -> qcow2)", dt_q, stored_MiB=du(base / "qi.qcow2") // MiB)
        print(f"  full: mover/reference time ratio {mover_full / dt_ref:.2f}", flush=True)
        (base / "qi.qcow2").unlink()

        if "unchanged" in which:
            before = du(store_dir)
            _, r2, dt = await mover_backup(lab, disk, store_url, size)
            added = du(store_dir) - before
            row("unchanged", "mover second full backup", dt, cpu_s=LAST_CPU["s"], new_bytes=r2.new_bytes,
                target_added=added,
                pct_of_data=f"{100 * added / info['data']:.3f}%")
            row("unchanged", "reference: a second full download", dt_ref, target_added=du(ref_full))

        if "incremental" in which:
            subprocess.run(["qemu-img", "bitmap", "--add", str(disk), "cp1"], check=True)
            rnd = random.Random(7)
            changed = int(size * 0.05) // MiB
            cmds = []
            slots = rnd.sample(range(size // MiB), changed)
            # New, unique data in every changed block (half random, half text-like), as
            # guest writes are: a constant pattern would compress and dedup to nothing.
            src = base / "writes"
            src.mkdir(exist_ok=True)
            half = len(slots) // 2
            blocks = list(_blocks("random", "bench-inc-random", half)) + \
                list(_blocks("text", "bench-inc-text", len(slots) - half))
            for i, (s, b) in enumerate(zip(slots, blocks)):
                (src / f"w{i}").write_bytes(b)
                cmds += ["-c", f"write -s {src / f'w{i}'} {s}M 1M"]
            t0 = time.monotonic()
            for i in range(0, len(cmds), 400):
                subprocess.run(["qemu-io", "-f", "qcow2", *cmds[i:i + 400], str(disk)], check=True,
                               capture_output=True)
            inc_id, r, dt = await mover_backup(lab, disk, store_url, size, parent=full_id, bitmap="cp1")
            row("incremental", f"mover incremental ({r.transport})", dt, cpu_s=LAST_CPU["s"], changed_MiB=changed,
                read_MiB=r.bytes_read // MiB, from_parent_MiB=r.bytes_from_parent // MiB,
                new_chunks=r.new_chunks, new_MiB=r.new_bytes // MiB)
            ref_inc = base / "ref-inc.qcow2"
            dt_ri = await ref_download(lab, disk, size, ref_inc, bitmap="cp1", backing=ref_full)
            row("incremental", "ovirt_imageio.client.download incr.", dt_ri, cpu_s=LAST_CPU["s"],
                stored_MiB=du(ref_inc) // MiB)
            print(f"  incremental: mover/reference time ratio {dt / dt_ri:.2f}; read/changed "
                  f"{r.bytes_read / (changed * MiB):.2f}", flush=True)
            want = image_sha256(disk, "qcow2")
            async with await Store.open(store_url) as st:
                got = await (await st.open_disk(VM, inc_id, DISK)).sha256()
            assert got == want, "incremental backup does not restore to the disk's content"
            print("  incremental backup verified: store digest == disk digest", flush=True)

        if "restore" in which:
            out = base / "restore-mover.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(out), str(size)], check=True)
            t = await lab.transfer(out, "qcow2", size, write=True)
            cpu = Cpu(lab, t)
            t0 = time.monotonic()
            r = await run_copy(dict(op="restore", transfer_url=t.url, ca_file=lab.ca, store=store_url, vm_id=VM,
                                    backup_id=full_id, disk_id=DISK), **direct(lab))
            dt = time.monotonic() - t0
            c = cpu.stop()
            await lab.close_transfer(t)
            row("restore", f"mover restore ({r.transport})", dt, cpu_s=c, written_MiB=r.bytes_written // MiB)
            out2 = base / "restore-ref.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(out2), str(size)], check=True)
            from ovirt_imageio import client
            t = await lab.transfer(out2, "qcow2", size, write=True)
            cpu = Cpu(lab, t)
            t0 = time.monotonic()
            await asyncio.to_thread(client.upload, str(ref_full), t.url, lab.ca)
            dt_r = time.monotonic() - t0
            c = cpu.stop()
            await lab.close_transfer(t)
            row("restore", "ovirt_imageio.client.upload", dt_r, cpu_s=c)
            print(f"  restore: mover/reference time ratio {dt / dt_r:.2f}", flush=True)
            if "incremental" not in which:
                assert image_sha256(out, "qcow2") == image_sha256(disk, "qcow2")
                print("  restore verified: restored image digest == disk digest", flush=True)

        if "clones" in which:
            cstore = base / "clone-store"
            cstore.mkdir()
            async with await Store.open(cstore, create=True):
                pass
            alloc = 0
            for i in (1, 2):
                c = base / f"clone{i}.qcow2"
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "qcow2",
                                str(c)], check=True)
                subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {i} {i * 100}M 64M", str(c)],
                               check=True, capture_output=True)
                m = json.loads(subprocess.run(["qemu-img", "map", "--output=json", str(c)], check=True,
                                              capture_output=True, text=True).stdout)
                alloc += sum(e["length"] for e in m if e.get("data"))
                await mover_backup(lab, c, str(cstore), size, disk_id=str(uuid.uuid4()))
            stored = du(cstore)
            row("clones", "mover: 2 clones of one template", 0.0, target_MiB=stored // MiB,
                allocated_sum_MiB=alloc // MiB, ratio=f"{stored / alloc:.3f}")

        if "rss" in which:
            await rss_bench(lab, disk, size, base, args.chunk_mib * MiB)
    finally:
        await lab.stop()
        results["rows"] = [dict(bench=b, tool=t, seconds=round(s, 2), **kw) for b, t, s, kw in ROWS]
        (base / "results.json").write_text(json.dumps(results, indent=2))
        print(f"results: {base / 'results.json'}")
        if not args.keep:
            for p in base.iterdir():
                if p.name != "results.json":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()


async def rss_bench(lab, disk, size, base, chunk_size):
    """Peak RSS of an `ovault-mover` process running 8 copies at once (into a store
    of the run's chunk size)."""
    import aiohttp
    token = uuid.uuid4().hex * 2
    sdir = base / "rss-store"
    sdir.mkdir()
    async with await Store.open(sdir, create=True, chunk_size=chunk_size):
        pass
    from sandbox.hosts import free_port
    port = free_port()
    env = {**os.environ, "OVAULT_MOVER_TOKEN": token}
    p = subprocess.Popen([sys.executable, "-m", "imageio_ext.mover_cli", "serve", "--port", str(port),
                          "--imageio-socket", lab.local_socket, "--max-copies", "8", "--allowed-stores", str(sdir),
                          *(["--imageio-control-socket", lab.control_socket] if VIA["via"] == "nbd" else [])],
                         env=env,
                         stdout=subprocess.DEVNULL, stderr=open(base / "mover.log", "wb"))
    try:
        url = f"http://127.0.0.1:{port}"
        hdr = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                try:
                    async with s.get(url + "/v1/health"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            base_rss = _rss(p.pid)[0]
            ts = [await lab.transfer(disk, "qcow2", size) for _ in range(8)]
            t0 = time.monotonic()
            ids = []
            for i, t in enumerate(ts):
                async with s.post(url + "/v1/copies", headers=hdr, json=dict(
                        op="backup", transfer_url=t.url, store=str(sdir), vm_id=str(uuid.uuid4()),
                        backup_id=str(uuid.uuid4()), disk_id=str(uuid.uuid4()), size=size)) as r:
                    body = await r.json()
                    if r.status != 202:
                        raise RuntimeError(f"the mover refused the copy: {r.status} {body}")
                    ids.append(body["id"])
            states, transports = [], set()
            for jid in ids:
                async with s.get(f"{url}/v1/copies/{jid}/events", headers=hdr) as r:
                    async for line in r.content:
                        last = json.loads(line)
                states.append(last["state"])
                transports.add((last.get("result") or {}).get("transport", "?"))
            dt = time.monotonic() - t0
            for t in ts:
                await lab.close_transfer(t)
        cur, peak = _rss(p.pid)
        row("rss", "mover, 8 concurrent 4-request copies", dt, states=",".join(sorted(set(states))),
            transport=",".join(sorted(transports)),
            idle_MiB=base_rss // MiB, peak_MiB=peak // MiB, copied_GiB=8 * size // GiB)
    finally:
        p.terminate()
        p.wait(10)


def _rss(pid) -> tuple[int, int]:
    cur = peak = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) * 1024
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cur, peak


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", nargs="*", default=["all"])
    ap.add_argument("--size-gib", type=int, default=4)
    ap.add_argument("--dir", default="/var/tmp/ovault-bench")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--chunk-mib", type=int, default=4, help="chunk size of the bench's store (default 4)")
    ap.add_argument("--via", choices=("nbd", "unix"), default="nbd",
                    help="the mover reads/writes the NBD export beside imageio (default) or imageio's unix socket")
    a = ap.parse_args()
    VIA["via"] = a.via
    asyncio.run(main(a))
