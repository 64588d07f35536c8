"""CORS for the Administration Portal's origin(s) (`api.cors_origins`).

Only listed origins get `Access-Control-Allow-Origin`, echoed exactly (never
`*`), with `Vary: Origin`. Credentials are bearer tokens in a header, not
cookies, so `Allow-Credentials` is not sent. Preflights (`OPTIONS` with
`Access-Control-Request-Method`) are answered here, before authentication,
as browsers send them without the Authorization header.
"""
from __future__ import annotations

from aiohttp import web

from ..keys import CONFIG

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
MAX_AGE = "600"


@web.middleware
async def cors_middleware(request: web.Request, handler):
    origin = request.headers.get("Origin")
    allowed = origin is not None and origin in request.app[CONFIG].api.cors_origins
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not allowed:
            return web.Response(status=403, text="origin not allowed")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS, "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin"})
    resp = await handler(request)
    if allowed and not getattr(resp, "prepared", False):
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Expose-Headers"] = "Location"
        resp.headers.add("Vary", "Origin")
    return resp
