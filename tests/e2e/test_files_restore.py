"""File-level restore end to end (issue #13's acceptance): a sandbox whose sample VMs
run real guests (`--guests ext4,xfs,lvm`), files written into their root file
systems through the sandbox admin API while they are down, backups through
`ovault serve`, then the files API and `ovault files` against those backups:

- linux-ext4: a file written, backed up, changed twice with a backup after each;
  it is listed, downloaded byte-identical from every backup, and search finds it
  in all three with each version's size and mtime;
- linux-xfs and linux-lvm: a file written and backed up, listed and downloaded.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import CACHE_DIR, Orchestrator, running_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3600)]
ROOT = Path(__file__).resolve().parents[2]
PATH = "/srv/ovault-e2e/report.txt"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("files-sandbox"), "--hosts", "1", "--vms", "1",
                         "--guests", "ext4,xfs,lvm", "--no-nfs", start_timeout=1200) as sb:
        yield sb


@pytest.fixture(scope="module")
def orch(lab, state_root):
    # libguestfs' appliance is built once per cache folder: share the tests' one
    o = Orchestrator(lab.dir, state_root / "files-e2e", env={"OVAULT_FILES_CACHE_DIR": str(CACHE_DIR / "files")}).start()
    yield o
    o.stop()


def _write(lab, vm_id: str, data: bytes) -> None:
    r = lab.admin("POST", f"/vms/{vm_id}/files", {"path": PATH, "content_b64": base64.b64encode(data).decode()})
    assert r["size"] == len(data), r


def _backup(orch, vm_id: str) -> str:
    j = orch.wait_job(orch.backup([vm_id])["id"], timeout=600)
    assert j["state"] == "succeeded", j
    return j["machines"][0]["backup_id"]


def _raw(orch, path: str, params: dict) -> tuple[int, bytes]:
    import urllib.error
    import urllib.parse
    import urllib.request
    req = urllib.request.Request(f"{orch.url}{path}?{urllib.parse.urlencode(params)}",
                                 headers={"Authorization": f"Bearer {orch.token}"})
    try:
        with urllib.request.urlopen(req, context=orch.ssl, timeout=900) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _get(orch, url: str, **params) -> dict:
    """A files API answer; the first request of a backup disk starts its reader (minutes under TCG)."""
    st, body = _raw(orch, url, params)
    assert st == 200, (url, params, body[:500])
    return json.loads(body)


def _files(orch, backup_id: str) -> str:
    b = orch.api("GET", f"/api/v1/backups/{backup_id}", expect=200)
    [disk] = b["disks"]
    return f"/api/v1/backups/{backup_id}/disks/{disk['disk_id']}/files"


def _cli(orch, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "files", *args, "--state-dir",
                           str(orch.state_dir)], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_a_file_changed_twice_is_listed_downloaded_and_found_in_three_backups(lab, orch, tmp_path):
    vm = lab.vm("linux-ext4")
    versions = [(f"version {i} {uuid.uuid4().hex}\n" * (40 * i)).encode() for i in (1, 2, 3)]
    backups = []
    for data in versions:
        _write(lab, vm["id"], data)
        backups.append(_backup(orch, vm["id"]))

    base = _files(orch, backups[-1])
    root = _get(orch, base, path="/")["items"]
    assert [(e["name"], e["type"], e["fstype"]) for e in root] == [("sda1", "filesystem", "ext4")]
    hostname = _raw(orch, base + "/content", {"path": "/sda1/etc/hostname"})
    assert hostname == (200, b"linux-ext4\n")
    listing = _get(orch, base, path="/sda1/srv/ovault-e2e")["items"]
    assert [(e["name"], e["type"], e["size"]) for e in listing] == [("report.txt", "file", len(versions[2]))]
    for bid, data in zip(backups, versions):
        assert _raw(orch, _files(orch, bid) + "/content", {"path": "/sda1" + PATH}) == (200, data)

    # the first search answers at once and indexes the backups in the background (an
    # appliance start each: minutes under TCG); once that is done, a search finds every version
    search = f"/api/v1/vms/{vm['id']}/files"
    first = _get(orch, search, name="report.txt")
    if not first["complete"]:
        assert first["indexing"]["url"] == search + "/indexing"
        assert {x["backup_id"] for x in first["not_indexed"]} <= set(backups)
        deadline = time.monotonic() + 900
        while (prog := _get(orch, search + "/indexing"))["state"] == "running":
            assert time.monotonic() < deadline, prog
            time.sleep(2)
        assert prog["failed"] == [], prog
    found = _get(orch, search, name="report.txt")
    assert found["complete"] and found["not_indexed"] == []
    [item] = found["items"]
    assert item["path"] == "/sda1" + PATH
    assert [(v["backup_id"], v["size"]) for v in item["versions"]] == [
        (b, len(d)) for b, d in reversed(list(zip(backups, versions)))]
    mtimes = [v["mtime"] for v in item["versions"]]
    assert mtimes == sorted(mtimes, reverse=True) and len(set(mtimes)) == 3

    # the CLI: ls, get (byte-identical), search
    r = _cli(orch, "ls", backups[0], "/sda1/srv/ovault-e2e")
    assert r.returncode == 0 and "report.txt" in r.stdout, r.stderr
    out = tmp_path / "report.txt"
    r = _cli(orch, "get", backups[0], "/sda1" + PATH, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == versions[0]
    r = _cli(orch, "search", "linux-ext4", "report.txt", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["items"][0]["versions"]) == 3


@pytest.mark.parametrize("name,fs,fstype", [("linux-xfs", "sda1", "xfs"), ("linux-lvm", "vg0/root", "ext4")])
def test_xfs_and_lvm_guests(lab, orch, name, fs, fstype):
    vm = lab.vm(name)
    data = f"{name} {uuid.uuid4().hex}\n".encode() * 100
    _write(lab, vm["id"], data)
    bid = _backup(orch, vm["id"])
    base = _files(orch, bid)
    root = _get(orch, base, path="/")["items"]
    names = {e["path"]: e for e in root}
    if "/" in fs:  # a logical volume sits in its volume group's folder
        assert names["/vg0"]["type"] == "volume_group"
        root = _get(orch, base, path="/vg0")["items"]
        names = {e["path"]: e for e in root}
    assert names["/" + fs]["fstype"] == fstype
    assert _raw(orch, base + "/content", {"path": f"/{fs}/etc/hostname"}) == (200, f"{name}\n".encode())
    assert _raw(orch, base + "/content", {"path": f"/{fs}{PATH}"}) == (200, data)
