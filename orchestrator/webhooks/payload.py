"""What a webhook receives: one JSON object per event.

    {"id": 1234,                          the event id: unique, increasing; dedupe on it
     "type": "job.succeeded",
     "time": "2026-01-01T12:00:00+00:00", when the event happened (not when it was sent)
     "job_id": "…" | null,                the job the event belongs to, when it does
     "data": {…}}                         the event's own fields (docs/api.md lists them)
"""
from __future__ import annotations

import json

from ..catalog import Event


def body(event: Event) -> bytes:
    doc = {"id": event.id, "type": event.type, "time": event.created_at.isoformat(),
           "job_id": str(event.job_id) if event.job_id else None, "data": event.payload or {}}
    return json.dumps(doc, separators=(",", ":"), default=str).encode()
