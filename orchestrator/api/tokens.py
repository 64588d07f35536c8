"""/api/v1/tokens: ovault API tokens (admin), and /api/v1/me (anyone)."""
from __future__ import annotations

import datetime as dt

from aiohttp import web

from ..keys import CATALOG
from . import validate as v
from . import views_admin as views
from .auth import PRINCIPAL, allow

routes = web.RouteTableDef()
NAME = r"^[A-Za-z0-9][A-Za-z0-9 _.@\-]{0,99}$"
MAX_TTL = 10 * 365 * 86400


@routes.get("/api/v1/me")
@allow("viewer")
async def me(request: web.Request):
    p = request[PRINCIPAL]
    return web.json_response({"name": p.name, "role": p.role, "kind": p.kind,
                              "vm_ids": None if p.vm_ids is None else sorted(p.vm_ids)})


@routes.get("/api/v1/tokens")
@allow("admin")
async def list_tokens(request: web.Request):
    revoked = v.query_bool(request.query.get("include_revoked"), "include_revoked") or False
    ts = await request.app[CATALOG].tokens.list(include_revoked=revoked)
    return web.json_response({"items": [views.token(t) for t in ts], "next_cursor": None})


@routes.post("/api/v1/tokens")
@allow("admin")
async def create_token(request: web.Request):
    """The plain token is in the answer once, and never again."""
    body = await v.json_body(request)
    v.no_unknown(body, {"name", "role", "expires_in"})
    name = v.opt_str(body.get("name"), "name", 100, NAME)
    if name is None:
        raise v.Invalid("name is required")
    role = v.enum(body.get("role"), "role", ("viewer", "operator", "admin"))
    if role is None:
        raise v.Invalid("role is required")
    ttl = v.opt_int(body.get("expires_in"), "expires_in", 1, MAX_TTL)
    expires = None if ttl is None else dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=ttl)
    t, plain = await request.app[CATALOG].tokens.create(name, role, expires_at=expires)
    return web.json_response({**views.token(t), "token": plain}, status=201)


@routes.delete("/api/v1/tokens/{id}")
@allow("admin")
async def revoke_token(request: web.Request):
    t = await request.app[CATALOG].tokens.revoke(v.path_uuid(request, "id"))
    return web.json_response(views.token(t))
