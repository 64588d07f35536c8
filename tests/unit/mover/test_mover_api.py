"""The mover HTTP API with the copy itself replaced by a controllable fake."""
from __future__ import annotations

import asyncio
import errno
import json
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer

from imageio_ext.copy import CopyResult, ImageioUnavailable, Progress
from imageio_ext.errors import TargetFull
from imageio_ext.mover import ConfigError, MoverConfig, create_app
from imageio_ext.mover import jobs as jobs_mod

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def spec(**kw):
    d = dict(op="backup", transfer_url="https://h:54322/images/abc", store="/tmp/x", vm_id=str(uuid.uuid4()),
             backup_id=str(uuid.uuid4()), disk_id=str(uuid.uuid4()), size=8 << 20)
    d.update(kw)
    return d


class FakeCopies:
    """Stands in for run_copy: progresses in steps the test releases."""

    def __init__(self):
        self.gate = asyncio.Event()
        self.fail: Exception | None = None
        self.calls = 0

    async def __call__(self, s, *, store, local_socket, requests, progress, clock, imageio_ca, local_only,
                       control_socket=None):
        self.calls += 1
        self.imageio = (imageio_ca, local_only)
        self.control_socket = control_socket
        progress(Progress(1 << 20, s.size, 1 << 20, 100, 1e6, 0.1))
        await self.gate.wait()
        if self.fail:
            raise self.fail
        progress(Progress(s.size, s.size, s.size, 200, 1e6, 0.2))
        return CopyResult(op=s.op, vm_id=s.vm_id, backup_id=s.backup_id, disk_id=s.disk_id, size=s.size,
                          bytes_read=s.size, bytes_written=200, new_chunks=2, index_sha256="ab" * 32)


@pytest.fixture
async def client(monkeypatch):
    fake = FakeCopies()
    monkeypatch.setattr(jobs_mod, "run_copy", fake)

    async def no_store(self, url):
        return None
    monkeypatch.setattr(jobs_mod.JobManager, "store", no_store)
    cfg = MoverConfig.load(env={}, overrides={"token": TOKEN, "max_copies": 1, "events_interval": 0.05,
                                              "allowed_stores": "/tmp/x", "imageio_url": "https://h:54322",
                                              "imageio_ca": "/etc/pki/ovirt-engine/ca.pem"})
    async with TestClient(TestServer(create_app(cfg))) as c:
        c.fake = fake
        yield c


async def test_token_is_required_except_for_health(client):
    assert (await client.get("/v1/health")).status == 200
    for h in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        r = await client.get("/v1/copies", headers=h)
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await r.json())["type"] == "urn:ovault:mover:unauthorized"


@pytest.mark.parametrize("bad", [
    {"op": "copy"}, {"vm_id": "../../etc"}, {"size": -1}, {"incremental": True}, {"unknown": 1},
    {"op": "restore", "parent_backup_id": str(uuid.uuid4())},
])
async def test_invalid_requests_are_problems(client, bad):
    r = await client.post("/v1/copies", json=spec(**bad), headers=AUTH)
    assert r.status == 400
    assert r.content_type == "application/problem+json"
    assert (await r.json())["type"] == "urn:ovault:mover:invalid_request"


async def test_copy_lifecycle_events_and_idempotent_create(client):
    body = spec(id=str(uuid.uuid4()))
    r = await client.post("/v1/copies", json=body, headers=AUTH)
    assert r.status == 202
    job = await r.json()
    assert job["id"] == body["id"] and job["state"] in ("queued", "running")
    # same id, same request: the same job, not a second copy
    r = await client.post("/v1/copies", json=body, headers=AUTH)
    assert r.status == 200 and (await r.json())["id"] == job["id"]
    # same id, other request: conflict
    r = await client.post("/v1/copies", json={**body, "size": 4 << 20}, headers=AUTH)
    assert r.status == 409
    assert await r.json() == {"type": "urn:ovault:mover:conflict", "title": "Conflict", "status": 409,
                              "detail": f"copy {job['id']} exists with a different request"}
    # a second copy waits for the single slot
    r2 = await (await client.post("/v1/copies", json=spec(), headers=AUTH)).json()
    assert r2["state"] == "queued"
    ev = await client.get(f"/v1/copies/{job['id']}/events", headers=AUTH)
    assert ev.content_type == "application/x-ndjson"
    first = json.loads(await ev.content.readline())
    assert first["state"] == "running" and first["bytes_done"] == 1 << 20
    client.fake.gate.set()
    lines = [json.loads(x) for x in (await ev.read()).splitlines()]
    assert lines[-1]["state"] == "succeeded"
    assert lines[-1]["result"]["new_chunks"] == 2 and lines[-1]["bytes_done"] == 8 << 20
    assert client.fake.calls >= 1
    got = await (await client.get(f"/v1/copies/{job['id']}", headers=AUTH)).json()
    assert got["state"] == "succeeded" and "transfer_url" not in got


async def test_cancel_and_failure_are_reported(client):
    job = await (await client.post("/v1/copies", json=spec(), headers=AUTH)).json()
    async with asyncio.timeout(5):  # the copy is running (held at the fake's gate) before it is canceled
        while client.fake.calls < 1:
            await asyncio.sleep(0.001)
    r = await client.delete(f"/v1/copies/{job['id']}", headers=AUTH)
    assert r.status == 200
    got = await r.json()
    assert got["state"] == "canceled" and got["error"]["code"] == "canceled"
    client.fake.fail = ImageioUnavailable("unix:/run/sock", "connection refused")
    client.fake.gate.set()
    job = await (await client.post("/v1/copies", json=spec(), headers=AUTH)).json()
    for _ in range(100):
        got = await (await client.get(f"/v1/copies/{job['id']}", headers=AUTH)).json()
        if got["state"] == "failed":
            break
        await asyncio.sleep(0.01)
    assert got["error"] == {"code": "imageio_unavailable",
                            "message": "ovirt-imageio at unix:/run/sock is unavailable: connection refused"}
    assert (await client.get(f"/v1/copies/{uuid.uuid4()}", headers=AUTH)).status == 404


def test_config_fails_fast(tmp_path):
    with pytest.raises(ConfigError, match="token"):
        MoverConfig.load(env={})
    ok = {"token": TOKEN, "allowed_stores": "/srv/b"}
    with pytest.raises(ConfigError, match="allowed_stores is required"):
        MoverConfig.load(env={}, overrides={"token": TOKEN})
    for host in ("0.0.0.0", "192.0.2.7", "::", "mover.example.com"):
        with pytest.raises(ConfigError, match="not a loopback address: set tls_cert"):
            MoverConfig.load(env={}, overrides={**ok, "host": host})
    for host in ("127.0.0.1", "::1", "localhost"):
        assert MoverConfig.load(env={}, overrides={**ok, "host": host}).host == host
    with pytest.raises(ConfigError, match="client_ca"):
        MoverConfig.load(env={}, overrides={**ok, "client_ca": "/etc/ca.pem"})
    with pytest.raises(ConfigError, match="imageio_url"):
        MoverConfig.load(env={}, overrides={**ok, "imageio_url": "https://h:54322/images/x"})
    with pytest.raises(ConfigError, match="unknown"):
        MoverConfig.load(env={"OVAULT_MOVER_TOKNE": "x"})
    f = tmp_path / "m.toml"
    f.write_text('[mover]\nport = 1234\ntoken = "%s"\nbogus = 1\n' % TOKEN)
    with pytest.raises(ConfigError, match="bogus"):
        MoverConfig.load(str(f), env={})
    f.write_text('[mover]\nport = 1234\ntoken = "%s"\nallowed_stores = "/srv/b"\n' % TOKEN)
    cfg = MoverConfig.load(str(f), env={"OVAULT_MOVER_MAX_COPIES": "7"})
    assert (cfg.port, cfg.max_copies) == (1234, 7)
    assert cfg.masked()["token"] == "********"


async def test_only_allowed_stores_are_accepted(monkeypatch):
    fake = FakeCopies()
    monkeypatch.setattr(jobs_mod, "run_copy", fake)

    async def no_store(self, url):
        return None
    monkeypatch.setattr(jobs_mod.JobManager, "store", no_store)
    cfg = MoverConfig.load(env={}, overrides={"token": TOKEN, "allowed_stores": "nfs://nas/export,/srv/b",
                                              "imageio_url": "https://h:54322"})
    async with TestClient(TestServer(create_app(cfg))) as c:
        for store in ("nfs://nas/exported", "/srv", "/srv/b/../etc", "nfs://other/export"):
            r = await c.post("/v1/copies", json=spec(store=store), headers=AUTH)
            assert r.status == 403, store
            assert "allowed_stores" in (await r.json())["detail"]
        for store in ("nfs://nas/export", "nfs://nas/export/sub", "/srv/b/x"):
            r = await c.post("/v1/copies", json=spec(store=store), headers=AUTH)
            assert r.status == 202, (store, await r.text())
        fake.gate.set()
    assert fake.calls >= 1


async def test_failures_name_their_cause(client):
    client.fake.gate.set()
    for fail, want in [
        (OSError(errno.EIO, "Input/output error"),
         {"code": "internal_error", "message": "Internal error ([Errno 5] Input/output error); see the mover log"}),
        (RuntimeError("a bug with a secret inside"),
         {"code": "internal_error", "message": "Internal error (RuntimeError); see the mover log"}),
        (TargetFull("nfs://h/t", "[Errno 28] No space left on device"),
         {"code": "target_full", "message": "Backup target nfs://h/t is full: [Errno 28] No space left on device"}),
    ]:
        client.fake.fail = fail
        job = await (await client.post("/v1/copies", json=spec(), headers=AUTH)).json()
        for _ in range(200):
            got = await (await client.get(f"/v1/copies/{job['id']}", headers=AUTH)).json()
            if got["state"] == "failed":
                break
            await asyncio.sleep(0.01)
        assert got["error"] == want


@pytest.mark.parametrize("present", [True, False])
async def test_health_says_whether_copies_can_go_beside_imageio(tmp_path, present):
    ctl = tmp_path / "control.sock"
    if present:
        ctl.write_text("")  # only its presence is reported
    cfg = MoverConfig.load(env={}, overrides={"token": TOKEN, "allowed_stores": "/tmp/x",
                                              "imageio_control_socket": str(ctl)})
    async with TestClient(TestServer(create_app(cfg))) as c:
        body = await (await c.get("/v1/health")).json()
    assert body["imageio_control_socket"] is present
