"""The copy engine against a real ovirt-imageio daemon that goes away mid-copy.

Down for a few seconds and back with the transfer's ticket: the copy waits
and completes (only the requests in flight are repeated) and the stored disk
is byte-identical. Gone for good: the copy fails within ~15 s, naming imageio,
the request and how long it tried.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid

import pytest

from bench.lab import ImageioLab, image_sha256, qemu_io
from imageio_ext.copy import ImageioUnavailable, run_copy
from imageio_ext.store import Store

pytestmark = pytest.mark.integration
MiB = 1 << 20
SIZE = 128 * MiB


@pytest.fixture
async def lab(tmp_path):
    lab = await ImageioLab(tmp_path / "lab").start()
    yield lab
    await lab.stop()


def _disk(tmp_path) -> tuple:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(SIZE)], check=True)
    rnd = tmp_path / "rnd"
    rnd.write_bytes(os.urandom(48 * MiB))
    qemu_io(disk, "qcow2", f"write -s {rnd} 0 48M", "write -P 0x5a 96M 8M")
    return disk, image_sha256(disk, "qcow2")


def _kill_daemon(lab) -> None:
    os.killpg(lab.daemon.child.proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("local", [False, True], ids=["https", "unix-socket"])
async def test_daemon_restarted_mid_copy_the_copy_completes(lab, tmp_path, local):
    disk, want = _disk(tmp_path)
    store_url = str(tmp_path / "target")
    (tmp_path / "target").mkdir()
    async with await Store.open(store_url, create=True):
        pass
    t = await lab.transfer(disk, "qcow2", SIZE)
    ticket = await lab.daemon.get_ticket(t.ticket)
    vm, b, d = (str(uuid.uuid4()) for _ in range(3))
    outage: dict = {}

    async def bring_back():
        await asyncio.sleep(3.0)  # down ~3 s, then a restart; the ticket comes back a moment later
        await lab.daemon.start()
        await asyncio.sleep(0.5)
        await lab.daemon.add_ticket({k: ticket[k] for k in ("uuid", "size", "url", "timeout", "ops",
                                                             "sparse", "dirty") if k in ticket})
        outage["back"] = time.monotonic()

    def progress(p):
        if p.bytes_done > 0 and "down" not in outage:
            _kill_daemon(lab)  # synchronously, in the middle of the copy
            outage["down"] = time.monotonic()
            outage["task"] = asyncio.get_running_loop().create_task(bring_back())
            outage["done_at_kill"] = p.bytes_done

    r = await run_copy(dict(op="backup", store=store_url, vm_id=vm, backup_id=b, disk_id=d, size=SIZE,
                            ca_file=lab.ca, transfer_url=t.url),
                       local_socket=lab.local_socket if local else None, progress=progress)
    finished = time.monotonic()
    await outage["task"]
    assert outage["done_at_kill"] < SIZE  # the daemon really went away mid-copy
    assert finished > outage["back"]  # and the copy needed it back to finish
    assert r.transport == ("unix" if local else "https")
    assert r.bytes_read == 56 * MiB  # every data byte once in the result
    async with await Store.open(store_url) as st:
        await st.publish_backup(vm, b, [r.disk])
        assert await (await st.open_disk(vm, b, d)).sha256() == want
    await lab.close_transfer(t)


async def test_daemon_gone_for_good_fails_naming_the_cause(lab, tmp_path):
    disk, _ = _disk(tmp_path)
    store_url = str(tmp_path / "target")
    (tmp_path / "target").mkdir()
    async with await Store.open(store_url, create=True):
        pass
    t = await lab.transfer(disk, "qcow2", SIZE)
    killed = []

    def progress(p):
        if p.bytes_done > 0 and not killed:
            _kill_daemon(lab)
            killed.append(time.monotonic())

    with pytest.raises(ImageioUnavailable) as ei:
        await run_copy(dict(op="backup", store=store_url, vm_id=str(uuid.uuid4()), backup_id=str(uuid.uuid4()),
                            disk_id=str(uuid.uuid4()), size=SIZE, ca_file=lab.ca, transfer_url=t.url),
                       progress=progress)
    waited = time.monotonic() - killed[0]
    assert 10 < waited < 40, waited
    msg = str(ei.value)
    assert "imageio" in msg and f"/images/{t.ticket}" in msg and "gave up after 7 attempts over" in msg, msg
    await lab.daemon.start()  # for the lab's teardown


async def test_daemon_back_without_the_ticket_fails_as_transfer_not_found(lab, tmp_path):
    """A restarted daemon that never gets the ticket back (nobody re-adds it):
    the copy waits the same ~15 s, then says the ticket is gone and why."""
    from imageio_ext.copy import TransferNotFound
    disk, _ = _disk(tmp_path)
    store_url = str(tmp_path / "target")
    (tmp_path / "target").mkdir()
    async with await Store.open(store_url, create=True):
        pass
    t = await lab.transfer(disk, "qcow2", SIZE)
    restarted = []

    def progress(p):
        if p.bytes_done > 0 and not restarted:
            _kill_daemon(lab)
            restarted.append(asyncio.get_running_loop().create_task(lab.daemon.start()))

    with pytest.raises(TransferNotFound) as ei:
        await run_copy(dict(op="backup", store=store_url, vm_id=str(uuid.uuid4()), backup_id=str(uuid.uuid4()),
                            disk_id=str(uuid.uuid4()), size=SIZE, ca_file=lab.ca, transfer_url=t.url),
                       progress=progress)
    await restarted[0]
    assert "the daemon restarted without it" in str(ei.value), str(ei.value)
