"""`ovault verify|export|mount|gc|import` on the sandbox's real target, and the
client commands against its orchestrator with a token file."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import Orchestrator, image_digest, wait

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def orch(sandbox, state_root):
    o = Orchestrator(sandbox.dir, state_root / "cli-target").start()
    yield o
    o.stop()


def ovault(*args, check=True, timeout=180):
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"ovault {' '.join(map(str, args))}: {p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def backed_up(orch, sandbox):
    vm = sandbox.vm("web-frontend")
    conn = sandbox.connect()
    try:
        (att,) = conn.system_service().vms_service().vm_service(vm["id"]).disk_attachments_service().list()
    finally:
        conn.close()
    want = sandbox.digest(att.disk.id)
    j = orch.wait_job(orch.backup([vm["id"]], "full")["id"])
    assert j["state"] == "succeeded", j
    return {"vm_id": vm["id"], "backup_id": j["machines"][0]["backup_id"], "disk_id": att.disk.id,
            "sha256": want}


def where(sandbox, orch):
    return ["--sandbox", sandbox.dir, "--state-dir", orch.state_dir]


def test_verify_finds_a_damaged_chunk(sandbox, orch, backed_up):
    out = json.loads(ovault("verify", backed_up["backup_id"], *where(sandbox, orch), "--json").stdout)
    assert out[0]["ok"] and out[0]["chunks_checked"] > 0
    target = Path(sandbox.info["target"]["path"])
    chunk = max((p for p in (target / "chunks").rglob("*") if p.is_file() and "." not in p.name),
                key=lambda p: p.stat().st_mtime)
    good = chunk.read_bytes()
    try:
        chunk.write_bytes(good[:-16] + bytes(16))
        p = ovault("verify", "--json", *where(sandbox, orch), check=False)
        assert p.returncode == 1
        damaged = [b for b in json.loads(p.stdout) if not b["ok"]]
        assert damaged and damaged[0]["damaged"][0]["digest"] == chunk.name
    finally:
        chunk.write_bytes(good)
    assert ovault("verify", "--json", *where(sandbox, orch)).returncode == 0


def test_export_and_mount_give_the_disk_back(sandbox, orch, backed_up, tmp_path):
    ovault("export", backed_up["backup_id"], backed_up["disk_id"], tmp_path / "d.qcow2", *where(sandbox, orch))
    assert image_digest(tmp_path / "d.qcow2") == backed_up["sha256"]
    sock = tmp_path / "nbd.sock"
    with open(tmp_path / "mount.log", "wb") as log:
        p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "mount", backed_up["backup_id"],
                              backed_up["disk_id"], "--socket", sock, *where(sandbox, orch)],
                             cwd=ROOT, stdout=log, stderr=log)
    try:
        wait(lambda: sock.exists(), timeout=60, what="the NBD socket")
        raw = tmp_path / "m.raw"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", f"nbd+unix:///?socket={sock}",
                        str(raw)], check=True, timeout=120)
        h = hashlib.sha256()
        with open(raw, "rb") as f:
            while b := f.read(8 << 20):
                h.update(b)
        assert h.hexdigest() == backed_up["sha256"]
    finally:
        p.terminate()
        p.wait(30)


def test_mount_defaults_to_a_private_socket_and_tcp_stays_on_loopback(sandbox, orch, backed_up, tmp_path):
    """Without --socket the export is a 0600 socket in a new 0700 directory,
    removed when the command stops; TCP off loopback is refused."""
    log_path = tmp_path / "mount.log"
    with open(log_path, "wb") as log:
        p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "mount", backed_up["backup_id"],
                              backed_up["disk_id"], *where(sandbox, orch)], cwd=ROOT, stdout=log, stderr=log)
    try:
        wait(lambda: "nbd+unix://" in log_path.read_text(), timeout=60, what="the NBD export's URL")
        url = log_path.read_text().split(": ", 1)[1].split()[0]
        sock = Path(url.split("socket=", 1)[1])
        assert oct(sock.parent.stat().st_mode & 0o777) == "0o700" and oct(sock.stat().st_mode & 0o777) == "0o600"
        info = subprocess.run(["qemu-img", "info", "--output=json", url], capture_output=True, text=True,
                              check=True, timeout=60)
        assert json.loads(info.stdout)["virtual-size"] > 0
    finally:
        p.terminate()
        p.wait(30)
    assert not sock.parent.exists()
    r = ovault("mount", backed_up["backup_id"], backed_up["disk_id"], "--port", "0", "--host", "0.0.0.0",
               *where(sandbox, orch), check=False)
    assert r.returncode != 0 and "loopback only" in r.stderr


def test_import_rebuilds_a_catalog_that_can_restore(sandbox, orch, backed_up, state_root, conn, no_leftovers):
    fresh = state_root / "imported"
    out = json.loads(ovault("import", "--sandbox", sandbox.dir, "--state-dir", fresh, "--json").stdout)
    assert out["imported"] >= 1
    o = Orchestrator(sandbox.dir, fresh).start()
    try:
        b = o.api("GET", f"/api/v1/backups/{backed_up['backup_id']}", expect=200)
        assert b["status"] == "succeeded" and b["vm_id"] == backed_up["vm_id"]
        j = o.wait_job(o.restore(b["id"], kind="disks")["id"])
        assert j["state"] == "succeeded", j
        (new,) = [d for d in conn.system_service().disks_service().list()
                  if d.description and b["id"] in d.description]
        assert sandbox.digest(new.id) == backed_up["sha256"]
        conn.system_service().disks_service().disk_service(new.id).remove()
    finally:
        o.stop()


def test_gc_removes_what_a_deleted_backup_alone_used(sandbox, orch, conn):
    vm = sandbox.vm("legacy-erp")
    # data only this backup will hold
    sandbox.write(vm["id"], 900 * 2**20, 8 * 2**20, pattern="random", seed=int(time.time()))
    j = orch.wait_job(orch.backup([vm["id"]], "full")["id"])
    assert j["state"] == "succeeded", j
    d = orch.api("DELETE", f"/api/v1/backups/{j['machines'][0]['backup_id']}", expect=202)
    assert orch.wait_job(d["job"]["id"])["state"] == "succeeded"   # the prune job
    young = json.loads(ovault("gc", *where(sandbox, orch), "--json").stdout)
    assert young["chunks_removed"] == 0 and young["chunks_kept_young"] > 0  # the grace period
    r = json.loads(ovault("gc", "--grace-hours", "0", *where(sandbox, orch), "--json").stdout)
    assert r["chunks_removed"] >= 2 and r["bytes_removed"] >= 8 * 2**20 * 0.9
    # what other backups reference is intact
    assert ovault("verify", "--json", *where(sandbox, orch)).returncode == 0


def test_client_commands_with_a_token_file(sandbox, orch, backed_up, tmp_path):
    ca = json.loads((Path(orch.state_dir) / "client.json").read_text())["ca_file"]
    tf = tmp_path / "token"
    tf.write_text(orch.token + "\n")
    tf.chmod(0o600)
    server = ["--server", orch.url, "--ca-file", ca]
    items = json.loads(ovault("backups", *server, "--token-file", tf, "--json").stdout)
    assert backed_up["backup_id"] in [b["id"] for b in items]
    # OVAULT_TOKEN_FILE works the same; the token never appears on a command line
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", "jobs", *server, "--json"], cwd=ROOT,
                       env={**os.environ, "OVAULT_TOKEN_FILE": str(tf)}, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert any(m.get("backup_id") == backed_up["backup_id"] for j in json.loads(p.stdout) for m in j["machines"])
    bad = tmp_path / "bad"
    bad.write_text("not-a-token\n")
    p = ovault("jobs", *server, "--token-file", bad, check=False)
    assert p.returncode == 1 and "401" in p.stderr
    # --wait off a terminal: one line per state change on stderr, the result on stdout
    p = ovault("backup", "web-frontend", "--mode", "incremental", "--wait", *server, "--token-file", tf,
               timeout=300)
    assert "): succeeded" in p.stdout.splitlines()[0]
    states = [ln.split()[1] for ln in p.stderr.splitlines() if ln.startswith("web-frontend")]
    assert states[-1] == "succeeded" and len(states) == len(set(states))
