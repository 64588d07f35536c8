"""A webhook receiver that is down for a while — across an orchestrator
restart — gets every event once it is back, in order per job, once each."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from tests.e2e.api_harness import ApiServer, cleanup, state_root
from tests.e2e.test_api_flow import Receiver

pytestmark = pytest.mark.e2e
SECRET = "down-secret-0123456789"


def fast_retries(cfg):
    cfg.webhooks.base_delay = 0.2
    cfg.webhooks.max_delay = 1.0
    cfg.webhooks.max_attempts = 1000
    cfg.webhooks.poll_interval = 0.2
    cfg.webhooks.allow_networks = ["127.0.0.0/8"]  # the receiver is on loopback: allowed explicitly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_receiver_down_across_a_restart_gets_everything_in_order(sandbox):
    d = state_root()
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    api = ApiServer(sandbox.dir, d, configure=fast_retries).start()
    try:
        hook = api.ok("POST", "/api/v1/webhooks", {"url": url, "secret": SECRET,
                                                   "events": ["job.*", "backup.*"]}, expect=201)
        vms = [sandbox.vm("legacy-erp")["id"], sandbox.vm("db-primary")["id"]]
        job = api.ok("POST", "/api/v1/backups", {"vm_ids": vms}, expect=202)["job"]
        deadline = time.monotonic() + 120
        while api.ok("GET", f"/api/v1/jobs/{job['id']}")["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
        pending = api.ok("GET", f"/api/v1/webhooks/{hook['id']}/deliveries?status=pending&limit=500")["items"]
        assert pending and any(p["attempts"] >= 2 for p in pending)
        assert all("Connect" in (p["last_error"] or "") or p["attempts"] == 0 or p["last_error"] is None
                   for p in pending)
        # In order per job: only the head of the job's queue was ever tried.
        tried = [p for p in pending if p["attempts"] > 0]
        assert len({p["event_id"] for p in tried}) <= 2  # the job's head (+ one job-less event at most)
        expected = [e.id for e in api.run(api.catalog.events.list_after(0, limit=500))
                    if e.type.split(".")[0] in ("job", "backup")]
    finally:
        api.stop()

    # A new orchestrator on the same database; the receiver comes back.
    api = ApiServer(sandbox.dir, d, configure=fast_retries).start()
    rx = await Receiver().start(port)
    try:
        deadline = time.monotonic() + 60
        while {json.loads(raw)["id"] for _, raw in rx.got} < set(expected):
            assert time.monotonic() < deadline, "not every event arrived"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # anything extra would show up now
        events = rx.events(SECRET)
        ids = [e["id"] for e in events]
        assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids)), "duplicates or extras"
        per_job = [e["id"] for e in events if e["job_id"] == job["id"]]
        assert per_job == sorted(per_job)
        assert [e["type"] for e in events if e["job_id"] == job["id"]][-1] == "job.succeeded"
        assert sum(e["type"] == "backup.created" for e in events) == 2

        # "Send test event" reaches this webhook alone.
        queued = api.ok("POST", f"/api/v1/webhooks/{hook['id']}/test", expect=202)
        deadline = time.monotonic() + 30
        while not any(json.loads(raw)["id"] == queued["event_id"] for _, raw in rx.got):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        test = [e for e in rx.events(SECRET) if e["type"] == "webhook.test"]
        assert len(test) == 1 and test[0]["data"]["webhook_id"] == hook["id"]
        log = api.ok("GET", f"/api/v1/webhooks/{hook['id']}/deliveries?limit=500")["items"]
        assert {x["status"] for x in log} == {"delivered"} and max(x["attempts"] for x in log) >= 2
        retried = max(log, key=lambda x: x["attempts"])
        tries = api.ok("GET", f"/api/v1/webhooks/{hook['id']}/deliveries/{retried['id']}/attempts")["items"]
        assert [t["attempt"] for t in tries] == list(range(1, retried["attempts"] + 1))
        assert [t["outcome"] for t in tries] == ["retry"] * (len(tries) - 1) + ["delivered"]
        assert tries[0]["error"] and 200 <= tries[-1]["status_code"] < 300
        text = api.call("GET", "/metrics")[1]
        assert 'ovault_webhook_delivery_attempts_total{outcome="delivered"}' in text
    finally:
        await rx.stop()
        api.stop()
        cleanup(d)
