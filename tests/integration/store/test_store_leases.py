"""Movers on several processes write one store while gc runs in another.

Real processes (``python -m tests.integration.store.test_store_leases ...``):
two writers, each playing a mover (writes chunks, commits a disk) and the
orchestrator (holds a lease naming the backup until it publishes, then
applies retention: keeps only its last backup, so the parent of the
backup just published goes while gc may be reading it); a third process
runs gc back to back with grace 0. Writers share part of their content
(dedup across processes onto chunks the other writer just orphaned), and
every few rounds a writer deletes its parent *while* its incremental is
being written. Afterwards every published backup is verified and read back
byte for byte, and every writer checked, right after each commit, that
every chunk its index names was on the target.

Runs on a path target always; on NFS (libnfs) when the machine may run an NFS
server (not under OVAULT_TEST_SANDBOX_NO_NFS=1).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from imageio_ext.store import ChunkMissing, Store
from imageio_ext.store.fidx import ZERO_DIGEST
from imageio_ext.store.layout import chunk_path
from imageio_ext.store.leases import WRITERS_DIR, writer_lease

pytestmark = pytest.mark.integration

CS = 64 * 1024
SLOTS = 12
REPO = Path(__file__).resolve().parents[3]
LEASE = 2.0  # short leases: the killed writer's must run out within the test


def _content(rnd: random.Random, shared: list[bytes]) -> list[bytes]:
    out = []
    for _ in range(SLOTS):
        k = rnd.random()
        out.append(rnd.choice(shared) if k < 0.4 else bytes(CS) if k < 0.5 else rnd.randbytes(CS))
    return out


async def _writer(url: str, vm: str, disk: str, seed: int, rounds: int, out: Path) -> None:
    rnd = random.Random(seed)
    shared = [random.Random(1000 + i).randbytes(CS) for i in range(6)]  # the same in both writers
    store = await Store.open(url)
    log = out.open("a")

    def record(**kw) -> None:
        log.write(json.dumps(kw) + "\n")
        log.flush()

    try:
        slots = _content(rnd, shared)
        prev: str | None = None
        kept: list[str] = []
        for r in range(rounds):
            full = prev is None or r % 6 == 0
            if not full:
                for i in rnd.sample(range(SLOTS), 2):
                    slots[i] = rnd.choice(shared) if rnd.random() < 0.5 else rnd.randbytes(CS)
            bid = str(uuid.uuid4())
            # The orchestrator's lease: from the job's start until it publishes.
            async with writer_lease(store.target, purpose="publish", vm_id=vm, backup_id=bid, lease_seconds=LEASE,
                                    heartbeat_seconds=0.3):
                bw = await store.begin_backup(vm, bid, parent_id=None if full else prev, lease_seconds=LEASE,
                                              heartbeat_seconds=0.3)
                dw = await bw.add_disk(disk, SLOTS * CS)
                todo = range(SLOTS) if full else [i for i in range(SLOTS) if dw.index.get(i) != _digest(store, slots[i])]
                for i in todo:
                    await _put_slot(dw, i, slots[i])
                if not full and r % 7 == 3 and prev in kept:
                    await store.delete_backup(vm, prev)  # the parent goes mid-incremental
                    kept.remove(prev)
                    record(deleted=prev)
                await asyncio.sleep(0.1 + rnd.random() * 0.1)  # a mover reading a large disk: gc runs meanwhile
                for attempt in range(5):
                    try:
                        info = await dw.commit()
                        break
                    except ChunkMissing as e:
                        record(resend=len(e.offsets), round=r)
                        for off in e.offsets:
                            await _put_slot(dw, off // CS, slots[off // CS])
                else:
                    raise AssertionError("commit kept failing")
                # No chunk of this in-flight backup may be missing, ever.
                index = dw.index
                missing = [index.get(i).hex() for i in range(index.count)
                           if index.get(i) != ZERO_DIGEST and not await store.target.exists(chunk_path(index.get(i)))]
                if missing:
                    record(error="in-flight chunk missing", digests=missing, round=r)
                await bw.publish({"round": r})
            data = b"".join(slots)
            record(published=bid, disk=disk, sha256=hashlib.sha256(data).hexdigest(), parent=None if full else prev,
                   new=info.new_chunks)
            kept.append(bid)
            while len(kept) > 1:  # retention, right after the new backup: its parent goes
                old = kept.pop(0)
                await store.delete_backup(vm, old)
                record(deleted=old)
            prev = bid
            await asyncio.sleep(rnd.random() * 0.05)
    except BaseException as e:
        record(error=repr(e))
        raise
    finally:
        log.close()
        await store.close()


def _digest(store: Store, data: bytes) -> bytes:
    return store.chunks.codec.digest(data)


async def _put_slot(dw, i: int, data: bytes) -> None:
    if data == bytes(CS):
        await dw.write_zero(i * CS, CS)
    else:
        await dw.write(i * CS, data)


async def _gc_loop(url: str, stop: Path, out: Path) -> None:
    store = await Store.open(url)
    try:
        with out.open("a") as log:
            while not stop.exists():
                try:
                    rep = await store.gc(grace_seconds=0)
                    log.write(json.dumps({"removed": rep.chunks_removed, "live": rep.writers_live,
                                          "rounds": rep.mark_rounds, "orphans": len(rep.orphans_removed)}) + "\n")
                except Exception as e:  # recorded, judged by the test
                    log.write(json.dumps({"error": repr(e)}) + "\n")
                log.flush()
                await asyncio.sleep(0.02)
    finally:
        await store.close()


async def _killed(url: str, vm: str) -> None:
    store = await Store.open(url)
    bw = await store.begin_backup(vm, str(uuid.uuid4()), lease_seconds=LEASE, heartbeat_seconds=0.3)
    dw = await bw.add_disk(str(uuid.uuid4()), CS)
    await dw.write(0, random.Random(7).randbytes(CS))
    await dw._drain()
    print("DIGEST", dw.index.get(0).hex(), flush=True)
    await asyncio.sleep(3600)  # until SIGKILL


def _spawn(*args: str, stdout=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.integration.store.test_store_leases", *args], cwd=REPO,
                            stdout=stdout)


@pytest.fixture(params=["path", "nfs"])
def url(request, tmp_path):
    # A plain fixture: an async one cannot ask for the async `store_url` fixture by name
    # (its event loop is already running).
    if request.param == "nfs":
        if os.environ.get("OVAULT_TEST_SANDBOX_NO_NFS") == "1":
            pytest.skip("NFS disabled on this machine (OVAULT_TEST_SANDBOX_NO_NFS=1)")
        u = request.getfixturevalue("store_url")
    else:
        (tmp_path / "target").mkdir()
        u = str(tmp_path / "target")

    async def init():
        s = await Store.open(u, create=True, chunk_size=CS)
        await s.close()
    asyncio.run(init())
    return u


async def test_two_movers_and_gc_concurrently(url, tmp_path):
    rounds = 24
    vms = [str(uuid.uuid4()) for _ in range(2)]
    logs = [tmp_path / f"w{i}.jsonl" for i in range(2)]
    stop, gclog = tmp_path / "stop", tmp_path / "gc.jsonl"
    gc = _spawn("gc", url, str(stop), str(gclog))
    writers = [_spawn("writer", url, vms[i], str(uuid.uuid4()), str(10 + i), str(rounds), str(logs[i]))
               for i in range(2)]
    try:
        for w in writers:
            assert w.wait(240) == 0
    finally:
        stop.touch()
        assert gc.wait(120) == 0
        for p in writers + [gc]:
            if p.poll() is None:
                p.kill()
    recs = [json.loads(line) for f in logs for line in f.read_text().splitlines()]
    gcs = [json.loads(line) for line in gclog.read_text().splitlines()]
    assert [r for r in recs if "error" in r] == []
    assert [g for g in gcs if "error" in g] == []
    published = {r["published"]: r for r in recs if "published" in r}
    assert len(published) == 2 * rounds
    assert sum(1 for r in recs if "resend" in r) >= 1  # a parent deleted mid-incremental was handled
    assert len(gcs) >= 3 and sum(g["removed"] for g in gcs) > 0  # gc really ran, and collected
    print(f"gc runs {len(gcs)}, chunks removed {sum(g['removed'] for g in gcs)}, "
          f"with live writers {sum(1 for g in gcs if g['live'])}, re-listings {sum(g['rounds'] for g in gcs)}, "
          f"resends {sum(1 for r in recs if 'resend' in r)}")
    store = await Store.open(url)
    try:
        live = await store.list_backups()
        assert len(live) == 2  # one per VM after retention
        for b in live:
            rec = published[b.backup_id]
            assert (await store.verify(b.vm_id, b.backup_id)).ok
            r = await store.open_disk(b.vm_id, b.backup_id, rec["disk"])
            assert hashlib.sha256(await r.read(0, r.size)).hexdigest() == rec["sha256"]
        rep = await store.gc(grace_seconds=0)  # everything settled: only what is referenced stays
        assert rep.writers_live == 0 and rep.chunks_kept_young == 0
        for b in live:
            assert (await store.verify(b.vm_id, b.backup_id)).ok
    finally:
        await store.close()


async def test_killed_writer_stops_protecting_after_its_lease(url, tmp_path):
    p = _spawn("killed", url, str(uuid.uuid4()), stdout=subprocess.PIPE)
    try:
        digest = await asyncio.wait_for(asyncio.to_thread(_read_digest, p), 60)
        store = await Store.open(url)
        try:
            rep = await store.gc(grace_seconds=0)
            assert rep.writers_live == 1 and rep.chunks_removed == 0
            assert await store.target.exists(chunk_path(digest))
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            killed = time.monotonic()
            assert len(await store.target.scandir(WRITERS_DIR)) == 1  # left behind
            while True:
                rep = await store.gc(grace_seconds=0)
                if rep.writers_live == 0:
                    break
                assert rep.chunks_removed == 0
                assert time.monotonic() - killed < LEASE + 5
                await asyncio.sleep(0.2)
            assert rep.chunks_removed == 1 and not await store.target.exists(chunk_path(digest))
            await asyncio.sleep(0.1)
            rep = await store.gc(grace_seconds=0)
            assert await store.target.scandir(WRITERS_DIR) == []  # the dead lease is cleaned up
        finally:
            await store.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def _read_digest(p: subprocess.Popen) -> bytes:
    for line in p.stdout:  # its log lines may come first
        if line.startswith(b"DIGEST "):
            return bytes.fromhex(line.split()[1].decode())
    raise AssertionError("the writer died before storing its chunk")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "writer":
        asyncio.run(_writer(args[0], args[1], args[2], int(args[3]), int(args[4]), Path(args[5])))
    elif cmd == "gc":
        asyncio.run(_gc_loop(args[0], Path(args[1]), Path(args[2])))
    elif cmd == "killed":
        asyncio.run(_killed(args[0], args[1]))
    else:
        raise SystemExit(f"unknown command {cmd}")
