"""Issue 9 acceptance on the sandbox: a store that heals, and tidy checkpoints.

One byte of one chunk file is flipped on the target, as an operator would meet
it. `ovault verify` names backup, VM, disk and range and flags the backup; the
next backup of the VM rewrites the chunk (a full one when the catalog knows
the damage; an incremental re-reads the range although it did not change,
when only the target knows); its restore is byte-identical and the older
backup verifies clean again. After many CBT backups of a VM the engine holds
only the checkpoint ovault needs, and incrementals keep working.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from imageio_ext.store import Store
from tests.helpers import Orchestrator, image_digest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
VM = "db-primary"  # qcow2 disks with incremental backup: CBT


@pytest.fixture(scope="module")
def orch(sandbox, state_root):
    # the test's webhook receiver address is on loopback: allowed explicitly
    o = Orchestrator(sandbox.dir, state_root / "heal",
                     env={"OVAULT_WEBHOOKS_ALLOW_NETWORKS": "127.0.0.0/8"}).start()
    yield o
    o.stop()


def ovault(*args, check=True, timeout=300):
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"ovault {' '.join(map(str, args))}: {p.stdout}\n{p.stderr}"
    return p


def where(sandbox, orch):
    return ["--sandbox", sandbox.dir, "--state-dir", orch.state_dir]


def target_dir(sandbox) -> Path:
    return Path(sandbox.info["target"]["path"])


def boot_disk(conn, vm_id) -> str:
    s = conn.system_service().vms_service().vm_service(vm_id)
    return next(a.disk.id for a in s.disk_attachments_service().list() if a.bootable)


def backup_of(orch, job) -> dict:
    assert job["state"] == "succeeded", job
    (m,) = job["machines"]
    return orch.api("GET", f"/api/v1/backups/{m['backup_id']}", expect=200)


def chunk_at(sandbox, vm_id, backup_id, disk_id, offset) -> tuple[str, int]:
    """(digest hex, chunk size) of the chunk holding ``offset`` of a backup disk."""
    async def go():
        async with await Store.open(str(target_dir(sandbox))) as st:
            index = await st.read_index(vm_id, backup_id, disk_id)
            return index.get(offset // st.chunk_size).hex(), st.chunk_size
    return asyncio.run(go())


def referenced(sandbox, vm_id, backup_id, disk_id) -> set[str]:
    async def go():
        async with await Store.open(str(target_dir(sandbox))) as st:
            return {d.hex() for d in (await st.read_index(vm_id, backup_id, disk_id)).referenced()}
    return asyncio.run(go())


def flip_byte(sandbox, digest: str) -> Path:
    p = target_dir(sandbox) / "chunks" / digest[:2] / digest[2:4] / digest
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    p.write_bytes(bytes(raw))
    return p


def export_digest(sandbox, orch, backup_id, disk_id, tmp_path) -> str:
    out = tmp_path / f"{backup_id}.qcow2"
    ovault("export", backup_id, disk_id, out, *where(sandbox, orch))
    try:
        return image_digest(out)
    finally:
        out.unlink(missing_ok=True)


def restored_digest(sandbox, orch, conn, backup_id) -> str:
    """Restore the backup's disks as new floating disks; the digest of the one restored."""
    j = orch.wait_job(orch.restore(backup_id, kind="disks")["id"])
    assert j["state"] == "succeeded", j
    ds = conn.system_service().disks_service()
    new = [d for d in ds.list() if d.description and backup_id in d.description]
    try:
        return {d.alias: sandbox.digest(d.id) for d in new}
    finally:
        for d in new:
            ds.disk_service(d.id).remove()


def test_verify_names_the_damage_and_the_next_backup_heals_it(sandbox, orch, conn, no_leftovers, tmp_path):
    vm = sandbox.vm(VM)
    boot = boot_disk(conn, vm["id"])
    sandbox.write(vm["id"], 64 * MiB, 4 * MiB, pattern="random", disk_id=boot, seed=901)
    want = sandbox.digest(boot)
    b1 = backup_of(orch, orch.wait_job(orch.backup([vm["id"]], "full")["id"]))
    digest, cs = chunk_at(sandbox, vm["id"], b1["id"], boot, 64 * MiB)
    hook = orch.api("POST", "/api/v1/webhooks", {"url": "http://127.0.0.1:9/ovault-hook",
                                                 "events": ["backup.damaged"]}, expect=201)
    flip_byte(sandbox, digest)

    p = ovault("verify", b1["id"], "--json", *where(sandbox, orch), check=False)
    assert p.returncode == 1 and p.stdout, p.stderr
    (doc,) = json.loads(p.stdout)
    assert (doc["backup_id"], doc["vm_id"], doc["ok"]) == (b1["id"], vm["id"], False)
    (dmg,) = doc["damaged"]
    assert dmg["digest"] == digest
    off = 64 * MiB // cs * cs
    assert {"disk_id": boot, "offset": off, "length": cs} in dmg["ranges"]
    assert doc["catalog"] == "became damaged"
    # Set aside on the target: every mover sees it.
    chunk_dir = target_dir(sandbox) / "chunks" / digest[:2] / digest[2:4]
    assert not (chunk_dir / digest).exists() and (chunk_dir / f"{digest}.0.bad").exists()
    # The plain output names VM, digest, disk, offset and length too.
    plain = ovault("verify", b1["id"], *where(sandbox, orch), check=False).stdout
    assert f"vm {vm['id']}" in plain and digest in plain and "DAMAGED" in plain
    assert f"disk {boot}  offset {off}  length {cs}" in plain
    # The catalog, the API and the webhook say so.
    b1v = orch.api("GET", f"/api/v1/backups/{b1['id']}", expect=200)
    assert b1v["damaged"] is True and b1v["damage"]["damaged_chunks"][0]["digest"] == digest
    deliveries = orch.api("GET", f"/api/v1/webhooks/{hook['id']}/deliveries", expect=200)["items"]
    assert [d["event_type"] for d in deliveries] == ["backup.damaged"]
    orch.api("DELETE", f"/api/v1/webhooks/{hook['id']}", expect=204)

    # The next backup does not build on the damaged one: a full, that rewrites the chunk.
    b2 = backup_of(orch, orch.wait_job(orch.backup([vm["id"]])["id"]))
    assert b2["mode"] == "full" and b2["parent_id"] is None
    assert (chunk_dir / digest).exists()
    assert digest in referenced(sandbox, vm["id"], b2["id"], boot)
    assert list(restored_digest(sandbox, orch, conn, b2["id"]).values()).count(want) == 1
    # The older backup shares the rewritten chunk: clean again, flag cleared.
    out = json.loads(ovault("verify", b1["id"], b2["id"], "--json", *where(sandbox, orch)).stdout)
    assert [d["ok"] for d in out] == [True, True]
    assert orch.api("GET", f"/api/v1/backups/{b1['id']}", expect=200)["damaged"] is False
    assert export_digest(sandbox, orch, b1["id"], boot, tmp_path) == want
    # gc drops the damaged copy now that the chunk is whole again.
    ovault("gc", "--grace-hours", "24", *where(sandbox, orch))
    assert not (chunk_dir / f"{digest}.0.bad").exists()


def test_incremental_rereads_an_unchanged_damaged_range(sandbox, orch, conn, no_leftovers, tmp_path):
    """Damage only the target knows (a restore/export found it): the next
    incremental inherits the chunk, finds it set aside, re-reads that range
    from the disk although CBT says it did not change, and rewrites it."""
    vm = sandbox.vm(VM)
    boot = boot_disk(conn, vm["id"])
    sandbox.write(vm["id"], 96 * MiB, 4 * MiB, pattern="random", disk_id=boot, seed=902)
    b1 = backup_of(orch, orch.wait_job(orch.backup([vm["id"]], "full")["id"]))
    want1 = sandbox.digest(boot)
    digest, cs = chunk_at(sandbox, vm["id"], b1["id"], boot, 96 * MiB)
    flip_byte(sandbox, digest)
    p = ovault("export", b1["id"], boot, tmp_path / "x.raw", "--format", "raw", *where(sandbox, orch), check=False)
    assert p.returncode != 0 and digest in (p.stdout + p.stderr)
    (tmp_path / "x.raw").unlink(missing_ok=True)
    assert orch.api("GET", f"/api/v1/backups/{b1['id']}", expect=200)["damaged"] is False  # only the target knows

    sandbox.write(vm["id"], 300 * MiB, 1 * MiB, pattern=0x5a, disk_id=boot)  # elsewhere
    want2 = sandbox.digest(boot)
    b2 = backup_of(orch, orch.wait_job(orch.backup([vm["id"]])["id"]))
    assert (b2["mode"], b2["parent_id"]) == ("incremental", b1["id"])
    read = {d["disk_id"]: d["bytes_read"] for d in b2["disks"]}
    assert read[boot] >= 1 * MiB + cs - 64 * 1024  # the changed MiB and the damaged chunk (zero edges aside)
    assert digest in referenced(sandbox, vm["id"], b2["id"], boot)
    assert list(restored_digest(sandbox, orch, conn, b2["id"]).values()).count(want2) == 1
    out = json.loads(ovault("verify", b1["id"], "--json", *where(sandbox, orch)).stdout)
    assert out[0]["ok"]
    assert export_digest(sandbox, orch, b1["id"], boot, tmp_path) == want1


def test_changed_range_never_references_the_damaged_chunk(sandbox, orch, conn, no_leftovers):
    """The damaged range changed since: the new backup takes the new content and
    succeeds; the older backup stays damaged (nothing can rewrite its chunk)."""
    vm = sandbox.vm(VM)
    boot = boot_disk(conn, vm["id"])
    sandbox.write(vm["id"], 128 * MiB, 4 * MiB, pattern="random", disk_id=boot, seed=903)
    b1 = backup_of(orch, orch.wait_job(orch.backup([vm["id"]], "full")["id"]))
    digest, cs = chunk_at(sandbox, vm["id"], b1["id"], boot, 128 * MiB)
    flip_byte(sandbox, digest)
    assert ovault("verify", b1["id"], "--no-catalog", *where(sandbox, orch), check=False).returncode == 1
    sandbox.write(vm["id"], 128 * MiB // cs * cs, cs, pattern="random", disk_id=boot, seed=904)
    want = sandbox.digest(boot)
    b2 = backup_of(orch, orch.wait_job(orch.backup([vm["id"]])["id"]))
    assert b2["mode"] == "incremental"
    assert digest not in referenced(sandbox, vm["id"], b2["id"], boot)
    assert list(restored_digest(sandbox, orch, conn, b2["id"]).values()).count(want) == 1
    out = json.loads(ovault("verify", b1["id"], b2["id"], "--json", *where(sandbox, orch), check=False).stdout)
    assert [d["ok"] for d in out] == [False, True]
    assert out[0]["damaged"][0]["digest"] == digest


CBT_BACKUPS = 20


def test_checkpoints_stay_tidy_over_many_cbt_backups(sandbox, orch, conn, no_leftovers):
    vm = sandbox.vm(VM)
    boot = boot_disk(conn, vm["id"])
    cps = conn.system_service().vms_service().vm_service(vm["id"]).checkpoints_service()
    # Checkpoints from other test modules' orchestrators are another tool's to
    # this one (they would stop its walk): start from none, as an admin would.
    for cp in cps.list():
        cps.checkpoint_service(cp.id).remove()
    modes = []
    for i in range(CBT_BACKUPS):
        sandbox.write(vm["id"], (8 + i) * MiB, 1 * MiB, pattern="random", disk_id=boot, seed=1000 + i)
        b = backup_of(orch, orch.wait_job(orch.backup([vm["id"]], "full" if i == 0 else "auto")["id"]))
        modes.append(b["mode"])
        held = [c.id for c in cps.list()]
        assert held == [b["checkpoint_id"]], (i, held)
        if i:
            assert sum(d["bytes_read"] for d in b["disks"]) <= 4 * MiB + 1 * MiB  # only what changed
    assert modes == ["full"] + ["incremental"] * (CBT_BACKUPS - 1)
    want = sandbox.digest(boot)
    assert list(restored_digest(sandbox, orch, conn, b["id"]).values()).count(want) == 1
