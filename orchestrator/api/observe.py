"""Request logging and metrics, and the /metrics route.

Every request gets a `request_id` (the caller's `X-Request-Id` when it is
sane, else a new one) bound into the structlog context, so every line a
request logs carries it — and the handlers bind `job_id` / `vm_id` the same
way. It is echoed in the `X-Request-Id` response header.
"""
from __future__ import annotations

import re
import time
import uuid

import structlog
from aiohttp import web

from ..keys import CATALOG, METRICS, STORE, TARGETS
from ..metrics import CONTENT_TYPE
from .auth import allow

log = structlog.get_logger("ovault.api")
routes = web.RouteTableDef()
REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


@web.middleware
async def observe_middleware(request: web.Request, handler):
    rid = request.headers.get("X-Request-Id", "")
    if not REQUEST_ID.match(rid):
        rid = uuid.uuid4().hex
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    t0 = time.monotonic()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        if not getattr(resp, "prepared", False):
            resp.headers["X-Request-Id"] = rid
        return resp
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        dt = time.monotonic() - t0
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        m = request.app.get(METRICS)
        if m is not None:
            m.http_requests.labels(request.method, route, str(status)).inc()
            m.http_seconds.labels(request.method, route).observe(dt)
        if route not in ("/healthz", "/readyz", "/metrics"):
            log.info("request", method=request.method, path=request.path, status=status,
                     seconds=round(dt, 4))


@routes.get("/metrics")
@allow("viewer")
async def metrics(request: web.Request):
    m = request.app[METRICS]
    targets = request.app.get(TARGETS)
    await m.refresh(request.app[CATALOG], request.app.get(STORE),
                    targets.all_in_use if targets is not None else None)
    return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE})
