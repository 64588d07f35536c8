"""File-level restore through the API against three real backups of one disk
holding ext4, XFS and an LVM volume: list, download byte-identical, archive,
search across the backups, refusals, per-user bound and idle close.

One test drives most of it: each appliance start costs 10-40 s under TCG."""
from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tarfile
import time

import pytest

from orchestrator.api.sso import SsoUser
from tests import files_disks

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def base(fx, i: int) -> str:
    return f"/api/v1/backups/{fx.backups[i]}/disks/{fx.disk_id}/files"


async def raw(fx, method: str, path: str, token=None, **kw):
    headers = {"Authorization": f"Bearer {token or fx.api.admin}"}
    async with fx.api.client.request(method, path, headers=headers, **kw) as r:
        return r.status, r.headers, await r.read()


async def sso_user(fx, name: str, vm_ids: set) -> str:
    """An engine (SSO) user shown ``vm_ids``, without the engine permit to read disks' data."""
    fx.api.sso.users[name] = SsoUser(name=f"{name}@internal", principal_id=name, admin=False,
                                     vm_ids=frozenset(vm_ids), engine_user_id=name)
    return name


async def test_browse_download_archive_search(files_app):
    fx, api = files_app, files_app.api
    v3 = files_disks.files(3)

    # the root lists the file systems found on the disk: two partitions and a volume group
    st, _, doc = await api.call("GET", base(fx, 2) + "?path=/")
    assert st == 200, doc
    assert [(e["name"], e["type"], e.get("fstype")) for e in doc["items"]] == [
        ("sda1", "filesystem", "ext4"), ("sda2", "filesystem", "xfs"), ("vg0", "volume_group", None)]
    st, _, doc = await api.call("GET", base(fx, 2) + "?path=/vg0")
    assert [(e["name"], e["type"], e["path"]) for e in doc["items"]] == [("root", "filesystem", "/vg0/root")]

    # a folder: names, types, sizes, modes, mtimes; the link is listed with its target
    st, _, doc = await api.call("GET", base(fx, 2) + "?path=/sda1/etc")
    by = {e["name"]: e for e in doc["items"]}
    assert by["app.conf"]["type"] == "file" and by["app.conf"]["size"] == len(v3["/sda1/etc/app.conf"])
    assert by["app.conf"]["mtime"] == "2023-11-17T22:13:23Z"  # files_disks.mtime(3)
    assert by["evil"]["type"] == "symlink" and by["evil"]["target"] == "/"
    assert by["hostname"]["mode"] == "0644"

    # every file of every file system comes back byte-identical
    for path, data in v3.items():
        st, h, body = await raw(fx, "GET", base(fx, 2) + "/content", params={"path": path})
        assert st == 200, (path, body[:300])
        assert body == data, path
        assert int(h["Content-Length"]) == len(data)
        assert h["Content-Type"] == "application/octet-stream"
    # the oldest backup holds the oldest version
    st, _, body = await raw(fx, "GET", base(fx, 0) + "/content", params={"path": "/sda1/etc/app.conf"})
    assert st == 200 and body == files_disks.app_conf(1)

    # a folder and a file as one tar.gz, streamed
    st, h, body = await raw(fx, "POST", base(fx, 2) + "/archive",
                            json={"paths": ["/sda1/docs", "/sda2/srv/big.bin", "/sda1/etc"]})
    assert st == 200, body[:300]
    assert h["Content-Type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("sda1/docs/sub/b.txt").read() == b"beta\n"
        assert tar.extractfile("sda2/srv/big.bin").read() == v3["/sda2/srv/big.bin"]
        assert tar.extractfile("sda1/etc/app.conf").read() == v3["/sda1/etc/app.conf"]
    assert members["sda1/docs/sub"].isdir() and members["sda1/etc/evil"].issym()
    assert members["sda1/etc/evil"].linkname == "/"
    assert {"sda1/docs", "sda1/docs/a.txt"} <= set(members)

    # hostile paths: traversal, links, not-a-file, missing, unknown file system
    for path, status in (("/sda1/../../etc/passwd", 422), ("sda1/etc", 422), ("/sda1/etc/evil/etc", 422),
                         ("/sda1/etc/evil", 422), ("/sda1/etc", 422), ("/sda1/nope", 404),
                         ("/sdz9/etc", 404), ("/sda1/etc/\x00x", 422)):
        st, ct, doc = await api.call("GET", base(fx, 2) + "/content", params={"path": path})
        assert (st, ct) == (status, "application/problem+json"), (path, st, doc)
    st, ct, doc = await api.call("GET", base(fx, 2), params={"path": "/sda1/etc/evil"})
    assert st == 422 and "symbolic link" in doc["detail"]
    st, _, doc = await api.call("POST", base(fx, 2) + "/archive", json={"paths": ["/sda1/etc/evil"]})
    assert st == 422
    st, _, doc = await api.call("POST", base(fx, 2) + "/archive", json={"paths": []})
    assert st == 422

    # idle sessions are closed: export, worker and the socket's private folder go away
    mgr = fx.service.sessions
    opened = list(mgr.sessions.values())
    assert opened
    for s in opened:
        s.last_used -= fx.cfg.files.idle_seconds + 1
    assert await mgr.reap() == len(opened)
    assert mgr.sessions == {}
    assert not any(os.path.exists(s.tmpdir) for s in opened)
    assert all(s.worker is None for s in opened)

    # search (no session open: each disk's indexing starts an appliance): the first answers at
    # once from the indexes there are (none yet) and names the backup disks not indexed; two
    # searches at once start one indexing per disk
    search = f"/api/v1/vms/{fx.vm_id}/files"
    t0 = time.monotonic()
    (st, _, doc), (st2, _, doc2) = await asyncio.gather(
        api.call("GET", search, params={"name": "app.conf"}), api.call("GET", search, params={"name": "*.conf"}))
    assert time.monotonic() - t0 < 10, "search waited for an appliance"
    assert (st, st2) == (200, 200), (doc, doc2)
    keys = sorted((str(b), fx.disk_id) for b in fx.backups)
    for d in (doc, doc2):
        assert d["items"] == [] and d["complete"] is False and d["backups_searched"] == 3
        assert sorted((x["backup_id"], x["disk_id"]) for x in d["not_indexed"]) == keys
        assert {x["state"] for x in d["not_indexed"]} <= {"queued", "indexing"}
        assert d["indexing"]["state"] == "running" and d["indexing"]["total"] == 3
        assert d["indexing"]["url"] == f"{search}/indexing"
    indexer = fx.service.indexer
    assert sorted(indexer.started) == keys and set(indexer.started.values()) == {1}
    # the progress is the VM's: a user who cannot read its backups neither sees nor stops it
    for who, status in ((await api.token("viewer"), 403), (await sso_user(fx, "nosee", set()), 404),
                        (await sso_user(fx, "nopermit", {fx.vm_id}), 403)):
        for method in ("GET", "DELETE"):
            assert (await api.call(method, f"{search}/indexing", who))[0] == status, (who, method)
    # follow it: done counts up to 3; indexing holds at most files.per_user (2) appliances at once
    while True:
        st, _, prog = await api.call("GET", f"{search}/indexing")
        assert st == 200 and prog["total"] == 3 and prog["failed"] == [], prog
        assert sum(1 for x in prog["pending"] if x["state"] == "indexing") <= fx.cfg.files.per_user
        if prog["state"] == "done":
            break
        await asyncio.sleep(0.5)
    assert prog["done"] == 3 and prog["pending"] == [] and prog["finished_at"]
    assert set(indexer.started.values()) == {1}
    # the sessions opened only to index were closed
    assert fx.service.sessions.sessions == {}

    # the changed file in each of the three backups, newest first, with its size and mtime
    st, _, doc = await api.call("GET", search, params={"name": "app.conf"})
    assert st == 200, doc
    assert doc["backups_searched"] == 3 and not doc["truncated"]
    assert doc["complete"] is True and doc["not_indexed"] == [] and doc["indexing"] is None
    [item] = doc["items"]
    assert item["path"] == "/sda1/etc/app.conf" and item["disk_id"] == fx.disk_id
    assert [(x["backup_id"], x["size"], x["mtime"][:10]) for x in item["versions"]] == [
        (str(fx.backups[i]), len(files_disks.app_conf(i + 1)), d)
        for i, d in ((2, "2023-11-17"), (1, "2023-11-16"), (0, "2023-11-15"))]
    st, _, doc = await api.call("GET", f"/api/v1/vms/{fx.vm_id}/files", params={"name": "hostname"})
    assert sorted(i["path"] for i in doc["items"]) == ["/sda1/etc/hostname", "/vg0/root/etc/hostname"]
    st, _, doc = await api.call("GET", f"/api/v1/vms/{fx.vm_id}/files", params={"name": "/sda2/srv/*"})
    assert sorted(i["path"] for i in doc["items"]) == ["/sda2/srv/big.bin", "/sda2/srv/report.txt"]
    # indexes are kept per backup disk: a second search opens no session
    assert len(os.listdir(os.path.join(fx.cfg.files.cache_dir, "index"))) == 3
    assert mgr.sessions == {} and set(fx.service.indexer.started.values()) == {1}
    st, _, doc = await api.call("GET", f"/api/v1/vms/{fx.vm_id}/files", params={"name": "*"})
    assert st == 422

    # bounded per user (files.per_user = 2): with both sessions busy a third is 429;
    # once they are idle, the least recently used one makes room
    for i in (0, 1):
        assert (await api.call("GET", base(fx, i) + "?path=/"))[0] == 200
    key = lambda i: (str(fx.backups[i]), fx.disk_id)  # noqa: E731
    assert set(mgr.sessions) == {key(0), key(1)}
    async with contextlib.AsyncExitStack() as busy:
        for s in list(mgr.sessions.values()):
            await busy.enter_async_context(s.hold())
        st, ct, doc = await api.call("GET", base(fx, 2) + "?path=/")
        assert (st, ct, doc["code"]) == (429, "application/problem+json", "file_sessions_exceeded")
    st, _, _ = await api.call("GET", base(fx, 2) + "?path=/sda2/srv")
    assert st == 200
    assert len(mgr.sessions) == 2 and key(2) in mgr.sessions


async def test_access_and_state_refusals(files_app):
    fx, api = files_app, files_app.api
    viewer = await api.token("viewer")
    st, _, doc = await api.call("GET", base(fx, 0), viewer, params={"path": "/"})
    assert st == 403
    search = f"/api/v1/vms/{fx.vm_id}/files"
    st, _, doc = await api.call("GET", search, viewer, params={"name": "x"})
    assert st == 403
    # a user who cannot read the VM's backups starts no indexing and sees no progress
    for who, status in ((viewer, 403), (await sso_user(fx, "nosee", set()), 404),
                        (await sso_user(fx, "nopermit", {fx.vm_id}), 403)):
        assert (await api.call("GET", search, who, params={"name": "hostname"}))[0] == status, who
        assert (await api.call("GET", search + "/indexing", who))[0] == status, who
    assert fx.service.indexer.started == {} and fx.service.indexing(fx.vm_id) is None
    st, _, doc = await api.call("GET", search + "/indexing")
    assert (st, doc["state"], doc["total"]) == (200, "idle", 0)
    other = "/api/v1/backups/%s/disks/%s/files" % (fx.backups[0], "00000000-0000-0000-0000-000000000000")
    st, _, doc = await api.call("GET", other, params={"path": "/"})
    assert st == 404 and "disk" in doc["detail"]
    await api.catalog.db.execute("UPDATE backups SET status = 'failed' WHERE id = $1", fx.backups[1])
    st, _, doc = await api.call("GET", base(fx, 1), params={"path": "/"})
    assert st == 409
    # nothing was opened for refused requests
    assert fx.service.sessions.sessions == {}
