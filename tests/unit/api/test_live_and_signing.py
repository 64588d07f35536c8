"""Pure parts of the service surface: signatures, progress rates, messages, slow clients."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

from orchestrator.api.auth import Principal
from orchestrator.catalog import Event
from orchestrator.live import Client, ProgressTracker
from orchestrator.live.messages import from_event
from orchestrator.webhooks import signing
from orchestrator.webhooks.payload import body


def test_signature_roundtrip_and_refusals():
    raw = b'{"id":1,"type":"job.succeeded"}'
    h = signing.sign("s3cret-s3cret-s3cret", raw, now=1_700_000_000)
    t, mac = h.split(",")
    assert t == "t=1700000000" and len(mac) == len("v1=") + 64
    assert signing.verify("s3cret-s3cret-s3cret", h, raw, now=1_700_000_010)
    assert not signing.verify("other-secret-value", h, raw, now=1_700_000_010)
    assert not signing.verify("s3cret-s3cret-s3cret", h, raw + b" ", now=1_700_000_010)
    assert not signing.verify("s3cret-s3cret-s3cret", h, raw, now=1_700_000_000 + 301)  # a replay
    assert not signing.verify("s3cret-s3cret-s3cret", "garbage", raw)


def test_signature_is_hmac_of_timestamp_dot_body():
    import hashlib
    import hmac
    raw = b"{}"
    want = hmac.new(b"k" * 16, b"42." + raw, hashlib.sha256).hexdigest()
    assert signing.signature("k" * 16, raw, 42) == f"t=42,v1={want}"


def test_webhook_body_carries_type_time_job_and_data():
    jid = uuid.uuid4()
    e = Event(id=7, type="job.succeeded", job_id=jid, payload={"job_id": str(jid), "state": "succeeded"},
              created_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    doc = json.loads(body(e))
    assert doc == {"id": 7, "type": "job.succeeded", "time": "2026-01-01T00:00:00+00:00",
                   "job_id": str(jid), "data": {"job_id": str(jid), "state": "succeeded"}}


def test_progress_rate_and_eta():
    t = ProgressTracker()
    m = {"job_id": "j", "machine_id": "m", "vm_id": "v", "bytes_total": 1000,
         "disks": {"d": {"done": 0, "total": 1000}}}
    first = t.message({**m, "bytes_done": 0, "t": 100.0})
    assert first["rate_bps"] is None and first["eta_seconds"] is None
    second = t.message({**m, "bytes_done": 200, "t": 101.0, "disks": {"d": {"done": 200, "total": 1000}}})
    assert second["rate_bps"] == 200 and second["eta_seconds"] == 4.0
    assert second["disks"]["d"] == {"bytes_done": 200, "bytes_total": 1000, "progress": 0.2, "rate_bps": 200,
                                    "eta_seconds": 4.0, "state": "copying"}
    third = t.message({**m, "bytes_done": 1000, "t": 102.0, "disks": {"d": {"done": 1000, "total": 1000}}})
    assert third["rate_bps"] == 500 and third["eta_seconds"] == 0.0 and third["disks"]["d"]["state"] == "done"


def test_the_rest_job_view_gets_the_same_rate_and_eta_as_the_websocket(monkeypatch):
    from orchestrator.live import progress
    t = ProgressTracker()
    m = {"job_id": "j", "machine_id": "m1", "vm_id": "v", "bytes_total": 1000}
    t.message({**m, "bytes_done": 0, "t": 100.0, "disks": {"d": {"done": 0, "total": 1000}}})
    ws = t.message({**m, "bytes_done": 200, "t": 101.0, "disks": {"d": {"done": 200, "total": 1000}}})
    job = {"machines": [
        {"id": "m1", "state": "transferring", "bytes_done": 200, "bytes_total": 1000,
         "disks": {"d": {"done": 200, "total": 1000}}},
        {"id": "m2", "state": "queued", "bytes_done": 0, "bytes_total": 0, "disks": {}},
        {"id": "m1", "state": "succeeded", "bytes_done": 1000, "bytes_total": 1000, "disks": {}}]}
    t.annotate(job)
    running, unheard, ended = job["machines"]
    assert (running["rate_bps"], running["eta_seconds"]) == (ws["rate_bps"], ws["eta_seconds"]) == (200, 4.0)
    assert (running["disks"]["d"]["rate_bps"], running["disks"]["d"]["eta_seconds"]) == (200, 4.0)
    assert (unheard["rate_bps"], unheard["eta_seconds"]) == (None, None)
    assert (ended["rate_bps"], ended["eta_seconds"]) == (None, 0.0)
    # a machine not heard from for a while has no current rate, not its last one
    monkeypatch.setattr(progress, "STALE_SECONDS", -1.0)
    job = {"machines": [{"id": "m1", "state": "transferring", "bytes_done": 200, "bytes_total": 1000}]}
    assert t.annotate(job)["machines"][0]["rate_bps"] is None


def test_state_events_become_machine_and_job_messages():
    now = dt.datetime.now(dt.timezone.utc)
    jid = uuid.uuid4()
    m = from_event(Event(1, "backup.state", jid, {"machine_id": "m", "vm_id": "v", "from": "queued",
                                                  "to": "snapshot", "error": None}, now))
    assert m["type"] == "machine.updated" and m["state"] == "snapshot" and m["previous"] == "queued"
    j = from_event(Event(2, "job.failed", jid, {"job_id": str(jid), "kind": "backup", "error": "x"}, now))
    assert (j["type"], j["state"], j["error"], j["job_id"]) == ("job.updated", "failed", "x", str(jid))
    other = from_event(Event(3, "backup.created", jid, {"backup_id": "b"}, now))
    assert other["type"] == "event" and other["event"]["data"] == {"backup_id": "b"}


async def test_a_full_queue_drops_progress_but_overflows_on_state():
    c = Client(Principal("u", "viewer"), queue_size=2)
    assert c.offer("a", droppable=False) and c.offer("b", droppable=True)
    assert not c.offer("c", droppable=True) and c.dropped == 1 and not c.overflowed.is_set()
    assert not c.offer("d", droppable=False) and c.overflowed.is_set()
    assert [c.queue.get_nowait(), c.queue.get_nowait()] == ["a", "b"]
    await asyncio.sleep(0)
