"""/api/v1/webhooks: subscriptions, their delivery log, test events (admin).

`events: []` subscribes to every event type; otherwise exact types
(`job.succeeded`) or families (`job.*`). The secret is write-only. Only
http and https URLs without credentials are accepted, and not to loopback,
link-local, private or unique-local addresses unless `webhooks.allow_networks`
lists them (`webhooks/guard.py`; names are checked after resolution at each
delivery).
"""
from __future__ import annotations

import secrets as pysecrets
from urllib.parse import urlsplit

from aiohttp import web

from ..errors import Conflict, NotFound
from ..keys import CATALOG, CONFIG
from ..webhooks import guard
from . import validate as v
from . import views_admin as views
from .views import json_response
from .auth import PRINCIPAL, allow

routes = web.RouteTableDef()
EVENT_TYPE = r"^(\*|[a-z_]+\.(\*|[a-z_]+))$"


def _url(raw, request: web.Request) -> str:
    u = v.opt_str(raw, "url", 2000)
    if u is None:
        raise v.Invalid("url is required")
    try:
        parts = urlsplit(u)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise v.Invalid("url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password \
            or any(c.isspace() for c in u):
        raise v.Invalid("url must be an http:// or https:// URL without credentials")
    try:
        guard.check_host(parts.hostname, guard.parse_networks(request.app[CONFIG].webhooks.allow_networks))
    except guard.BlockedDestination as e:
        raise v.Invalid(f"url: {e}") from None
    return u


def _events(raw) -> list[str]:
    if raw is None:
        return ["*"]
    ev = v.str_list(raw, "events", max_items=50, max_len=100, pattern=EVENT_TYPE)
    return ["*"] if not ev or "*" in ev else sorted(set(ev))


def _secret(raw) -> str:
    s = v.opt_str(raw, "secret", 200)
    if s is None or len(s) < 16:
        raise v.Invalid("secret must be at least 16 characters (it keys the HMAC signatures)")
    return s


@routes.get("/api/v1/webhooks")
@allow("admin")
async def list_webhooks(request: web.Request):
    ws = await request.app[CATALOG].webhooks.list()
    return json_response({"items": [views.webhook(w) for w in ws], "next_cursor": None})


@routes.post("/api/v1/webhooks")
@allow("admin")
async def create_webhook(request: web.Request):
    body = await v.json_body(request)
    v.no_unknown(body, {"url", "secret", "events", "enabled"})
    generated = body.get("secret") is None
    secret = pysecrets.token_urlsafe(32) if generated else _secret(body.get("secret"))
    w = await request.app[CATALOG].webhooks.create(_url(body.get("url"), request), secret, _events(body.get("events")),
                                                   enabled=v.opt_bool(body.get("enabled"), "enabled", True))
    out = views.webhook(w)
    if generated:
        out["secret"] = secret  # shown once: the caller did not choose it
    return json_response(out, status=201)


@routes.get("/api/v1/webhooks/{id}")
@allow("admin")
async def get_webhook(request: web.Request):
    w = await request.app[CATALOG].webhooks.get(v.path_uuid(request, "id"))
    return json_response(views.webhook(w))


@routes.patch("/api/v1/webhooks/{id}")
@allow("admin")
async def update_webhook(request: web.Request):
    wid = v.path_uuid(request, "id")
    body = await v.json_body(request)
    v.no_unknown(body, {"url", "secret", "events", "enabled"})
    w = await request.app[CATALOG].webhooks.update(
        wid, url=_url(body["url"], request) if "url" in body else None,
        secret=_secret(body["secret"]) if "secret" in body else None,
        events=_events(body["events"]) if "events" in body else None,
        enabled=v.opt_bool(body["enabled"], "enabled") if "enabled" in body else None)
    return json_response(views.webhook(w))


@routes.delete("/api/v1/webhooks/{id}")
@allow("admin")
async def delete_webhook(request: web.Request):
    await request.app[CATALOG].webhooks.delete(v.path_uuid(request, "id"))
    return web.Response(status=204)


@routes.get("/api/v1/webhooks/{id}/deliveries")
@allow("admin")
async def list_deliveries(request: web.Request):
    """Newest first; `cursor` is the last delivery id of the previous page."""
    wid = v.path_uuid(request, "id")
    await request.app[CATALOG].webhooks.get(wid)
    q = request.query
    status = v.enum(q.get("status"), "status", ("pending", "delivered", "failed"))
    before = v.opt_int(q.get("cursor"), "cursor", 1, 2**62)
    limit = v.limit(request)
    rows = await request.app[CATALOG].webhooks.list_deliveries_page(wid, limit=limit + 1, before=before,
                                                                 status=status)
    nxt = str(rows[limit - 1][0].id) if len(rows) > limit else None
    return json_response({"items": [views.delivery(d, t) for d, t in rows[:limit]], "next_cursor": nxt})


@routes.get("/api/v1/webhooks/{id}/deliveries/{delivery_id}/attempts")
@allow("admin")
async def list_attempts(request: web.Request):
    """Every attempt of one delivery, oldest first (status code, error, outcome)."""
    wid = v.path_uuid(request, "id")
    did = v.opt_int(request.match_info["delivery_id"], "delivery_id", 1, 2**62)
    await request.app[CATALOG].webhooks.get(wid)
    d = await request.app[CATALOG].webhooks.get_delivery(did)
    if d.webhook_id != wid:
        raise NotFound("webhook delivery", did)
    rows = await request.app[CATALOG].webhooks.list_attempts(did)
    return json_response({"items": [{**r, "attempted_at": r["attempted_at"].isoformat()} for r in rows],
                              "next_cursor": None})


@routes.post("/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry")
@allow("admin")
async def retry_delivery(request: web.Request):
    wid = v.path_uuid(request, "id")
    did = v.opt_int(request.match_info["delivery_id"], "delivery_id", 1, 2**62)
    await request.app[CATALOG].webhooks.get(wid)
    d = await request.app[CATALOG].webhooks.redeliver(wid, did)
    if d is None:
        raise Conflict(f"delivery {did} of webhook {wid} does not exist or has not failed")
    return json_response(views.delivery(d), status=202)


@routes.post("/api/v1/webhooks/{id}/test")
@allow("admin")
async def test_webhook(request: web.Request):
    """Queue a `webhook.test` event for this webhook only (whatever its event filter)."""
    wid = v.path_uuid(request, "id")
    w = await request.app[CATALOG].webhooks.get(wid)
    if not w.enabled:
        raise Conflict(f"webhook {wid} is disabled")
    event_id, delivery_id = await request.app[CATALOG].webhooks.enqueue_test(
        wid, {"webhook_id": str(wid), "requested_by": request[PRINCIPAL].name})
    return json_response({"event_id": event_id, "delivery_id": delivery_id}, status=202)


