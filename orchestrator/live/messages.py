"""Websocket messages: catalog events and progress samples → what clients get.

Server → client (every message has `type`):

- `ready`        after authentication: `principal {name, role, kind}`
- `subscribed`   `jobs` ("*" or the list), after each subscribe
- `job.snapshot` `job` (the REST job view) for each subscribed live job, so a
                 client never misses what happened before it subscribed
- `job.updated`  `job_id, kind, state, error, cancel_requested, event, event_id, time`
- `machine.updated` `job_id, machine_id, vm_id, kind, state, previous, error, event_id, time`
- `progress`     `job_id, machine_id, vm_id, bytes_done, bytes_total, progress,
                 rate_bps, eta_seconds, disks {disk_id: {bytes_done, bytes_total,
                 progress, rate_bps, state}}, time`
- `event`        any other catalog event: `event {id, type, job_id, data, time}`
- `error`        `detail` (a bad client message; the connection stays open)
"""
from __future__ import annotations

from ..catalog import Event

STATE_EVENTS = ("backup.state", "restore.state")
JOB_STATES = {"job.queued": "queued", "job.succeeded": "succeeded", "job.failed": "failed",
              "job.canceled": "canceled", "job.running": "running"}


def from_event(e: Event) -> dict:
    p = e.payload or {}
    jid = str(e.job_id) if e.job_id else p.get("job_id")
    base = {"event_id": e.id, "time": e.created_at.isoformat()}
    if e.type in STATE_EVENTS:
        return {"type": "machine.updated", "job_id": jid, "machine_id": p.get("machine_id"),
                "vm_id": p.get("vm_id"), "kind": e.type.split(".", 1)[0], "state": p.get("to"),
                "previous": p.get("from"), "error": p.get("error"), **base}
    if e.type in JOB_STATES or e.type == "job.cancel_requested":
        return {"type": "job.updated", "job_id": jid, "kind": p.get("kind"),
                "state": JOB_STATES.get(e.type), "error": p.get("error"),
                "cancel_requested": e.type == "job.cancel_requested", "event": e.type, **base}
    return {"type": "event", "job_id": jid,
            "event": {"id": e.id, "type": e.type, "job_id": jid, "data": p,
                      "time": e.created_at.isoformat()}}


def vm_of(msg: dict) -> str | None:
    """The VM a message is about, when the message itself says."""
    if msg["type"] in ("machine.updated", "progress"):
        return msg.get("vm_id")
    if msg["type"] == "event":
        return (msg["event"]["data"] or {}).get("vm_id")
    return None
