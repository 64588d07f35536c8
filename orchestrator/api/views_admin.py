"""JSON shapes of the admin resources: targets, webhooks, deliveries, tokens."""
from __future__ import annotations

from .views import iso


def target(t, *, active: bool, stats: dict | None) -> dict:
    return {"id": str(t.id), "name": t.name, "url": t.url, "options": t.options or {},
            "created_at": iso(t.created_at), "active": active,
            "usage": None if stats is None else {k: stats[k] for k in
                                                 ("stored_bytes", "logical_bytes", "chunks", "backups",
                                                  "dedup_ratio")}}


def webhook(w) -> dict:
    # The secret is write-only: it never comes back.
    return {"id": str(w.id), "url": w.url, "events": [] if list(w.events) == ["*"] else list(w.events),
            "enabled": w.enabled, "created_at": iso(w.created_at)}


def delivery(d, event_type: str | None = None) -> dict:
    return {"id": d.id, "webhook_id": str(d.webhook_id), "event_id": d.event_id, "event_type": event_type,
            "status": d.status, "attempts": d.attempt, "next_attempt_at": iso(d.next_attempt_at)
            if d.status == "pending" else None, "last_status_code": d.last_status_code,
            "last_error": d.last_error, "created_at": iso(d.created_at), "delivered_at": iso(d.delivered_at)}


def token(t) -> dict:
    return {"id": str(t.id), "name": t.name, "role": str(t.role), "created_at": iso(t.created_at),
            "expires_at": iso(t.expires_at), "last_used_at": iso(t.last_used_at), "revoked": t.revoked}
