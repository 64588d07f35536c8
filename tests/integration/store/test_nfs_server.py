"""sandbox.nfs.NfsServer: one per machine, restartable, stops cleanly."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from imageio_ext.store import Store, TargetUnavailable
from sandbox.nfs import NfsServer, NfsServerError

pytestmark = pytest.mark.integration

CS = 64 * 1024


def ganesha_pids() -> set[int]:
    out = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            state = stat.rsplit(")", 1)[1].split()[0]
            if name.startswith("ganesha.nfsd") and state != "Z":
                out.add(int(p))
    return out


async def test_second_server_fails_fast_naming_the_holder(nfs_server, tmp_path):
    srv = nfs_server.require_control()
    assert Path("/run/ovault-nfs.lock").read_text().strip() == str(os.getpid())
    other = NfsServer(tmp_path / "export", tmp_path / "state")
    t = time.monotonic()
    with pytest.raises(NfsServerError, match=f"held by pid {os.getpid()}"):
        await other.start()
    assert time.monotonic() - t < 2
    assert not (tmp_path / "state" / "ganesha.conf").exists()  # it gave up before doing anything
    assert ganesha_pids() == {srv.pid}


async def test_export_is_the_local_directory(nfs_server, store_url):
    store = await Store.open(store_url, create=True, chunk_size=CS)
    try:
        local = nfs_server.export_dir / store_url.rsplit("/", 1)[1] / "ovault-store.json"
        assert local.read_bytes() == await store.target.read_file("ovault-store.json")
        assert nfs_server.url == f"nfs://127.0.0.1{nfs_server.export_dir}"
    finally:
        await store.close()


async def test_restart_keeps_data_and_clients_reconnect(nfs_server, store_url):
    srv = nfs_server.require_control()
    store = await Store.open(store_url, create=True, chunk_size=CS)
    try:
        data = random.Random(1).randbytes(CS)
        d = await store.put_chunk(data)
        old_pid = srv.pid
        await nfs_server.call(srv.restart)
        assert srv.pid != old_pid and old_pid not in ganesha_pids()
        assert await store.get_chunk(d) == data  # same libnfs contexts, reconnected
        d2 = await store.put_chunk(data[::-1])  # and writes work too
        assert d2 != d and await store.get_chunk(d2) == data[::-1]
    finally:
        await store.close()


async def test_stopped_server_is_reported_unavailable(nfs_server, store_url):
    srv = nfs_server.require_control()
    store = await Store.open(store_url, create=True, chunk_size=CS, target_options={"timeout": 2})
    try:
        d = await store.put_chunk(b"a" * 1000)
        await nfs_server.call(lambda: srv.stop(keep_lock=True))
        assert ganesha_pids() == set()
        t = time.monotonic()
        with pytest.raises(TargetUnavailable):
            await store.get_chunk(d)
        assert time.monotonic() - t < 20
    finally:
        await nfs_server.call(srv.start)
        await store.close()
    async with await Store.open(store_url) as again:
        assert await again.get_chunk(d) == b"a" * 1000
