"""The data mover end to end: real engine simulator transfers, real imageio
daemons, the sandbox's `ovault-mover` per host, the store on the real NFS export.

The test plays the orchestrator: it creates backups and transfers with the
SDK, sends copy commands to the mover on the transfer's host, publishes the
backup with `Store.publish_backup`, and checks restores against the sandbox's
content digests.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import ovirtsdk4.types as types
import pytest

from imageio_ext.store import Store
from tests.helpers import wait

pytestmark = pytest.mark.e2e
MiB = 1 << 20
CHUNK = 4 * MiB


# -- helpers -------------------------------------------------------------------

class Mover:
    def __init__(self, url: str, token: str | None):
        self.url, self.token = url, token

    def call(self, method, path, body=None, token: str | None = "default"):
        token = self.token if token == "default" else token
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def start(self, **spec):
        st, job = self.call("POST", "/v1/copies", spec)
        assert st == 202, job
        return job

    def events(self, job_id):
        req = urllib.request.Request(f"{self.url}/v1/copies/{job_id}/events",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=120) as r:
            for line in r:
                yield json.loads(line)

    def run(self, **spec):
        job = self.start(**spec)
        lines = list(self.events(job["id"]))
        assert lines[-1]["state"] in ("succeeded", "failed", "canceled")
        return lines[-1], lines


def mover_for(sandbox, host_id) -> Mover:
    h = next(h for h in sandbox.info["hosts"] if h["id"] == host_id)
    return Mover(h["mover_url"], h["mover_token"])


def vm_disks(conn, vm_id):
    s = conn.system_service()
    atts = s.vms_service().vm_service(vm_id).disk_attachments_service().list()
    return [(a, s.disks_service().disk_service(a.disk.id).get()) for a in atts]


def open_transfer(conn, direction, *, disk, backup=None):
    ts = conn.system_service().image_transfers_service()
    t = ts.add(types.ImageTransfer(direction=direction, format=types.DiskFormat.RAW, disk=types.Disk(id=disk),
                                   backup=types.Backup(id=backup) if backup else None))
    svc = ts.image_transfer_service(t.id)
    wait(lambda: svc.get().phase == types.ImageTransferPhase.TRANSFERRING, what="transferring")
    return svc.get(), svc


def finalize(svc):
    svc.finalize()
    wait(lambda: svc.get().phase in (types.ImageTransferPhase.FINISHED_SUCCESS,
                                     types.ImageTransferPhase.FINISHED_FAILURE), what="finalized")


@pytest.fixture
def store(sandbox, tmp_path):
    """A fresh store in a sub-folder of the sandbox's NFS export: (url for the mover, local path)."""
    t = sandbox.info["target"]
    name = f"mover-{uuid.uuid4().hex[:8]}"
    local = Path(t["path"]) / name
    local.mkdir(parents=True)

    async def init():
        async with await Store.open(local, create=True):
            pass
    asyncio.run(init())
    url = f"{t['nfs_url']}/{name}" if t.get("nfs_url") else str(local)
    return url, local


def chunk_files(local: Path) -> int:
    return sum(1 for p in (local / "chunks").rglob("*") if p.is_file() and not p.name.startswith("."))


def publish(local, vm_id, backup_id, results, parent=None):
    async def go():
        async with await Store.open(local) as st:
            await st.publish_backup(vm_id, backup_id, [r["disk"] for r in results], parent_id=parent)
    asyncio.run(go())


def store_digest(local, vm_id, backup_id, disk_id) -> str:
    async def go():
        async with await Store.open(local) as st:
            return await (await st.open_disk(vm_id, backup_id, disk_id)).sha256()
    return asyncio.run(go())


def restore_new_disk(conn, sandbox, store_url, vm_id, backup_id, disk) -> str:
    """Restore one backup disk into a new qcow2 disk through the mover; return its digest."""
    disks = conn.system_service().disks_service()
    new = disks.add(types.Disk(name=f"restored-{disk.id[:8]}", format=types.DiskFormat.COW, sparse=True,
                               provisioned_size=disk.provisioned_size,
                               storage_domains=[types.StorageDomain(name="data")]))
    wait(lambda: disks.disk_service(new.id).get().status == types.DiskStatus.OK)
    try:
        t, svc = open_transfer(conn, types.ImageTransferDirection.UPLOAD, disk=new.id)
        try:
            end, _ = mover_for(sandbox, t.host.id).run(
                op="restore", transfer_url=t.transfer_url, store=store_url,
                vm_id=vm_id, backup_id=backup_id, disk_id=disk.id, size=disk.provisioned_size)
        finally:
            finalize(svc)
        assert end["state"] == "succeeded", end
        assert end["result"]["transport"] == "unix"  # the host's own daemon, over its local socket
        assert end["result"]["bytes_written"] + end["result"]["bytes_zeroed"] == disk.provisioned_size
        return sandbox.digest(new.id)
    finally:
        disks.disk_service(new.id).remove()


def grow_data(sandbox, vm_id, disk_id, mib=160):
    """Enough random data that a copy runs long enough to be interrupted."""
    for i in range(0, mib, 32):
        sandbox.write(vm_id, 600 * MiB + i * MiB, 32 * MiB, pattern="random", disk_id=disk_id, seed=1000 + i)


# -- tests -----------------------------------------------------------------------

def test_mover_refuses_missing_and_wrong_tokens(sandbox):
    h, other = sandbox.info["hosts"][0], sandbox.info["hosts"][1]
    good = Mover(h["mover_url"], h["mover_token"])
    assert good.call("GET", "/v1/health", token=None)[1]["status"] == "ok"
    assert h["mover_token"] != other["mover_token"]  # each host has its own
    for bad in (None, "wrong-token-of-some-length", h["mover_token"] + "x", other["mover_token"]):
        st, body = good.call("GET", "/v1/copies", token=bad)
        assert st == 401 and body["type"] == "urn:ovault:mover:unauthorized"
        st, body = good.call("POST", "/v1/copies", {"op": "backup"}, token=bad)
        assert st == 401
    assert good.call("GET", "/v1/copies")[0] == 200


def test_mover_accepts_only_its_own_daemon_and_allowed_stores(conn, sandbox, store):
    """Another host's daemon, a server of the caller's choosing, a caller-chosen CA, a
    store outside allowed_stores or a traversing id: each refused, nothing written."""
    store_url, local = store
    vm = sandbox.vm("db-primary")
    disk = next(d for _, d in vm_disks(conn, vm["id"]))
    t, tsvc = open_transfer(conn, types.ImageTransferDirection.DOWNLOAD, disk=disk.id)
    try:
        mine = next(h for h in sandbox.info["hosts"] if h["id"] == t.host.id)
        other = next(h for h in sandbox.info["hosts"] if h["id"] != t.host.id)
        assert t.transfer_url.startswith(mine["imageio_url"] + "/images/")
        ticket = t.transfer_url.rsplit("/", 1)[1]
        spec = dict(op="backup", transfer_url=t.transfer_url, store=store_url, vm_id=vm["id"],
                    backup_id=str(uuid.uuid4()), disk_id=disk.id, size=disk.provisioned_size)
        theirs = Mover(other["mover_url"], other["mover_token"])
        me = Mover(mine["mover_url"], mine["mover_token"])
        # the session's movers may hold copies of earlier tests: none may be added
        before = {m: {c["id"] for c in m.call("GET", "/v1/copies")[1]["copies"]} for m in (me, theirs)}
        # the transfer's ticket sent to the other host's mover: not its daemon
        st, body = theirs.call("POST", "/v1/copies", spec)
        assert st == 403 and "not served by this host's imageio daemon" in body["detail"], body
        for bad, status, words in [
            ({"transfer_url": f"https://127.0.0.1:1/images/{ticket}"}, 403, "transfer_url"),
            ({"transfer_url": f"{other['imageio_url']}/images/{ticket}"}, 403, "transfer_url"),
            ({"ca_file": "/tmp/attacker-ca.pem"}, 403, "ca_file is refused"),
            ({"ca_file": sandbox.engine["ca_file"]}, 403, "ca_file is refused"),
            ({"store": "/etc"}, 403, "allowed_stores"),
            ({"store": store_url + "/../../../../etc"}, 403, "allowed_stores"),
            ({"vm_id": "../" + vm["id"]}, 400, "vm_id"),
        ]:
            st, body = me.call("POST", "/v1/copies", {**spec, **bad})
            assert st == status and words in body["detail"], (bad, body)
        # another host's token on this host's mover
        st, _ = me.call("POST", "/v1/copies", spec, token=other["mover_token"])
        assert st == 401
        for m in (me, theirs):
            assert {c["id"] for c in m.call("GET", "/v1/copies")[1]["copies"]} == before[m]
        assert not (local / "vms").exists() or not any((local / "vms").iterdir())
        assert chunk_files(local) == 0
    finally:
        finalize(tsvc)


def test_full_and_incremental_backup_and_restore_through_the_mover(conn, sandbox, store, no_leftovers):
    store_url, local = store
    vm = sandbox.vm("db-primary")
    vms = conn.system_service().vms_service().vm_service(vm["id"])
    disks = [d for _, d in vm_disks(conn, vm["id"])]
    boot = next(d for a, d in vm_disks(conn, vm["id"]) if a.bootable)

    def backup(from_cp, parent):
        bs = vms.backups_service()
        b = bs.add(types.Backup(disks=[types.Disk(id=d.id) for d in disks], from_checkpoint_id=from_cp))
        bsvc = bs.backup_service(b.id)
        wait(lambda: bsvc.get().phase == types.BackupPhase.READY, what="backup ready")
        b = bsvc.get()
        results = {}
        try:
            for d in bsvc.disks_service().list():
                t, tsvc = open_transfer(conn, types.ImageTransferDirection.DOWNLOAD, disk=d.id, backup=b.id)
                try:
                    end, lines = mover_for(sandbox, t.host.id).run(
                        op="backup", transfer_url=t.transfer_url,
                        store=store_url, vm_id=vm["id"], backup_id=b.id, disk_id=d.id,
                        size=d.provisioned_size, parent_backup_id=parent, incremental=from_cp is not None)
                finally:
                    finalize(tsvc)
                assert end["state"] == "succeeded", end
                assert end["bytes_done"] == end["bytes_total"] == d.provisioned_size
                assert len(lines) >= 2 and lines[0]["state"] in ("queued", "running")
                results[d.id] = end["result"]
        finally:
            bsvc.finalize()
            wait(lambda: bsvc.get().phase in (types.BackupPhase.SUCCEEDED, types.BackupPhase.FAILED))
        publish(local, vm["id"], b.id, list(results.values()), parent)
        return b, results

    digests = {d.id: sandbox.digest(d.id) for d in disks}
    b1, full = backup(None, None)
    for d in disks:
        r = full[d.id]
        assert r["transport"] == "unix" and not r["incremental"]
        assert store_digest(local, vm["id"], b1.id, d.id) == digests[d.id]
        # zero ranges cost nothing: far less is read than the disk's size
        assert r["bytes_read"] < d.provisioned_size // 2
    files_after_full = chunk_files(local)
    assert files_after_full == sum(r["new_chunks"] for r in full.values())

    # guest writes between the backups: 3 MiB random at 300 MiB, 1 MiB of 0x11 at 512 MiB
    sandbox.write(vm["id"], 300 * MiB, 3 * MiB, pattern="random", disk_id=boot.id, seed=77)
    sandbox.write(vm["id"], 512 * MiB, 1 * MiB, pattern=0x11, disk_id=boot.id)
    inc_digests = {d.id: sandbox.digest(d.id) for d in disks}
    b2, inc = backup(b1.to_checkpoint_id, b1.id)
    rb = inc[boot.id]
    assert rb["incremental"]
    # only the two dirty chunk slots are read (at most: minus their known-zero edges)
    assert 4 * MiB <= rb["bytes_read"] <= 2 * CHUNK
    assert rb["bytes_unchanged"] == boot.provisioned_size - 2 * CHUNK
    assert rb["new_chunks"] == 2
    other = next(d for d in disks if d.id != boot.id)
    assert inc[other.id]["bytes_read"] == 0 and inc[other.id]["new_chunks"] == 0
    assert chunk_files(local) == files_after_full + 2
    for d in disks:
        assert store_digest(local, vm["id"], b2.id, d.id) == inc_digests[d.id]

    # restore the incremental (a complete index) into a new disk
    assert restore_new_disk(conn, sandbox, store_url, vm["id"], b2.id, boot) == inc_digests[boot.id]


def test_cancel_then_rerun_sends_no_chunk_twice_and_nbd_export_reads_back(conn, sandbox, store, no_leftovers,
                                                                           tmp_path):
    store_url, local = store
    vm = sandbox.vm("legacy-erp")
    (_, disk), = vm_disks(conn, vm["id"])
    grow_data(sandbox, vm["id"], disk.id, mib=256)
    digest = sandbox.digest(disk.id)
    backup_id = str(uuid.uuid4())
    spec = dict(op="backup", store=store_url, vm_id=vm["id"],
                backup_id=backup_id, disk_id=disk.id, size=disk.provisioned_size)

    t, svc = open_transfer(conn, types.ImageTransferDirection.DOWNLOAD, disk=disk.id)
    try:
        mover = mover_for(sandbox, t.host.id)
        job = mover.start(transfer_url=t.transfer_url, **spec)
        for line in mover.events(job["id"]):
            if line["bytes_read"] > 0:
                st, _ = mover.call("DELETE", f"/v1/copies/{job['id']}")
                assert st in (200, 202)
                break
        end = wait(lambda: (j := mover.call("GET", f"/v1/copies/{job['id']}")[1])["state"] != "running" and j)
        assert end["state"] == "canceled", end
        assert end["error"]["code"] == "canceled"
        assert 0 < end["bytes_done"] < disk.provisioned_size
        first = chunk_files(local)  # may be 0: cancel can win the race with the first chunk

        # rerun the same backup id: the chunks the first run stored are not sent again
        end, _ = mover.run(transfer_url=t.transfer_url, **spec)
    finally:
        finalize(svc)
    assert end["state"] == "succeeded", end
    r = end["result"]
    assert r["dedup_chunks"] >= first
    assert chunk_files(local) == first + r["new_chunks"]
    publish(local, vm["id"], backup_id, [r])
    assert store_digest(local, vm["id"], backup_id, disk.id) == digest

    # the same backup, exported read-only over NBD, read by qemu-img
    async def nbd_roundtrip():
        from imageio_ext.nbd import serve_disk
        async with await Store.open(local) as st:
            reader = await st.open_disk(vm["id"], backup_id, disk.id)
            export = await serve_disk(reader, unix_path=str(tmp_path / "nbd.sock"))
            try:
                p = await asyncio.create_subprocess_exec(
                    "qemu-img", "convert", "-f", "raw", "-O", "raw", export.url, str(tmp_path / "out.raw"),
                    stderr=asyncio.subprocess.PIPE)
                _, err = await p.communicate()
                assert p.returncode == 0, err
            finally:
                await export.close()
        h = hashlib.sha256()
        with open(tmp_path / "out.raw", "rb") as f:
            while b := f.read(8 << 20):
                h.update(b)
        return h.hexdigest()
    assert asyncio.run(nbd_roundtrip()) == digest


def test_imageio_killed_mid_copy_fails_clearly_and_a_rerun_resends_nothing(conn, sandbox, store, no_leftovers):
    store_url, local = store
    vm = sandbox.vm("web-frontend")
    (_, disk), = vm_disks(conn, vm["id"])
    grow_data(sandbox, vm["id"], disk.id, mib=256)
    digest = sandbox.digest(disk.id)
    spec = dict(op="backup", store=store_url, vm_id=vm["id"],
                backup_id=str(uuid.uuid4()), disk_id=disk.id, size=disk.provisioned_size)
    t, svc = open_transfer(conn, types.ImageTransferDirection.DOWNLOAD, disk=disk.id)
    mover = mover_for(sandbox, t.host.id)
    try:
        job = mover.start(transfer_url=t.transfer_url, **spec)
        for line in mover.events(job["id"]):
            if line["bytes_read"] > 0:
                sandbox.fault(kind="imageio", host_id=t.host.id, action="kill")
                break
        end = wait(lambda: (j := mover.call("GET", f"/v1/copies/{job['id']}")[1])["state"] not in
                   ("queued", "running") and j, timeout=60)
        assert end["state"] == "failed", end
        assert end["error"]["code"] in ("imageio_unavailable", "transfer_not_found"), end["error"]
        assert "imageio" in end["error"]["message"]
        assert end["bytes_done"] < disk.provisioned_size
    finally:
        sandbox.fault(kind="imageio", host_id=t.host.id, action="restart")
        finalize(svc)
    assert mover.call("GET", "/v1/health")[1]["status"] == "ok"
    first = chunk_files(local)

    # the orchestrator retries on a new transfer with the same backup id
    t, svc = open_transfer(conn, types.ImageTransferDirection.DOWNLOAD, disk=disk.id)
    try:
        end, _ = mover_for(sandbox, t.host.id).run(transfer_url=t.transfer_url, **spec)
    finally:
        finalize(svc)
    assert end["state"] == "succeeded", end
    r = end["result"]
    # What the interrupted copy stored is adopted from its partial index (neither read nor
    # sent again) or, for chunks stored after its last index update, deduplicated.
    assert r["adopted_chunks"] + r["dedup_chunks"] >= first
    assert r["bytes_read"] + r["bytes_adopted"] <= disk.provisioned_size
    assert chunk_files(local) == first + r["new_chunks"]  # no chunk was stored twice
    publish(local, vm["id"], spec["backup_id"], [r])
    assert store_digest(local, vm["id"], spec["backup_id"], disk.id) == digest
