"""Issue 13: backups of a running guest, as vdsm takes them, and their consistency.

A sandbox with a real Debian guest (`--guests ext4`, sandbox/guests/): while
its workload appends records, a CBT backup is exported by the guest's own
qemu (fleecing node + NBD export) — the test reads that export itself at the
backup's point in time as the reference, writes more into the disk through
qemu, and the image downloaded through imageio equals the reference; full and
incremental. Started with `require_consistency=true` through the SDK, as
ovault does for a running VM: vdsm freezes the guest and the engine logs no
freeze event. Through ovault, backups taken while the guest agent answers are
recorded `filesystem`; once the agent is stopped the engine fails the
consistent attempt, and with `[backup] consistency = "prefer"` the backup is
taken again crash consistent and recorded `crash` with the reason, with
"require" the VM's backup fails naming the cause; nothing is left in the
engine. The restored VM boots and its workload's record file verifies.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
import uuid
from pathlib import Path

import ovirtsdk4.types as types
import pytest
from ovirt_imageio import client

from sandbox.guests import build, manager, records
from sandbox.guests.qmp import Agent
from tests.helpers import Orchestrator, running_sandbox, wait

# Guests run on TCG on the development machine: a boot takes 10-60 s depending on the load.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]
MiB = 1 << 20
FREEZE_CODES = {10764, 10765, 10766, 10767, 10768}  # the engine's own freeze/thaw events
VM_BACKUP_STARTED, VM_BACKUP_FAILED = 10790, 10792


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A sandbox of its own with one guest VM (the session sandbox runs none);
    the guest OS image is built on first use and cached."""
    with running_sandbox(tmp_path_factory.mktemp("live-sandbox"), "--hosts", "1", "--vms", "1",
                         "--guests", "ext4", "--no-nfs", start_timeout=1200) as sb:
        yield sb


@pytest.fixture(scope="module")
def conn(lab):
    c = lab.connect()
    yield c
    c.close()


@pytest.fixture(scope="module")
def guest(lab, conn):
    """linux-ext4 started through the engine; its guest handle (sockets, nodes)."""
    vm = lab.vm("linux-ext4")
    svc = conn.system_service().vms_service().vm_service(vm["id"])
    svc.start()
    wait(lambda: svc.get().status == types.VmStatus.UP, timeout=300, what="the guest up")
    g = lab.admin("GET", f"/vms/{vm['id']}/guest")
    # The workload has written some records before the first backup.
    wait(lambda: asyncio.run(_agent_ok(g["qga"])), timeout=120, what="the guest agent")
    time.sleep(3)
    yield vm, g
    svc.stop()
    wait(lambda: svc.get().status == types.VmStatus.DOWN, timeout=120, what="the guest down")


async def _agent_ok(path) -> bool:
    return await Agent(path, timeout=3).ping()


async def _guest_sync(qga: str):
    """`sync` in the guest (through its agent): what it wrote is on the disk."""
    a = Agent(qga, timeout=10)
    r = await a.execute("guest-exec", {"path": "/bin/sync", "arg": []})
    for _ in range(100):
        st = await a.execute("guest-exec-status", {"pid": r["pid"]})
        if st.get("exited"):
            assert st.get("exitcode") == 0, st
            return
        await asyncio.sleep(0.1)
    raise AssertionError("sync did not finish in the guest")


def _write_marker(lab, vm_id: str, qga: str, name: str) -> bytes:
    """A file of unique content in the guest's root file system, synced to disk."""
    import base64
    marker = (uuid.uuid4().hex * 256).encode()  # 8 KiB, found nowhere else
    lab.admin("POST", f"/vms/{vm_id}/files", {"path": f"/var/tmp/{name}",
                                             "content_b64": base64.b64encode(marker).decode()})
    asyncio.run(_guest_sync(qga))
    return marker


def _contains(path: Path, needle: bytes) -> bool:
    import mmap
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return m.find(needle) >= 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def _transfer(conn, disk_id, backup_id):
    ts = conn.system_service().image_transfers_service()
    t = ts.add(types.ImageTransfer(direction=types.ImageTransferDirection.DOWNLOAD,
                                   format=types.DiskFormat.RAW, disk=types.Disk(id=disk_id),
                                   backup=types.Backup(id=backup_id)))
    svc = ts.image_transfer_service(t.id)
    wait(lambda: svc.get().phase == types.ImageTransferPhase.TRANSFERRING, what="transferring")
    return svc.get(), svc


def test_live_full_and_incremental_are_point_in_time(lab, conn, guest, tmp_path):
    vm, g = guest
    disk = g["disks"][0]
    vms = conn.system_service().vms_service().vm_service(vm["id"])
    bs = vms.backups_service()
    ev = conn.system_service().events_service()
    markers = []

    def run_backup(from_cp, tag):
        cid = f"live-e2e-{uuid.uuid4()}"
        b = bs.add(types.Backup(disks=[types.Disk(id=disk["disk_id"])], from_checkpoint_id=from_cp),
                   require_consistency=True, query={"correlation_id": cid})
        bsvc = bs.backup_service(b.id)
        wait(lambda: bsvc.get().phase == types.BackupPhase.READY, timeout=60, what="backup ready")
        b = bsvc.get()
        # The reference: qemu's export of the point in time, read by the test itself.
        sock = lab.dir / "engine" / "nbd" / f"live-{b.id[:8]}.sock"
        ref = tmp_path / f"{tag}.ref.raw"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw",
                        f"nbd+unix:///{disk['disk_id']}?socket={sock}", ref], check=True)
        # The guest goes on: its workload, and a file the backup must not hold.
        markers.append(_write_marker(lab, vm["id"], g["qga"], f"after-{tag}"))
        (d,) = bsvc.disks_service().list()
        incremental = d.backup_mode == types.DiskBackupMode.INCREMENTAL
        assert incremental == (from_cp is not None)
        t, tsvc = _transfer(conn, disk["disk_id"], b.id)
        path = tmp_path / f"{tag}.qcow2"
        try:
            client.download(t.transfer_url, str(path), lab.engine["ca_file"], incremental=incremental,
                            fmt="qcow2", backing_file="full.qcow2" if incremental else None,
                            backing_format="qcow2" if incremental else None)
        finally:
            tsvc.finalize()
        bsvc.finalize()
        wait(lambda: bsvc.get().phase == types.BackupPhase.SUCCEEDED, what="backup succeeded")
        # Ready although consistency was required: frozen, by vdsm, without an engine event.
        codes = [e.code for e in ev.list(search=f"correlation_id={cid}")]
        assert VM_BACKUP_STARTED in codes and not FREEZE_CODES & set(codes), codes
        flat = tmp_path / f"{tag}.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, flat], check=True,
                       cwd=tmp_path)
        assert _sha256(flat) == _sha256(ref)
        assert not _contains(flat, markers[-1])  # written after the point in time
        return b, flat

    b1, full = run_backup(None, "full")
    assert b1.to_checkpoint_id
    b2, inc = run_backup(b1.to_checkpoint_id, "inc")
    assert b2.to_checkpoint_id
    # The file written after the full's point in time is in the incremental.
    assert _contains(inc, markers[0]) and not _contains(full, markers[0])
    assert _sha256(inc) != _sha256(full)


def test_consistency_recorded_filesystem_then_crash_and_restored_vm_boots(lab, conn, guest,
                                                                          state_root):
    vm, g = guest
    o = Orchestrator(lab.dir, state_root / "orch-live").start()  # consistency "prefer"
    try:
        def backup(mode="auto"):
            job = o.wait_job(o.backup([vm["id"]], mode)["id"], timeout=600)
            assert job["state"] == "succeeded", job
            (m,) = job["machines"]
            return o.api("GET", f"/api/v1/backups/{m['backup_id']}", expect=200), m

        full, _ = backup("full")
        assert (full["mode"], full["method"], full["consistency"]) == ("full", "cbt", "filesystem")
        time.sleep(2)  # the workload appends meanwhile
        inc, _ = backup()
        assert (inc["mode"], inc["consistency"]) == ("incremental", "filesystem")
        assert lab.leftovers() == NOTHING_LEFT

        # The guest agent stops answering: the engine fails the consistent
        # attempt, and the backup is taken again crash consistent, saying why.
        # (a command it runs stops its parent, the agent)
        asyncio.run(Agent(g["qga"], timeout=10).execute("guest-exec", {
            "path": "/bin/sh", "arg": ["-c", "kill -STOP $PPID"]}))
        wait(lambda: not asyncio.run(_agent_ok(g["qga"])), timeout=60, what="the agent stopped")
        failed_before = _backup_failures(conn, vm["id"])
        crash, m = backup()
        assert (crash["mode"], crash["consistency"]) == ("incremental", "crash")
        assert m["resources"]["consistency"] == "crash"
        assert "require_consistency=true" in m["resources"]["consistency_reason"]
        assert _backup_failures(conn, vm["id"]) == failed_before + 1  # the consistent attempt
        listed = {b["id"]: b["consistency"]
                  for b in o.api("GET", f"/api/v1/backups?vm_id={vm['id']}", expect=200)["items"]}
        assert listed == {full["id"]: "filesystem", inc["id"]: "filesystem", crash["id"]: "crash"}
        assert lab.leftovers() == NOTHING_LEFT
    finally:
        o.stop()

    # `require`: the VM's backup fails naming the cause; nothing is left behind.
    strict = Orchestrator(lab.dir, state_root / "orch-live",
                          env={"OVAULT_BACKUP_CONSISTENCY": "require"}).start()
    try:
        job = strict.wait_job(strict.backup([vm["id"]], "auto")["id"], timeout=600)
        assert job["state"] == "failed", job
        (m,) = job["machines"]
        assert "guest agent did not freeze" in m["error"] and '"require"' in m["error"], m
        assert m["resources"].get("consistency") is None
        assert lab.leftovers() == NOTHING_LEFT
        listed = [b["id"] for b in strict.api("GET", f"/api/v1/backups?vm_id={vm['id']}&status=succeeded",
                                              expect=200)["items"]]
        assert sorted(listed) == sorted([full["id"], inc["id"], crash["id"]])
    finally:
        strict.stop()

    o = Orchestrator(lab.dir, state_root / "orch-live").start()
    try:
        # The filesystem-consistent incremental restores to a VM that boots and
        # whose records verify up to the last complete one.
        job = o.wait_job(o.restore(inc["id"], kind="new", name="linux-ext4-restored")["id"],
                         timeout=600)
        assert job["state"] == "succeeded", job
        new = conn.system_service().vms_service().list(search="name=linux-ext4-restored")[0]
        nsvc = conn.system_service().vms_service().vm_service(new.id)
        # Its file system checks clean (read-only fsck in a maintenance boot).
        (att,) = nsvc.disk_attachments_service().list()
        vols = [v for v in (lab.dir / "storage" / "data" / "images" / att.disk.id).iterdir()
                if not v.name.endswith(".meta") and not v.name.startswith(".")]
        top = max(vols, key=lambda v: v.stat().st_mtime)
        fmt = json.loads(top.with_name(top.name + ".meta").read_text())["format"]
        fsck = asyncio.run(manager.offline_fsck(build.ensure_image(), top, fmt))
        assert fsck["rc"] == 0 and fsck["type"] == "ext4", fsck
        nsvc.start()
        wait(lambda: nsvc.get().status == types.VmStatus.UP, timeout=300, what="the restored VM up")
        ng = lab.admin("GET", f"/vms/{new.id}/guest")
        wait(lambda: asyncio.run(_agent_ok(ng["qga"])), timeout=120, what="its guest agent")
        data = asyncio.run(_read_guest_file(ng["qga"], records.RECORDS_PATH))
        v = records.verify(data, allow_torn=True)
        assert v.records > 0
        nsvc.stop()
        wait(lambda: nsvc.get().status == types.VmStatus.DOWN, timeout=120, what="restored VM down")
        nsvc.remove()
    finally:
        o.stop()


NOTHING_LEFT = {"snapshots": [], "backups": [], "transfers": [], "locked_disks": [],
                "busy_vms": []}


def _backup_failures(conn, vm_id) -> int:
    """The engine's VM_BACKUP_FAILED events for the VM (a failed consistent attempt)."""
    return sum(1 for e in conn.system_service().events_service().list(
        search=f"type={VM_BACKUP_FAILED}") if e.vm and e.vm.id == vm_id)


async def _read_guest_file(qga: str, path: str) -> bytes:
    import base64
    a = Agent(qga, timeout=10)
    h = await a.execute("guest-file-open", {"path": path, "mode": "r"})
    out = b""
    try:
        while True:
            r = await a.execute("guest-file-read", {"handle": h, "count": 1 << 20})
            out += base64.b64decode(r.get("buf-b64", ""))
            if r.get("eof"):
                return out
    finally:
        await a.execute("guest-file-close", {"handle": h})
