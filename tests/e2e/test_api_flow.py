"""A backup and a restore driven over HTTP, watched over the websocket and by a
webhook receiver, against the sandbox; and the websocket across two replicas."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from orchestrator.webhooks import signing
from tests.e2e.api_harness import ApiServer, cleanup, state_root

pytestmark = pytest.mark.e2e
SECRET = "flow-secret-0123456789"
BACKUP_STATES = ["snapshot", "metadata", "transfer", "finalize", "succeeded"]


@pytest.fixture(scope="module")
def api(sandbox):
    d = state_root()
    def local_receiver(cfg):
        cfg.webhooks.allow_networks = ["127.0.0.0/8"]  # the test's receiver is on loopback: allowed explicitly
    s = ApiServer(sandbox.dir, d / "a", configure=local_receiver).start()
    yield s
    s.stop()
    cleanup(d)


class Receiver:
    """A webhook receiver: records every POST with its raw body and headers."""

    def __init__(self):
        self.got: list[tuple[dict, bytes]] = []
        self.runner = None
        self.url = None

    async def start(self, port: int = 0):
        async def hook(request):
            self.got.append((dict(request.headers), await request.read()))
            return web.Response(status=204)
        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def stop(self):
        await self.runner.cleanup()

    def events(self, secret: str) -> list[dict]:
        out = []
        for headers, raw in self.got:
            assert signing.verify(secret, headers["X-Ovault-Signature"], raw), headers
            doc = json.loads(raw)
            assert headers["X-Ovault-Event-Id"] == str(doc["id"]) and headers["X-Ovault-Event"] == doc["type"]
            out.append(doc)
        return out


async def ws_messages(ws, until, timeout=120):
    msgs = []
    deadline = time.monotonic() + timeout
    while True:
        m = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        assert m.type == aiohttp.WSMsgType.TEXT, m
        doc = json.loads(m.data)
        msgs.append(doc)
        if until(doc):
            return msgs


async def wait_for(pred, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while not (v := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return v


async def test_backup_watched_over_websocket_and_webhook_then_restore(api, sandbox, conn):
    vm = sandbox.vm("web-frontend")
    rx = await Receiver().start()
    hook = api.ok("POST", "/api/v1/webhooks", {"url": rx.url, "secret": SECRET, "events": []}, expect=201)
    assert "secret" not in hook and hook["events"] == []
    restored_id = None
    try:
        async with aiohttp.ClientSession() as http:
            # The browser way: no header, the token in the first message.
            async with http.ws_connect(api.url + "/api/v1/ws") as ws:
                await ws.send_json({"type": "auth", "token": api.token})
                ready = await ws.receive_json(timeout=10)
                assert ready == {"type": "ready", "principal": {"name": "bootstrap-admin", "role": "admin",
                                                                "kind": "token"}}
                await ws.send_json({"type": "subscribe", "jobs": "*"})
                assert (await ws.receive_json(timeout=10)) == {"type": "subscribed", "jobs": "*"}
                job = api.ok("POST", "/api/v1/backups", {"vm_ids": [vm["id"]], "mode": "full"}, expect=202)["job"]
                jid = job["id"]
                assert job["state"] == "queued" and job["machines"][0]["vm_id"] == vm["id"]
                msgs = await ws_messages(ws, lambda d: d["type"] == "job.updated" and d["job_id"] == jid
                                         and d["state"] in ("succeeded", "failed", "canceled"))
        mine = [m for m in msgs if m.get("job_id") == jid]
        jobs = [m["state"] for m in mine if m["type"] == "job.updated"]
        assert jobs == ["queued", "running", "succeeded"], mine
        states = [m["state"] for m in mine if m["type"] == "machine.updated"]
        assert states == BACKUP_STATES, states
        progress = [m for m in mine if m["type"] == "progress"]
        assert progress, "no progress messages"
        first_transfer = next(i for i, m in enumerate(mine) if m.get("state") == "transfer")
        finalize = next(i for i, m in enumerate(mine) if m.get("state") == "finalize")
        assert any(first_transfer < i <= finalize + 1 for i, m in enumerate(mine) if m["type"] == "progress")
        done = [p["bytes_done"] for p in progress]
        assert done == sorted(done) and progress[-1]["bytes_done"] == progress[-1]["bytes_total"] > 0
        assert progress[-1]["progress"] == 1.0 and progress[-1]["vm_id"] == vm["id"]
        assert any(p["rate_bps"] for p in progress) or len(progress) == 1
        for p in progress:
            assert set(p) >= {"job_id", "machine_id", "vm_id", "bytes_done", "bytes_total", "progress",
                              "rate_bps", "eta_seconds", "disks", "time"}
            for d in p["disks"].values():
                assert d["state"] in ("waiting", "copying", "done") and d["bytes_total"] > 0
        created = [m for m in mine if m["type"] == "event" and m["event"]["type"] == "backup.created"]
        assert len(created) == 1
        backup_id = created[0]["event"]["data"]["backup_id"]

        # The webhook receiver saw the same run, signed, in order.
        job_rest = api.ok("GET", f"/api/v1/jobs/{jid}")
        assert job_rest["state"] == "succeeded" and job_rest["machines"][0]["backup_id"] == backup_id
        await wait_for(lambda: any(json.loads(r)["type"] == "job.succeeded" for _, r in rx.got), 30,
                       "job.succeeded webhook")
        events = [e for e in rx.events(SECRET) if e["job_id"] == jid]
        ids = [e["id"] for e in events]
        assert ids == sorted(set(ids))
        types = [e["type"] for e in events]
        assert types[0] == "job.queued" and types[-1] == "job.succeeded" and "backup.created" in types
        assert [e["data"]["to"] for e in events if e["type"] == "backup.state"] == BACKUP_STATES
        ws_ids = [m["event_id"] for m in mine if m["type"] in ("job.updated", "machine.updated")
                  and m.get("event") != "job.running"]
        assert set(ws_ids) <= set(ids)
        deliveries = api.ok("GET", f"/api/v1/webhooks/{hook['id']}/deliveries?status=delivered&limit=500")
        assert {d["event_id"] for d in deliveries["items"]} >= set(ids)
        assert all(d["attempts"] == 1 and d["last_status_code"] == 204 for d in deliveries["items"])

        # The backup is listed, and a restore starts from the API.
        listed = api.ok("GET", f"/api/v1/backups?vm_id={vm['id']}")["items"]
        assert backup_id in [b["id"] for b in listed]
        name = f"restored-{jid[:8]}"
        rjob = api.ok("POST", f"/api/v1/backups/{backup_id}/restore", {"kind": "new", "name": name},
                      expect=202)["job"]
        assert rjob["kind"] == "restore" and rjob["request"]["backup_id"] == backup_id
        deadline = time.monotonic() + 120
        while (r := api.ok("GET", f"/api/v1/jobs/{rjob['id']}"))["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, r
            await asyncio.sleep(0.3)
        assert r["state"] == "succeeded", r
        restored = api.ok("GET", f"/api/v1/vms?search=name%3D{name}")["items"]
        assert [v["name"] for v in restored] == [name]
        restored_id = restored[0]["id"]
        await wait_for(lambda: any(json.loads(raw)["type"] == "restore.succeeded" for _, raw in rx.got), 30,
                       "restore.succeeded webhook")
    finally:
        await rx.stop()
        api.ok("DELETE", f"/api/v1/webhooks/{hook['id']}", expect=204)
        if restored_id:
            conn.system_service().vms_service().vm_service(restored_id).remove()


async def test_websocket_gets_events_and_progress_from_another_replica(api, sandbox):
    """Replica B runs no jobs (limits.total=0); its client sees replica A's job."""
    def api_only(cfg):
        cfg.limits.total = 0
        cfg.webhooks.enabled = False
    d = state_root()
    b = ApiServer(sandbox.dir, d, dsn=api.dsn, configure=api_only).start()
    try:
        vm = sandbox.vm("db-primary")
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(b.url + "/api/v1/ws",
                                       headers={"Authorization": f"Bearer {b.token}"}) as ws:
                assert (await ws.receive_json(timeout=10))["type"] == "ready"
                job = api.ok("POST", "/api/v1/backups", {"vm_ids": [vm["id"]]}, expect=202)["job"]
                await ws.send_json({"type": "subscribe", "jobs": [job["id"]]})
                msgs = await ws_messages(ws, lambda m: m["type"] == "job.updated" and m["state"] == "succeeded")
        assert msgs[0] == {"type": "subscribed", "jobs": [job["id"]]}
        snaps = [m for m in msgs if m["type"] == "job.snapshot"]
        assert len(snaps) == 1 and snaps[0]["job"]["id"] == job["id"]
        kinds = {m["type"] for m in msgs}
        assert {"machine.updated", "progress"} <= kinds
        assert all(m.get("job_id", job["id"]) == job["id"] for m in msgs[1:])
        assert [m["state"] for m in msgs if m["type"] == "machine.updated"][-1] == "succeeded"
    finally:
        b.stop()
        cleanup(d)
